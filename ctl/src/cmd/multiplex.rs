//! Following one stream on every selected host at once (`logs -f`,
//! `events`, `top` over a fleet).
//!
//! Owns [`follow`]: one loop per host, all on the caller's task, each
//! opening its stream (under the per-host deadline), passing every message
//! on in arrival order, and when the stream breaks or cannot be opened,
//! reporting the drop-out, waiting (1 s, doubling to 30 s) and opening it
//! again; a host that comes back is reported as rejoined. The caller's
//! `on` sees every [`Happening`] with the host's index and prints it; a
//! write error (a closed pipe) ends everything. It runs until every
//! reader goes away, or Ctrl-C.

use std::future::Future;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::fleet::{HostError, SelectedHost};
use crate::output::WriteError;

/// First wait before opening a dropped stream again.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Messages waiting for the printer. Hosts wait when it is full, so a slow
/// terminal slows the streams rather than losing lines.
const QUEUE: usize = 1024;

/// What happened on one host's stream.
#[derive(Debug)]
pub enum Happening<M> {
    /// A message.
    Message(M),
    /// The stream broke or could not be opened; tried again after `retry`.
    Down {
        /// Why, in words.
        why: String,
        /// When the next attempt is.
        retry: Duration,
    },
    /// The stream is open again after being down.
    Rejoined,
}

/// Follows a stream on every host: `open(host, attempt)` opens it (`attempt`
/// is 0 the first time, so a caller can tell a rejoin from the start) and
/// `deadline` bounds each opening. A stream the agent ends counts as a
/// drop-out too: these streams are live.
pub async fn follow<M, Open, Fut>(
    hosts: &[SelectedHost],
    deadline: Duration,
    open: Open,
    mut on: impl FnMut(usize, Happening<M>) -> Result<(), WriteError>,
) -> Result<(), WriteError>
where
    Open: Fn(SelectedHost, u32) -> Fut,
    Fut: Future<Output = Result<Streaming<M>, HostError>>,
{
    let (tx, mut rx) = mpsc::channel::<(usize, Happening<M>)>(QUEUE);
    let open = &open;
    let mut loops: FuturesUnordered<_> = hosts
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, host)| {
            let tx = tx.clone();
            async move { host_loop(i, host, deadline, open, tx).await }
        })
        .collect();
    drop(tx);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some((i, h)) => on(i, h)?,
                // Every loop ended and every message was printed.
                None => return Ok(()),
            },
            Some(()) = loops.next(), if !loops.is_empty() => {}
        }
    }
}

async fn host_loop<M, Open, Fut>(
    i: usize,
    host: SelectedHost,
    deadline: Duration,
    open: &Open,
    tx: mpsc::Sender<(usize, Happening<M>)>,
) where
    Open: Fn(SelectedHost, u32) -> Fut,
    Fut: Future<Output = Result<Streaming<M>, HostError>>,
{
    let mut retry = FIRST_RETRY;
    let mut attempt = 0u32;
    let mut down = false;
    loop {
        let opened = tokio::time::timeout(deadline, open(host.clone(), attempt))
            .await
            .unwrap_or_else(|_| Err(HostError::timed_out(deadline)));
        attempt = attempt.saturating_add(1);
        let why = match opened {
            Ok(mut stream) => {
                if down && tx.send((i, Happening::Rejoined)).await.is_err() {
                    return;
                }
                retry = FIRST_RETRY;
                loop {
                    match host.agent.next(&mut stream).await {
                        Ok(Some(m)) => {
                            if tx.send((i, Happening::Message(m))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the agent ended the stream".to_owned(),
                        Err(e) => break HostError::from(e).message,
                    }
                }
            }
            Err(e) => e.message,
        };
        down = true;
        if tx.send((i, Happening::Down { why, retry })).await.is_err() {
            return;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

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
//!
//! A stream the agent ends because its connection reached its age
//! ([`ConnectError::Reconnect`]) is no drop-out: it is opened again at once
//! on a new connection ([`Happening::Reopened`], for the caller to resume
//! from where it was, quietly). [`follow_one`] does that for one agent.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::client::{Agent, ConnectError};
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
    /// The stream is open again on a new connection after the agent ended
    /// it for its connection's age; nothing to tell the user unless
    /// resuming loses or repeats something.
    Reopened,
}

/// Tries to open a stream again after a [`ConnectError::Reconnect`]: the
/// first call on a channel whose connection just went away can fail while
/// it redials.
const REOPEN_TRIES: u32 = 3;
/// Between those tries.
const REOPEN_WAIT: Duration = Duration::from_millis(200);

/// Follows one stream on one agent until it ends, or `on` says to stop:
/// `open(attempt)` opens it.
/// A stream the agent ends for a reconnect is opened again at once (see
/// the module doc); any other failure ends the follow with that error.
pub async fn follow_one<M, Open, Fut>(
    agent: &Agent,
    mut open: Open,
    mut on: impl FnMut(Happening<M>) -> Result<ControlFlow<()>, WriteError>,
) -> anyhow::Result<()>
where
    Open: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Streaming<M>, ConnectError>>,
{
    let mut attempt = 0u32;
    loop {
        let mut stream = if attempt == 0 {
            open(0).await?
        } else {
            let mut tries = 1;
            loop {
                match open(attempt).await {
                    Ok(stream) => break stream,
                    Err(e) if tries >= REOPEN_TRIES || e.is_reconnect() => return Err(e.into()),
                    Err(_) => tries += 1,
                }
                tokio::time::sleep(REOPEN_WAIT).await;
            }
        };
        if attempt > 0 && on(Happening::Reopened)?.is_break() {
            return Ok(());
        }
        attempt = attempt.saturating_add(1);
        loop {
            match agent.next(&mut stream).await {
                Ok(Some(m)) => {
                    if on(Happening::Message(m))?.is_break() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) if e.is_reconnect() => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
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
    // Tries left to open the stream quietly after the agent asked for a
    // reconnect; 0 when it did not.
    let mut reopening = 0u32;
    loop {
        let opened = tokio::time::timeout(deadline, open(host.clone(), attempt))
            .await
            .unwrap_or_else(|_| Err(HostError::timed_out(deadline)));
        attempt = attempt.saturating_add(1);
        // None: the agent asked for a reconnect.
        let why = match opened {
            Ok(mut stream) => {
                let said = if down {
                    Some(Happening::Rejoined)
                } else if reopening > 0 {
                    Some(Happening::Reopened)
                } else {
                    None
                };
                if let Some(said) = said
                    && tx.send((i, said)).await.is_err()
                {
                    return;
                }
                retry = FIRST_RETRY;
                reopening = 0;
                loop {
                    match host.agent.next(&mut stream).await {
                        Ok(Some(m)) => {
                            if tx.send((i, Happening::Message(m))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break Some("the agent ended the stream".to_owned()),
                        Err(e) if e.is_reconnect() => break None,
                        Err(e) => break Some(HostError::from(e).message),
                    }
                }
            }
            Err(e) => Some(e.message),
        };
        let Some(why) = why else {
            // Quietly, at once, on a new connection.
            reopening = REOPEN_TRIES;
            continue;
        };
        if reopening > 1 {
            reopening -= 1;
            tokio::time::sleep(REOPEN_WAIT).await;
            continue;
        }
        reopening = 0;
        down = true;
        if tx.send((i, Happening::Down { why, retry })).await.is_err() {
            return;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

//! Certificate rotation without a restart: reloads the agent's
//! certificate, key, client CA and revocation list when one of those files
//! changes (inotify on their directories, so a file replaced by rename
//! counts too) or on SIGHUP, and publishes the new rustls config on a
//! `watch` channel that the listener reads for every new handshake.
//! Connections already open keep the session they have, so calls in
//! progress (a `logs -f` stream) are never dropped.
//!
//! A reload that fails (a half-written file, a key that does not fit the
//! certificate) is logged and the previous material stays in use; the next
//! change tries again. The task ends when the cancellation token fires.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use rustls::ServerConfig;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::TlsConfig;
use crate::tls;

/// How long the files must be quiet before they are read: writers that
/// replace a certificate and then its key are read once, after both.
const SETTLE: Duration = Duration::from_millis(500);

/// The files the TLS config is made of.
fn files(config: &TlsConfig) -> Vec<PathBuf> {
    let mut out = vec![config.ca.clone(), config.cert.clone(), config.key.clone()];
    out.extend(config.crl.clone());
    out
}

/// Starts watching; `current` is the config loaded at start. Returns the
/// receiver the listener reads. A directory that cannot be watched is
/// logged (SIGHUP still reloads).
pub fn spawn(
    config: TlsConfig,
    current: Arc<ServerConfig>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> watch::Receiver<Arc<ServerConfig>> {
    let (tx, rx) = watch::channel(current);
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let names: BTreeSet<_> = files(&config)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_owned()))
        .collect();
    // notify calls this from its own thread; an unbounded channel of unit
    // messages never blocks it and costs nothing when nobody reads.
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let ours = match &res {
            // Reads (ours included, and berthctl's next to them) are not
            // changes; a file closed after writing is.
            Ok(ev) if matches!(ev.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) => false,
            Ok(ev) => ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n))),
            Err(_) => true,
        };
        if ours {
            let _ = changed_tx.send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            let dirs: BTreeSet<PathBuf> = files(&config)
                .iter()
                .map(|p| p.parent().map(|d| d.to_owned()).unwrap_or_else(|| ".".into()))
                .collect();
            for dir in dirs {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    warn!(dir = %dir.display(), error = %e, "Cannot watch the TLS directory; reload with SIGHUP.");
                }
            }
            Some(w)
        }
        Err(e) => {
            warn!(error = %e, "Cannot watch the TLS files; reload with SIGHUP.");
            None
        }
    };
    let hangup = signal(SignalKind::hangup());
    tracker.spawn(async move {
        // Owned here so the watch lives exactly as long as the task.
        let _watcher = watcher;
        let mut hangup = match hangup {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "Cannot listen for SIGHUP; TLS files are still watched.");
                None
            }
        };
        loop {
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                Some(()) = changed.recv() => {
                    // Let a burst of writes settle, then read once.
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(SETTLE) => break,
                            Some(()) = changed.recv() => {}
                        }
                    }
                    "the files changed"
                }
            };
            match tls::server_config(&config) {
                Ok(new) => {
                    tx.send_replace(new);
                    info!(reason = why, cert = %config.cert.display(), "Reloaded the TLS certificate, key and CA; new connections use them.");
                }
                Err(e) => {
                    warn!(reason = why, error = %e, "Cannot reload the TLS material; keeping the one in use.");
                }
            }
        }
    });
    rx
}

//! The Docker event watcher: turns die, oom, destroy and friends into
//! commands for the owner (which counts them and wakes the reconciler), and
//! reconnects with jittered backoff, renegotiating the API version, when
//! dockerd goes away. Runs on the tracker until cancelled.

use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Supervisor;
use crate::events::Severity;

/// Follows Docker's events until `cancel` fires.
pub(super) async fn run(sup: Supervisor, cancel: CancellationToken) {
    let Ok(engine) = sup.engine() else { return };
    let mut delay = Duration::from_millis(500);
    loop {
        let mut stream = Box::pin(engine.events());
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(ev)) => {
                    delay = Duration::from_millis(500);
                    if sup.docker_event(ev).await.is_err() {
                        // The owner is gone: the agent is stopping.
                        return;
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "Docker event stream failed; reconnecting.");
                    break;
                }
                None => {
                    warn!("Docker event stream ended; reconnecting.");
                    break;
                }
            }
        }
        // Jitter keeps many agents from hammering a restarting dockerd
        // in lockstep.
        let jitter = Duration::from_millis(u64::from(std::process::id() % 250));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay + jitter) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
        // negotiate_version stores the agreed version in state shared by
        // every clone of the client, so this fixes the engine for all.
        match engine.docker().clone().negotiate_version().await {
            Ok(_) => {
                sup.bus().publish(
                    "docker-reconnected",
                    "",
                    0,
                    Severity::Info,
                    "Reconnected to the Docker Engine.",
                );
                sup.trigger();
            }
            Err(e) => debug!(error = %e, "Docker still unreachable."),
        }
    }
}

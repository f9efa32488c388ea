//! The Docker event watcher: die, oom, destroy and friends become triggers
//! and counters; it reconnects (renegotiating the API version) when dockerd
//! goes away.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Supervisor, observe, short};
use crate::events::Severity;

impl Supervisor {
    // ---------------------------------------------------------------- events

    pub(super) async fn watch_events(self: Arc<Self>, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(500);
        loop {
            let mut stream = Box::pin(self.engine.events());
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(ev)) => {
                        delay = Duration::from_millis(500);
                        self.on_event(&ev);
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
            match self.engine.docker().clone().negotiate_version().await {
                Ok(_) => {
                    self.bus.publish(
                        "docker-reconnected",
                        "",
                        0,
                        Severity::Info,
                        "Reconnected to the Docker Engine.",
                    );
                    self.trigger();
                }
                Err(e) => debug!(error = %e, "Docker still unreachable."),
            }
        }
    }

    fn on_event(&self, ev: &crate::docker::EngineEvent) {
        let Some(service) = ev.service.clone() else {
            self.trigger();
            return;
        };
        let revision = ev.revision.unwrap_or(0);
        match ev.action.as_str() {
            "oom" => self.record_oom(&service, revision, &ev.container_id, observe::OomSource::Docker),
            "die" => {
                let busy = {
                    let mut rt = self.runtime();
                    rt.services.entry(service.clone()).or_default().last_exit = ev.exit_code;
                    rt.busy.contains(&service)
                };
                if !busy {
                    let code = ev.exit_code.map_or_else(|| "?".to_owned(), |c| c.to_string());
                    self.bus.publish(
                        "exited",
                        &service,
                        revision,
                        Severity::Warning,
                        format!("Container {} exited with code {code}.", short(&ev.container_id)),
                    );
                }
            }
            _ => {}
        }
        if matches!(
            ev.action.as_str(),
            "die" | "destroy" | "oom" | "stop" | "kill" | "update" | "start"
        ) {
            self.trigger();
        }
    }
}

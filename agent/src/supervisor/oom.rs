//! OOM kills the kernel log reports, and the memory-pressure hold.
//!
//! Two sources report OOM kills: Docker's `oom` event (see
//! [`super::docker_events`]) and the kernel log ([`crate::oomwatch`],
//! which sends the ids of killed containers). On cgroup v1 Docker misses the kill of a container's PID 1
//! (the cgroup is gone before its notification is read), so the kernel log
//! is the one that always speaks; the owner counts a kill both report once.
//! [`run`] looks each id up in Docker (its labels say whether the container
//! is this agent's, and whose) and tells the owner; it ends on cancel or
//! when the reader stops.
//!
//! A hold ([`Supervisor::hold_stopped`]) stops a service's container for
//! the memory-pressure policy and keeps the reconciler from starting it
//! until [`Supervisor::release_hold`].

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::runtime::OomSource;
use super::{Supervisor, SupervisorError};

/// Turns container ids from the kernel log into counted OOM kills.
pub(super) async fn run(sup: Supervisor, mut ids: mpsc::Receiver<String>, cancel: CancellationToken) {
    loop {
        let id = tokio::select! {
            _ = cancel.cancelled() => return,
            id = ids.recv() => match id {
                Some(id) => id,
                None => return,
            },
        };
        let Ok(engine) = sup.engine() else { continue };
        match engine.inspect(&id).await {
            Ok(Some(c))
                if c.labels.get(berth_core::labels::INSTANCE).map(String::as_str) == Some(engine.instance()) =>
            {
                if let Some(service) = c.service.as_deref() {
                    let _ = sup.oom(service, c.revision.unwrap_or(0), &id, OomSource::Kernel).await;
                }
            }
            Ok(_) => debug!(container = %id, "OOM kill of a container that is not this agent's."),
            Err(e) => debug!(container = %id, error = %e, "Cannot look up an OOM-killed container."),
        }
    }
}

impl Supervisor {
    /// Stops `service`'s running container and keeps the reconciler from
    /// starting it again until [`Supervisor::release_hold`]. Returns the
    /// stopped container's id. Refused while a change holds the service.
    pub async fn hold_stopped(&self, service: &str, why: String) -> Result<String, SupervisorError> {
        let Some(_permit) = self.try_permit(service).await? else {
            return Err(SupervisorError::Refused(format!(
                "{service} is being changed (a deploy or a repair); not stopping it now"
            )));
        };
        let timeout = self
            .snapshot()
            .record(service)
            .and_then(|r| r.active_revision().map(|rev| rev.spec.stop_timeout.as_std()))
            .ok_or_else(|| SupervisorError::NotFound(format!("no service named {service:?}")))?;
        let container = self.hold(service, why).await?;
        self.engine()?
            .stop(&container, timeout)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        Ok(container)
    }
}

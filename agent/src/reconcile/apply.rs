//! Carrying out a plan's [`Action`]s against Docker and nginx, on the
//! reconcile pass's task, for services the pass holds a permit on.
//!
//! Each action is one or two Docker calls (or one nginx install) and one
//! event; what it learns (a restart to count) goes to the supervisor's
//! owner. A failed action is reported to the caller, which goes on with
//! the next one and looks again soon.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Action;
use crate::docker::{DockerError, Engine};
use crate::events::Severity;
use crate::state::{Revision, ServiceRecord};
use crate::supervisor::{Supervisor, SupervisorError};

/// Does `action`. `records` is the desired state the plan was made from.
pub async fn apply(
    sup: &Supervisor,
    engine: &Engine,
    action: &Action,
    records: &BTreeMap<String, ServiceRecord>,
) -> Result<(), SupervisorError> {
    let spec_of = |name: &str, rev: u64| -> Result<Revision, SupervisorError> {
        records
            .get(name)
            .and_then(|r| r.revision(rev))
            .cloned()
            .ok_or_else(|| SupervisorError::NotFound(format!("revision {rev} of {name}")))
    };
    let bus = sup.bus();
    match action {
        Action::Create { service, revision, why } => {
            let rev = spec_of(service, *revision)?;
            sup.create_container(&rev.spec, *revision).await?;
            // Someone removed it; that is drift, not a crash, so no backoff grows.
            sup.count_restart(service, false).await?;
            bus.publish(
                "recreated",
                service,
                *revision,
                Severity::Warning,
                format!("Created a new container: {why}."),
            );
        }
        Action::Start {
            service,
            container,
            why,
        } => {
            // A container being removed cannot start; the error retries
            // the pass shortly and the next plan creates a fresh one.
            crate::supervisor::start(engine, container).await.map_err(internal)?;
            sup.count_restart(service, true).await?;
            bus.publish(
                "restarted",
                service,
                revision_of(records, service),
                Severity::Warning,
                format!("Restarted the container: {why}."),
            );
        }
        Action::Replace {
            service,
            container,
            revision,
            why,
        } => {
            let rev = spec_of(service, *revision)?;
            sup.stop_and_remove(container, rev.spec.stop_timeout.as_std()).await?;
            sup.create_container(&rev.spec, *revision).await?;
            sup.count_restart(service, true).await?;
            bus.publish(
                "replaced",
                service,
                *revision,
                Severity::Warning,
                format!("Replaced the container: {why}."),
            );
        }
        Action::UpdateLimits {
            service,
            container,
            memory,
            nano_cpus,
            soft,
            why,
        } => {
            match engine.update_limits(container, *memory, *nano_cpus, *soft).await {
                Ok(()) => {}
                // Docker cannot lift a limit in place; a fresh container can.
                Err(DockerError::LimitNotRemovable { .. }) => {
                    let revision = revision_of(records, service);
                    let rev = spec_of(service, revision)?;
                    sup.stop_and_remove(container, rev.spec.stop_timeout.as_std()).await?;
                    sup.create_container(&rev.spec, revision).await?;
                }
                Err(e) => return Err(internal(e)),
            }
            bus.publish(
                "drift-repaired",
                service,
                revision_of(records, service),
                Severity::Warning,
                format!("Set the limits back: {why}."),
            );
        }
        Action::Remove {
            service,
            container,
            why,
        } => {
            sup.stop_and_remove(container, Duration::from_secs(10)).await?;
            let name = service.as_deref().unwrap_or("");
            bus.publish(
                "removed",
                name,
                0,
                Severity::Info,
                format!("Removed container {}: {why}.", &container[..container.len().min(12)]),
            );
        }
        Action::WriteSite {
            service,
            revision,
            content,
            why,
        } => {
            sup.sites().install(service, content).await.map_err(internal)?;
            bus.publish(
                "site-restored",
                service,
                *revision,
                Severity::Warning,
                format!("Rewrote the nginx site: {why}."),
            );
        }
        Action::RemoveSite { service } => {
            sup.sites().remove(service).await.map_err(internal)?;
            bus.publish(
                "site-removed",
                service,
                0,
                Severity::Info,
                "Removed the nginx site of a service that is gone.",
            );
        }
    }
    Ok(())
}

fn revision_of(records: &BTreeMap<String, ServiceRecord>, service: &str) -> u64 {
    records.get(service).map_or(0, |r| r.active)
}

fn internal(e: impl std::fmt::Display) -> SupervisorError {
    SupervisorError::Internal(e.to_string())
}

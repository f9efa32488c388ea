//! What the metrics collector and the memory-pressure policy need from the
//! supervisor: a read-only view of each service's running container and
//! counters ([`Supervisor::metrics_targets`]), and a "hold" that stops a
//! service and keeps the reconciler from starting it until released.
//!
//! The view is built from the supervisor's memory only (no Docker call), as
//! of the reconciler's last pass, so the collector can ask every second.
//!
//! It also owns counting OOM kills ([`Supervisor::record_oom`]), which two
//! sources report: Docker's `oom` event and the kernel log
//! ([`crate::oomwatch`]). On cgroup v1 Docker misses the kill of a
//! container's PID 1 (the cgroup is gone before its notification is read),
//! so the kernel log is the one that always speaks; when both report the
//! same kill, it counts once.

use std::time::{Duration, Instant};

use super::{Supervisor, SupervisorError, short};
use crate::events::Severity;

/// How far away a hold puts the reconciler's next start: "until released".
const HOLD: Duration = Duration::from_secs(365 * 24 * 3600);

/// Reports of one OOM kill by Docker and by the kernel log arrive within
/// this of each other.
const OOM_SAME_KILL: Duration = Duration::from_secs(5);

/// Who reported an OOM kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomSource {
    /// Docker's `oom` event.
    Docker,
    /// The kernel log (`oom-kill:` record naming the container's cgroup).
    Kernel,
}

/// One desired service as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTarget {
    /// Service name.
    pub service: String,
    /// Active revision.
    pub revision: u64,
    /// Spec `priority` (lower is acted on first under memory pressure).
    pub priority: i32,
    /// Full id of its running container of the active revision, if any.
    pub container_id: Option<String>,
    /// Restarts by the agent since it started.
    pub restarts: u32,
    /// OOM kills seen since the agent started.
    pub oom_kills: u32,
    /// "healthy", "unhealthy", "starting", or "" without a health check.
    pub health: String,
    /// Why the memory-pressure policy holds it stopped, if it does.
    pub held: Option<String>,
    /// The spec's CPU limit in CPUs, if any.
    pub cpus: Option<f64>,
}

impl Supervisor {
    /// Every desired service with its running container and counters.
    pub fn metrics_targets(&self) -> Vec<MetricsTarget> {
        let records = self.records();
        let rt = self.runtime();
        records
            .iter()
            .map(|(name, record)| {
                let spec = record.active_revision().map(|r| &r.spec);
                let srt = rt.services.get(name);
                let primary = rt.primaries.get(name).filter(|c| c.revision == Some(record.active));
                let has_check = spec.is_some_and(|s| s.health.is_some());
                let health = match (has_check, primary.and_then(|p| rt.health.get(&p.id))) {
                    (false, _) => String::new(),
                    (true, Some(h)) if h.unhealthy => "unhealthy".into(),
                    (true, Some(h)) if h.healthy == Some(true) => "healthy".into(),
                    (true, _) => "starting".into(),
                };
                MetricsTarget {
                    service: name.clone(),
                    revision: record.active,
                    priority: spec.map_or(0, |s| s.priority),
                    container_id: primary.map(|p| p.id.clone()),
                    restarts: srt.map_or(0, |s| s.restarts),
                    oom_kills: srt.map_or(0, |s| s.oom_kills),
                    health,
                    held: srt.and_then(|s| s.held.clone()),
                    cpus: spec.and_then(|s| s.resources.cpus).map(|c| c.as_f64()),
                }
            })
            .collect()
    }

    /// Stops `service`'s running container and keeps the reconciler from
    /// starting it again until [`Supervisor::release_hold`]. Returns the
    /// stopped container's id. Refused while a deploy holds the service.
    pub async fn hold_stopped(&self, service: &str, why: String) -> Result<String, SupervisorError> {
        let lock = self.lock_for(service);
        let Ok(_guard) = lock.try_lock_owned() else {
            return Err(SupervisorError::Refused(format!(
                "{service} is being changed by a deploy; not stopping it now"
            )));
        };
        let timeout = self
            .record(service)
            .and_then(|r| r.active_revision().map(|rev| rev.spec.stop_timeout.as_std()))
            .ok_or_else(|| SupervisorError::NotFound(format!("no service named {service:?}")))?;
        let container = {
            let mut rt = self.runtime();
            let container = rt
                .primaries
                .get(service)
                .map(|c| c.id.clone())
                .ok_or_else(|| SupervisorError::Refused(format!("{service} has no running container to stop")))?;
            let s = rt.services.entry(service.to_owned()).or_default();
            s.held = Some(why);
            s.not_before = Some(Instant::now() + HOLD);
            container
        };
        self.engine
            .stop(&container, timeout)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        Ok(container)
    }

    /// Counts an OOM kill of `container` (of `service`) and publishes the
    /// `oom-killed` event, unless the other source already reported the
    /// same kill.
    pub fn record_oom(&self, service: &str, revision: u64, container: &str, source: OomSource) {
        let now = Instant::now();
        {
            let mut rt = self.runtime();
            rt.oom_recent
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < OOM_SAME_KILL);
            match rt.oom_recent.get(container) {
                Some((_, seen_by)) if *seen_by != source => {
                    // The same kill, seen by the other source: counted already.
                    rt.oom_recent.remove(container);
                    return;
                }
                _ => {
                    rt.oom_recent.insert(container.to_owned(), (now, source));
                }
            }
            rt.services.entry(service.to_owned()).or_default().oom_kills += 1;
        }
        self.bus.publish(
            "oom-killed",
            service,
            revision,
            Severity::Error,
            format!(
                "Container {} was OOM-killed (raise resources.memory?).",
                short(container)
            ),
        );
    }

    /// Lets the reconciler start `service` again; true if it was held.
    pub fn release_hold(&self, service: &str) -> bool {
        let released = {
            let mut rt = self.runtime();
            match rt.services.get_mut(service) {
                Some(s) if s.held.is_some() => {
                    s.held = None;
                    s.not_before = None;
                    true
                }
                _ => false,
            }
        };
        if released {
            self.trigger();
        }
        released
    }
}

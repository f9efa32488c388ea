//! What the owner publishes after every change: an immutable [`Snapshot`]
//! of the desired state and the run-time knowledge, read without waiting by
//! the gRPC handlers, the health monitor, the env loop and the reconciler.
//!
//! A snapshot is consistent in itself (one owner step made it) but may be a
//! moment old; work that must not act on stale state (the reconciler) asks
//! the owner for a permit with the [`Snapshot::generation`] it planned from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::runtime::{HealthState, ServiceRuntime};
use crate::docker::ContainerInfo;
use crate::metrics::MetricsTarget;
use crate::state::{ServiceRecord, StateFile};
use berth_core::spec::ServiceSpec;

/// The supervisor's state at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Desired state and history, as last written to disk.
    pub state: Arc<StateFile>,
    /// Run-time knowledge per service.
    pub services: HashMap<String, ServiceRuntime>,
    /// Health verdicts per container id.
    pub health: HashMap<String, HealthState>,
    /// Each desired service's running container, as last observed.
    pub primaries: HashMap<String, ContainerInfo>,
    /// Services a change (deploy, restart, removal, env change) holds.
    pub changing: BTreeSet<String>,
    /// Per service, bumped whenever its record changes or a change starts
    /// or ends; a reconcile pass acts only where it has not moved since.
    pub generations: HashMap<String, u64>,
}

impl Snapshot {
    /// Every desired service's record.
    pub fn records(&self) -> &BTreeMap<String, ServiceRecord> {
        &self.state.services
    }

    /// One service's record.
    pub fn record(&self, service: &str) -> Option<&ServiceRecord> {
        self.state.services.get(service)
    }

    /// `service`'s generation (0 for one never seen).
    pub fn generation(&self, service: &str) -> u64 {
        self.generations.get(service).copied().unwrap_or(0)
    }

    /// The health of `container` of a service with `spec`, as people see
    /// it: "healthy", "unhealthy", "starting", or "" without a health check.
    /// Without `[health]`, the image's HEALTHCHECK counts when it has one:
    /// a `health_status` event's verdict, else Docker's status as listed.
    pub fn health_of(&self, spec: &ServiceSpec, container: Option<&ContainerInfo>) -> &'static str {
        let docker = container.and_then(|c| c.docker_health.as_ref());
        match (&spec.health, container.and_then(|c| self.health.get(&c.id))) {
            (None, Some(h)) if docker.is_some() && h.unhealthy => "unhealthy",
            (None, _) => match docker.map(|d| d.status.as_str()) {
                Some("healthy") => "healthy",
                Some("unhealthy") => "unhealthy",
                Some(_) => "starting",
                None => "",
            },
            (Some(_), Some(h)) if h.unhealthy => "unhealthy",
            (Some(_), Some(h)) if h.healthy == Some(true) => "healthy",
            (Some(_), _) => "starting",
        }
    }

    /// Every desired service with its running container and counters, for
    /// the metrics collector and the memory-pressure policy.
    pub fn metrics_targets(&self) -> Vec<MetricsTarget> {
        self.records()
            .iter()
            .map(|(name, record)| {
                let spec = record.active_revision().map(|r| &r.spec);
                let srt = self.services.get(name);
                let primary = self.primaries.get(name).filter(|c| c.revision == Some(record.active));
                MetricsTarget {
                    service: name.clone(),
                    revision: record.active,
                    priority: spec.map_or(0, |s| s.priority),
                    container_id: primary.map(|p| p.id.clone()),
                    restarts: srt.map_or(0, |s| s.restarts),
                    oom_kills: srt.map_or(0, |s| s.oom_kills),
                    updates: srt.map_or(0, |s| s.updates),
                    health: spec.map_or("", |s| self.health_of(s, primary)).to_owned(),
                    degraded: primary
                        .and_then(|p| self.health.get(&p.id))
                        .and_then(|h| h.deps.as_ref())
                        .is_some_and(|d| d.degraded),
                    held: srt.and_then(|s| s.held.clone()),
                    cpus: spec.and_then(|s| s.resources.cpus).map(|c| c.as_f64()),
                }
            })
            .collect()
    }
}

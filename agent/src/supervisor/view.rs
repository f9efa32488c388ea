//! The status of each service for `Get` and `List`, and its record for
//! `History`: the newest [`Snapshot`] (desired state and run-time
//! knowledge) combined with a fresh Docker listing. Never waits for the
//! owner; [`view_of`] is pure.

use std::time::Instant;

use super::snapshot::Snapshot;
use super::{Supervisor, SupervisorError, upstream_of};
use crate::docker::ContainerInfo;
use crate::nginx;
use crate::state::ServiceRecord;
use berth_core::spec::ServiceSpec;

/// Restarts in a row after which `ps` calls a service crash-looping.
const CRASH_LOOP_AT: u32 = 3;

/// A service's status, for `Get` and `List`.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Active revision.
    pub revision: u64,
    /// Its spec.
    pub spec: ServiceSpec,
    /// "running", "starting", "unhealthy", "degraded", "crash-loop", "restarting", "stopped", "missing", "deploying".
    pub state: String,
    /// A human detail for the state.
    pub detail: String,
    /// Every berth container of the service.
    pub containers: Vec<ContainerInfo>,
    /// The primary container's health: "healthy", "unhealthy", "starting" or "".
    pub health: String,
    /// Restarts by the agent since it started.
    pub restarts: u32,
    /// OOM kills seen.
    pub oom_kills: u32,
    /// When the active revision was made.
    pub updated_at_ms: u64,
    /// What nginx routes to, for proxied services.
    pub routes: Vec<String>,
    /// What the primary container last reported serving (`[health.version]`);
    /// empty when unknown.
    pub version: String,
    /// Maintenance mode: nginx answers 503 for it.
    pub maintenance: bool,
    /// Where its health verdict comes from: "spec" (`[health]`), "image"
    /// (the image's HEALTHCHECK, as Docker runs it) or "none"; "" while no
    /// container runs to tell.
    pub health_source: String,
}

impl Supervisor {
    /// Status of one service.
    pub async fn view(&self, service: &str) -> Result<ServiceView, SupervisorError> {
        let snap = self.ready_snapshot()?;
        let record = snap.record(service).ok_or_else(|| not_found(service))?;
        let observed = self.list().await?;
        view_of(service, record, &observed, &snap)
            .ok_or_else(|| SupervisorError::NotFound(format!("{service:?} has no revisions")))
    }

    /// Status of every service.
    pub async fn views(&self) -> Result<Vec<ServiceView>, SupervisorError> {
        let snap = self.ready_snapshot()?;
        let observed = self.list().await?;
        Ok(snap
            .records()
            .iter()
            .filter_map(|(name, r)| view_of(name, r, &observed, &snap))
            .collect())
    }

    /// A service's record (its revisions), for `History`.
    pub fn record(&self, service: &str) -> Result<ServiceRecord, SupervisorError> {
        self.ready_snapshot()?
            .record(service)
            .cloned()
            .ok_or_else(|| not_found(service))
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, SupervisorError> {
        self.engine()?
            .list_managed()
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))
    }
}

/// "No such service", with where to look.
pub(super) fn not_found(service: &str) -> SupervisorError {
    SupervisorError::NotFound(format!("no service named {service:?} on this host (see berthctl ps)"))
}

/// The status of `name` from its record, what Docker shows and the
/// snapshot. None for a record without revisions, which the state never
/// keeps.
pub fn view_of(name: &str, record: &ServiceRecord, observed: &[ContainerInfo], snap: &Snapshot) -> Option<ServiceView> {
    let srt = snap.services.get(name).cloned().unwrap_or_default();
    let active = record.active_revision();
    let spec = active.or_else(|| record.revisions.last()).map(|r| r.spec.clone())?;
    let containers: Vec<ContainerInfo> = observed
        .iter()
        .filter(|c| c.service.as_deref() == Some(name))
        .cloned()
        .collect();
    let primary = containers
        .iter()
        .find(|c| c.running && c.revision == Some(record.active));
    let health_state = primary.and_then(|p| snap.health.get(&p.id));
    let health = snap.health_of(&spec, primary).to_owned();
    let (state, detail) = if snap.changing.contains(name) {
        ("deploying".to_owned(), "a deploy is under way".to_owned())
    } else if primary.is_some() {
        let degraded = health_state.and_then(|h| h.deps.as_ref()).filter(|d| d.degraded);
        match (health.as_str(), degraded) {
            ("unhealthy", _) => ("unhealthy".to_owned(), last_output(health_state)),
            ("starting", _) => ("starting".to_owned(), last_output(health_state)),
            (_, Some(deps)) => (
                "degraded".to_owned(),
                format!("dependency check failing: {}", deps.last_output),
            ),
            _ => ("running".to_owned(), last_output(health_state)),
        }
    } else if let Some(why) = &srt.held {
        ("stopped".to_owned(), why.clone())
    } else if containers.iter().any(|c| c.revision == Some(record.active)) {
        let exit = srt.last_exit.map(|c| format!(" after exit {c}")).unwrap_or_default();
        let wait = srt
            .not_before
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .map(|d| format!("; next try in {}s", d.as_secs() + 1))
            .unwrap_or_default();
        let never = spec.restart == berth_core::spec::RestartPolicy::Never;
        if never {
            ("stopped".to_owned(), format!("stopped{exit}; restart = \"never\""))
        } else if srt.failures >= CRASH_LOOP_AT {
            (
                "crash-loop".to_owned(),
                format!("{} restarts in a row{exit}{wait}", srt.failures),
            )
        } else {
            ("restarting".to_owned(), format!("restarting{exit}{wait}"))
        }
    } else {
        (
            "missing".to_owned(),
            "no container; the reconciler will create one".to_owned(),
        )
    };
    let health_source = match (&spec.health, primary) {
        (Some(_), _) => "spec",
        (None, Some(p)) if p.docker_health.is_some() => "image",
        (None, Some(_)) => "none",
        (None, None) => "",
    }
    .to_owned();
    let routes = match (&spec.proxy, primary) {
        (Some(proxy), Some(p)) => upstream_of(p, &spec)
            .map(|u| nginx::routes(proxy, u))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Some(ServiceView {
        name: name.to_owned(),
        revision: record.active,
        spec,
        state,
        detail,
        containers,
        health,
        restarts: srt.restarts,
        oom_kills: srt.oom_kills,
        updated_at_ms: active.map(|r| r.created_at_ms).unwrap_or(0),
        routes,
        version: health_state.and_then(|h| h.version.clone()).unwrap_or_default(),
        maintenance: record.maintenance,
        health_source,
    })
}

fn last_output(health: Option<&super::HealthState>) -> String {
    health.map(|h| h.last_output.clone()).unwrap_or_default()
}

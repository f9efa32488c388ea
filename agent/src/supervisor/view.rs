//! The status of each service for `Get` and `List`: desired state, the
//! supervisor's run-time knowledge and what Docker shows, combined.

use std::time::Instant;

use super::{CRASH_LOOP_AT, Supervisor, SupervisorError, upstream_of};
use crate::docker::ContainerInfo;
use crate::nginx;
use crate::state::ServiceRecord;
use berth_core::spec::ServiceSpec;

/// A service's status, for `Get` and `List`.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Active revision.
    pub revision: u64,
    /// Its spec.
    pub spec: ServiceSpec,
    /// "running", "starting", "unhealthy", "crash-loop", "restarting", "stopped", "missing", "deploying".
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
}

impl Supervisor {
    // ---------------------------------------------------------------- queries

    /// Status of one service.
    pub async fn view(&self, service: &str) -> Result<ServiceView, SupervisorError> {
        let record = self.record(service).ok_or_else(|| {
            SupervisorError::NotFound(format!("no service named {service:?} on this host (see berthctl ps)"))
        })?;
        let observed = self.list().await?;
        self.view_of(service, &record, &observed)
            .ok_or_else(|| SupervisorError::NotFound(format!("{service:?} has no revisions")))
    }

    /// Status of every service.
    pub async fn views(&self) -> Result<Vec<ServiceView>, SupervisorError> {
        let records = self.records();
        let observed = self.list().await?;
        Ok(records
            .iter()
            .filter_map(|(name, r)| self.view_of(name, r, &observed))
            .collect())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, SupervisorError> {
        self.engine
            .list_managed()
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))
    }

    /// None for a record without revisions, which the store never keeps.
    fn view_of(&self, name: &str, record: &ServiceRecord, observed: &[ContainerInfo]) -> Option<ServiceView> {
        let rt = self.runtime();
        let srt = rt.services.get(name).cloned().unwrap_or_default();
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
        let health_state = primary.and_then(|p| rt.health.get(&p.id));
        let health = match (&spec.health, health_state) {
            (None, _) => String::new(),
            (Some(_), Some(h)) if h.unhealthy => "unhealthy".into(),
            (Some(_), Some(h)) if h.healthy == Some(true) => "healthy".into(),
            (Some(_), _) => "starting".into(),
        };
        let (state, detail) = if rt.busy.contains(name) {
            ("deploying".to_owned(), "a deploy is under way".to_owned())
        } else if primary.is_some() {
            let s = match health.as_str() {
                "unhealthy" => "unhealthy",
                "starting" => "starting",
                _ => "running",
            };
            let detail = health_state.map(|h| h.last_output.clone()).unwrap_or_default();
            (s.to_owned(), detail)
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
        })
    }
}

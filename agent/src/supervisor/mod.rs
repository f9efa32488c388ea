//! The supervisor: owns the host's services and keeps them converged.
//!
//! It holds the desired state ([`Store`]), what it has learnt at run time
//! (backoff, restarts, OOM kills, health verdicts), one lock per service, and
//! the Docker [`Engine`]. Three tasks run on the agent's tracker until
//! cancelled:
//! - the reconcile loop: woken by triggers, a periodic resync and backoff
//!   timers; re-reads Docker, [`plan`](crate::reconcile::plan)s and applies;
//! - the Docker event watcher: turns die/oom/destroy into triggers and
//!   counters, reconnecting (and renegotiating the API version) when dockerd
//!   goes away;
//! - the health monitor: probes each running service at its interval and
//!   marks a container unhealthy after `retries` failures in a row.
//!
//! A fourth task, the env loop ([`env`]), turns env-dir watcher messages and
//! a slower resync into checks of each service's env file.
//!
//! Deploys ([`deploy`]) take the service's lock; the reconciler only acts on
//! a service whose lock it can take, so the two never fight over containers.

pub mod deploy;
pub mod env;
mod observe;

pub use observe::{MetricsTarget, OomSource};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::audit::Audit;
use berth_core::labels;

use crate::docker::{ContainerInfo, CreateRequest, Engine, PortBinding};
use crate::envfiles;
use crate::events::{EventBus, Severity};
use crate::health;
use crate::nginx::{self, Sites};
use crate::reconcile::{self, Action, Context, Desired};
use crate::state::{Loaded, Revision, RevisionStatus, ServiceRecord, StateFile, Store};
use berth_core::spec::ServiceSpec;

/// How often the whole host is re-read even without events.
const RESYNC: Duration = Duration::from_secs(10);
/// How long a restarted container must run before its crash count resets
/// (as long as Docker's own restart policy waits).
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Restarts in a row after which `ps` calls a service crash-looping.
const CRASH_LOOP_AT: u32 = 3;
/// How often the health monitor looks for due probes.
const HEALTH_TICK: Duration = Duration::from_millis(250);

/// A supervisor call that failed, mapped to a gRPC status in one place.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The request is wrong; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such service or revision.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the host's state; nothing changed.
    #[error("{0}")]
    Refused(String),
    /// Docker or the disk failed.
    #[error("{0}")]
    Internal(String),
}

/// What the reconciler has learnt about one service at run time.
#[derive(Debug, Default, Clone)]
struct ServiceRuntime {
    /// Restarts in a row that did not last [`STABLE_AFTER`].
    failures: u32,
    /// No automatic restart before this.
    not_before: Option<Instant>,
    /// Restarts by the agent since it started.
    restarts: u32,
    /// OOM kills seen since the agent started.
    oom_kills: u32,
    /// The last exit code seen.
    last_exit: Option<i64>,
    /// Why the memory-pressure policy keeps it stopped (see `observe`).
    held: Option<String>,
}

/// The health monitor's view of one container.
#[derive(Debug, Clone)]
struct HealthState {
    failures: u32,
    healthy: Option<bool>,
    last_output: String,
    next_probe: Instant,
    unhealthy: bool,
}

#[derive(Default)]
struct Runtime {
    busy: HashSet<String>,
    services: HashMap<String, ServiceRuntime>,
    health: HashMap<String, HealthState>,
    /// The running container of each desired service, as last observed.
    primaries: HashMap<String, ContainerInfo>,
    /// Fingerprint of each service's env file as last handled (applied,
    /// refused, or written by the agent itself), so neither the agent's own
    /// writes nor a refused edit are handled twice.
    env_seen: HashMap<String, u64>,
    /// Services with an env file check waiting for their lock.
    env_checks: HashSet<String>,
    /// The last OOM kill counted per container and who reported it, so one
    /// kill seen by both Docker and the kernel log counts once (`observe`).
    oom_recent: HashMap<String, (Instant, observe::OomSource)>,
}

/// Host capacity, for refusing specs that cannot fit.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpus: f64,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
}

/// Where the supervisor keeps things and what it may use.
#[derive(Debug, Clone)]
pub struct Setup {
    /// State file and audit log.
    pub state_dir: PathBuf,
    /// Env files.
    pub env_dir: PathBuf,
    /// nginx sites of proxied services.
    pub sites: Sites,
    /// Host capacity, for refusing specs that cannot fit.
    pub capacity: Capacity,
}

/// The host's service supervisor. Shared as `Arc<Supervisor>`.
pub struct Supervisor {
    engine: Engine,
    store: Mutex<Store>,
    runtime: Mutex<Runtime>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    bus: EventBus,
    audit: Audit,
    trigger: mpsc::Sender<()>,
    env_dir: PathBuf,
    sites: Sites,
    capacity: Capacity,
}

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
    /// Opens the state (rebuilding it from Docker labels if it is corrupt),
    /// settles deploys a crash cut short, and starts the reconcile loop, the
    /// event watcher and the health monitor on `tracker`.
    pub async fn start(
        engine: Engine,
        setup: Setup,
        bus: EventBus,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Supervisor>, SupervisorError> {
        let Setup {
            state_dir,
            env_dir,
            sites,
            capacity,
        } = setup;
        let (mut store, loaded) = Store::open(&state_dir).map_err(|e| SupervisorError::Internal(e.to_string()))?;
        if let Loaded::Corrupt(why) = &loaded {
            let observed = engine
                .list_managed()
                .await
                .map_err(|e| SupervisorError::Internal(format!("cannot rebuild state from Docker: {e}")))?;
            let rebuilt = rebuild_from_labels(&observed);
            let names: Vec<&String> = rebuilt.services.keys().collect();
            bus.publish(
                "state-rebuilt",
                "",
                0,
                Severity::Error,
                format!(
                    "The state file was unreadable ({why}); rebuilt it from the labels of {} berth containers: services {names:?}. Revision history before this point is lost.",
                    observed.len()
                ),
            );
            store
                .replace(rebuilt)
                .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        }
        let settled = store
            .settle_interrupted()
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        for (service, revision) in settled.iter().cloned() {
            bus.publish(
                "deploy-interrupted",
                &service,
                revision,
                Severity::Warning,
                format!("The agent stopped during the deploy of revision {revision}; it never took over, so the previous revision stays."),
            );
        }
        let (trigger, trigger_rx) = mpsc::channel(1);
        let sup = Arc::new(Supervisor {
            engine,
            store: Mutex::new(store),
            runtime: Mutex::new(Runtime::default()),
            locks: Mutex::new(HashMap::new()),
            bus,
            audit: Audit::new(&state_dir),
            trigger,
            env_dir,
            sites,
            capacity,
        });
        // Events first, so nothing that happens during the first listing is missed.
        tracker.spawn(
            sup.clone()
                .watch_events(cancel.child_token())
                .instrument(info_span!("docker-events")),
        );
        tracker.spawn(
            sup.clone()
                .reconcile_loop(trigger_rx, cancel.child_token())
                .instrument(info_span!("reconcile")),
        );
        tracker.spawn(
            sup.clone()
                .health_loop(cancel.child_token())
                .instrument(info_span!("health")),
        );
        sup.restore_interrupted_env(&settled);
        let watch = sup.watch_env_dir(tracker, cancel.child_token());
        tracker.spawn(
            sup.clone()
                .env_loop(watch, tracker.clone(), cancel.child_token())
                .instrument(info_span!("env")),
        );
        Ok(sup)
    }

    /// The event bus, for `WatchEvents`.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// The Docker engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Wakes the reconcile loop. Coalesces: one pending wake-up is enough,
    /// since a pass re-reads everything.
    pub fn trigger(&self) {
        let _ = self.trigger.try_send(());
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_for(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(service.to_owned()).or_default().clone()
    }

    /// A service's record, if it is desired.
    pub fn record(&self, service: &str) -> Option<ServiceRecord> {
        self.store().service(service).cloned()
    }

    /// Every desired service's record.
    pub fn records(&self) -> BTreeMap<String, ServiceRecord> {
        self.store().state().services.clone()
    }

    /// The env file of a service.
    pub fn env_path(&self, spec: &ServiceSpec) -> PathBuf {
        self.env_dir.join(spec.env_file_name())
    }

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

    // -------------------------------------------------------------- containers

    /// Creates and starts a container of `spec` at `revision`, with the
    /// env that revision keeps (see [`Supervisor::revision_env`]). Returns
    /// its id.
    pub(crate) async fn create_container(&self, spec: &ServiceSpec, revision: u64) -> Result<String, SupervisorError> {
        let env = self.revision_env(spec, revision)?;
        let mut labels: HashMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(labels::MANAGED.into(), "true".into());
        labels.insert(labels::INSTANCE.into(), self.engine.instance().to_owned());
        labels.insert(labels::SERVICE.into(), spec.name.as_str().to_owned());
        labels.insert(labels::REVISION.into(), revision.to_string());
        labels.insert(
            labels::SPEC.into(),
            serde_json::to_string(spec).map_err(|e| SupervisorError::Internal(e.to_string()))?,
        );
        let req = CreateRequest {
            name: container_name(spec.name.as_str(), revision),
            image: spec.image.as_str().to_owned(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: envfiles::to_docker(&env),
            ports: spec
                .ports
                .iter()
                .map(|p| PortBinding {
                    container_port: p.container_port,
                    protocol: p.protocol.as_str().to_owned(),
                    host_ip: p.host_ip.map(|ip| ip.to_string()),
                    host_port: p.host_port,
                })
                .collect(),
            memory_bytes: spec.resources.memory.map(|m| m.bytes()),
            nano_cpus: spec.resources.cpus.map(|c| c.nano_cpus()),
            labels,
            stop_signal: spec.stop_signal.as_str().to_owned(),
            stop_timeout: spec.stop_timeout.as_std(),
        };
        let id = self
            .engine
            .create(&req)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        if let Err(e) = self.engine.start(&id).await {
            let _ = self.engine.remove(&id).await;
            return Err(SupervisorError::Internal(e.to_string()));
        }
        Ok(id)
    }

    /// Stops then removes a container, giving it the spec's stop timeout.
    pub(crate) async fn stop_and_remove(&self, id: &str, timeout: Duration) -> Result<(), SupervisorError> {
        self.engine
            .stop(id, timeout)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        self.engine
            .remove(id)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))
    }

    // ------------------------------------------------------------- reconcile

    async fn reconcile_loop(self: Arc<Self>, mut trigger: mpsc::Receiver<()>, cancel: CancellationToken) {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake_at: Option<Instant> = None;
        loop {
            let backoff_timer = async {
                match wake_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = resync.tick() => {}
                Some(()) = trigger.recv() => {}
                _ = backoff_timer => {}
            }
            wake_at = self.reconcile_once().await;
        }
        debug!("Reconcile loop stopped.");
    }

    /// One pass: observe, plan, apply. Returns when to look again for a
    /// pending backoff.
    pub async fn reconcile_once(&self) -> Option<Instant> {
        let observed = match self.engine.list_managed().await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "Cannot list containers; retrying.");
                return Some(Instant::now() + Duration::from_secs(2));
            }
        };
        let records = self.records();
        let now = Instant::now();
        let plan = {
            let mut rt = self.runtime();
            // Remember each service's running container for the health
            // monitor, and forget the crash count of a service whose
            // container stayed up long enough, judged by how long it ran
            // (not by when this pass happens to look), so a crash after a
            // long healthy run restarts at once.
            rt.primaries.clear();
            let now_ms = crate::clock::now_ms_signed();
            let stable = STABLE_AFTER.as_millis() as i64;
            for (name, record) in &records {
                let mine = observed
                    .iter()
                    .filter(|c| c.service.as_deref() == Some(name) && c.revision == Some(record.active));
                let mut ran_long = false;
                for c in mine {
                    let started = c.started_at_ms.unwrap_or(now_ms);
                    if c.running {
                        rt.primaries.insert(name.clone(), c.clone());
                        ran_long |= now_ms - started > stable;
                    } else if let Some(finished) = c.finished_at_ms {
                        ran_long |= finished - started > stable;
                    }
                }
                if ran_long && let Some(s) = rt.services.get_mut(name) {
                    s.failures = 0;
                    s.not_before = None;
                }
            }
            let live: HashSet<&str> = observed.iter().map(|c| c.id.as_str()).collect();
            rt.health.retain(|id, _| live.contains(id.as_str()));
            let ctx = Context {
                busy: rt.busy.clone(),
                unhealthy: rt
                    .health
                    .iter()
                    .filter(|(_, h)| h.unhealthy)
                    .map(|(id, _)| id.clone())
                    .collect(),
                not_before: rt
                    .services
                    .iter()
                    .filter_map(|(n, s)| s.not_before.map(|t| (n.clone(), t)))
                    .collect(),
            };
            let desired: BTreeMap<String, Desired<'_>> = records
                .iter()
                .filter_map(|(name, r)| {
                    r.active_revision().map(|rev| {
                        (
                            name.clone(),
                            Desired {
                                revision: rev.number,
                                spec: &rev.spec,
                            },
                        )
                    })
                })
                .collect();
            reconcile::plan(&desired, &observed, &ctx, now)
        };
        let (mut tried, mut failed) = (0, 0);
        for action in plan.actions {
            tried += 1;
            if let Err(e) = self.apply(&action, &records).await {
                failed += 1;
                warn!(action = ?action, error = %e, "Reconcile action failed; will retry.");
            }
        }
        failed += self.converge_sites(&records, &observed).await;
        if tried > 0 {
            debug!(tried, failed, "Reconcile pass done.");
        }
        if failed > 0 {
            // Something is off (port taken, image gone); look again soon
            // rather than waiting for the resync.
            return Some(
                plan.wake_at
                    .map_or(now + Duration::from_secs(2), |w| w.min(now + Duration::from_secs(2))),
            );
        }
        plan.wake_at
    }

    async fn apply(&self, action: &Action, records: &BTreeMap<String, ServiceRecord>) -> Result<(), SupervisorError> {
        let service = match action {
            Action::Create { service, .. }
            | Action::Start { service, .. }
            | Action::Replace { service, .. }
            | Action::UpdateLimits { service, .. } => Some(service.clone()),
            Action::Remove { service, .. } => service.clone(),
        };
        // Act only on a service no deploy holds; the deploy owns it.
        let lock = service.as_deref().map(|s| self.lock_for(s));
        let _guard = match &lock {
            Some(l) => match l.clone().try_lock_owned() {
                Ok(g) => Some(g),
                Err(_) => return Ok(()),
            },
            None => None,
        };
        let spec_of =
            |name: &str, rev: u64| -> Option<Revision> { records.get(name).and_then(|r| r.revision(rev)).cloned() };
        match action {
            Action::Create { service, revision, why } => {
                let rev = spec_of(service, *revision)
                    .ok_or_else(|| SupervisorError::NotFound(format!("revision {revision} of {service}")))?;
                self.create_container(&rev.spec, *revision).await?;
                // Someone removed it; that is drift, not a crash, so no backoff grows.
                self.count_restart(service, false);
                self.bus.publish(
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
                self.engine
                    .start(container)
                    .await
                    .map_err(|e| SupervisorError::Internal(e.to_string()))?;
                self.count_restart(service, true);
                self.bus.publish(
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
                let rev = spec_of(service, *revision)
                    .ok_or_else(|| SupervisorError::NotFound(format!("revision {revision} of {service}")))?;
                self.stop_and_remove(container, rev.spec.stop_timeout.as_std()).await?;
                self.create_container(&rev.spec, *revision).await?;
                self.count_restart(service, true);
                self.bus.publish(
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
                why,
            } => {
                match self.engine.update_limits(container, *memory, *nano_cpus).await {
                    Ok(()) => {}
                    // Docker cannot lift a limit in place; a fresh container can.
                    Err(crate::docker::DockerError::LimitNotRemovable { .. }) => {
                        let revision = revision_of(records, service);
                        let rev = spec_of(service, revision)
                            .ok_or_else(|| SupervisorError::NotFound(format!("revision {revision} of {service}")))?;
                        self.stop_and_remove(container, rev.spec.stop_timeout.as_std()).await?;
                        self.create_container(&rev.spec, revision).await?;
                    }
                    Err(e) => return Err(SupervisorError::Internal(e.to_string())),
                }
                self.bus.publish(
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
                self.stop_and_remove(container, Duration::from_secs(10)).await?;
                let name = service.as_deref().unwrap_or("");
                self.bus.publish(
                    "removed",
                    name,
                    0,
                    Severity::Info,
                    format!("Removed container {}: {why}.", short(container)),
                );
            }
        }
        Ok(())
    }

    /// Makes each proxied service's nginx site match its running container
    /// (restoring a site edited or removed by hand, following a container
    /// whose address changed) and removes sites of services no longer
    /// desired. Returns how many sites could not be fixed.
    async fn converge_sites(&self, records: &BTreeMap<String, ServiceRecord>, observed: &[ContainerInfo]) -> usize {
        let mut failed = 0;
        for (name, record) in records {
            let Some(rev) = record.active_revision() else { continue };
            let Some(proxy) = rev.spec.proxy.as_ref() else { continue };
            let Some(primary) = observed
                .iter()
                .find(|c| c.running && c.service.as_deref() == Some(name) && c.revision == Some(record.active))
            else {
                continue;
            };
            let Some(upstream) = upstream_of(primary, &rev.spec) else {
                continue;
            };
            let lock = self.lock_for(name);
            let Ok(_guard) = lock.try_lock_owned() else { continue };
            let want = nginx::render(&rev.spec, proxy, upstream);
            let had = self.sites.current(name);
            if had.as_deref() == Some(want.as_str()) {
                continue;
            }
            match self.sites.install(name, &want).await {
                Ok(_) => {
                    let why = match had {
                        None => "the site file was missing",
                        Some(_) => "the site file differed from the spec (edited by hand, or the container moved)",
                    };
                    self.bus.publish(
                        "site-restored",
                        name,
                        record.active,
                        Severity::Warning,
                        format!("Rewrote the nginx site: {why}."),
                    );
                }
                Err(e) => {
                    failed += 1;
                    warn!(service = %name, error = %e, "Cannot restore the nginx site.");
                }
            }
        }
        for stale in self.sites.managed().into_iter().filter(|s| !records.contains_key(s)) {
            match self.sites.remove(&stale).await {
                Ok(()) => self.bus.publish(
                    "site-removed",
                    &stale,
                    0,
                    Severity::Info,
                    "Removed the nginx site of a service that is gone.",
                ),
                Err(e) => {
                    failed += 1;
                    warn!(service = %stale, error = %e, "Cannot remove a stale nginx site.");
                }
            }
        }
        failed
    }

    /// The nginx sites.
    pub(crate) fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Counts a restart by the agent. A crash (exit, unhealthy) grows the
    /// backoff for the next one; recreating a removed container does not.
    fn count_restart(&self, service: &str, crash: bool) {
        let mut rt = self.runtime();
        let s = rt.services.entry(service.to_owned()).or_default();
        s.restarts += 1;
        if crash {
            s.failures += 1;
            s.not_before = Some(Instant::now() + reconcile::backoff(s.failures + 1));
        }
    }

    /// Seeds the health monitor with a container that just passed its gate,
    /// so `ps` shows it healthy at once.
    pub(crate) fn mark_healthy(&self, container: &str, spec: &ServiceSpec, output: String) {
        let interval = spec
            .health
            .as_ref()
            .map_or(Duration::from_secs(2), |h| h.interval.as_std());
        self.runtime().health.insert(
            container.to_owned(),
            HealthState {
                failures: 0,
                healthy: Some(true),
                last_output: output,
                next_probe: Instant::now() + interval,
                unhealthy: false,
            },
        );
    }

    // ---------------------------------------------------------------- events

    async fn watch_events(self: Arc<Self>, cancel: CancellationToken) {
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

    // ---------------------------------------------------------------- health

    async fn health_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due: Vec<(String, ContainerInfo, ServiceSpec)> = {
                let records = self.records();
                let rt = self.runtime();
                let now = Instant::now();
                rt.primaries
                    .iter()
                    .filter(|(name, _)| !rt.busy.contains(*name))
                    .filter_map(|(name, c)| {
                        let spec = records.get(name)?.active_revision()?.spec.clone();
                        spec.health.as_ref()?;
                        let due = rt.health.get(&c.id).is_none_or(|h| h.next_probe <= now && !h.unhealthy);
                        due.then(|| (name.clone(), c.clone(), spec))
                    })
                    .collect()
            };
            for (name, container, spec) in due {
                let Some(check) = spec.health.as_ref() else { continue };
                let outcome = health::probe(&self.engine, &container, &spec, check).await;
                self.record_probe(&name, &container, check, outcome);
            }
        }
    }

    fn record_probe(
        &self,
        service: &str,
        container: &ContainerInfo,
        check: &berth_core::spec::HealthCheck,
        outcome: health::Outcome,
    ) {
        let in_start_period = container
            .started_at_ms
            .is_some_and(|t| (crate::clock::now_ms_signed() - t) < check.start_period.as_millis() as i64);
        let mut newly_unhealthy = None;
        {
            let mut rt = self.runtime();
            let h = rt.health.entry(container.id.clone()).or_insert(HealthState {
                failures: 0,
                healthy: None,
                last_output: String::new(),
                next_probe: Instant::now(),
                unhealthy: false,
            });
            h.next_probe = Instant::now() + check.interval.as_std();
            h.last_output = outcome.output.clone();
            if outcome.healthy {
                h.failures = 0;
                h.healthy = Some(true);
            } else if !in_start_period {
                h.failures += 1;
                h.healthy = Some(false);
                if h.failures >= check.retries && !h.unhealthy {
                    h.unhealthy = true;
                    newly_unhealthy = Some(h.failures);
                }
            }
        }
        if let Some(failures) = newly_unhealthy {
            self.bus.publish(
                "unhealthy",
                service,
                container.revision.unwrap_or(0),
                Severity::Warning,
                format!(
                    "Health check failed {failures} times in a row ({}); replacing the container.",
                    outcome.output
                ),
            );
            self.trigger();
        }
    }
}

/// Where nginx should send a proxied service's traffic: the container's own
/// address on the upstream port (no host port needed, so old and new can
/// run side by side), or the published port on loopback when the container
/// has no address of its own (host networking).
pub(crate) fn upstream_of(container: &ContainerInfo, spec: &ServiceSpec) -> Option<std::net::SocketAddr> {
    let port = spec.upstream_port()?;
    match container.ip {
        Some(ip) => Some(std::net::SocketAddr::new(ip, port)),
        None => container
            .host_ports
            .iter()
            .find(|p| p.container_port == port && p.protocol == "tcp")
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p.host_port))),
    }
}

fn revision_of(records: &BTreeMap<String, ServiceRecord>, service: &str) -> u64 {
    records.get(service).map_or(0, |r| r.active)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `NAME-rREV-XXXX`: unique per container, readable in `docker ps`.
fn container_name(service: &str, revision: u64) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag = (nanos ^ std::process::id().rotate_left(16) ^ SEQ.fetch_add(0x9E37, Ordering::Relaxed)) & 0xffff;
    format!("{service}-r{revision}-{tag:04x}")
}

/// Rebuilds desired state from the labels berth puts on its containers:
/// for each service, the newest revision among its containers (running ones
/// first) becomes active.
pub fn rebuild_from_labels(observed: &[ContainerInfo]) -> StateFile {
    let mut state = StateFile::default();
    let mut best: BTreeMap<String, (bool, u64, ServiceSpec)> = BTreeMap::new();
    for c in observed {
        let (Some(service), Some(revision)) = (c.service.clone(), c.revision) else {
            continue;
        };
        let Some(spec) = c
            .labels
            .get(labels::SPEC)
            .and_then(|j| serde_json::from_str::<ServiceSpec>(j).ok())
        else {
            continue;
        };
        let candidate = (c.running, revision, spec);
        match best.get(&service) {
            Some((running, rev, _)) if (*running, *rev) >= (candidate.0, candidate.1) => {}
            _ => {
                best.insert(service, candidate);
            }
        }
    }
    for (service, (_, revision, spec)) in best {
        state.services.insert(
            service,
            ServiceRecord {
                active: revision,
                revisions: vec![Revision {
                    number: revision,
                    created_at_ms: crate::clock::now_ms(),
                    spec,
                    reason: "rebuilt from container labels".into(),
                    author: "agent".into(),
                    status: RevisionStatus::Active,
                    env_keys_changed: Vec::new(),
                    error: None,
                    env: None,
                }],
                next_revision: revision + 1,
            },
        );
    }
    state
}

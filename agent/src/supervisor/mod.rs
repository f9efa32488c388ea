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

mod containers;
pub mod deploy;
pub mod env;
mod monitor;
mod observe;
mod pass;
mod rebuild;
mod view;
mod watch;

pub use containers::upstream_of;
pub use observe::{MetricsTarget, OomSource};
pub use rebuild::rebuild_from_labels;
pub use view::ServiceView;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info_span};

use crate::audit::Audit;

use crate::docker::{ContainerInfo, Engine};
use crate::events::{EventBus, Severity};
use crate::nginx::Sites;
use crate::state::{Loaded, ServiceRecord, Store};
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
}

fn revision_of(records: &BTreeMap<String, ServiceRecord>, service: &str) -> u64 {
    records.get(service).map_or(0, |r| r.active)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

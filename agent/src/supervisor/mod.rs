//! The supervisor: owns the host's services and keeps them converged.
//!
//! **One owner.** A single task ([`owner`]) owns the desired state (the
//! [`StateFile`], written durably before any change is acknowledged) and
//! everything learnt at run time ([`runtime`]: crash counts and backoff,
//! restarts, OOM kills, health verdicts, memory-pressure holds, env-file
//! fingerprints) and decides who may act on which service ([`permit`]).
//! Everyone else holds a cloneable [`Supervisor`] handle and sends it
//! commands ([`command`]) over one bounded channel, with replies on
//! oneshots. After each change the owner publishes an immutable
//! [`Snapshot`]; reads (`List`, `Get`, `History`, `GetEnv`, the metrics
//! targets) derive their views from it, plus a Docker listing, and never
//! wait for the owner or an fsync.
//!
//! **Workers.** Long work runs outside the owner in tasks on the agent's
//! tracker that report back: changes ([`deploy`], [`rollout`], [`env`]),
//! env-file checks ([`envcheck`]), the Docker event watcher
//! ([`docker_events`]), the health monitor ([`monitor`]), the kernel-log
//! OOM consumer ([`oom`]), and the reconcile passes ([`crate::reconcile`],
//! started by `lib.rs`).
//! The owner never calls Docker. A change holds its service's permit for
//! its whole length and a second change of that service queues behind it;
//! the reconciler acts only on services it can permit without waiting and
//! whose state did not move since it looked, so a deploy and the
//! reconciler never act on one service at once.
//!
//! **Inputs**: calls through the handle (gRPC, the pressure policy), Docker
//! events, probe results, env-dir watcher messages, container ids from the
//! kernel log. **Outputs**: containers (through [`crate::docker`]), env
//! files, nginx sites, `state_dir/state.json`, events on the [`EventBus`],
//! audit lines, the snapshot and the metrics targets.
//!
//! **Before Docker answers** the handle exists but every call gets
//! UNAVAILABLE, "the agent is not supervising services yet: WHY";
//! [`Starter::start`] brings the owner and its helpers up once `lib.rs` has
//! reached Docker.
//!
//! **Shutdown.** On cancel the helpers stop; a deploy waiting in its health
//! gate settles at once (its revision becomes *interrupted* and the previous
//! one runs again, or, blue-green, never stopped); changes still queued are
//! refused. The owner stops once no permit is held, so what settles can
//! still record how it ended.

mod command;
mod containers;
pub mod deploy;
mod docker_events;
pub mod env;
mod envcheck;
mod handle;
mod holder;
mod maintenance;
mod monitor;
mod oom;
mod owner;
mod permit;
pub mod plan;
mod rebuild;
mod rollout;
mod runtime;
mod snapshot;
mod timing;
mod view;

pub(crate) use containers::start;
pub use containers::{soft_limits, upstream_of};
pub use rebuild::rebuild_from_labels;
pub use runtime::{HealthState, OomSource, ServiceRuntime, backoff};
pub use snapshot::Snapshot;
pub use view::ServiceView;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info_span};

use crate::audit::Audit;
use crate::docker::Engine;
use crate::events::{EventBus, Severity};
use crate::metrics::MetricsTarget;
use crate::nginx::Sites;
use crate::state::{Loaded, StateDir, StateFile};
use berth_core::spec::ServiceSpec;

use command::Command;
use owner::Owner;
use permit::Permits;

/// Commands queued for the owner. Senders are a handful of tasks (gRPC
/// handlers, workers, the event watcher, the health monitor), most of which
/// wait for a reply before sending again, so the queue rarely holds more
/// than one per task; 64 absorbs a burst of Docker events, and beyond it
/// senders wait instead of memory growing.
const COMMAND_QUEUE: usize = 64;

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
    /// Not supervising (Docker not reached yet, or shutting down); try again.
    #[error("{0}")]
    Unavailable(String),
    /// Docker or the disk failed.
    #[error("{0}")]
    Internal(String),
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
pub struct Setup {
    /// State file.
    pub state_dir: PathBuf,
    /// Env files.
    pub env_dir: PathBuf,
    /// nginx sites of proxied services.
    pub sites: Sites,
    /// Host capacity, for refusing specs that cannot fit.
    pub capacity: Capacity,
    /// Where events go.
    pub bus: EventBus,
    /// The audit trail (shared with the rest of the agent).
    pub audit: Audit,
    /// Where the owner publishes what the metrics collector reads.
    pub metrics_targets: watch::Sender<Arc<Vec<MetricsTarget>>>,
    /// Ids of containers the kernel log says were OOM-killed, if read.
    pub oom_ids: Option<mpsc::Receiver<String>>,
}

/// Whether the supervisor runs yet.
#[derive(Clone)]
enum Phase {
    /// Docker has not been reached; why.
    Waiting(String),
    /// Supervising, through this engine.
    Running(Engine),
}

/// The handle to the supervisor: cheap to clone, safe to hold before the
/// supervisor runs (calls are refused with the reason until then).
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    phase: watch::Receiver<Phase>,
    bus: EventBus,
    audit: Audit,
    env_dir: PathBuf,
    sites: Sites,
    capacity: Capacity,
    trigger: mpsc::Sender<()>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// What [`Starter::start`] needs and hands to the owner; used once.
pub struct Starter {
    sup: Supervisor,
    state_dir: PathBuf,
    phase: watch::Sender<Phase>,
    parts: Option<OwnerParts>,
}

struct OwnerParts {
    commands: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    targets: watch::Sender<Arc<Vec<MetricsTarget>>>,
    released: (mpsc::UnboundedSender<u64>, mpsc::UnboundedReceiver<u64>),
    triggers: mpsc::Receiver<()>,
    oom_ids: Option<mpsc::Receiver<String>>,
}

impl Supervisor {
    /// A handle, not yet supervising, and the [`Starter`] that makes it
    /// supervise. Workers run on `tracker`; `cancel` stops everything.
    pub fn new(setup: Setup, tracker: TaskTracker, cancel: CancellationToken) -> (Supervisor, Starter) {
        let Setup {
            state_dir,
            env_dir,
            sites,
            capacity,
            bus,
            audit,
            metrics_targets,
            oom_ids,
        } = setup;
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let (phase_tx, phase) = watch::channel(Phase::Waiting("Docker has not been reached yet".into()));
        // One pending wake-up is enough: a pass re-reads everything.
        let (trigger, triggers) = mpsc::channel(1);
        let sup = Supervisor {
            inner: Arc::new(Inner {
                commands: commands_tx,
                snapshot,
                phase,
                bus,
                audit,
                env_dir,
                sites,
                capacity,
                trigger,
                tracker,
                cancel,
            }),
        };
        let starter = Starter {
            sup: sup.clone(),
            state_dir,
            phase: phase_tx,
            parts: Some(OwnerParts {
                commands,
                snapshot: snapshot_tx,
                targets: metrics_targets,
                released: mpsc::unbounded_channel(),
                triggers,
                oom_ids,
            }),
        };
        (sup, starter)
    }

    /// The event bus, for `WatchEvents`.
    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// The nginx sites.
    pub(crate) fn sites(&self) -> &Sites {
        &self.inner.sites
    }

    /// The env file of a service.
    pub fn env_path(&self, spec: &ServiceSpec) -> PathBuf {
        self.inner.env_dir.join(spec.env_file_name())
    }

    pub(crate) fn env_dir(&self) -> &Path {
        &self.inner.env_dir
    }

    pub(crate) fn capacity(&self) -> Capacity {
        self.inner.capacity
    }

    /// The tracker workers run on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Fires when the agent shuts down.
    pub fn cancel(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Whether the supervisor runs (Docker was reached and the state read).
    pub fn is_running(&self) -> bool {
        matches!(*self.inner.phase.borrow(), Phase::Running(_))
    }

    /// The Docker engine, or UNAVAILABLE saying what the agent waits for.
    pub fn engine(&self) -> Result<Engine, SupervisorError> {
        match &*self.inner.phase.borrow() {
            Phase::Running(engine) => Ok(engine.clone()),
            Phase::Waiting(why) => Err(SupervisorError::Unavailable(format!(
                "the agent is not supervising services yet: {why}"
            ))),
        }
    }

    /// The newest snapshot (empty before the supervisor runs).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// Follows the snapshots as the owner publishes them (the health
    /// monitor sleeps on it between due probes).
    pub(super) fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.snapshot.clone()
    }

    /// The newest snapshot, once the supervisor runs.
    pub fn ready_snapshot(&self) -> Result<Arc<Snapshot>, SupervisorError> {
        self.engine()?;
        Ok(self.snapshot())
    }

    /// Wakes the reconcile loop. Coalesces: one pending wake-up is enough,
    /// since a pass re-reads everything.
    pub fn trigger(&self) {
        let _ = self.inner.trigger.try_send(());
    }
}

impl Starter {
    /// Records why the supervisor does not run yet (shown to callers).
    pub fn waiting(&self, why: String) {
        self.phase.send_replace(Phase::Waiting(why));
    }

    /// Opens the state (rebuilding it from Docker labels if it is corrupt),
    /// settles deploys an agent crash cut short, and starts the owner, the
    /// Docker event watcher, the health monitor, the env loop and the OOM
    /// consumer on the tracker. Returns the reconcile loop's wake-ups, for
    /// `lib.rs` to start it. May be called again after an error.
    pub async fn start(&mut self, engine: Engine) -> Result<mpsc::Receiver<()>, SupervisorError> {
        let sup = self.sup.clone();
        let bus = sup.bus().clone();
        let internal = |e: crate::state::StateError| SupervisorError::Internal(e.to_string());
        let (dir, mut state, loaded) = StateDir::open(&self.state_dir).map_err(internal)?;
        if let Loaded::Corrupt(why) = &loaded {
            let observed = engine
                .list_managed()
                .await
                .map_err(|e| SupervisorError::Internal(format!("cannot rebuild state from Docker: {e}")))?;
            state = rebuild_from_labels(&observed);
            dir.write(&state).map_err(internal)?;
            let names: Vec<&String> = state.services.keys().collect();
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
        }
        let settled = state.settle_interrupted();
        if !settled.is_empty() {
            dir.write(&state).map_err(internal)?;
        }
        for (service, revision) in settled.iter().cloned() {
            bus.publish(
                "deploy-interrupted",
                &service,
                revision,
                Severity::Warning,
                format!("The agent stopped during the deploy of revision {revision}; it never took over, so the previous revision stays."),
            );
        }
        let Some(parts) = self.parts.take() else {
            return Err(SupervisorError::Internal("the supervisor was started twice".into()));
        };
        self.spawn(parts, dir, state, engine, &settled).await
    }

    async fn spawn(
        &self,
        parts: OwnerParts,
        dir: StateDir,
        state: StateFile,
        engine: Engine,
        settled: &[(String, u64)],
    ) -> Result<mpsc::Receiver<()>, SupervisorError> {
        let sup = &self.sup;
        let tracker = sup.tracker();
        let cancel = sup.cancel();
        let (released_tx, released_rx) = parts.released;
        let owner = Owner::new(
            dir,
            state,
            Permits::new(released_tx),
            sup.bus().clone(),
            sup.inner.trigger.clone(),
            parts.snapshot,
            parts.targets,
        );
        tracker.spawn(
            owner
                .run(parts.commands, released_rx, cancel.child_token())
                .instrument(info_span!("supervisor")),
        );
        self.phase.send_replace(Phase::Running(engine));
        // Events first, so nothing that happens during the first listing is missed.
        tracker.spawn(docker_events::run(sup.clone(), cancel.child_token()).instrument(info_span!("docker-events")));
        tracker.spawn(monitor::run(sup.clone(), cancel.child_token()).instrument(info_span!("health")));
        sup.restore_interrupted_env(settled).await;
        let env_watch = envcheck::watch_env_dir(sup, cancel.child_token());
        tracker.spawn(envcheck::run(sup.clone(), env_watch, cancel.child_token()).instrument(info_span!("env")));
        if let Some(ids) = parts.oom_ids {
            tracker.spawn(oom::run(sup.clone(), ids, cancel.child_token()).instrument(info_span!("oomwatch")));
        }
        Ok(parts.triggers)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

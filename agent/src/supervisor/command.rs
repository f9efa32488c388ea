//! What may be asked of the owner task: the [`Command`] enum, sent over the
//! supervisor's one bounded channel, each with a oneshot for its reply
//! where the sender waits for one. Data only; the owner's side is
//! [`super::owner`], the senders' side [`super::handle`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::SupervisorError;
use super::permit::{Acquired, Permit};
use super::runtime::OomSource;
use crate::docker::{ContainerInfo, EngineEvent};
use crate::health;
use crate::state::{NewRevision, RevisionStatus, StateError};
use berth_core::envfile::Vars;
use berth_core::spec::HealthCheck;

/// A change to the desired state; acknowledged once it is on disk.
#[derive(Debug)]
pub(crate) enum StateChange {
    /// A new revision (see [`crate::state::StateFile::add`]); replies its number.
    Add(Box<NewRevision>, RevisionStatus),
    /// Makes a revision active.
    Activate { service: String, revision: u64 },
    /// A pending revision failed.
    Fail {
        service: String,
        revision: u64,
        error: String,
    },
    /// A pending revision was cut short by the agent shutting down.
    Interrupt {
        service: String,
        revision: u64,
        why: String,
    },
    /// Fills in the env of an old revision that kept none.
    AdoptEnv { service: String, revision: u64, env: Vars },
    /// Forgets a service, and what was learnt about it at run time.
    Remove { service: String },
    /// Turns maintenance mode of a service on or off.
    Maintenance { service: String, on: bool },
}

/// What a reconcile pass plans with, besides the snapshot it started from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observation {
    /// Containers that stay unhealthy.
    pub unhealthy: HashSet<String>,
    /// Services not to restart before an instant (backoff, holds).
    pub not_before: HashMap<String, Instant>,
    /// Containers whose last counted health verdict was a pass.
    pub healthy: HashSet<String>,
}

/// One request to the owner.
#[derive(Debug)]
pub(crate) enum Command {
    /// A change wants its service (see [`super::permit`]).
    Acquire {
        service: String,
        reply: oneshot::Sender<Acquired>,
    },
    /// A quiet permit on `service`, only if free (the pressure policy).
    TryAcquire {
        service: String,
        reply: oneshot::Sender<Option<Permit>>,
    },
    /// Quiet permits for a reconcile pass: each service whose generation is
    /// still the given one and that nobody holds.
    Claim {
        wanted: Vec<(String, u64)>,
        reply: oneshot::Sender<Vec<Permit>>,
    },
    /// Changes the desired state durably; replies the new revision's number
    /// for [`StateChange::Add`], else 0.
    Commit {
        change: StateChange,
        reply: oneshot::Sender<Result<u64, StateError>>,
    },
    /// What a reconcile pass saw in Docker.
    Observed {
        containers: Vec<ContainerInfo>,
        reply: oneshot::Sender<Observation>,
    },
    /// The reconciler restarted or recreated a container.
    CountRestart {
        service: String,
        crash: bool,
        reply: oneshot::Sender<()>,
    },
    /// A new container passed its gate: it is healthy, and (when it could
    /// be inspected) the service's running container.
    Healthy {
        service: String,
        container: String,
        interval: Duration,
        output: String,
        version: Option<String>,
        info: Option<ContainerInfo>,
        reply: oneshot::Sender<()>,
    },
    /// A deploy finished well: no backoff is pending for the service.
    Deployed {
        service: String,
        reply: oneshot::Sender<()>,
    },
    /// The health monitor probed a container with its check of `role`.
    Probed {
        service: String,
        container: ContainerInfo,
        role: health::Role,
        check: HealthCheck,
        outcome: health::Outcome,
        reply: oneshot::Sender<()>,
    },
    /// Something happened to a berth container.
    DockerEvent(EngineEvent),
    /// An OOM kill, from Docker or the kernel log.
    Oom {
        service: String,
        revision: u64,
        container: String,
        source: OomSource,
    },
    /// Marks `service` held stopped; replies the container to stop.
    Hold {
        service: String,
        why: String,
        reply: oneshot::Sender<Result<String, SupervisorError>>,
    },
    /// Lets the reconciler start `service` again; replies whether it was held.
    ReleaseHold {
        service: String,
        reply: oneshot::Sender<bool>,
    },
    /// Remembers the fingerprint of `service`'s env file as handled;
    /// replies the one remembered before.
    EnvSeen {
        service: String,
        print: u64,
        reply: oneshot::Sender<Option<u64>>,
    },
    /// Whether to schedule a check of `service`'s env file (see
    /// [`super::runtime::Runtime::want_env_check`]).
    EnvCheckWanted {
        service: String,
        print: Option<u64>,
        reply: oneshot::Sender<bool>,
    },
    /// A scheduled env-file check got its permit and is running.
    EnvCheckStarted { service: String },
}

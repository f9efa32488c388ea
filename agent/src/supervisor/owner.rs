//! The owner task: the one place the desired state and the run-time
//! knowledge change.
//!
//! Inputs: [`Command`]s on the supervisor's bounded channel, and permit
//! releases on their own unbounded one (one message per permit handed out).
//! Outputs: the state file (every [`StateChange`] is written to disk, on a
//! blocking thread, before it is acknowledged), a new [`Snapshot`] and the
//! metrics targets after every change, events on the bus, and reconcile
//! triggers. It never calls Docker and never waits for a worker: each
//! command is a few map operations, or one state-file write.
//!
//! Shutdown: on cancel, queued changes are refused and new permits are no
//! longer handed out; the task ends once no permit is held, so a deploy
//! settling during shutdown can still record how it ended. It also ends
//! when every handle is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::command::{Command, Observation, StateChange};
use super::permit::{Acquired, Holder, Permits};
use super::runtime::{DepsChange, OomSource, Runtime};
use super::snapshot::Snapshot;
use super::{SupervisorError, short};
use crate::clock;
use crate::docker::{ContainerInfo, EngineEvent};
use crate::events::{EventBus, Severity};
use crate::health;
use crate::metrics::MetricsTarget;
use crate::state::{StateDir, StateError, StateFile};
use berth_core::spec::HealthCheck;

/// The owner's state.
pub(super) struct Owner {
    dir: StateDir,
    state: Arc<StateFile>,
    rt: Runtime,
    permits: Permits,
    bus: EventBus,
    trigger: mpsc::Sender<()>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    targets: watch::Sender<Arc<Vec<MetricsTarget>>>,
    generations: HashMap<String, u64>,
    stopping: bool,
}

impl Owner {
    /// An owner of `state` (already on disk in `dir`).
    pub(super) fn new(
        dir: StateDir,
        state: StateFile,
        permits: Permits,
        bus: EventBus,
        trigger: mpsc::Sender<()>,
        snapshot: watch::Sender<Arc<Snapshot>>,
        targets: watch::Sender<Arc<Vec<MetricsTarget>>>,
    ) -> Self {
        let mut owner = Owner {
            dir,
            state: Arc::new(state),
            rt: Runtime::default(),
            permits,
            bus,
            trigger,
            snapshot,
            targets,
            generations: HashMap::new(),
            stopping: false,
        };
        // Readers see the state read from disk from the moment the
        // supervisor counts as running, before this task first runs.
        owner.publish();
        owner
    }

    /// Serves commands until shut down (see the module docs).
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut released: mpsc::UnboundedReceiver<u64>,
        cancel: CancellationToken,
    ) {
        loop {
            if self.stopping && self.permits.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(id) = released.recv() => self.release(id),
                () = cancel.cancelled(), if !self.stopping => {
                    self.stopping = true;
                    self.permits.refuse_waiting();
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
            }
        }
        debug!("Supervisor owner stopped.");
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Acquire { service, reply } => {
                // Shutting down: dropping the reply tells the caller so.
                if self.stopping {
                    return;
                }
                let acquired = self.permits.acquire(&service);
                if matches!(acquired, Acquired::Now(_)) {
                    self.changed(&service);
                    self.publish();
                }
                // A caller that went away drops the permit, which releases it.
                let _ = reply.send(acquired);
            }
            Command::TryAcquire { service, reply } => {
                let permit = (!self.stopping)
                    .then(|| self.permits.try_acquire(&service, Holder::Quiet))
                    .flatten();
                let _ = reply.send(permit);
            }
            Command::Claim { wanted, reply } => {
                let mut permits = Vec::new();
                if !self.stopping {
                    for (service, generation) in wanted {
                        if self.generation(&service) == generation
                            && let Some(permit) = self.permits.try_acquire(&service, Holder::Quiet)
                        {
                            permits.push(permit);
                        }
                    }
                }
                let _ = reply.send(permits);
            }
            Command::Commit { change, reply } => {
                let result = self.commit(change).await;
                let _ = reply.send(result);
            }
            Command::Observed { containers, reply } => {
                self.rt
                    .observe(&self.state.services, &containers, clock::now_ms_signed());
                self.publish();
                let _ = reply.send(Observation {
                    unhealthy: self.rt.unhealthy(),
                    not_before: self.rt.not_before(),
                    healthy: self.rt.healthy(),
                });
            }
            Command::CountRestart { service, crash, reply } => {
                self.rt.count_restart(&service, crash, Instant::now());
                self.publish();
                let _ = reply.send(());
            }
            Command::Healthy {
                service,
                container,
                interval,
                output,
                version,
                info,
                reply,
            } => {
                self.rt
                    .mark_healthy(&container, interval, output, version, Instant::now());
                if let Some(info) = info {
                    self.rt.primaries.insert(service, info);
                }
                self.publish();
                let _ = reply.send(());
            }
            Command::Deployed { service, reply } => {
                self.rt.deployed(&service);
                self.publish();
                let _ = reply.send(());
            }
            Command::Probed {
                service,
                container,
                role,
                check,
                outcome,
                reply,
            } => {
                self.probed(&service, &container, role, &check, &outcome);
                self.publish();
                let _ = reply.send(());
            }
            Command::DockerEvent(ev) => self.on_event(&ev),
            Command::Oom {
                service,
                revision,
                container,
                source,
            } => self.record_oom(&service, revision, &container, source),
            Command::Hold { service, why, reply } => {
                let held = if self.state.service(&service).is_none() {
                    Err(SupervisorError::NotFound(format!("no service named {service:?}")))
                } else {
                    self.rt
                        .hold(&service, why, Instant::now())
                        .ok_or_else(|| SupervisorError::Refused(format!("{service} has no running container to stop")))
                };
                self.publish();
                let _ = reply.send(held);
            }
            Command::ReleaseHold { service, reply } => {
                let released = self.rt.release_hold(&service);
                if released {
                    self.publish();
                    self.wake_reconciler();
                }
                let _ = reply.send(released);
            }
            Command::EnvSeen { service, print, reply } => {
                let _ = reply.send(self.rt.env_seen.insert(service, print));
            }
            Command::EnvCheckWanted { service, print, reply } => {
                let _ = reply.send(self.rt.want_env_check(&service, print));
            }
            Command::EnvCheckStarted { service } => {
                self.rt.env_checks.remove(&service);
            }
        }
    }

    /// Applies `change` to a copy of the state, writes the copy durably and
    /// only then makes it the state. A failed write changes nothing.
    async fn commit(&mut self, change: StateChange) -> Result<u64, StateError> {
        let mut next = (*self.state).clone();
        let (service, number, wrote) = match change {
            StateChange::Add(new, status) => {
                let service = new.spec.name.as_str().to_owned();
                let number = next.add(*new, status);
                (service, number, true)
            }
            StateChange::Activate { service, revision } => {
                next.activate(&service, revision);
                (service, 0, true)
            }
            StateChange::Fail {
                service,
                revision,
                error,
            } => {
                next.fail(&service, revision, &error);
                (service, 0, true)
            }
            StateChange::Interrupt { service, revision, why } => {
                next.interrupt(&service, revision, &why);
                (service, 0, true)
            }
            StateChange::AdoptEnv { service, revision, env } => {
                let changed = next.adopt_env(&service, revision, env);
                (service, 0, changed)
            }
            StateChange::Maintenance { service, on } => {
                let changed = next.set_maintenance(&service, on);
                (service, u64::from(changed), changed)
            }
            StateChange::Remove { service } => {
                self.rt.forget(&service);
                let existed = next.remove(&service);
                (service, 0, existed)
            }
        };
        if wrote {
            let next = Arc::new(next);
            let (dir, copy) = (self.dir.clone(), next.clone());
            match tokio::task::spawn_blocking(move || dir.write(&copy)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(StateError::Write {
                        path: self.dir.file(),
                        source: std::io::Error::other(format!("the writer thread failed: {e}")),
                    });
                }
            }
            self.state = next;
            self.changed(&service);
        }
        self.publish();
        Ok(number)
    }

    fn release(&mut self, id: u64) {
        let Some(released) = self.permits.release(id) else {
            return;
        };
        if released.was == Holder::Change || released.handed_on {
            self.changed(&released.service);
        }
        self.publish();
        if released.was == Holder::Change {
            // A finished change may leave things to converge.
            self.wake_reconciler();
        }
    }

    fn on_event(&mut self, ev: &EngineEvent) {
        let Some(service) = ev.service.clone() else {
            self.wake_reconciler();
            return;
        };
        let revision = ev.revision.unwrap_or(0);
        match ev.action.as_str() {
            "oom" => self.record_oom(&service, revision, &ev.container_id, OomSource::Docker),
            action if action.starts_with("health_status") => self.on_docker_health(&service, revision, ev),
            "update" => {
                self.rt.services.entry(service.clone()).or_default().updates += 1;
                self.publish();
            }
            "die" => {
                self.rt.exited(&service, &ev.container_id, ev.exit_code);
                self.publish();
                if self.permits.holder(&service) != Some(Holder::Change) {
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
            self.wake_reconciler();
        }
    }

    /// Counts an OOM kill and says so, unless the other source already did.
    /// Takes in one probe by the health monitor: a live check failing
    /// `retries` times in a row wakes the reconciler to replace the
    /// container; a deps check only marks the service degraded (an event
    /// each way); a version read updates what `ps` shows.
    fn probed(
        &mut self,
        service: &str,
        container: &ContainerInfo,
        role: health::Role,
        check: &HealthCheck,
        outcome: &health::Outcome,
    ) {
        let now_ms = clock::now_ms_signed();
        let revision = container.revision.unwrap_or(0);
        match role {
            health::Role::Live => {
                if let Some(failures) = self.rt.record_probe(container, check, outcome, Instant::now(), now_ms) {
                    let why = format!("Health check failed {failures} times in a row ({})", outcome.output);
                    self.replacing(service, revision, &why);
                }
            }
            health::Role::Deps => match self.rt.record_deps(container, check, outcome, Instant::now(), now_ms) {
                Some(DepsChange::Degraded(failures)) => self.bus.publish(
                    "degraded",
                    service,
                    revision,
                    Severity::Warning,
                    format!(
                        "Dependency check failed {failures} times in a row ({}); the service is degraded, \
                         its container is left running.",
                        outcome.output
                    ),
                ),
                Some(DepsChange::Recovered) => self.bus.publish(
                    "recovered",
                    service,
                    revision,
                    Severity::Info,
                    format!("Dependency check passes again ({}).", outcome.output),
                ),
                None => {}
            },
            health::Role::Version => {
                let version = outcome.healthy.then(|| outcome.output.clone());
                self.rt.record_version(&container.id, version, Instant::now());
            }
        }
    }

    /// A `health_status` event: for a service without `[health]`, the
    /// image's HEALTHCHECK is its live check, so `unhealthy` replaces the
    /// container. A change in progress gates its new container itself.
    fn on_docker_health(&mut self, service: &str, revision: u64, ev: &EngineEvent) {
        let image_check = self
            .state
            .services
            .get(service)
            .and_then(|r| r.active_revision())
            .is_some_and(|r| r.spec.health.is_none() && r.number == revision);
        if !image_check || self.permits.holder(service) == Some(Holder::Change) {
            return;
        }
        let healthy = ev.action.ends_with(": healthy");
        if self.rt.record_docker_health(&ev.container_id, healthy, Instant::now()) {
            let why = format!(
                "The image's HEALTHCHECK reports container {} unhealthy (Docker's health status)",
                short(&ev.container_id)
            );
            self.replacing(service, revision, &why);
        }
        self.publish();
    }

    /// A container of `service` just became unhealthy: says so, and wakes
    /// the reconciler to replace it.
    fn replacing(&mut self, service: &str, revision: u64, why: &str) {
        self.bus.publish(
            "unhealthy",
            service,
            revision,
            Severity::Warning,
            format!("{why}; replacing the container."),
        );
        self.wake_reconciler();
    }

    fn record_oom(&mut self, service: &str, revision: u64, container: &str, source: OomSource) {
        if !self.rt.record_oom(service, container, source, Instant::now()) {
            return;
        }
        self.publish();
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

    /// Wakes the reconcile loop. Coalesces: one pending wake-up is enough,
    /// since a pass re-reads everything.
    fn wake_reconciler(&self) {
        let _ = self.trigger.try_send(());
    }

    fn generation(&self, service: &str) -> u64 {
        self.generations.get(service).copied().unwrap_or(0)
    }

    fn changed(&mut self, service: &str) {
        *self.generations.entry(service.to_owned()).or_default() += 1;
    }

    fn publish(&mut self) {
        let snapshot = Snapshot {
            state: self.state.clone(),
            services: self.rt.services.clone(),
            health: self.rt.health.clone(),
            primaries: self.rt.primaries.clone(),
            changing: self.permits.changing().map(str::to_owned).collect(),
            generations: self.generations.clone(),
        };
        self.targets.send_replace(Arc::new(snapshot.metrics_targets()));
        self.snapshot.send_replace(Arc::new(snapshot));
    }
}

/// Waits for the owner's reply, or says the agent is stopping.
pub(super) async fn reply<T>(rx: oneshot::Receiver<T>) -> Result<T, SupervisorError> {
    rx.await.map_err(|_| stopping())
}

/// The error for a call the owner can no longer take.
pub(super) fn stopping() -> SupervisorError {
    SupervisorError::Unavailable("the agent is shutting down".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{NewRevision, RevisionStatus};
    use crate::supervisor::permit::Permit;

    struct Running {
        commands: mpsc::Sender<Command>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        targets: watch::Receiver<Arc<Vec<MetricsTarget>>>,
        cancel: CancellationToken,
        owner: tokio::task::JoinHandle<()>,
        dir: tempfile::TempDir,
    }

    fn start() -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state_dir, state, _) = StateDir::open(dir.path()).expect("open");
        let (released_tx, released_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let (targets, targets_rx) = watch::channel(Arc::new(Vec::new()));
        let (trigger, _triggers) = mpsc::channel(1);
        let owner = Owner::new(
            state_dir,
            state,
            Permits::new(released_tx),
            EventBus::new(),
            trigger,
            snapshot_tx,
            targets,
        );
        let (commands, rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        // On a tracker like everywhere else (dropped at once: the task runs on).
        let owner = tokio_util::task::TaskTracker::new().spawn(owner.run(rx, released_rx, cancel.clone()));
        Running {
            commands,
            snapshot,
            targets: targets_rx,
            cancel,
            owner,
            dir,
        }
    }

    async fn ask<T>(r: &Running, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        r.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    async fn acquire(r: &Running, service: &str) -> Acquired {
        ask(r, |reply| Command::Acquire {
            service: service.into(),
            reply,
        })
        .await
        .expect("the owner answers")
    }

    fn revision(name: &str) -> NewRevision {
        NewRevision {
            spec: berth_core::spec::parse(&format!("name = \"{name}\"\nimage = \"app:v1\"\n")).expect("spec"),
            env: None,
            env_keys_changed: Vec::new(),
            reason: "apply".into(),
            author: "alice".into(),
            now_ms: 1,
        }
    }

    #[tokio::test]
    async fn a_change_is_on_disk_when_acknowledged_and_in_the_next_snapshot() {
        let r = start();
        let before = r.snapshot.borrow().generation("web");
        let number = ask(&r, |reply| Command::Commit {
            change: StateChange::Add(Box::new(revision("web")), RevisionStatus::Pending),
            reply,
        })
        .await
        .expect("answered")
        .expect("written");
        assert_eq!(number, 1);
        let (_, on_disk, _) = StateDir::open(r.dir.path()).expect("reopen");
        assert_eq!(on_disk.service("web").map(|s| s.revisions.len()), Some(1));
        let snap = r.snapshot.borrow().clone();
        assert_eq!(snap.record("web").map(|s| s.next_revision), Some(2));
        assert!(snap.generation("web") > before, "the reconciler sees it moved");
    }

    #[tokio::test]
    async fn a_docker_update_reaches_the_metrics_targets() {
        let r = start();
        ask(&r, |reply| Command::Commit {
            change: StateChange::Add(Box::new(revision("web")), RevisionStatus::Active),
            reply,
        })
        .await
        .expect("answered")
        .expect("written");
        let updates = |r: &Running| {
            r.targets
                .borrow()
                .iter()
                .find(|t| t.service == "web")
                .map(|t| t.updates)
        };
        assert_eq!(updates(&r), Some(0));
        let update = EngineEvent {
            action: "update".into(),
            container_id: "c1".into(),
            service: Some("web".into()),
            revision: Some(1),
            exit_code: None,
            time_ms: 1,
        };
        r.commands
            .send(Command::DockerEvent(update))
            .await
            .expect("the owner runs");
        // The next command is answered after the event was handled.
        ask(&r, |reply| Command::Commit {
            change: StateChange::Add(Box::new(revision("db")), RevisionStatus::Pending),
            reply,
        })
        .await
        .expect("answered")
        .expect("written");
        assert_eq!(
            updates(&r),
            Some(1),
            "the collector re-reads the limits at its next pass"
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_refused_and_changes_nothing() {
        let r = start();
        std::fs::create_dir(r.dir.path().join("state.json.tmp")).expect("block the temp file");
        let written = ask(&r, |reply| Command::Commit {
            change: StateChange::Add(Box::new(revision("web")), RevisionStatus::Pending),
            reply,
        })
        .await
        .expect("answered");
        assert!(written.is_err());
        assert!(r.snapshot.borrow().record("web").is_none());
    }

    #[tokio::test]
    async fn changes_of_one_service_queue_and_shutdown_waits_only_for_the_holder() {
        let r = start();
        let Acquired::Now(first) = acquire(&r, "web").await else {
            panic!("web was free")
        };
        assert!(r.snapshot.borrow().changing.contains("web"), "ps says deploying");
        let Acquired::Queued(second) = acquire(&r, "web").await else {
            panic!("web is held")
        };
        let generation = r.snapshot.borrow().generation("web");
        let claimed: Vec<Permit> = ask(&r, |reply| Command::Claim {
            wanted: vec![("web".into(), generation), ("db".into(), 0)],
            reply,
        })
        .await
        .expect("answered");
        let services: Vec<&str> = claimed.iter().map(Permit::service).collect();
        assert_eq!(
            services,
            ["db"],
            "the reconciler never acts on a service a change holds"
        );
        drop(claimed);

        drop(first);
        let second = second.await.expect("the queued change runs next");
        let Acquired::Queued(third) = acquire(&r, "web").await else {
            panic!("web is held again")
        };
        r.cancel.cancel();
        assert!(third.await.is_err(), "a change still queued at shutdown never starts");
        // The holder can still record how it ended.
        let recorded = ask(&r, |reply| Command::Commit {
            change: StateChange::Add(Box::new(revision("web")), RevisionStatus::Pending),
            reply,
        })
        .await;
        assert!(matches!(recorded, Some(Ok(1))), "{recorded:?}");
        assert!(!r.owner.is_finished(), "a permit is still held");
        drop(second);
        r.owner.await.expect("the owner ends once no permit is held");
    }
}

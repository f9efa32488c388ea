//! The handle's side of each [`Command`]: typed calls that send one command
//! to the owner and wait for its reply, and [`Supervisor::in_worker`], which
//! runs a change on its own tracked task. Every call fails with
//! UNAVAILABLE before the supervisor runs ("not supervising services yet")
//! and once the owner has stopped ("shutting down").

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::Instrument as _;

use super::command::{Command, Observation, StateChange};
use super::deploy::ProgressTx;
use super::owner::{reply, stopping};
use super::permit::{Acquired, Permit};
use super::runtime::OomSource;
use super::{Supervisor, SupervisorError};
use crate::docker::{ContainerInfo, EngineEvent};
use crate::health;
use crate::state::{NewRevision, RevisionStatus};
use berth_core::envfile::Vars;
use berth_core::spec::HealthCheck;

impl Supervisor {
    /// Sends `cmd` once the supervisor runs.
    async fn send(&self, cmd: Command) -> Result<(), SupervisorError> {
        self.engine()?;
        self.inner.commands.send(cmd).await.map_err(|_| stopping())
    }

    /// Sends the command `make` builds around a reply channel and waits for
    /// the reply.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        reply(rx).await
    }

    /// Runs `work` on its own task on the tracker and waits for it. The
    /// work goes on if the caller goes away (a client hanging up mid-deploy
    /// must not leave the host half-changed).
    pub(super) async fn in_worker<T, F>(&self, span: tracing::Span, work: F) -> Result<T, SupervisorError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, SupervisorError>> + Send + 'static,
    {
        self.in_worker_then(span, async move {
            work.await.map(|answer| (answer, std::future::ready(())))
        })
        .await
    }

    /// Like [`Supervisor::in_worker`], for work with a tail the caller need
    /// not wait for: `work` yields the answer and what is left to do (which
    /// may hold the service's permit), and the caller has the answer while
    /// the rest runs on the same task.
    pub(super) async fn in_worker_then<T, L, F>(&self, span: tracing::Span, work: F) -> Result<T, SupervisorError>
    where
        T: Send + 'static,
        L: Future<Output = ()> + Send + 'static,
        F: Future<Output = Result<(T, L), SupervisorError>> + Send + 'static,
    {
        self.engine()?;
        let (tx, rx) = oneshot::channel();
        self.tracker().spawn(
            async move {
                match work.await {
                    Ok((answer, rest)) => {
                        let _ = tx.send(Ok(answer));
                        rest.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            .instrument(span),
        );
        rx.await
            .map_err(|_| SupervisorError::Internal("the change's task ended without an answer".into()))?
    }

    /// The permit for a change of `service`: at once, or after the changes
    /// queued before it (saying so on `progress`).
    pub(super) async fn acquire(&self, service: &str, progress: &ProgressTx) -> Result<Permit, SupervisorError> {
        let acquired = self
            .ask(|reply| Command::Acquire {
                service: service.to_owned(),
                reply,
            })
            .await?;
        match acquired {
            Acquired::Now(permit) => Ok(permit),
            Acquired::Queued(rx) => {
                progress.step("queue", format!("waiting for another change to {service} to finish"));
                rx.await.map_err(|_| {
                    SupervisorError::Unavailable(format!(
                        "the agent is shutting down; the change to {service} was not started"
                    ))
                })
            }
        }
    }

    /// A quiet permit on `service` if nobody holds it or waits for it.
    pub(super) async fn try_permit(&self, service: &str) -> Result<Option<Permit>, SupervisorError> {
        self.ask(|reply| Command::TryAcquire {
            service: service.to_owned(),
            reply,
        })
        .await
    }

    /// Quiet permits on those of `wanted` whose generation has not moved.
    pub(crate) async fn claim(&self, wanted: Vec<(String, u64)>) -> Result<Vec<Permit>, SupervisorError> {
        self.ask(|reply| Command::Claim { wanted, reply }).await
    }

    pub(super) async fn commit(&self, change: StateChange) -> Result<u64, SupervisorError> {
        self.ask(|reply| Command::Commit { change, reply })
            .await?
            .map_err(|e| SupervisorError::Internal(e.to_string()))
    }

    /// Records a new revision durably; returns its number.
    pub(super) async fn add_revision(&self, new: NewRevision, status: RevisionStatus) -> Result<u64, SupervisorError> {
        self.commit(StateChange::Add(Box::new(new), status)).await
    }

    /// Makes `revision` the one that runs.
    pub(super) async fn activate(&self, service: &str, revision: u64) -> Result<(), SupervisorError> {
        self.commit(StateChange::Activate {
            service: service.to_owned(),
            revision,
        })
        .await
        .map(drop)
    }

    /// Marks a pending revision failed.
    pub(super) async fn fail_revision(&self, service: &str, revision: u64, error: &str) -> Result<(), SupervisorError> {
        self.commit(StateChange::Fail {
            service: service.to_owned(),
            revision,
            error: error.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Marks a pending revision interrupted by the agent's shutdown.
    pub(super) async fn interrupt_revision(
        &self,
        service: &str,
        revision: u64,
        why: &str,
    ) -> Result<(), SupervisorError> {
        self.commit(StateChange::Interrupt {
            service: service.to_owned(),
            revision,
            why: why.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Keeps `env` as the env of an old revision that kept none.
    pub(super) async fn adopt_env(&self, service: &str, revision: u64, env: Vars) -> Result<(), SupervisorError> {
        self.commit(StateChange::AdoptEnv {
            service: service.to_owned(),
            revision,
            env,
        })
        .await
        .map(drop)
    }

    /// Forgets a service.
    pub(super) async fn forget(&self, service: &str) -> Result<(), SupervisorError> {
        self.commit(StateChange::Remove {
            service: service.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Hands the owner what a reconcile pass saw; returns what to plan with.
    pub(crate) async fn observed(&self, containers: Vec<ContainerInfo>) -> Result<Observation, SupervisorError> {
        self.ask(|reply| Command::Observed { containers, reply }).await
    }

    /// Counts a restart by the reconciler.
    pub(crate) async fn count_restart(&self, service: &str, crash: bool) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::CountRestart {
            service: service.to_owned(),
            crash,
            reply,
        })
        .await
    }

    /// A new container passed its gate; the gate's last look at it is how
    /// it runs now.
    pub(super) async fn healthy(
        &self,
        service: &str,
        container: &str,
        interval: Duration,
        pass: health::GatePass,
    ) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::Healthy {
            service: service.to_owned(),
            container: container.to_owned(),
            interval,
            output: pass.output,
            version: pass.version,
            info: Some(pass.info),
            reply,
        })
        .await
    }

    /// A deploy of `service` finished well.
    pub(super) async fn deployed(&self, service: &str) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::Deployed {
            service: service.to_owned(),
            reply,
        })
        .await
    }

    /// The health monitor probed `container` with its check of `role`.
    pub(super) async fn probed(
        &self,
        service: &str,
        container: ContainerInfo,
        role: health::Role,
        check: HealthCheck,
        outcome: health::Outcome,
    ) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::Probed {
            service: service.to_owned(),
            container,
            role,
            check,
            outcome,
            reply,
        })
        .await
    }

    /// Something happened to a berth container.
    pub(super) async fn docker_event(&self, ev: EngineEvent) -> Result<(), SupervisorError> {
        self.send(Command::DockerEvent(ev)).await
    }

    /// An OOM kill of `container` of `service`.
    pub(super) async fn oom(
        &self,
        service: &str,
        revision: u64,
        container: &str,
        source: OomSource,
    ) -> Result<(), SupervisorError> {
        self.send(Command::Oom {
            service: service.to_owned(),
            revision,
            container: container.to_owned(),
            source,
        })
        .await
    }

    /// Remembers `print` as the handled content of `service`'s env file;
    /// returns the fingerprint remembered before.
    pub(super) async fn env_seen(&self, service: &str, print: u64) -> Result<Option<u64>, SupervisorError> {
        self.ask(|reply| Command::EnvSeen {
            service: service.to_owned(),
            print,
            reply,
        })
        .await
    }

    /// Whether to schedule a check of `service`'s env file.
    pub(super) async fn env_check_wanted(&self, service: &str, print: Option<u64>) -> Result<bool, SupervisorError> {
        self.ask(|reply| Command::EnvCheckWanted {
            service: service.to_owned(),
            print,
            reply,
        })
        .await
    }

    /// A scheduled env-file check of `service` is running.
    pub(super) async fn env_check_started(&self, service: &str) -> Result<(), SupervisorError> {
        self.send(Command::EnvCheckStarted {
            service: service.to_owned(),
        })
        .await
    }

    /// Marks `service` held; returns its running container.
    pub(super) async fn hold(&self, service: &str, why: String) -> Result<String, SupervisorError> {
        self.ask(|reply| Command::Hold {
            service: service.to_owned(),
            why,
            reply,
        })
        .await?
    }

    /// Lets the reconciler start `service` again; true if it was held.
    pub async fn release_hold(&self, service: &str) -> Result<bool, SupervisorError> {
        self.ask(|reply| Command::ReleaseHold {
            service: service.to_owned(),
            reply,
        })
        .await
    }
}

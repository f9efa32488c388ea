//! Health-gated changes of a service, as the API asks for them: apply a
//! spec, deploy an image, roll back, restart, remove.
//!
//! Each call runs on its own worker task on the tracker
//! ([`Supervisor::in_worker`]), so it goes on if the caller hangs up, and
//! holds the service's permit for its whole length: the reconciler and other
//! changes leave the service alone meanwhile, and a second change of the
//! same service waits for it ("waiting for another change to X to
//! finish"). The rollout itself is in [`super::rollout`]. Progress goes to
//! a [`ProgressTx`], never stalling the change on a slow reader. On
//! shutdown a change still queued is refused; one in progress settles (see
//! [`super::rollout`]).

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, info_span};

use super::snapshot::Snapshot;
use super::view::not_found;
use super::{Supervisor, SupervisorError};
use crate::audit::Actor;
use crate::docker::{ContainerInfo, PullProgress};
use crate::events::Severity;
use crate::state::Revision;
use berth_core::spec::{ImageRef, ServiceSpec, is_builtin_network};

/// What a deploy is doing, streamed to the caller.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A phase started.
    Step {
        /// "queue", "pull", "stop", "start", "health", "switch", "drain",
        /// "cleanup", "rollback", "env", "record".
        phase: &'static str,
        /// For people.
        message: String,
    },
    /// Image pull progress.
    Pull(PullProgress),
}

/// How a deploy ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// It is running and healthy.
    pub success: bool,
    /// Service name.
    pub service: String,
    /// The revision running now (0 = none).
    pub revision: u64,
    /// The revision this call tried to bring up.
    pub attempted_revision: u64,
    /// Why it failed.
    pub error: String,
    /// The previous revision was restored.
    pub rolled_back: bool,
    /// The last failed probe's output.
    pub health_output: String,
    /// The new container's exit code, if it exited.
    pub exit_code: Option<i64>,
    /// The new container's last log lines, on failure.
    pub log_tail: Vec<String>,
    /// False when there was nothing to do.
    pub changed: bool,
}

/// Makes a new revision, or replaces containers of the active one.
pub(super) enum Mode {
    New { reason: String, author: Actor },
    Restart { author: Actor },
}

/// Where a rollout's env comes from. Resolved once the service's permit is
/// held, so a concurrent env change is never silently undone.
pub(super) enum EnvFrom {
    /// The service's current env (see [`Supervisor::current_env`]).
    Current,
    /// Revision N's env (a rollback); the current env if N kept none.
    Revision(u64),
}

/// Sends progress without ever stalling the deploy on a slow caller.
#[derive(Clone)]
pub struct ProgressTx(Option<mpsc::Sender<Progress>>);

impl ProgressTx {
    /// Progress to `tx`; `None` discards it.
    pub fn new(tx: Option<mpsc::Sender<Progress>>) -> Self {
        ProgressTx(tx)
    }

    pub(super) fn step(&self, phase: &'static str, message: impl Into<String>) {
        let message = message.into();
        info!(phase, "{message}");
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(Progress::Step { phase, message });
        }
    }

    pub(super) fn pull(&self, p: PullProgress) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(Progress::Pull(p));
        }
    }
}

impl Supervisor {
    /// Creates or updates a service from `spec`.
    pub async fn apply_spec(
        &self,
        spec: ServiceSpec,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let name = spec.name.as_str().to_owned();
        let reason = if self.ready_snapshot()?.record(&name).is_some() {
            "apply"
        } else {
            "create"
        };
        let author = author.to_owned();
        self.change(name, progress, move |_| {
            let mode = Mode::New {
                reason: reason.into(),
                author,
            };
            Ok((spec, EnvFrom::Current, mode))
        })
        .await
    }

    /// Deploys `image` for an existing service: its active spec (as it is
    /// once earlier changes of the service are done) with the new image.
    pub async fn deploy_image(
        &self,
        service: &str,
        image: &str,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let image: ImageRef = image
            .parse()
            .map_err(|e| SupervisorError::Invalid(format!("image {image:?}: {e}")))?;
        active_spec(&*self.ready_snapshot()?, service)?;
        let (name, author) = (service.to_owned(), author.to_owned());
        self.change(service.to_owned(), progress, move |snap| {
            let mut spec = active_spec(snap, &name)?;
            spec.image = image;
            let mode = Mode::New {
                reason: "deploy".into(),
                author,
            };
            Ok((spec, EnvFrom::Current, mode))
        })
        .await
    }

    /// Re-applies revision `to` (default: the previous one that ran).
    pub async fn rollback(
        &self,
        service: &str,
        to: Option<u64>,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        rollback_target(&*self.ready_snapshot()?, service, to)?;
        let (name, author) = (service.to_owned(), author.to_owned());
        self.change(service.to_owned(), progress, move |snap| {
            let target = rollback_target(snap, &name, to)?;
            let mode = Mode::New {
                reason: format!("rollback to {}", target.number),
                author,
            };
            // The env that went with that revision comes back with it.
            Ok((target.spec.clone(), EnvFrom::Revision(target.number), mode))
        })
        .await
    }

    /// Replaces the service's containers with fresh ones of the same
    /// revision; or, when an env change was recorded without restarting
    /// (`env_change = "none"`), deploys it as a new revision.
    pub async fn restart(
        &self,
        service: &str,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        active_spec(&*self.ready_snapshot()?, service)?;
        let (name, author) = (service.to_owned(), author.to_owned());
        self.change(service.to_owned(), progress, move |snap| {
            let spec = active_spec(snap, &name)?;
            Ok((spec, EnvFrom::Current, Mode::Restart { author }))
        })
        .await
    }

    /// Stops and removes a service's containers and forgets it; with
    /// `volumes`, also the named volumes berth created for it. Its named
    /// network goes too once no container uses it.
    pub async fn remove(&self, service: &str, volumes: bool, author: &Actor) -> Result<Removed, SupervisorError> {
        let sup = self.clone();
        let (service, author) = (service.to_owned(), author.to_owned());
        let span = info_span!("remove", service = %service);
        self.in_worker(span, async move {
            let _permit = sup.acquire(&service, &ProgressTx::new(None)).await?;
            sup.remove_permitted(&service, volumes, &author).await
        })
        .await
    }

    /// A rollout of `service` on a worker. What to roll out is decided by
    /// `what` from the state as it is once the service's permit is held, so
    /// a change that waited for another one builds on its result instead of
    /// undoing it. (The callers check the same first, to refuse a bad
    /// request without queueing it.)
    async fn change<F>(&self, service: String, progress: ProgressTx, what: F) -> Result<Outcome, SupervisorError>
    where
        F: FnOnce(&Snapshot) -> Result<(ServiceSpec, EnvFrom, Mode), SupervisorError> + Send + 'static,
    {
        let sup = self.clone();
        let span = info_span!("deploy", service = %service);
        self.in_worker_then(span, async move {
            let permit = sup.acquire(&service, &progress).await?;
            let snap = sup.snapshot();
            let (spec, env, mode) = what(&snap)?;
            let env = match env {
                EnvFrom::Revision(n) => match snap
                    .record(&service)
                    .and_then(|r| r.revision(n).and_then(|r| r.env.clone()))
                {
                    Some(env) => env,
                    None => sup.current_env(&spec)?,
                },
                EnvFrom::Current => sup.current_env(&spec)?,
            };
            let (outcome, retire) = sup.rollout_until_active(spec, env, mode, progress).await?;
            // The caller hears of the new revision as soon as it serves; the
            // old one's containers go after, still under the permit.
            let rest = async move {
                if let Some(r) = retire {
                    sup.retire(r).await;
                }
                drop(permit);
            };
            Ok((outcome, rest))
        })
        .await
    }

    async fn remove_permitted(&self, service: &str, volumes: bool, author: &Actor) -> Result<Removed, SupervisorError> {
        let known = self.snapshot().record(service).cloned();
        let containers = self.containers_of(service).await?;
        if known.is_none() && containers.is_empty() {
            return Err(not_found(service));
        }
        let timeout = known
            .as_ref()
            .and_then(|r| r.active_revision())
            .map_or(Duration::from_secs(10), |r| r.spec.stop_timeout.as_std());
        let mut removed = 0;
        for c in &containers {
            self.stop_and_remove(&c.id, timeout).await?;
            removed += 1;
        }
        let engine = self.engine()?;
        for holder in engine.holders(service, false).await.map_err(internal)? {
            engine.remove(&holder).await.map_err(internal)?;
        }
        self.sites().remove(service).await.map_err(internal)?;
        let spec = known.as_ref().and_then(|r| r.active_revision()).map(|r| r.spec.clone());
        self.forget(service).await?;
        if let Some(network) = spec.as_ref().and_then(|s| s.network.as_deref())
            && !is_builtin_network(network)
            && let Err(e) = engine.remove_unused_network(network).await
        {
            tracing::warn!(%network, error = %e, "Cannot remove the service's network.");
        }
        let mut volumes_removed = Vec::new();
        if volumes {
            // Only volumes this instance labelled for this service, and not
            // one another of its services still mounts.
            let in_use: Vec<String> = self
                .snapshot()
                .records()
                .values()
                .filter_map(|r| r.active_revision())
                .flat_map(|r| r.spec.volumes.iter().filter_map(|m| m.volume_name().map(str::to_owned)))
                .collect();
            for name in engine.service_volumes(service).await.map_err(internal)? {
                if in_use.contains(&name) {
                    continue;
                }
                engine.remove_volume(&name).await.map_err(internal)?;
                volumes_removed.push(name);
            }
        }
        let detail = if volumes_removed.is_empty() {
            format!("{removed} containers")
        } else {
            format!("{removed} containers, volumes {}", volumes_removed.join(", "))
        };
        self.bus().publish(
            "service-removed",
            service,
            0,
            Severity::Info,
            format!("Removed {service} ({detail})."),
        );
        self.audit().record(author, "remove", service, &detail, "ok");
        Ok(Removed {
            containers: removed,
            volumes: volumes_removed,
        })
    }

    /// Every berth container of `service`, as Docker shows it now.
    pub(super) async fn containers_of(&self, service: &str) -> Result<Vec<ContainerInfo>, SupervisorError> {
        Ok(self
            .engine()?
            .list_managed()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|c| c.service.as_deref() == Some(service))
            .collect())
    }
}

/// What `remove` removed.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// How many containers.
    pub containers: u32,
    /// The named volumes (only when asked for).
    pub volumes: Vec<String>,
}

/// The active spec of `service`.
fn active_spec(snap: &Snapshot, service: &str) -> Result<ServiceSpec, SupervisorError> {
    snap.record(service)
        .and_then(|r| r.active_revision().map(|r| r.spec.clone()))
        .ok_or_else(|| not_found(service))
}

/// The revision a rollback of `service` goes to: `to`, or the previous one
/// that ran; refused when it is the active one.
fn rollback_target(snap: &Snapshot, service: &str, to: Option<u64>) -> Result<Revision, SupervisorError> {
    let record = snap.record(service).ok_or_else(|| not_found(service))?;
    let target = match to {
        Some(n) => record.revision(n).ok_or_else(|| {
            let kept: Vec<String> = record.revisions.iter().map(|r| r.number.to_string()).collect();
            SupervisorError::NotFound(format!("{service} has no revision {n} (kept: {})", kept.join(", ")))
        })?,
        None => record.previous().ok_or_else(|| {
            SupervisorError::Refused(format!(
                "{service} has no earlier revision that ran; see berthctl history {service}"
            ))
        })?,
    };
    if target.number == record.active {
        return Err(SupervisorError::Refused(format!(
            "revision {} of {service} is already active",
            target.number
        )));
    }
    Ok(target.clone())
}

/// ", env keys A, B" for audit details; empty when none changed.
pub(super) fn keys_detail(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!(", env keys {}", keys.join(","))
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> SupervisorError {
    SupervisorError::Internal(e.to_string())
}

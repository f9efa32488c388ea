//! Health-gated deploys: apply a spec, deploy an image, roll back, restart,
//! remove.
//!
//! Every revision carries the env its containers run with. A change that
//! makes a new revision writes that env to the service's env file before
//! its container starts, and a failed gate writes the previous revision's
//! env back (unless someone edited the file meanwhile), so the file always
//! says what runs.
//!
//! Every change holds the service's lock for its whole length, so the
//! reconciler and other calls leave the service alone meanwhile. Checks that
//! can refuse a change (ports, capacity, env file, pull) run before anything
//! on the host changes. The new revision is checkpointed as *pending* before
//! its container starts and becomes *active* only once healthy, so an agent
//! killed mid-deploy comes back to the previous revision and exactly one
//! container. A failed health gate stops the new container, restarts the
//! old one and reports why (probe output, exit code, last log lines).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::info;

use super::{Supervisor, SupervisorError};
use crate::clock::now_ms;
use crate::docker::{ContainerInfo, PullProgress};
use crate::events::Severity;
use crate::health;
use crate::nginx;
use crate::state::{NewRevision, RevisionStatus};
use berth_core::envfile::{self, Vars};
use berth_core::spec::{ImageRef, ServiceSpec, Strategy};

/// Log lines of a failed container included in the report.
const LOG_TAIL: usize = 20;

/// What a deploy is doing, streamed to the caller.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A phase started.
    Step {
        /// "pull", "stop", "start", "health", "cleanup", "rollback".
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
    New { reason: String, author: String },
    Restart { author: String },
}

/// Where a rollout's env comes from. Resolved once the service's lock is
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

    fn pull(&self, p: PullProgress) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(Progress::Pull(p));
        }
    }
}

/// Marks a service busy while held; wakes the reconciler when dropped.
pub(super) struct Busy<'a> {
    sup: &'a Supervisor,
    service: String,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.sup.runtime().busy.remove(&self.service);
        self.sup.trigger();
    }
}

impl Supervisor {
    pub(super) async fn busy(&self, service: &str, progress: &ProgressTx) -> Busy<'_> {
        let lock = self.lock_for(service);
        let guard = match lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                progress.step("queue", format!("waiting for another change to {service} to finish"));
                lock.lock_owned().await
            }
        };
        self.runtime().busy.insert(service.to_owned());
        Busy {
            sup: self,
            service: service.to_owned(),
            _lock: guard,
        }
    }

    /// Creates or updates a service from `spec`.
    pub async fn apply_spec(
        self: &Arc<Self>,
        spec: ServiceSpec,
        author: &str,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let reason = if self.record(spec.name.as_str()).is_some() {
            "apply"
        } else {
            "create"
        };
        let mode = Mode::New {
            reason: reason.into(),
            author: author.into(),
        };
        self.rollout(spec, EnvFrom::Current, mode, progress).await
    }

    /// Deploys `image` for an existing service: its active spec with the new image.
    pub async fn deploy_image(
        self: &Arc<Self>,
        service: &str,
        image: &str,
        author: &str,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let image: ImageRef = image
            .parse()
            .map_err(|e| SupervisorError::Invalid(format!("image {image:?}: {e}")))?;
        let mut spec = self.active_spec(service)?;
        spec.image = image;
        let mode = Mode::New {
            reason: "deploy".into(),
            author: author.into(),
        };
        self.rollout(spec, EnvFrom::Current, mode, progress).await
    }

    /// Re-applies revision `to` (default: the previous one that ran).
    pub async fn rollback(
        self: &Arc<Self>,
        service: &str,
        to: Option<u64>,
        author: &str,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let record = self.record(service).ok_or_else(|| not_found(service))?;
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
        let mode = Mode::New {
            reason: format!("rollback to {}", target.number),
            author: author.into(),
        };
        // The env that went with that revision comes back with it.
        self.rollout(target.spec.clone(), EnvFrom::Revision(target.number), mode, progress)
            .await
    }

    /// Replaces the service's containers with fresh ones of the same
    /// revision; or, when an env change was recorded without restarting
    /// (`env_change = "none"`), deploys it as a new revision.
    pub async fn restart(
        self: &Arc<Self>,
        service: &str,
        author: &str,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let spec = self.active_spec(service)?;
        self.rollout(
            spec,
            EnvFrom::Current,
            Mode::Restart { author: author.into() },
            progress,
        )
        .await
    }

    /// Stops and removes a service's containers and forgets it.
    pub async fn remove(self: &Arc<Self>, service: &str, author: &str) -> Result<u32, SupervisorError> {
        let progress = ProgressTx::new(None);
        let _busy = self.busy(service, &progress).await;
        let known = self.record(service);
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
        self.sites().remove(service).await.map_err(internal)?;
        self.store().remove(service).map_err(internal)?;
        {
            let mut rt = self.runtime();
            rt.services.remove(service);
            rt.primaries.remove(service);
        }
        self.bus.publish(
            "service-removed",
            service,
            0,
            Severity::Info,
            format!("Removed {service} ({removed} containers)."),
        );
        self.audit
            .record(author, "remove", service, &format!("{removed} containers"), "ok");
        Ok(removed)
    }

    fn active_spec(&self, service: &str) -> Result<ServiceSpec, SupervisorError> {
        self.record(service)
            .and_then(|r| r.active_revision().map(|r| r.spec.clone()))
            .ok_or_else(|| not_found(service))
    }

    async fn containers_of(&self, service: &str) -> Result<Vec<ContainerInfo>, SupervisorError> {
        Ok(self
            .engine
            .list_managed()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|c| c.service.as_deref() == Some(service))
            .collect())
    }

    /// Refuses what cannot work before anything on the host changes.
    fn preflight(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        let name = spec.name.as_str();
        let records = self.records();
        let others: Vec<ServiceSpec> = records
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .filter_map(|(_, r)| r.active_revision().map(|r| r.spec.clone()))
            .collect();
        let others: Vec<&ServiceSpec> = others.iter().collect();
        crate::preflight::check_host_ports(spec, &others).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        crate::preflight::check_capacity(spec, self.capacity.cpus, self.capacity.memory_bytes)
            .map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        Ok(())
    }

    async fn rollout(
        self: &Arc<Self>,
        spec: ServiceSpec,
        env: EnvFrom,
        mode: Mode,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let name = spec.name.as_str().to_owned();
        let _busy = self.busy(&name, &progress).await;
        let env = match env {
            EnvFrom::Revision(n) => match self
                .record(&name)
                .and_then(|r| r.revision(n).and_then(|r| r.env.clone()))
            {
                Some(env) => env,
                None => self.current_env(&spec)?,
            },
            EnvFrom::Current => self.current_env(&spec)?,
        };
        self.rollout_locked(spec, env, mode, progress).await
    }

    /// The rollout itself; the caller holds the service's lock. `env` is
    /// what the new containers get.
    pub(super) async fn rollout_locked(
        self: &Arc<Self>,
        spec: ServiceSpec,
        env: Vars,
        mode: Mode,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let name = spec.name.as_str().to_owned();
        self.preflight(&spec)?;
        envfile::check_vars(&env).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        let current = self.record(&name).and_then(|r| r.active_revision().cloned());
        // None: a revision from before envs were kept; its containers read the file.
        let current_env = current.as_ref().and_then(|c| c.env.clone());
        let mode = match mode {
            Mode::Restart { author } if current_env.as_ref().is_some_and(|e| *e != env) => Mode::New {
                reason: "restart with the recorded env".into(),
                author,
            },
            m => m,
        };
        let author = match &mode {
            Mode::New { author, .. } | Mode::Restart { author } => author.clone(),
        };
        if let (Mode::New { .. }, Some(cur)) = (&mode, &current)
            && cur.spec == spec
            && current_env.as_ref().is_none_or(|e| *e == env)
        {
            return Ok(Outcome {
                success: true,
                service: name,
                revision: cur.number,
                attempted_revision: cur.number,
                changed: false,
                ..Outcome::default()
            });
        }

        self.pull(&spec.image, &progress).await?;

        let env_keys = current_env
            .as_ref()
            .map(|old| envfile::changed_keys(old, &env))
            .unwrap_or_default();
        let revision = match &mode {
            Mode::New { reason, author } => self
                .store()
                .add(
                    NewRevision {
                        spec: spec.clone(),
                        env: Some(env.clone()),
                        env_keys_changed: env_keys.clone(),
                        reason: reason.clone(),
                        author: author.clone(),
                        now_ms: now_ms(),
                    },
                    RevisionStatus::Pending,
                )
                .map_err(internal)?,
            Mode::Restart { .. } => current.as_ref().map_or(0, |c| c.number),
        };
        let env_path = self.env_path(&spec);
        // What fail() restores the file from, if this rollout changes it.
        let attempted = match &mode {
            Mode::New { .. } => Some((env_path.as_path(), &env)),
            Mode::Restart { .. } => None,
        };
        let action = match &mode {
            Mode::New { reason, .. } => reason.clone(),
            Mode::Restart { .. } => "restart".into(),
        };

        let old = self.containers_of(&name).await?;
        let was_running: Vec<ContainerInfo> = old.iter().filter(|c| c.running).cloned().collect();
        let blue_green = spec.strategy() == Strategy::BlueGreen && spec.proxy.is_some();
        // What a failure has to bring back: recreate stops the old container
        // first; blue-green never touches it until traffic has moved.
        let restore: &[ContainerInfo] = if blue_green { &[] } else { &was_running };
        if let Some((path, env)) = attempted
            && let Err(e) = self.sync_env_file(&name, path, env)
        {
            let why = e.to_string();
            return Ok(self
                .fail(&name, revision, &mode, None, why, None, None, &[], attempted, &progress)
                .await);
        }
        if !blue_green && !was_running.is_empty() {
            progress.step("stop", format!("stopping {} old container(s)", was_running.len()));
            for c in &was_running {
                // The old container frees its ports first. It is kept
                // (stopped) so a failed gate can start it again at once.
                if let Err(e) = self.engine.stop(&c.id, spec.stop_timeout.as_std()).await {
                    let why = format!("cannot stop the old container: {e}");
                    return Ok(self
                        .fail(
                            &name, revision, &mode, None, why, None, None, restore, attempted, &progress,
                        )
                        .await);
                }
            }
        }

        let beside = if blue_green && !was_running.is_empty() {
            " next to the running one"
        } else {
            ""
        };
        progress.step(
            "start",
            format!("starting revision {revision} ({}){beside}", spec.image),
        );
        let new_id = match self.create_container(&spec, revision).await {
            Ok(id) => id,
            Err(e) => {
                let why = format!("cannot start the new container: {e}");
                return Ok(self
                    .fail(
                        &name, revision, &mode, None, why, None, None, restore, attempted, &progress,
                    )
                    .await);
            }
        };

        let deadline = spec.deploy.health_deadline.as_std();
        progress.step(
            "health",
            match &spec.health {
                Some(_) => format!(
                    "waiting for the health check to pass (deadline {}s)",
                    deadline.as_secs()
                ),
                None => "no health check: waiting for the container to stay up".to_owned(),
            },
        );
        match health::gate(&self.engine, &new_id, &spec, deadline).await {
            Ok(output) => {
                self.mark_healthy(&new_id, &spec, output);
                // Metrics and the health monitor follow the new container at
                // once, not only after the next reconcile pass.
                if let Ok(Some(info)) = self.engine.inspect(&new_id).await {
                    self.runtime().primaries.insert(name.clone(), info);
                }
            }
            Err(g) => {
                let (reason, output) = (g.reason, Some(g.health_output));
                return Ok(self
                    .fail(
                        &name,
                        revision,
                        &mode,
                        Some(new_id),
                        reason,
                        output,
                        g.exit_code,
                        restore,
                        attempted,
                        &progress,
                    )
                    .await);
            }
        }

        if blue_green && let Err(why) = self.switch(&spec, &new_id, revision, &progress).await {
            return Ok(self
                .fail(
                    &name,
                    revision,
                    &mode,
                    Some(new_id),
                    why,
                    None,
                    None,
                    restore,
                    attempted,
                    &progress,
                )
                .await);
        }
        if blue_green && !was_running.is_empty() {
            let drain = spec.deploy.drain.as_std();
            progress.step(
                "drain",
                format!(
                    "letting the old container finish its requests for {}s",
                    drain.as_secs_f64()
                ),
            );
            tokio::time::sleep(drain).await;
        }
        if !old.is_empty() {
            progress.step("cleanup", format!("removing {} old container(s)", old.len()));
        }
        for c in &old {
            if c.running && blue_green {
                self.engine
                    .stop(&c.id, spec.stop_timeout.as_std())
                    .await
                    .map_err(internal)?;
            }
            self.engine.remove(&c.id).await.map_err(internal)?;
        }
        if let Mode::New { .. } = mode {
            self.store().activate(&name, revision).map_err(internal)?;
        }
        {
            let mut rt = self.runtime();
            let s = rt.services.entry(name.clone()).or_default();
            s.failures = 0;
            s.not_before = None;
        }
        self.bus.publish(
            "deployed",
            &name,
            revision,
            Severity::Info,
            format!("Revision {revision} ({}) is running and healthy.", spec.image),
        );
        if !env_keys.is_empty() {
            self.bus.publish(
                "env-changed",
                &name,
                revision,
                Severity::Info,
                format!(
                    "Revision {revision} runs with env keys changed: {}.",
                    env_keys.join(", ")
                ),
            );
        }
        self.audit.record(
            &author,
            &action,
            &name,
            &format!("revision {revision} image {}{}", spec.image, keys_detail(&env_keys)),
            "ok",
        );
        Ok(Outcome {
            success: true,
            service: name,
            revision,
            attempted_revision: revision,
            changed: true,
            ..Outcome::default()
        })
    }

    /// Points nginx at the new container: render, test, swap, reload. On
    /// refusal nginx keeps its running config and the error carries nginx's
    /// own words.
    async fn switch(
        &self,
        spec: &ServiceSpec,
        new_id: &str,
        revision: u64,
        progress: &ProgressTx,
    ) -> Result<(), String> {
        let Some(proxy) = spec.proxy.as_ref() else {
            return Ok(());
        };
        let info = match self.engine.inspect(new_id).await {
            Ok(Some(info)) => info,
            Ok(None) => return Err("the new container disappeared before the switch".into()),
            Err(e) => return Err(format!("cannot inspect the new container: {e}")),
        };
        let upstream = super::upstream_of(&info, spec)
            .ok_or_else(|| "the new container has no address nginx can reach".to_owned())?;
        let site = nginx::render(spec, proxy, upstream);
        self.sites()
            .install(spec.name.as_str(), &site)
            .await
            .map_err(|e| e.to_string())?;
        progress.step(
            "switch",
            format!(
                "nginx now sends {} to revision {revision} at {upstream}",
                proxy.server_names.join(", ")
            ),
        );
        Ok(())
    }

    async fn pull(&self, image: &ImageRef, progress: &ProgressTx) -> Result<(), SupervisorError> {
        progress.step("pull", format!("pulling {image}"));
        let (tx, mut rx) = mpsc::channel::<PullProgress>(64);
        let forward = {
            let progress = progress.clone();
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    progress.pull(p);
                }
            })
        };
        let result = self.engine.pull(image, Some(tx)).await;
        let _ = forward.await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                if self.engine.image_exists(image.as_str()).await.unwrap_or(false) {
                    progress.step(
                        "pull",
                        format!("pull failed ({e}); using the image already on this host"),
                    );
                    Ok(())
                } else {
                    Err(SupervisorError::Refused(e.to_string()))
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        name: &str,
        revision: u64,
        mode: &Mode,
        new_id: Option<String>,
        reason: String,
        health_output: Option<String>,
        exit_code: Option<i64>,
        was_running: &[ContainerInfo],
        attempted_env: Option<(&Path, &Vars)>,
        progress: &ProgressTx,
    ) -> Outcome {
        let mut log_tail = Vec::new();
        if let Some(id) = &new_id {
            log_tail = self.engine.log_tail(id, LOG_TAIL).await;
            let _ = self.stop_and_remove(id, Duration::from_secs(5)).await;
        }
        let mut rolled_back = false;
        for c in was_running {
            if self.engine.start(&c.id).await.is_ok() {
                rolled_back = true;
            }
        }
        let current = self.record(name).map_or(0, |r| r.active);
        if rolled_back {
            progress.step("rollback", format!("restored revision {current}"));
        } else if was_running.is_empty() && current != 0 {
            // Blue-green: the old container never stopped and nginx never moved.
            let serving = self
                .containers_of(name)
                .await
                .is_ok_and(|c| c.iter().any(|c| c.running));
            if serving {
                rolled_back = true;
                progress.step(
                    "rollback",
                    format!("revision {current} kept serving; traffic was never switched"),
                );
            }
        }
        if let Some((path, env)) = attempted_env {
            self.restore_env_file(name, path, env, progress);
        }
        let (author, action) = match mode {
            Mode::New { reason, author } => (author.clone(), reason.clone()),
            Mode::Restart { author } => (author.clone(), "restart".to_owned()),
        };
        let env_keys = match mode {
            Mode::New { .. } => self
                .record(name)
                .and_then(|r| r.revision(revision).map(|r| r.env_keys_changed.clone()))
                .unwrap_or_default(),
            Mode::Restart { .. } => Vec::new(),
        };
        if let Mode::New { .. } = mode
            && let Err(e) = self.store().fail(name, revision, &reason)
        {
            tracing::error!(service = name, error = %e, "Cannot record the failed revision.");
        }
        let restored = if rolled_back {
            format!("; revision {current} was restored")
        } else {
            String::new()
        };
        self.bus.publish(
            "deploy-failed",
            name,
            revision,
            Severity::Error,
            format!("Revision {revision} failed: {reason}{restored}."),
        );
        self.audit.record(
            &author,
            &action,
            name,
            &format!("revision {revision}{}", keys_detail(&env_keys)),
            &format!("failed: {reason}"),
        );
        Outcome {
            success: false,
            service: name.to_owned(),
            revision: current,
            attempted_revision: revision,
            error: reason,
            rolled_back,
            health_output: health_output.unwrap_or_default(),
            exit_code,
            log_tail,
            changed: true,
        }
    }
}

/// ", env keys A, B" for audit details; empty when none changed.
pub(super) fn keys_detail(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!(", env keys {}", keys.join(","))
    }
}

fn not_found(service: &str) -> SupervisorError {
    SupervisorError::NotFound(format!("no service named {service:?} on this host (see berthctl ps)"))
}

fn internal(e: impl std::fmt::Display) -> SupervisorError {
    SupervisorError::Internal(e.to_string())
}

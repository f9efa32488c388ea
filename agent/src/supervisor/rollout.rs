//! One rollout, step by step, on a deploy worker that holds the service's
//! permit.
//!
//! Every revision carries the env its containers run with. A change that
//! makes a new revision writes that env to the service's env file before
//! its container starts, and a failed gate writes the previous revision's
//! env back (unless someone edited the file meanwhile), so the file always
//! says what runs.
//!
//! Checks that can refuse a change (ports, capacity, env, pull) run before
//! anything on the host changes. The new revision is recorded as *pending*
//! (on disk, through the owner) before its container starts and becomes
//! *active* only once healthy, so an agent killed mid-deploy comes back to
//! the previous revision and exactly one container. A failed health gate
//! stops the new container, restarts the old one and reports why (probe
//! output, exit code, last log lines).
//!
//! The caller has its answer once the new revision serves and is recorded
//! as active; the old revision's drain and removal ([`Retire`]) follow on
//! the same worker, under the same permit.
//!
//! Shutdown: a pull in progress is abandoned (nothing changed yet); a gate
//! in progress ends at once and the rollout settles like a failed gate,
//! except that the revision is marked *interrupted*; later steps (switch,
//! drain, cleanup) are short and run to their end.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::deploy::{Mode, Outcome, ProgressTx, internal, keys_detail};
use super::timing::Phases;
use super::{Supervisor, SupervisorError, upstream_of};
use crate::clock::now_ms;
use crate::docker::{ContainerInfo, PullProgress};
use crate::events::Severity;
use crate::health;
use crate::nginx;
use crate::state::{NewRevision, Revision, RevisionStatus};
use berth_core::envfile::{self, Vars};
use berth_core::spec::{ImageRef, ServiceSpec, Strategy};

/// Log lines of a failed container included in the report.
const LOG_TAIL: usize = 20;

/// Why a rollout did not take over, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// It failed (gate, start, switch): the revision is *failed*.
    Failed,
    /// The agent is shutting down: the revision is *interrupted*.
    Interrupted,
}

/// What is left of the revision a rollout replaced: its containers, to
/// remove once the caller has its answer ([`Supervisor::retire`]).
pub(super) struct Retire {
    service: String,
    /// Blue-green: how long the old containers finish their requests first.
    drain: Option<Duration>,
    stop_timeout: Duration,
    old: Vec<ContainerInfo>,
    /// Running old containers are stopped (blue-green kept them serving).
    stop_running: bool,
}

/// What a failure has to know about the rollout it ends.
struct Attempt<'a> {
    name: String,
    revision: u64,
    mode: Mode,
    /// The env file and the env this rollout wrote to it, if it did.
    attempted_env: Option<(PathBuf, Vars)>,
    progress: &'a ProgressTx,
}

/// How a rollout failed.
struct Failure {
    new_id: Option<String>,
    reason: String,
    health_output: Option<String>,
    exit_code: Option<i64>,
    ending: Ending,
}

impl Failure {
    /// A failure after the new container `new_id` passed its gate (it
    /// goes with the rollout's end).
    fn after_gate(new_id: String, reason: String) -> Self {
        Failure {
            new_id: Some(new_id),
            ..Failure::before_gate(reason)
        }
    }

    fn before_gate(reason: String) -> Self {
        Failure {
            new_id: None,
            reason,
            health_output: None,
            exit_code: None,
            ending: Ending::Failed,
        }
    }
}

impl Supervisor {
    /// The rollout itself, old containers removed; the caller holds the
    /// service's permit. `env` is what the new containers get.
    pub(super) async fn rollout(
        &self,
        spec: ServiceSpec,
        env: Vars,
        mode: Mode,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let (outcome, retire) = self.rollout_until_active(spec, env, mode, progress).await?;
        if let Some(r) = retire {
            self.retire(r).await;
        }
        Ok(outcome)
    }

    /// The rollout up to the new revision serving and recorded as active:
    /// what the caller waits for. What is left of the old revision comes
    /// back as a [`Retire`], for [`Supervisor::retire`] once the caller has
    /// its answer.
    pub(super) async fn rollout_until_active(
        &self,
        spec: ServiceSpec,
        env: Vars,
        mode: Mode,
        progress: ProgressTx,
    ) -> Result<(Outcome, Option<Retire>), SupervisorError> {
        let name = spec.name.as_str().to_owned();
        let engine = self.engine()?;
        let mut phases = Phases::start();
        self.preflight(&spec)?;
        envfile::check_vars(&env).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        let current = self.snapshot().record(&name).and_then(|r| r.active_revision().cloned());
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
            let unchanged = Outcome {
                success: true,
                service: name,
                revision: cur.number,
                attempted_revision: cur.number,
                changed: false,
                ..Outcome::default()
            };
            return Ok((unchanged, None));
        }

        // Neither needs the other: the pull may refuse the change before
        // anything on the host changed; the listing only reads.
        let (pulled, old) = tokio::join!(self.pull(&spec.image, &progress), self.containers_of(&name));
        pulled?;
        let old = old?;
        phases.mark("pull");

        let env_keys = current_env
            .as_ref()
            .map(|old| envfile::changed_keys(old, &env))
            .unwrap_or_default();
        let revision = match &mode {
            Mode::New { reason, author } => {
                self.add_revision(
                    NewRevision {
                        spec: spec.clone(),
                        env: Some(env.clone()),
                        env_keys_changed: env_keys.clone(),
                        reason: reason.clone(),
                        author: author.name.clone(),
                        now_ms: now_ms(),
                    },
                    RevisionStatus::Pending,
                )
                .await?
            }
            Mode::Restart { .. } => current.as_ref().map_or(0, |c| c.number),
        };
        phases.mark("record");
        let action = match &mode {
            Mode::New { reason, .. } => reason.clone(),
            Mode::Restart { .. } => "restart".into(),
        };
        // What fail() restores the file from, if this rollout changes it.
        // A layered env's files are the user's, never written by the agent.
        let attempted_env = match &mode {
            Mode::New { .. } if !spec.layered_env() => Some((self.env_path(&spec), env.clone())),
            Mode::New { .. } | Mode::Restart { .. } => None,
        };
        let at = Attempt {
            name: name.clone(),
            revision,
            mode,
            attempted_env,
            progress: &progress,
        };

        let was_running: Vec<ContainerInfo> = old.iter().filter(|c| c.running).cloned().collect();
        let blue_green = deploys_blue_green(&spec);
        // What a failure has to bring back: recreate stops the old container
        // first; blue-green never touches it until traffic has moved.
        let restore: &[ContainerInfo] = if blue_green { &[] } else { &was_running };
        if let Some((path, env)) = &at.attempted_env
            && let Err(e) = self.sync_env_file(&name, path, env).await
        {
            return Ok((self.fail(&at, &[], Failure::before_gate(e.to_string())).await, None));
        }
        phases.mark("env");
        let stopping = !blue_green && !was_running.is_empty();
        if stopping {
            progress.step("stop", format!("stopping {} old container(s)", was_running.len()));
        }
        let stop_old = async {
            if !stopping {
                return Ok(());
            }
            for c in &was_running {
                // The old container frees its ports first. It is kept
                // (stopped) so a failed gate can start it again at once.
                engine
                    .stop(&c.id, spec.stop_timeout.as_std())
                    .await
                    .map_err(|e| format!("cannot stop the old container: {e}"))?;
            }
            Ok::<_, String>(())
        };
        // Creating takes no port and starts nothing, so it runs while the
        // old container stops; only the start waits for the stop.
        let (stopped, created) = tokio::join!(stop_old, self.create_stopped(&spec, revision));
        phases.mark(if stopping { "stop+create" } else { "create" });
        let new_id = match (stopped, created) {
            (Ok(()), Ok(id)) => id,
            (Err(why), Ok(id)) => {
                // Never started: nothing to keep of it.
                let _ = engine.remove(&id).await;
                return Ok((self.fail(&at, restore, Failure::before_gate(why)).await, None));
            }
            (Err(why), Err(_)) => return Ok((self.fail(&at, restore, Failure::before_gate(why)).await, None)),
            (Ok(()), Err(e)) => {
                let why = format!("cannot start the new container: {e}");
                return Ok((self.fail(&at, restore, Failure::before_gate(why)).await, None));
            }
        };
        let beside = if blue_green && !was_running.is_empty() {
            " next to the running one"
        } else {
            ""
        };
        progress.step(
            "start",
            format!("starting revision {revision} ({}){beside}", spec.image),
        );
        if let Err(e) = self.start_created(&new_id).await {
            let why = format!("cannot start the new container: {e}");
            return Ok((self.fail(&at, restore, Failure::before_gate(why)).await, None));
        }
        phases.mark("start");

        let deadline = spec.deploy.health_deadline.as_std();
        // What the gate reports never shows the env the container got.
        let redact = health::Redactor::new(env.iter().map(|(_, v)| v));
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
        let gate = tokio::select! {
            biased;
            _ = self.cancel().cancelled() => Err(Failure {
                new_id: Some(new_id.clone()),
                reason: format!(
                    "the agent is shutting down, so revision {revision} was stopped before it took over"
                ),
                health_output: None,
                exit_code: None,
                ending: Ending::Interrupted,
            }),
            gate = health::gate(&engine, &new_id, &spec, deadline, &redact) => gate.map_err(|g| Failure {
                new_id: Some(new_id.clone()),
                reason: g.reason,
                health_output: Some(g.health_output),
                exit_code: g.exit_code,
                ending: Ending::Failed,
            }),
        };
        phases.mark_counted("gate", gate.as_ref().ok().map(|p| p.probes));
        match gate {
            Ok(pass) => {
                let interval = spec
                    .health
                    .as_ref()
                    .map_or(Duration::from_secs(2), |h| h.live().interval.as_std());
                // Metrics and the health monitor follow the new container at
                // once, not only after the next reconcile pass.
                if let Err(e) = self.healthy(&name, &new_id, interval, pass).await {
                    let failure = Failure::after_gate(new_id, format!("cannot follow the new container: {e}"));
                    return Ok((self.fail(&at, restore, failure).await, None));
                }
            }
            Err(failure) => return Ok((self.fail(&at, restore, failure).await, None)),
        }
        phases.mark("follow");

        if blue_green && let Err(why) = self.switch(&spec, &new_id, revision, &progress).await {
            let failure = Failure::after_gate(new_id, why);
            return Ok((self.fail(&at, restore, failure).await, None));
        }
        if blue_green {
            phases.mark("switch");
        }
        // The new revision is durable before anything of the old one is
        // removed: a failed write (a full state_dir) leaves the old
        // container to serve, never neither.
        if let Mode::New { .. } = at.mode
            && let Err(e) = self.activate(&name, revision).await
        {
            if blue_green {
                self.switch_back(current.as_ref(), &was_running, &progress).await;
            }
            let failure = Failure::after_gate(new_id, format!("cannot record revision {revision} as active: {e}"));
            return Ok((self.fail(&at, restore, failure).await, None));
        }
        phases.mark("activate");
        self.deployed(&name).await?;
        self.bus().publish(
            "deployed",
            &name,
            revision,
            Severity::Info,
            format!("Revision {revision} ({}) is running and healthy.", spec.image),
        );
        if !env_keys.is_empty() {
            self.bus().publish(
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
        self.audit().record(
            &author,
            &action,
            &name,
            &format!("revision {revision} image {}{}", spec.image, keys_detail(&env_keys)),
            "ok",
        );
        phases.mark("audit");
        phases.log(&name, revision, "ok");
        let drain = (blue_green && !was_running.is_empty()).then(|| spec.deploy.drain.as_std());
        let retire = (!old.is_empty()).then(|| {
            let after = drain.map_or_else(String::new, |d| format!(" after a drain of {}s", d.as_secs_f64()));
            progress.step(
                "cleanup",
                format!(
                    "revision {revision} serves; removing {} old container(s){after}",
                    old.len()
                ),
            );
            Retire {
                service: name.clone(),
                drain,
                stop_timeout: spec.stop_timeout.as_std(),
                old,
                stop_running: blue_green,
            }
        });
        Ok((
            Outcome {
                success: true,
                service: name,
                revision,
                attempted_revision: revision,
                changed: true,
                ..Outcome::default()
            },
            retire,
        ))
    }

    /// What follows a rollout that took over: the old revision's drain (blue-green)
    /// and the removal of its containers. The caller has its answer by then; the
    /// permit is still held, so nothing else acts on the service meanwhile.
    pub(super) async fn retire(&self, r: Retire) {
        let started = std::time::Instant::now();
        if let Some(drain) = r.drain {
            tokio::time::sleep(drain).await;
        }
        let Ok(engine) = self.engine() else { return };
        for c in &r.old {
            // The new revision runs and is recorded: an old container that
            // will not go is left to the reconciler, which removes what is
            // not the active revision.
            let removed = match c.running && r.stop_running {
                true => self.stop_and_remove(&c.id, r.stop_timeout).await,
                false => engine.remove(&c.id).await.map_err(internal),
            };
            if let Err(e) = removed {
                tracing::warn!(service = %r.service, container = %c.id, error = %e, "Cannot remove an old container; the reconciler will.");
            }
        }
        tracing::debug!(
            service = %r.service,
            containers = r.old.len(),
            ms = started.elapsed().as_millis() as u64,
            "Retired the old revision's containers."
        );
    }

    /// Points nginx back at the revision that ran before, after traffic had
    /// moved to a new one that cannot be recorded. Best effort: the failure
    /// being reported is the one that matters.
    async fn switch_back(&self, current: Option<&Revision>, was_running: &[ContainerInfo], progress: &ProgressTx) {
        let (Some(cur), Some(old)) = (current, was_running.first()) else {
            return;
        };
        if let Err(e) = self.switch(&cur.spec, &old.id, cur.number, progress).await {
            tracing::error!(service = %cur.spec.name, error = %e, "Cannot point nginx back at the previous revision.");
        }
    }

    /// Refuses what cannot work before anything on the host changes.
    fn preflight(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        let name = spec.name.as_str();
        let snap = self.snapshot();
        let others: Vec<&ServiceSpec> = snap
            .records()
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .filter_map(|(_, r)| r.active_revision().map(|r| &r.spec))
            .collect();
        crate::preflight::check_host_budget(spec, &others).map_err(|e| SupervisorError::Refused(e.to_string()))?;
        crate::preflight::check_host_ports(spec, &others).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        let capacity = self.capacity();
        crate::preflight::check_capacity(spec, capacity.cpus, capacity.memory_bytes)
            .map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        Ok(())
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
        let engine = self.engine().map_err(|e| e.to_string())?;
        let info = match engine.inspect(new_id).await {
            Ok(Some(info)) => info,
            Ok(None) => return Err("the new container disappeared before the switch".into()),
            Err(e) => return Err(format!("cannot inspect the new container: {e}")),
        };
        let upstream =
            upstream_of(&info, spec).ok_or_else(|| "the new container has no address nginx can reach".to_owned())?;
        // A service in maintenance stays in it across deploys.
        let maintenance = self
            .snapshot()
            .record(spec.name.as_str())
            .is_some_and(|r| r.maintenance);
        let site = nginx::render(spec, proxy, upstream, maintenance);
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

    /// Pulls `image` with progress; an image already on the host will do
    /// when the registry fails. Abandoned when the agent shuts down.
    async fn pull(&self, image: &ImageRef, progress: &ProgressTx) -> Result<(), SupervisorError> {
        let engine = self.engine()?;
        progress.step("pull", format!("pulling {image}"));
        let (tx, mut rx) = mpsc::channel::<PullProgress>(64);
        let forward = async {
            while let Some(p) = rx.recv().await {
                progress.pull(p);
            }
        };
        let pulled = async {
            let (result, ()) = tokio::join!(engine.pull(image, Some(tx)), forward);
            result
        };
        let result = tokio::select! {
            _ = self.cancel().cancelled() => {
                return Err(SupervisorError::Unavailable(format!(
                    "the agent is shutting down; stopped pulling {image} (nothing was changed)"
                )));
            }
            result = pulled => result,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                if engine.image_exists(image.as_str()).await.unwrap_or(false) {
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

    /// Ends a rollout that did not take over: removes the new container,
    /// starts `was_running` again, puts the env file back, records the
    /// revision failed or interrupted, and says what happened.
    async fn fail(&self, at: &Attempt<'_>, was_running: &[ContainerInfo], f: Failure) -> Outcome {
        let Attempt {
            name,
            revision,
            mode,
            attempted_env,
            progress,
        } = at;
        let (name, revision) = (name.as_str(), *revision);
        let mut log_tail = Vec::new();
        if let (Ok(engine), Some(id)) = (self.engine(), &f.new_id) {
            log_tail = engine.log_tail(id, LOG_TAIL).await;
            let _ = self.stop_and_remove(id, Duration::from_secs(5)).await;
        }
        let mut rolled_back = false;
        if let Ok(engine) = self.engine() {
            for c in was_running {
                if super::start(&engine, &c.id).await.is_ok() {
                    rolled_back = true;
                }
            }
        }
        let current = self.snapshot().record(name).map_or(0, |r| r.active);
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
            self.restore_env_file(name, path, env, progress).await;
        }
        let (author, action) = match mode {
            Mode::New { reason, author } => (author.clone(), reason.clone()),
            Mode::Restart { author } => (author.clone(), "restart".to_owned()),
        };
        let env_keys = match mode {
            Mode::New { .. } => self
                .snapshot()
                .record(name)
                .and_then(|r| r.revision(revision).map(|r| r.env_keys_changed.clone()))
                .unwrap_or_default(),
            Mode::Restart { .. } => Vec::new(),
        };
        let reason = f.reason;
        if let Mode::New { .. } = mode {
            let recorded = match f.ending {
                Ending::Failed => self.fail_revision(name, revision, &reason).await,
                Ending::Interrupted => self.interrupt_revision(name, revision, &reason).await,
            };
            if let Err(e) = recorded {
                tracing::error!(service = name, error = %e, "Cannot record how the revision ended.");
            }
        }
        let restored = if rolled_back {
            format!("; revision {current} was restored")
        } else {
            String::new()
        };
        let (kind, severity, outcome) = match f.ending {
            Ending::Failed => ("deploy-failed", Severity::Error, "failed"),
            Ending::Interrupted => ("deploy-interrupted", Severity::Warning, "interrupted"),
        };
        self.bus().publish(
            kind,
            name,
            revision,
            severity,
            format!("Revision {revision} {outcome}: {reason}{restored}."),
        );
        self.audit().record(
            &author,
            &action,
            name,
            &format!("revision {revision}{}", keys_detail(&env_keys)),
            &format!("{outcome}: {reason}"),
        );
        Outcome {
            success: false,
            service: name.to_owned(),
            revision: current,
            attempted_revision: revision,
            error: reason,
            rolled_back,
            health_output: f.health_output.unwrap_or_default(),
            exit_code: f.exit_code,
            log_tail,
            changed: true,
        }
    }
}

/// Whether a deploy of `spec` runs the new container beside the old one
/// and moves nginx to it (each then has an address of its own), rather than
/// recreating it.
pub(super) fn deploys_blue_green(spec: &ServiceSpec) -> bool {
    spec.strategy() == Strategy::BlueGreen && spec.proxy.is_some()
}

//! Env changes asked for through the `Env` API (set, unset, import), and
//! what every rollout does with env files.
//!
//! The state is the source of truth for what each service runs with: every
//! revision keeps its env, and a service's *current* env is that of its
//! newest active or recorded revision. The env file is the interface for
//! people and tools: the agent writes it on every change (see
//! [`envfiles::write`]) and remembers the written content's fingerprint
//! with the owner, so the env loop ([`super::envcheck`]) does not take the
//! agent's own writes for edits. A change runs on a worker holding the
//! service's permit, like a deploy, and applies by the spec's `env_change`:
//! a health-gated rollout, or a *recorded* revision only.
//!
//! A *layered* env (`env_files`, inline `[env]`) is built from the spec and
//! its files at each deploy and kept merged in the revision; the agent
//! never writes those files (several services may share one), and the
//! `Env` API's changes are refused for such a service.

use std::path::{Path, PathBuf};

use tracing::info_span;

use super::deploy::{Mode, Outcome, ProgressTx, keys_detail};
use super::view::not_found;
use super::{Supervisor, SupervisorError};
use crate::audit::Actor;
use crate::clock::now_ms;
use crate::envfiles;
use crate::events::Severity;
use crate::health;
use crate::state::{NewRevision, RevisionStatus};
use berth_core::envfile::{self, Vars};
use berth_core::spec::{EnvChange, ServiceName, ServiceSpec};

/// A change asked for through the `Env` API.
#[derive(Debug, Clone)]
pub enum EnvEdit {
    /// Set these keys, keep the others (`berthctl env set`).
    Set(Vars),
    /// Remove these keys; each must be set (`berthctl env unset`).
    Unset(Vec<String>),
    /// Make the env exactly this (`berthctl env import`).
    Replace(Vars),
}

impl EnvEdit {
    /// The revision reason and audit action.
    fn reason(&self) -> &'static str {
        match self {
            EnvEdit::Set(_) => "env set",
            EnvEdit::Unset(_) => "env unset",
            EnvEdit::Replace(_) => "env import",
        }
    }

    /// `current` with the edit made. Errors name keys, never values.
    pub fn apply(&self, current: &Vars) -> Result<Vars, SupervisorError> {
        match self {
            EnvEdit::Set(set) => {
                if set.is_empty() {
                    return Err(SupervisorError::Invalid(
                        "nothing to set: give at least one KEY=VALUE".into(),
                    ));
                }
                let mut env = current.clone();
                for (k, v) in set.iter() {
                    env.insert(k.to_owned(), v.to_owned());
                }
                Ok(env)
            }
            EnvEdit::Unset(keys) => {
                if keys.is_empty() {
                    return Err(SupervisorError::Invalid(
                        "nothing to unset: give at least one KEY".into(),
                    ));
                }
                let missing: Vec<&str> = keys
                    .iter()
                    .map(String::as_str)
                    .filter(|k| !current.contains_key(k))
                    .collect();
                if !missing.is_empty() {
                    let set: Vec<&str> = current.keys().collect();
                    return Err(SupervisorError::Invalid(format!(
                        "not set: {} (set keys: {})",
                        missing.join(", "),
                        if set.is_empty() {
                            "none".to_owned()
                        } else {
                            set.join(", ")
                        }
                    )));
                }
                let mut env = current.clone();
                for k in keys {
                    env.remove(k);
                }
                Ok(env)
            }
            EnvEdit::Replace(env) => Ok(env.clone()),
        }
    }
}

/// A service's env, for `GetEnv`.
#[derive(Debug, Clone)]
pub struct EnvView {
    /// The variables.
    pub vars: Vars,
    /// The revision they belong to; 0 for a service not applied yet.
    pub revision: u64,
    /// The env file.
    pub path: PathBuf,
}

impl Supervisor {
    /// The env a container of `revision` gets: the one the revision keeps,
    /// or for an old revision that keeps none, the live env file.
    pub(super) fn revision_env(&self, spec: &ServiceSpec, revision: u64) -> Result<Vars, SupervisorError> {
        let kept = self
            .snapshot()
            .record(spec.name.as_str())
            .and_then(|r| r.revision(revision).and_then(|r| r.env.clone()));
        match kept {
            Some(env) => Ok(env),
            None if spec.layered_env() => self.layered_env(spec),
            None => envfiles::read(&self.env_path(spec)).map_err(|e| SupervisorError::Invalid(e.to_string())),
        }
    }

    /// The env files of a layered `spec` as they are now, in order: path
    /// and content (`None` for a missing file).
    pub(super) fn layered_files(&self, spec: &ServiceSpec) -> Result<envfiles::FileContents, SupervisorError> {
        spec.env_file_names()
            .into_iter()
            .map(|name| {
                let path = self.env_dir().join(name);
                let bytes = envfiles::read_bytes(&path).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
                Ok((path, bytes))
            })
            .collect()
    }

    /// A layered env as the spec and its files give it now: inline `[env]`
    /// values, overridden by each env file in order.
    pub(super) fn layered_env(&self, spec: &ServiceSpec) -> Result<Vars, SupervisorError> {
        let files = self.layered_files(spec)?;
        envfiles::merge_layered(&spec.env, &files).map_err(|e| SupervisorError::Invalid(e.to_string()))
    }

    /// The env a new revision of `spec` starts from: the service's current
    /// env, unless `spec` names another env file than the current one (or
    /// the service is new), in which case that file's content. A layered
    /// env is always built afresh from the spec and its files, which the
    /// agent never writes.
    pub(super) fn current_env(&self, spec: &ServiceSpec) -> Result<Vars, SupervisorError> {
        if spec.layered_env() {
            return self.layered_env(spec);
        }
        let kept = self.snapshot().record(spec.name.as_str()).and_then(|r| {
            r.env_revision()
                .filter(|rev| rev.spec.env_file_name() == spec.env_file_name())
                .and_then(|rev| rev.env.clone())
        });
        match kept {
            Some(env) => Ok(env),
            None => envfiles::read(&self.env_path(spec)).map_err(|e| SupervisorError::Invalid(e.to_string())),
        }
    }

    /// What cleans the health monitor's probe output of `spec`'s service:
    /// the values of the env its running revision got and of its current
    /// env (they differ after an edit with `env_change = "none"`). An env
    /// that cannot be read leaves only what the state holds.
    pub(super) fn redactor(&self, spec: &ServiceSpec) -> health::Redactor {
        let snap = self.snapshot();
        let running = snap
            .record(spec.name.as_str())
            .and_then(|r| r.active_revision())
            .and_then(|r| r.env.clone());
        let current = self.current_env(spec).ok();
        health::Redactor::new(
            running
                .iter()
                .chain(current.iter())
                .flat_map(|vars| vars.iter().map(|(_, v)| v)),
        )
    }

    /// A service's current env. For a service not applied yet, its default
    /// env file if one exists.
    pub fn env_view(&self, service: &str) -> Result<EnvView, SupervisorError> {
        match self.ready_snapshot()?.record(service) {
            Some(record) => {
                let rev = record
                    .env_revision()
                    .or_else(|| record.active_revision())
                    .ok_or_else(|| not_found(service))?;
                let path = self.env_path(&rev.spec);
                let vars = match &rev.env {
                    Some(env) => env.clone(),
                    None => self.revision_env(&rev.spec, rev.number)?,
                };
                Ok(EnvView {
                    vars,
                    revision: rev.number,
                    path,
                })
            }
            None => {
                let path = self.default_env_path(service)?;
                match envfiles::read_bytes(&path).map_err(|e| SupervisorError::Internal(e.to_string()))? {
                    Some(bytes) => Ok(EnvView {
                        vars: envfile::parse(&bytes, &path).map_err(|e| SupervisorError::Invalid(e.to_string()))?,
                        revision: 0,
                        path,
                    }),
                    None => Err(not_found(service)),
                }
            }
        }
    }

    /// `env_dir/NAME.env` for a valid service name (never a path outside
    /// the env dir).
    fn default_env_path(&self, service: &str) -> Result<PathBuf, SupervisorError> {
        let name: ServiceName = service
            .parse()
            .map_err(|e| SupervisorError::Invalid(format!("service {service:?}: {e}")))?;
        Ok(self.env_dir().join(format!("{name}.env")))
    }

    /// Changes a service's env: a new revision, applied by its
    /// `env_change` policy (health-gated restart, or recorded only). For a
    /// service not applied yet, writes its default env file for the first
    /// apply to use.
    pub async fn change_env(
        &self,
        service: &str,
        edit: EnvEdit,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        if let EnvEdit::Set(vars) | EnvEdit::Replace(vars) = &edit {
            envfile::check_vars(vars).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        }
        let path = self.default_env_path(service)?;
        let sup = self.clone();
        let (service, author) = (service.to_owned(), author.to_owned());
        let span = info_span!("env-change", service = %service);
        self.in_worker(span, async move {
            let _permit = sup.acquire(&service, &progress).await?;
            sup.change_env_permitted(&service, &path, edit, &author, progress).await
        })
        .await
    }

    async fn change_env_permitted(
        &self,
        service: &str,
        path: &Path,
        edit: EnvEdit,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let Some(record) = self.snapshot().record(service).cloned() else {
            return self.change_unapplied_env(service, path, &edit, author, &progress);
        };
        let spec = record
            .active_revision()
            .map(|r| r.spec.clone())
            .ok_or_else(|| not_found(service))?;
        if spec.layered_env() {
            return Err(SupervisorError::Refused(format!(
                "{service} has a layered env (env_files {:?} over inline [env] values), which the agent never \
                 writes: edit those files (each edit rolls every service that uses it) or the spec's [env]",
                spec.env_file_names()
            )));
        }
        let current = self.current_env(&spec)?;
        let env = edit.apply(&current)?;
        envfile::check_vars(&env).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        if env == current {
            progress.step("env", "the env already has these values");
            return Ok(Outcome {
                success: true,
                service: service.to_owned(),
                revision: record.active,
                attempted_revision: record.active,
                changed: false,
                ..Outcome::default()
            });
        }
        self.apply_env_permitted(spec, current, env, edit.reason(), author, progress)
            .await
    }

    /// `change_env` for a service with no record: only the file changes.
    fn change_unapplied_env(
        &self,
        service: &str,
        path: &Path,
        edit: &EnvEdit,
        author: &Actor,
        progress: &ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        if let EnvEdit::Unset(_) = edit
            && !path.exists()
        {
            return Err(not_found(service));
        }
        let current = envfiles::read(path).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        let env = edit.apply(&current)?;
        let keys = envfile::changed_keys(&current, &env);
        envfiles::write(path, &env).map_err(|e| SupervisorError::Internal(e.to_string()))?;
        progress.step(
            "env",
            format!(
                "{service} is not applied yet: wrote {}; its first apply uses it",
                path.display()
            ),
        );
        self.audit().record(
            author,
            edit.reason(),
            service,
            &format!("{} (service not applied yet){}", path.display(), keys_detail(&keys)),
            "ok",
        );
        Ok(Outcome {
            success: true,
            service: service.to_owned(),
            changed: !keys.is_empty(),
            ..Outcome::default()
        })
    }

    /// Applies `env` (changed from `current`) by the spec's policy. The
    /// caller holds the service's permit.
    pub(super) async fn apply_env_permitted(
        &self,
        spec: ServiceSpec,
        current: Vars,
        env: Vars,
        reason: &str,
        author: &Actor,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        match spec.env_change {
            EnvChange::Restart => {
                let mode = Mode::New {
                    reason: reason.to_owned(),
                    author: author.to_owned(),
                };
                self.rollout(spec, env, mode, progress).await
            }
            EnvChange::Ignore => self.record_env(spec, &current, env, reason, author, &progress).await,
        }
    }

    /// `env_change = "none"`: keeps the change as a recorded revision and
    /// writes the file; the running container is left alone.
    async fn record_env(
        &self,
        spec: ServiceSpec,
        current: &Vars,
        env: Vars,
        reason: &str,
        author: &Actor,
        progress: &ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let name = spec.name.as_str().to_owned();
        let keys = envfile::changed_keys(current, &env);
        // A layered env's files are the user's: they already hold the edit.
        if !spec.layered_env() {
            let path = self.env_path(&spec);
            self.sync_env_file(&name, &path, &env)
                .await
                .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        }
        let number = self
            .add_revision(
                NewRevision {
                    spec,
                    env: Some(env),
                    env_keys_changed: keys.clone(),
                    reason: reason.to_owned(),
                    author: author.name.clone(),
                    now_ms: now_ms(),
                },
                RevisionStatus::Recorded,
            )
            .await?;
        let active = self.snapshot().record(&name).map_or(0, |r| r.active);
        let message = format!(
            "Recorded revision {number} (env keys changed: {}); env_change = \"none\", so revision {active} \
             keeps running with its env until the next deploy or restart.",
            keys.join(", ")
        );
        progress.step("record", message.clone());
        self.bus()
            .publish("env-changed", &name, number, Severity::Info, message);
        self.audit().record(
            author,
            reason,
            &name,
            &format!("revision {number}{}", keys_detail(&keys)),
            "recorded",
        );
        Ok(Outcome {
            success: true,
            service: name,
            revision: active,
            attempted_revision: number,
            changed: true,
            ..Outcome::default()
        })
    }

    /// Makes the file at `path` hold `env`, writing only if it does not
    /// already (a hand edit being applied is already there), and remembers
    /// what was written so the watcher does not take it for an edit.
    pub(super) async fn sync_env_file(&self, service: &str, path: &Path, env: &Vars) -> Result<(), envfiles::EnvError> {
        if envfiles::read(path).is_ok_and(|on_disk| on_disk == *env) {
            return Ok(());
        }
        let bytes = envfiles::write(path, env)?;
        // Only fails when the agent stops; the file is written either way.
        let _ = self.env_seen(service, envfiles::fingerprint(Some(&bytes))).await;
        Ok(())
    }

    /// After a failed rollout: writes the env of the revision that runs
    /// again back to its file, if the file still holds the env the rollout
    /// tried (someone may have edited it since; their edit wins).
    pub(super) async fn restore_env_file(
        &self,
        service: &str,
        attempted_path: &Path,
        attempted: &Vars,
        progress: &ProgressTx,
    ) {
        let Some(active) = self
            .snapshot()
            .record(service)
            .and_then(|r| r.active_revision().cloned())
        else {
            return;
        };
        let Some(env) = active.env else { return };
        // A layered env's files are the user's; the agent never writes them.
        if active.spec.layered_env() {
            return;
        }
        if env == *attempted || !envfiles::read(attempted_path).is_ok_and(|on_disk| on_disk == *attempted) {
            return;
        }
        let path = self.env_path(&active.spec);
        match self.sync_env_file(service, &path, &env).await {
            Ok(()) => progress.step(
                "rollback",
                format!("restored {} to the env of revision {}", path.display(), active.number),
            ),
            Err(e) => self.bus().publish(
                "env-restore-failed",
                service,
                active.number,
                Severity::Error,
                format!(
                    "Cannot write back the env of revision {} ({e}); the container runs with it, but the file does not show it.",
                    active.number
                ),
            ),
        }
    }

    /// At start: a deploy cut short by an agent restart may have written
    /// its env to the file; the previous revision stays, so its env goes
    /// back to the file too.
    pub(super) async fn restore_interrupted_env(&self, settled: &[(String, u64)]) {
        for (service, number) in settled {
            let Some(rev) = self
                .snapshot()
                .record(service)
                .and_then(|r| r.revision(*number).cloned())
            else {
                continue;
            };
            if let Some(env) = &rev.env {
                let path = self.env_path(&rev.spec);
                self.restore_env_file(service, &path, env, &ProgressTx::new(None)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn edits_apply_to_the_current_env() {
        let cur = vars(&[("A", "1"), ("B", "2")]);
        let set = EnvEdit::Set(vars(&[("B", "3"), ("C", "4")])).apply(&cur).expect("set");
        assert_eq!(set, vars(&[("A", "1"), ("B", "3"), ("C", "4")]));
        let unset = EnvEdit::Unset(vec!["A".into()]).apply(&cur).expect("unset");
        assert_eq!(unset, vars(&[("B", "2")]));
        let replaced = EnvEdit::Replace(vars(&[("Z", "9")])).apply(&cur).expect("replace");
        assert_eq!(replaced, vars(&[("Z", "9")]));
        // Importing an empty file empties the env; set and unset need keys.
        assert!(EnvEdit::Replace(Vars::new()).apply(&cur).expect("empty").is_empty());
        assert!(EnvEdit::Set(Vars::new()).apply(&cur).is_err());
        assert!(EnvEdit::Unset(Vec::new()).apply(&cur).is_err());
    }

    #[test]
    fn unsetting_a_missing_key_names_keys_not_values() {
        let cur = vars(&[("PASSWORD", "hunter2")]);
        let e = EnvEdit::Unset(vec!["PASWORD".into()])
            .apply(&cur)
            .expect_err("typo")
            .to_string();
        assert!(e.contains("PASWORD") && e.contains("PASSWORD"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

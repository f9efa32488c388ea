//! Env changes: the `Env` API's set, unset and import, and edits of env
//! files made outside the agent.
//!
//! The state is the source of truth for what each service runs with: every
//! revision keeps its env, and a service's *current* env is that of its
//! newest active or recorded revision. The env file is the interface for
//! people and tools: the agent writes it on every change (see
//! [`envfiles::write`]), and the env loop notices when someone else does.
//!
//! The env loop is fed by the env-dir watcher ([`crate::envwatch`]) and a
//! slower resync. For each service whose file's fingerprint differs from the
//! last one handled, it spawns one check that takes the service's lock,
//! re-reads the file and either refuses it (event `env-rejected`, naming the
//! file and line), or records it as a revision and applies it by the spec's
//! `env_change` policy. The fingerprint is updated before acting and after
//! the agent's own writes, so no write — the agent's, or a refused or failed
//! edit — is handled twice. The loop ends on cancel; running checks finish
//! (they are short, or a health-gated rollout that must not stop half-way).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info, info_span, warn};

use super::deploy::{Mode, Outcome, ProgressTx, keys_detail};
use super::{Supervisor, SupervisorError};
use berth_core::envfile::{self, Vars};

use crate::clock::now_ms;
use crate::envfiles;
use crate::envwatch::{self, EnvWatch};
use crate::events::Severity;
use crate::state::{NewRevision, RevisionStatus, ServiceRecord};
use berth_core::spec::{EnvChange, ServiceName, ServiceSpec};

/// How often every env file is looked at even without watcher events:
/// covers a watch that failed or lost events. Reading a few small files is
/// cheap, and nothing happens unless a file's fingerprint changed.
const ENV_RESYNC: Duration = Duration::from_secs(30);
/// Watcher messages queued for the env loop. Each one names files to check
/// and a check re-reads everything, so a short queue loses nothing: the
/// watcher thread waits (and merges later events) while it is full.
const WATCH_QUEUE: usize = 8;

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
    // ---------------------------------------------------------------- reading

    /// The env a container of `revision` gets: the one the revision keeps,
    /// or for an old revision that keeps none, the live env file.
    pub(super) fn revision_env(&self, spec: &ServiceSpec, revision: u64) -> Result<Vars, SupervisorError> {
        let kept = self
            .record(spec.name.as_str())
            .and_then(|r| r.revision(revision).and_then(|r| r.env.clone()));
        match kept {
            Some(env) => Ok(env),
            None => envfiles::read(&self.env_path(spec)).map_err(|e| SupervisorError::Invalid(e.to_string())),
        }
    }

    /// The env a new revision of `spec` starts from: the service's current
    /// env, unless `spec` names another env file than the current one (or
    /// the service is new), in which case that file's content.
    pub(super) fn current_env(&self, spec: &ServiceSpec) -> Result<Vars, SupervisorError> {
        let kept = self.record(spec.name.as_str()).and_then(|r| {
            r.env_revision()
                .filter(|rev| rev.spec.env_file_name() == spec.env_file_name())
                .and_then(|rev| rev.env.clone())
        });
        match kept {
            Some(env) => Ok(env),
            None => envfiles::read(&self.env_path(spec)).map_err(|e| SupervisorError::Invalid(e.to_string())),
        }
    }

    /// A service's current env. For a service not applied yet, its default
    /// env file if one exists.
    pub fn env_view(&self, service: &str) -> Result<EnvView, SupervisorError> {
        match self.record(service) {
            Some(record) => {
                let rev = record
                    .env_revision()
                    .or_else(|| record.active_revision())
                    .ok_or_else(|| not_found(service))?;
                let path = self.env_path(&rev.spec);
                let vars = match &rev.env {
                    Some(env) => env.clone(),
                    None => envfiles::read(&path).map_err(|e| SupervisorError::Invalid(e.to_string()))?,
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
        Ok(self.env_dir.join(format!("{name}.env")))
    }

    // --------------------------------------------------------------- changing

    /// Changes a service's env: a new revision, applied by its
    /// `env_change` policy (health-gated restart, or recorded only). For a
    /// service not applied yet, writes its default env file for the first
    /// apply to use.
    pub async fn change_env(
        self: &Arc<Self>,
        service: &str,
        edit: EnvEdit,
        author: &str,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        if let EnvEdit::Set(vars) | EnvEdit::Replace(vars) = &edit {
            envfile::check_vars(vars).map_err(|e| SupervisorError::Invalid(e.to_string()))?;
        }
        let path = self.default_env_path(service)?;
        let _busy = self.busy(service, &progress).await;
        let Some(record) = self.record(service) else {
            return self.change_unapplied_env(service, &path, &edit, author, &progress);
        };
        let spec = record
            .active_revision()
            .map(|r| r.spec.clone())
            .ok_or_else(|| not_found(service))?;
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
        self.apply_env_locked(spec, current, env, edit.reason(), author, progress)
            .await
    }

    /// `change_env` for a service with no record: only the file changes.
    fn change_unapplied_env(
        &self,
        service: &str,
        path: &Path,
        edit: &EnvEdit,
        author: &str,
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
        self.audit.record(
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
    /// caller holds the service's lock.
    async fn apply_env_locked(
        self: &Arc<Self>,
        spec: ServiceSpec,
        current: Vars,
        env: Vars,
        reason: &str,
        author: &str,
        progress: ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        match spec.env_change {
            EnvChange::Restart => {
                let mode = Mode::New {
                    reason: reason.to_owned(),
                    author: author.to_owned(),
                };
                self.rollout_locked(spec, env, mode, progress).await
            }
            EnvChange::Ignore => self.record_env(spec, &current, env, reason, author, &progress),
        }
    }

    /// `env_change = "none"`: keeps the change as a recorded revision and
    /// writes the file; the running container is left alone.
    fn record_env(
        &self,
        spec: ServiceSpec,
        current: &Vars,
        env: Vars,
        reason: &str,
        author: &str,
        progress: &ProgressTx,
    ) -> Result<Outcome, SupervisorError> {
        let name = spec.name.as_str().to_owned();
        let keys = envfile::changed_keys(current, &env);
        let path = self.env_path(&spec);
        self.sync_env_file(&name, &path, &env)
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        let number = self
            .store()
            .add(
                NewRevision {
                    spec,
                    env: Some(env),
                    env_keys_changed: keys.clone(),
                    reason: reason.to_owned(),
                    author: author.to_owned(),
                    now_ms: now_ms(),
                },
                RevisionStatus::Recorded,
            )
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        let active = self.record(&name).map_or(0, |r| r.active);
        let message = format!(
            "Recorded revision {number} (env keys changed: {}); env_change = \"none\", so revision {active} \
             keeps running with its env until the next deploy or restart.",
            keys.join(", ")
        );
        progress.step("record", message.clone());
        self.bus.publish("env-changed", &name, number, Severity::Info, message);
        self.audit.record(
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
    pub(super) fn sync_env_file(&self, service: &str, path: &Path, env: &Vars) -> Result<(), envfiles::EnvError> {
        if envfiles::read(path).is_ok_and(|on_disk| on_disk == *env) {
            return Ok(());
        }
        let bytes = envfiles::write(path, env)?;
        self.runtime()
            .env_seen
            .insert(service.to_owned(), envfiles::fingerprint(Some(&bytes)));
        Ok(())
    }

    /// After a failed rollout: writes the env of the revision that runs
    /// again back to its file, if the file still holds the env the rollout
    /// tried (someone may have edited it since; their edit wins).
    pub(super) fn restore_env_file(
        &self,
        service: &str,
        attempted_path: &Path,
        attempted: &Vars,
        progress: &ProgressTx,
    ) {
        let Some(active) = self.record(service).and_then(|r| r.active_revision().cloned()) else {
            return;
        };
        let Some(env) = active.env else { return };
        if env == *attempted || !envfiles::read(attempted_path).is_ok_and(|on_disk| on_disk == *attempted) {
            return;
        }
        let path = self.env_path(&active.spec);
        match self.sync_env_file(service, &path, &env) {
            Ok(()) => progress.step(
                "rollback",
                format!("restored {} to the env of revision {}", path.display(), active.number),
            ),
            Err(e) => self.bus.publish(
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
    pub(super) fn restore_interrupted_env(&self, settled: &[(String, u64)]) {
        for (service, number) in settled {
            let Some(rev) = self.record(service).and_then(|r| r.revision(*number).cloned()) else {
                continue;
            };
            if let Some(env) = &rev.env {
                let path = self.env_path(&rev.spec);
                self.restore_env_file(service, &path, env, &ProgressTx::new(None));
            }
        }
    }

    // ---------------------------------------------------------------- watching

    /// Creates the env dir if needed and starts the watcher thread. `None`
    /// when the dir cannot be watched; the resync still notices edits then.
    pub(super) fn watch_env_dir(
        &self,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Option<mpsc::Receiver<EnvWatch>> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = &self.env_dir;
        let started = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let (tx, rx) = mpsc::channel(WATCH_QUEUE);
                envwatch::spawn(dir.clone(), tx, tracker, cancel).map_err(|e| e.to_string())?;
                Ok(rx)
            });
        match started {
            Ok(rx) => {
                info!(env_dir = %dir.display(), "Watching env files.");
                Some(rx)
            }
            Err(e) => {
                self.bus.publish(
                    "env-watch-failed",
                    "",
                    0,
                    Severity::Warning,
                    format!(
                        "Cannot watch env dir {} ({e}); hand edits are noticed within {}s instead.",
                        dir.display(),
                        ENV_RESYNC.as_secs()
                    ),
                );
                None
            }
        }
    }

    /// Turns watcher messages and the resync into env file checks. The
    /// first resync tick is immediate: files edited while the agent was
    /// down are handled at start.
    pub(super) async fn env_loop(
        self: Arc<Self>,
        mut watch: Option<mpsc::Receiver<EnvWatch>>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) {
        let mut resync = tokio::time::interval(ENV_RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = async {
                match watch.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = resync.tick() => self.schedule_env_checks(None, &tracker),
                msg = next => match msg {
                    Some(EnvWatch::Changed(files)) => self.schedule_env_checks(Some(&files), &tracker),
                    Some(EnvWatch::Rescan(why)) => {
                        info!(why, "Rescanning env files.");
                        self.schedule_env_checks(None, &tracker);
                    }
                    None => {
                        warn!("The env dir watcher stopped; relying on the periodic resync.");
                        watch = None;
                    }
                },
            }
        }
    }

    /// Schedules a check of each service whose env file is among `files`
    /// (all services when `None`) and differs from what was last handled.
    fn schedule_env_checks(self: &Arc<Self>, files: Option<&BTreeSet<String>>, tracker: &TaskTracker) {
        let records = self.records();
        for (name, record) in &records {
            let Some(spec) = record.active_revision().map(|r| &r.spec) else {
                continue;
            };
            if files.is_some_and(|f| !f.contains(&spec.env_file_name())) {
                continue;
            }
            if !self.env_file_unhandled(name, spec) {
                continue;
            }
            // One waiting check per service is enough: it reads the file
            // only once it holds the lock.
            if !self.runtime().env_checks.insert(name.clone()) {
                continue;
            }
            tracker.spawn(
                self.clone()
                    .check_env_file(name.clone())
                    .instrument(info_span!("env-check", service = %name)),
            );
        }
    }

    /// Whether the file's content differs from the last handled; a file
    /// that cannot be read counts as changed, so the check reports it.
    fn env_file_unhandled(&self, service: &str, spec: &ServiceSpec) -> bool {
        let Ok(bytes) = envfiles::read_bytes(&self.env_path(spec)) else {
            return true;
        };
        let print = envfiles::fingerprint(bytes.as_deref());
        self.runtime().env_seen.get(service) != Some(&print)
    }

    /// Handles a changed env file of `service`: refuses it if invalid,
    /// else records and applies it by the `env_change` policy.
    async fn check_env_file(self: Arc<Self>, service: String) {
        let progress = ProgressTx::new(None);
        let _busy = self.busy(&service, &progress).await;
        self.runtime().env_checks.remove(&service);
        let Some(record) = self.record(&service) else { return };
        let Some(active) = record.active_revision().cloned() else {
            return;
        };
        let path = self.env_path(&active.spec);
        let bytes = match read_settled(&path).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "Cannot read the env file; will look again at the next resync.");
                return;
            }
        };
        let print = envfiles::fingerprint(bytes.as_deref());
        if self.runtime().env_seen.insert(service.clone(), print) == Some(print) {
            return;
        }
        if bytes.is_some() {
            keep_private(&path);
        }
        let parsed = envfile::parse(bytes.as_deref().unwrap_or_default(), &path);
        let env_rev = record.env_revision().unwrap_or(&active).number;
        let vars = match parsed {
            Ok(v) => v,
            Err(e) => {
                let message = rejected_message(&service, &e, env_rev);
                self.bus
                    .publish("env-rejected", &service, env_rev, Severity::Warning, message);
                self.audit.record(
                    "file",
                    "env file edited",
                    &service,
                    &path.display().to_string(),
                    &format!("rejected: {e}"),
                );
                return;
            }
        };
        let Some(current) = current_kept_env(&record) else {
            // A revision from before envs were kept: its containers run with
            // this file, so it becomes the revision's env, with no restart.
            if let Err(e) = self.store().adopt_env(&service, active.number, vars) {
                warn!(error = %e, "Cannot record the env of the active revision.");
            }
            return;
        };
        if vars == current {
            return;
        }
        let keys = envfile::changed_keys(&current, &vars);
        info!(keys = ?keys, file = %path.display(), "The env file was edited; applying it.");
        match self
            .apply_env_locked(active.spec.clone(), current, vars, "env file edited", "file", progress)
            .await
        {
            Ok(_) => {}
            Err(e) => self.bus.publish(
                "env-rejected",
                &service,
                env_rev,
                Severity::Warning,
                format!(
                    "Cannot apply the edit of {}: {e}. {service} keeps the env of revision {env_rev}.",
                    path.display()
                ),
            ),
        }
    }
}

/// Reads an env file once it has not been modified for [`envwatch::QUIET`].
/// A writer that truncates and then writes (an editor, `cat > file`) can be
/// caught in between when an earlier burst's check lands there, and an
/// empty or half file is valid syntax: applying it would deploy a partial
/// env. The writer's own events bring a fresh check if it pauses longer.
async fn read_settled(path: &Path) -> Result<Option<Vec<u8>>, envfiles::EnvError> {
    for _ in 0..20 {
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        match age {
            Some(age) if age < envwatch::QUIET => tokio::time::sleep(envwatch::QUIET - age).await,
            // Old enough, missing, or dated in the future (clock change).
            _ => break,
        }
    }
    envfiles::read_bytes(path)
}

/// Puts a hand-written env file back to mode 0600 (an editor or tool that
/// replaces the file may have made it world-readable).
fn keep_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => warn!(file = %path.display(), was = format!("{mode:o}"), "Set the env file's mode back to 0600."),
        Err(e) => warn!(file = %path.display(), error = %e, "Cannot set the env file's mode to 0600."),
    }
}

/// The env of the service's newest active or recorded revision, if kept.
fn current_kept_env(record: &ServiceRecord) -> Option<Vars> {
    record.env_revision().and_then(|r| r.env.clone())
}

/// The `env-rejected` message: file and line from the parse error, never a
/// value.
fn rejected_message(service: &str, e: &envfile::EnvError, revision: u64) -> String {
    format!(
        "Refused the edit of the env file: {e}. {service} keeps the env of revision {revision}; \
         fix the file, or replace it with berthctl env import."
    )
}

fn not_found(service: &str) -> SupervisorError {
    SupervisorError::NotFound(format!("no service named {service:?} on this host (see berthctl ps)"))
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

    #[test]
    fn the_rejection_message_points_at_the_line() {
        let e = envfile::parse(b"A=1\nhunter2\n", Path::new("/etc/berth/env/web.env")).expect_err("bad");
        let m = rejected_message("web", &e, 3);
        assert!(m.contains("/etc/berth/env/web.env:2"), "{m}");
        assert!(m.contains("revision 3"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
    }
}

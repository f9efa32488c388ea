//! The agent's desired state: each service's revisions and which one should
//! run, kept in `state_dir/state.json`.
//!
//! Owns the on-disk format, the state's transitions ([`StateFile`]'s
//! methods, pure) and its durability ([`StateDir::write`]): every change is
//! written to a temp file, fsynced and renamed over the old file (then the
//! directory is fsynced) *before* the call that made it returns, so a crash
//! at any point leaves either the old or the new state, never half of one.
//! The supervisor's owner task holds the one in-memory copy; nothing here
//! is shared or locked, and there is nothing to shut down. A missing file
//! is a fresh host; a corrupt one is rebuilt from the labels on the
//! containers berth created (each carries its service, revision and spec),
//! with a loud warning, because refusing to start would leave every service
//! on the host unsupervised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use berth_core::envfile::Vars;
use berth_core::spec::ServiceSpec;

/// Revisions kept per service; older ones are dropped from the state file
/// (the audit log keeps what happened).
pub const MAX_REVISIONS: usize = 50;

const FILE_NAME: &str = "state.json";
const FORMAT_VERSION: u32 = 1;

/// The state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Writing or syncing the state file failed; the change was not made.
    #[error("cannot write state {path}: {source}")]
    Write {
        /// The file or directory involved.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state dir could not be created or read.
    #[error("cannot use state dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionStatus {
    /// Being deployed now.
    Pending,
    /// The one that should run.
    Active,
    /// Was active, replaced by a later one.
    Superseded,
    /// Its deploy failed and was rolled back.
    Failed,
    /// Its deploy was cut short by an agent restart and never took over.
    Interrupted,
    /// An env change kept without restarting (`env_change = "none"`); the
    /// next deploy or restart runs it.
    Recorded,
}

impl RevisionStatus {
    /// As shown in `berthctl history`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::Pending => "pending",
            RevisionStatus::Active => "active",
            RevisionStatus::Superseded => "superseded",
            RevisionStatus::Failed => "failed",
            RevisionStatus::Interrupted => "interrupted",
            RevisionStatus::Recorded => "recorded",
        }
    }
}

/// One immutable version of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// 1, 2, 3... per service.
    pub number: u64,
    /// When it was made, ms since the epoch.
    pub created_at_ms: u64,
    /// The whole spec of this revision.
    pub spec: ServiceSpec,
    /// Why it was made: "apply", "deploy", "rollback to 3", ...
    pub reason: String,
    /// Who made it (client certificate name) or "agent".
    pub author: String,
    /// Where it stands.
    pub status: RevisionStatus,
    /// Env keys that changed with this revision (never values).
    #[serde(default)]
    pub env_keys_changed: Vec<String>,
    /// Why its deploy failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// The env its containers run with, so a rollback restores it. `None`
    /// for revisions made before the agent kept envs (or rebuilt from
    /// labels): their containers read the live env file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vars>,
}

/// A service's desired state and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The revision that should run; 0 while the first deploy is under way.
    pub active: u64,
    /// Oldest first; at most [`MAX_REVISIONS`].
    pub revisions: Vec<Revision>,
    /// The number the next revision gets (numbers are never reused, even
    /// after old revisions are dropped).
    pub next_revision: u64,
    /// Maintenance mode (`berthctl maintenance on`): its nginx site answers
    /// 503 on every path, health paths included, while the containers keep
    /// running. Kept across revisions and agent restarts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
}

impl ServiceRecord {
    /// The active revision, if one is.
    pub fn active_revision(&self) -> Option<&Revision> {
        self.revision(self.active)
    }

    /// Revision `n`, if still kept.
    pub fn revision(&self, n: u64) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.number == n)
    }

    fn revision_mut(&mut self, n: u64) -> Option<&mut Revision> {
        self.revisions.iter_mut().find(|r| r.number == n)
    }

    /// The revision whose env is the service's current env: the newest
    /// active or recorded one. Recorded revisions older than the active one
    /// were folded into it by the deploy that made it.
    pub fn env_revision(&self) -> Option<&Revision> {
        self.revisions
            .iter()
            .rev()
            .find(|r| r.status == RevisionStatus::Active || r.status == RevisionStatus::Recorded)
    }

    /// The revision a plain `rollback` goes to: the newest one before the
    /// active one that once ran (superseded), skipping failed attempts.
    pub fn previous(&self) -> Option<&Revision> {
        self.revisions
            .iter()
            .rev()
            .filter(|r| r.number < self.active)
            .find(|r| r.status == RevisionStatus::Superseded)
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version, for future migrations.
    #[serde(default)]
    pub version: u32,
    /// By service name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRecord>,
}

/// What [`StateFile::add`] needs to make a revision.
#[derive(Debug, Clone)]
pub struct NewRevision {
    /// The whole spec.
    pub spec: ServiceSpec,
    /// The env its containers get.
    pub env: Option<Vars>,
    /// Names of env keys changed from the revision it follows.
    pub env_keys_changed: Vec<String>,
    /// Why.
    pub reason: String,
    /// Who.
    pub author: String,
    /// When, ms since the epoch.
    pub now_ms: u64,
}

/// How the state was found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No state file: a fresh host.
    Fresh,
    /// Read as written.
    Ok,
    /// Unreadable; the reason. The caller rebuilds it from Docker labels.
    Corrupt(String),
}

/// The state directory: where [`StateFile`] is read from at start and
/// written to after every change. Holds no copy of the state: the
/// supervisor's owner task keeps the one copy and hands each new version to
/// [`StateDir::write`] before it acknowledges the change.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `state_dir` (creating it, mode 0700: revisions hold specs and
    /// envs) and reads the state file.
    pub fn open(state_dir: &Path) -> Result<(StateDir, StateFile, Loaded), StateError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let (state, loaded) = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (StateFile::default(), Loaded::Fresh),
            Err(e) => (
                StateFile::default(),
                Loaded::Corrupt(format!("cannot read {}: {e}", path.display())),
            ),
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(state) => (state, Loaded::Ok),
                Err(e) => (
                    StateFile::default(),
                    Loaded::Corrupt(format!("{}: {e}{}", path.display(), keep_corrupt(&path, &bytes))),
                ),
            },
        };
        Ok((
            StateDir {
                dir: state_dir.to_owned(),
            },
            state,
            loaded,
        ))
    }

    /// The state file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Writes `state` durably: temp file, fsync, rename, fsync of the dir.
    /// Blocking; the owner runs it on a blocking thread. On error the file
    /// on disk is the previous version.
    pub fn write(&self, state: &StateFile) -> Result<(), StateError> {
        let stamped = StateFile {
            version: FORMAT_VERSION,
            services: state.services.clone(),
        };
        write_atomic(&self.file(), &stamped)
    }
}

impl StateFile {
    /// One service's record.
    pub fn service(&self, name: &str) -> Option<&ServiceRecord> {
        self.services.get(name)
    }

    /// Adds a revision with `status` (pending, or recorded for an env change
    /// that does not restart), creating the service record. Returns its
    /// number.
    pub fn add(&mut self, new: NewRevision, status: RevisionStatus) -> u64 {
        let NewRevision {
            spec,
            env,
            env_keys_changed,
            reason,
            author,
            now_ms,
        } = new;
        let record = self
            .services
            .entry(spec.name.as_str().to_owned())
            .or_insert_with(|| ServiceRecord {
                active: 0,
                revisions: Vec::new(),
                next_revision: 1,
                maintenance: false,
            });
        let number = record.next_revision;
        record.next_revision += 1;
        record.revisions.push(Revision {
            number,
            created_at_ms: now_ms,
            spec,
            reason,
            author,
            status,
            env_keys_changed,
            error: None,
            env,
        });
        trim(record);
        number
    }

    /// Makes `number` the active revision of `service`; the previous active
    /// one becomes superseded.
    pub fn activate(&mut self, service: &str, number: u64) {
        if let Some(record) = self.services.get_mut(service) {
            let previous = record.active;
            if previous != number
                && let Some(prev) = record.revision_mut(previous)
            {
                prev.status = RevisionStatus::Superseded;
            }
            if let Some(rev) = record.revision_mut(number) {
                rev.status = RevisionStatus::Active;
            }
            record.active = number;
        }
    }

    /// Marks a pending revision failed with `error`. A service whose very
    /// first deploy failed is forgotten: nothing of it ever ran.
    pub fn fail(&mut self, service: &str, number: u64, error: &str) {
        self.end_pending(service, number, RevisionStatus::Failed, error);
    }

    /// Marks a pending revision interrupted (the agent shut down during its
    /// deploy and brought the previous revision back), saying why. As with
    /// [`StateFile::fail`], a service whose first deploy it was is forgotten.
    pub fn interrupt(&mut self, service: &str, number: u64, why: &str) {
        self.end_pending(service, number, RevisionStatus::Interrupted, why);
    }

    fn end_pending(&mut self, service: &str, number: u64, status: RevisionStatus, why: &str) {
        let forget = match self.services.get_mut(service) {
            Some(record) => {
                if let Some(rev) = record.revision_mut(number) {
                    rev.status = status;
                    rev.error = Some(why.to_owned());
                }
                record.active == 0
            }
            None => false,
        };
        if forget {
            self.services.remove(service);
        }
    }

    /// Fills in the env of a revision that has none (made before envs were
    /// kept), from the file its containers read. False when there was
    /// nothing to fill in.
    pub fn adopt_env(&mut self, service: &str, number: u64, env: Vars) -> bool {
        match self.services.get_mut(service).and_then(|r| r.revision_mut(number)) {
            Some(rev) if rev.env.is_none() => {
                rev.env = Some(env);
                true
            }
            _ => false,
        }
    }

    /// Turns maintenance mode of `service` on or off; false when it already
    /// was so, or there is no such service.
    pub fn set_maintenance(&mut self, service: &str, on: bool) -> bool {
        match self.services.get_mut(service) {
            Some(record) if record.maintenance != on => {
                record.maintenance = on;
                true
            }
            _ => false,
        }
    }

    /// Forgets a service; false when it was not there.
    pub fn remove(&mut self, service: &str) -> bool {
        self.services.remove(service).is_some()
    }

    /// After an agent restart: deploys that were under way never finished.
    /// Their revisions become interrupted (the previous revision stays
    /// desired), and services whose first deploy was cut short are dropped.
    pub fn settle_interrupted(&mut self) -> Vec<(String, u64)> {
        let mut settled = Vec::new();
        for (name, record) in &mut self.services {
            for rev in &mut record.revisions {
                if rev.status == RevisionStatus::Pending {
                    rev.status = RevisionStatus::Interrupted;
                    settled.push((name.clone(), rev.number));
                }
            }
        }
        self.services.retain(|_, r| r.active != 0);
        settled
    }
}

fn trim(record: &mut ServiceRecord) {
    while record.revisions.len() > MAX_REVISIONS {
        // Never drop the active revision.
        let Some(pos) = record.revisions.iter().position(|r| r.number != record.active) else {
            break;
        };
        record.revisions.remove(pos);
    }
}

/// Keeps the bytes of a state file that cannot be read beside it
/// (`state.json.corrupt-MS`) before the rebuilt state replaces it, so what
/// it held can still be looked at; says where, for the warning.
fn keep_corrupt(path: &Path, bytes: &[u8]) -> String {
    let copy = path.with_extension(format!("json.corrupt-{}", crate::clock::now_ms()));
    match crate::atomicfile::write(&copy, &copy.with_extension("tmp"), bytes, 0o600) {
        Ok(()) => format!(" (its bytes are kept in {})", copy.display()),
        Err((_, e)) => format!(" (cannot keep a copy in {}: {e})", copy.display()),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::Dir {
            path: dir.to_owned(),
            source,
        })
}

/// temp file + fsync + rename + fsync(dir).
fn write_atomic(path: &Path, state: &StateFile) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    let tmp = path.with_extension("json.tmp");
    crate::atomicfile::write(path, &tmp, &bytes, 0o600).map_err(|(path, source)| StateError::Write { path, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, image: &str) -> ServiceSpec {
        berth_core::spec::parse(&format!("name = \"{name}\"\nimage = \"{image}\"\n")).expect("spec")
    }

    fn pending(state: &mut StateFile, name: &str, image: &str, reason: &str, now_ms: u64) -> u64 {
        state.add(
            NewRevision {
                spec: spec(name, image),
                env: None,
                env_keys_changed: Vec::new(),
                reason: reason.to_owned(),
                author: "alice".to_owned(),
                now_ms,
            },
            RevisionStatus::Pending,
        )
    }

    #[test]
    fn revisions_survive_reopen_and_rollback_target_skips_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut state, loaded) = StateDir::open(dir.path()).expect("open");
        assert_eq!(loaded, Loaded::Fresh);
        let r1 = pending(&mut state, "web", "app:v1", "apply", 1);
        state.activate("web", r1);
        let r2 = pending(&mut state, "web", "app:v2", "deploy", 2);
        state.activate("web", r2);
        let r3 = pending(&mut state, "web", "app:bad", "deploy", 3);
        state.fail("web", r3, "unhealthy");
        disk.write(&state).expect("write");

        let (_, state, loaded) = StateDir::open(dir.path()).expect("reopen");
        assert_eq!(loaded, Loaded::Ok);
        assert_eq!(state.version, FORMAT_VERSION);
        let web = state.service("web").expect("web");
        assert_eq!(web.active, 2);
        assert_eq!(web.revision(1).map(|r| r.status), Some(RevisionStatus::Superseded));
        assert_eq!(web.revision(3).map(|r| r.status), Some(RevisionStatus::Failed));
        assert_eq!(web.previous().map(|r| r.number), Some(1));
    }

    #[test]
    fn failed_or_interrupted_first_deploy_leaves_nothing() {
        let mut state = StateFile::default();
        let r = pending(&mut state, "w", "app:bad", "apply", 1);
        state.fail("w", r, "boom");
        assert!(state.service("w").is_none());
        let r = pending(&mut state, "w", "app:v1", "apply", 2);
        state.interrupt("w", r, "the agent shut down");
        assert!(state.service("w").is_none());
    }

    #[test]
    fn an_interrupted_deploy_keeps_the_previous_revision_and_says_why() {
        let mut state = StateFile::default();
        let r1 = pending(&mut state, "web", "app:v1", "apply", 1);
        state.activate("web", r1);
        let r2 = pending(&mut state, "web", "app:v2", "deploy", 2);
        state.interrupt("web", r2, "the agent shut down during the deploy");
        let web = state.service("web").expect("web");
        assert_eq!(web.active, r1);
        let r2 = web.revision(r2).expect("kept");
        assert_eq!(r2.status, RevisionStatus::Interrupted);
        assert_eq!(r2.error.as_deref(), Some("the agent shut down during the deploy"));
        assert_eq!(web.previous(), None, "an interrupted revision never ran");
    }

    #[test]
    fn interrupted_deploys_settle_to_the_previous_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut state, _) = StateDir::open(dir.path()).expect("open");
        let r1 = pending(&mut state, "web", "app:v1", "apply", 1);
        state.activate("web", r1);
        pending(&mut state, "web", "app:v2", "deploy", 2);
        pending(&mut state, "new", "app:v1", "apply", 3);
        disk.write(&state).expect("write");
        let (_, mut state, _) = StateDir::open(dir.path()).expect("reopen");
        let settled = state.settle_interrupted();
        assert_eq!(settled.len(), 2);
        assert_eq!(state.service("web").map(|r| r.active), Some(1));
        assert!(state.service("new").is_none());
    }

    fn env(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn with_env(state: &mut StateFile, vars: Vars, status: RevisionStatus) -> u64 {
        state.add(
            NewRevision {
                spec: spec("web", "app:v1"),
                env: Some(vars),
                env_keys_changed: vec!["A".into()],
                reason: "env set".into(),
                author: "a".into(),
                now_ms: 1,
            },
            status,
        )
    }

    #[test]
    fn the_current_env_is_the_newest_active_or_recorded_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut state, _) = StateDir::open(dir.path()).expect("open");
        let r1 = with_env(&mut state, env(&[("A", "1")]), RevisionStatus::Pending);
        state.activate("web", r1);
        let r2 = with_env(&mut state, env(&[("A", "2")]), RevisionStatus::Recorded);
        let r3 = with_env(&mut state, env(&[("A", "3")]), RevisionStatus::Pending);
        state.fail("web", r3, "unhealthy");
        let web = state.service("web").expect("web");
        assert_eq!(web.active, r1, "recording does not change what runs");
        assert_eq!(web.env_revision().map(|r| r.number), Some(r2));
        assert_eq!(web.revision(r2).map(|r| r.status.as_str()), Some("recorded"));
        assert_eq!(web.previous(), None, "a recorded revision never ran");
        // A later deploy folds the recorded change in.
        let r4 = with_env(&mut state, env(&[("A", "2")]), RevisionStatus::Pending);
        state.activate("web", r4);
        disk.write(&state).expect("write");
        let (_, state, _) = StateDir::open(dir.path()).expect("reopen");
        let web = state.service("web").expect("web");
        assert_eq!(web.env_revision().map(|r| r.number), Some(r4));
        assert_eq!(web.revision(r4).and_then(|r| r.env.clone()), Some(env(&[("A", "2")])));
        assert_eq!(web.previous().map(|r| r.number), Some(r1));
    }

    #[test]
    fn revisions_without_an_env_adopt_the_file_once() {
        let mut state = StateFile::default();
        let r1 = pending(&mut state, "web", "app:v1", "apply", 1);
        state.activate("web", r1);
        assert_eq!(
            state
                .service("web")
                .and_then(|w| w.revision(r1))
                .map(|r| r.env.is_none()),
            Some(true)
        );
        assert!(state.adopt_env("web", r1, env(&[("A", "1")])));
        assert!(!state.adopt_env("web", r1, env(&[("A", "other")])), "no-op");
        let kept = state
            .service("web")
            .and_then(|w| w.revision(r1))
            .and_then(|r| r.env.clone());
        assert_eq!(kept, Some(env(&[("A", "1")])));
    }

    #[test]
    fn corrupt_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), b"{ not json").expect("write");
        let (_, state, loaded) = StateDir::open(dir.path()).expect("open must not fail");
        let Loaded::Corrupt(why) = loaded else {
            panic!("not reported corrupt")
        };
        assert!(state.services.is_empty());
        let copies: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
            .collect();
        assert_eq!(copies.len(), 1, "{why}");
        assert_eq!(std::fs::read(copies[0].path()).expect("copy"), b"{ not json");
        assert!(why.contains("its bytes are kept in"), "{why}");
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut state, _) = StateDir::open(dir.path()).expect("open");
        let r1 = pending(&mut state, "web", "app:v1", "apply", 1);
        state.activate("web", r1);
        disk.write(&state).expect("write");
        // A directory where the temp file goes makes the next write fail.
        std::fs::create_dir(dir.path().join("state.json.tmp")).expect("block the temp file");
        pending(&mut state, "web", "app:v2", "deploy", 2);
        assert!(disk.write(&state).is_err());
        let (_, on_disk, _) = StateDir::open(dir.path()).expect("reopen");
        assert_eq!(on_disk.service("web").map(|w| w.revisions.len()), Some(1));
    }

    #[test]
    fn revision_numbers_are_never_reused_and_history_is_bounded() {
        let mut state = StateFile::default();
        for i in 0..(MAX_REVISIONS as u64 + 10) {
            let n = pending(&mut state, "w", "app:v1", "apply", i);
            state.activate("w", n);
        }
        let w = state.service("w").expect("w");
        assert_eq!(w.revisions.len(), MAX_REVISIONS);
        assert_eq!(w.active, MAX_REVISIONS as u64 + 10);
        assert_eq!(w.next_revision, MAX_REVISIONS as u64 + 11);
    }
}

//! The agent's desired state: each service's revisions and which one should
//! run, kept in `state_dir/state.json`.
//!
//! Owns the on-disk format and its durability: every change is written to a
//! temp file, fsynced and renamed over the old file (then the directory is
//! fsynced) *before* the call that made it returns, so a crash at any point
//! leaves either the old or the new state, never half of one. A missing file
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

/// What [`Store::add`] needs to make a revision.
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

/// The state file and its in-memory copy. Not shared by itself: the
/// supervisor wraps it in a mutex and never holds that across an await.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    state: StateFile,
}

impl Store {
    /// Opens `state_dir` (creating it, mode 0700: revisions hold specs) and
    /// reads the state file.
    pub fn open(state_dir: &Path) -> Result<(Store, Loaded), StateError> {
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
                    Loaded::Corrupt(format!("{}: {e}", path.display())),
                ),
            },
        };
        Ok((
            Store {
                dir: state_dir.to_owned(),
                state,
            },
            loaded,
        ))
    }

    /// The state as it is now.
    pub fn state(&self) -> &StateFile {
        &self.state
    }

    /// One service's record.
    pub fn service(&self, name: &str) -> Option<&ServiceRecord> {
        self.state.services.get(name)
    }

    /// Replaces the whole state (after a rebuild) and writes it.
    pub fn replace(&mut self, state: StateFile) -> Result<(), StateError> {
        let old = std::mem::replace(&mut self.state, state);
        self.commit_or(old)
    }

    /// Adds a pending revision of `spec` to its service (creating the
    /// service record) and writes the state. Returns its number.
    pub fn add_pending(
        &mut self,
        spec: ServiceSpec,
        reason: &str,
        author: &str,
        now_ms: u64,
    ) -> Result<u64, StateError> {
        self.add(
            NewRevision {
                spec,
                env: None,
                env_keys_changed: Vec::new(),
                reason: reason.to_owned(),
                author: author.to_owned(),
                now_ms,
            },
            RevisionStatus::Pending,
        )
    }

    /// Adds a revision with `status` (pending, or recorded for an env change
    /// that does not restart) and writes the state. Returns its number.
    pub fn add(&mut self, new: NewRevision, status: RevisionStatus) -> Result<u64, StateError> {
        let NewRevision {
            spec,
            env,
            env_keys_changed,
            reason,
            author,
            now_ms,
        } = new;
        let old = self.state.clone();
        let record = self
            .state
            .services
            .entry(spec.name.as_str().to_owned())
            .or_insert_with(|| ServiceRecord {
                active: 0,
                revisions: Vec::new(),
                next_revision: 1,
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
        self.commit_or(old)?;
        Ok(number)
    }

    /// Makes `number` the active revision of `service`; the previous active
    /// one becomes superseded.
    pub fn activate(&mut self, service: &str, number: u64) -> Result<(), StateError> {
        let old = self.state.clone();
        if let Some(record) = self.state.services.get_mut(service) {
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
        self.commit_or(old)
    }

    /// Marks a pending revision failed with `error`. A service whose very
    /// first deploy failed is forgotten: nothing of it ever ran.
    pub fn fail(&mut self, service: &str, number: u64, error: &str) -> Result<(), StateError> {
        let old = self.state.clone();
        let forget = match self.state.services.get_mut(service) {
            Some(record) => {
                if let Some(rev) = record.revision_mut(number) {
                    rev.status = RevisionStatus::Failed;
                    rev.error = Some(error.to_owned());
                }
                record.active == 0
            }
            None => false,
        };
        if forget {
            self.state.services.remove(service);
        }
        self.commit_or(old)
    }

    /// Fills in the env of a revision that has none (made before envs were
    /// kept), from the file its containers read.
    pub fn adopt_env(&mut self, service: &str, number: u64, env: Vars) -> Result<(), StateError> {
        let old = self.state.clone();
        match self
            .state
            .services
            .get_mut(service)
            .and_then(|r| r.revision_mut(number))
        {
            Some(rev) if rev.env.is_none() => rev.env = Some(env),
            _ => return Ok(()),
        }
        self.commit_or(old)
    }

    /// Forgets a service.
    pub fn remove(&mut self, service: &str) -> Result<bool, StateError> {
        let old = self.state.clone();
        let existed = self.state.services.remove(service).is_some();
        if !existed {
            return Ok(false);
        }
        self.commit_or(old)?;
        Ok(true)
    }

    /// After an agent restart: deploys that were under way never finished.
    /// Their revisions become interrupted (the previous revision stays
    /// desired), and services whose first deploy was cut short are dropped.
    pub fn settle_interrupted(&mut self) -> Result<Vec<(String, u64)>, StateError> {
        let old = self.state.clone();
        let mut settled = Vec::new();
        for (name, record) in &mut self.state.services {
            for rev in &mut record.revisions {
                if rev.status == RevisionStatus::Pending {
                    rev.status = RevisionStatus::Interrupted;
                    settled.push((name.clone(), rev.number));
                }
            }
        }
        self.state.services.retain(|_, r| r.active != 0);
        if settled.is_empty() {
            return Ok(settled);
        }
        self.commit_or(old)?;
        Ok(settled)
    }

    /// Writes the state; on failure restores `old` in memory so memory and
    /// disk never disagree about what was acknowledged.
    fn commit_or(&mut self, old: StateFile) -> Result<(), StateError> {
        self.state.version = FORMAT_VERSION;
        if let Err(e) = write_atomic(&self.dir.join(FILE_NAME), &self.state) {
            self.state = old;
            return Err(e);
        }
        Ok(())
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

    #[test]
    fn revisions_survive_reopen_and_rollback_target_skips_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, loaded) = Store::open(dir.path()).expect("open");
        assert_eq!(loaded, Loaded::Fresh);
        let r1 = store
            .add_pending(spec("web", "app:v1"), "apply", "alice", 1)
            .expect("add");
        store.activate("web", r1).expect("activate");
        let r2 = store
            .add_pending(spec("web", "app:v2"), "deploy", "alice", 2)
            .expect("add");
        store.activate("web", r2).expect("activate");
        let r3 = store
            .add_pending(spec("web", "app:bad"), "deploy", "alice", 3)
            .expect("add");
        store.fail("web", r3, "unhealthy").expect("fail");

        let (store, loaded) = Store::open(dir.path()).expect("reopen");
        assert_eq!(loaded, Loaded::Ok);
        let web = store.service("web").expect("web");
        assert_eq!(web.active, 2);
        assert_eq!(web.revision(1).map(|r| r.status), Some(RevisionStatus::Superseded));
        assert_eq!(web.revision(3).map(|r| r.status), Some(RevisionStatus::Failed));
        assert_eq!(web.previous().map(|r| r.number), Some(1));
    }

    #[test]
    fn failed_first_deploy_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path()).expect("open");
        let r = store.add_pending(spec("w", "app:bad"), "apply", "a", 1).expect("add");
        store.fail("w", r, "boom").expect("fail");
        assert!(store.service("w").is_none());
    }

    #[test]
    fn interrupted_deploys_settle_to_the_previous_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path()).expect("open");
        let r1 = store.add_pending(spec("web", "app:v1"), "apply", "a", 1).expect("add");
        store.activate("web", r1).expect("activate");
        store.add_pending(spec("web", "app:v2"), "deploy", "a", 2).expect("add");
        store.add_pending(spec("new", "app:v1"), "apply", "a", 3).expect("add");
        let (mut store, _) = Store::open(dir.path()).expect("reopen");
        let settled = store.settle_interrupted().expect("settle");
        assert_eq!(settled.len(), 2);
        assert_eq!(store.service("web").map(|r| r.active), Some(1));
        assert!(store.service("new").is_none());
    }

    fn env(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn with_env(store: &mut Store, vars: Vars, status: RevisionStatus) -> u64 {
        store
            .add(
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
            .expect("add")
    }

    #[test]
    fn the_current_env_is_the_newest_active_or_recorded_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path()).expect("open");
        let r1 = with_env(&mut store, env(&[("A", "1")]), RevisionStatus::Pending);
        store.activate("web", r1).expect("activate");
        let r2 = with_env(&mut store, env(&[("A", "2")]), RevisionStatus::Recorded);
        let r3 = with_env(&mut store, env(&[("A", "3")]), RevisionStatus::Pending);
        store.fail("web", r3, "unhealthy").expect("fail");
        let web = store.service("web").expect("web");
        assert_eq!(web.active, r1, "recording does not change what runs");
        assert_eq!(web.env_revision().map(|r| r.number), Some(r2));
        assert_eq!(web.revision(r2).map(|r| r.status.as_str()), Some("recorded"));
        assert_eq!(web.previous(), None, "a recorded revision never ran");
        // A later deploy folds the recorded change in.
        let r4 = with_env(&mut store, env(&[("A", "2")]), RevisionStatus::Pending);
        store.activate("web", r4).expect("activate");
        let (store, _) = Store::open(dir.path()).expect("reopen");
        let web = store.service("web").expect("web");
        assert_eq!(web.env_revision().map(|r| r.number), Some(r4));
        assert_eq!(web.revision(r4).and_then(|r| r.env.clone()), Some(env(&[("A", "2")])));
        assert_eq!(web.previous().map(|r| r.number), Some(r1));
    }

    #[test]
    fn revisions_without_an_env_adopt_the_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path()).expect("open");
        let r1 = store.add_pending(spec("web", "app:v1"), "apply", "a", 1).expect("add");
        store.activate("web", r1).expect("activate");
        assert_eq!(
            store
                .service("web")
                .and_then(|w| w.revision(r1))
                .map(|r| r.env.is_none()),
            Some(true)
        );
        store.adopt_env("web", r1, env(&[("A", "1")])).expect("adopt");
        store.adopt_env("web", r1, env(&[("A", "other")])).expect("no-op");
        let kept = store
            .service("web")
            .and_then(|w| w.revision(r1))
            .and_then(|r| r.env.clone());
        assert_eq!(kept, Some(env(&[("A", "1")])));
    }

    #[test]
    fn corrupt_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), b"{ not json").expect("write");
        let (store, loaded) = Store::open(dir.path()).expect("open must not fail");
        assert!(matches!(loaded, Loaded::Corrupt(_)));
        assert!(store.state().services.is_empty());
    }

    #[test]
    fn revision_numbers_are_never_reused_and_history_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path()).expect("open");
        for i in 0..(MAX_REVISIONS as u64 + 10) {
            let n = store.add_pending(spec("w", "app:v1"), "apply", "a", i).expect("add");
            store.activate("w", n).expect("activate");
        }
        let w = store.service("w").expect("w");
        assert_eq!(w.revisions.len(), MAX_REVISIONS);
        assert_eq!(w.active, MAX_REVISIONS as u64 + 10);
        assert_eq!(w.next_revision, MAX_REVISIONS as u64 + 11);
    }
}

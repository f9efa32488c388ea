//! Rollout records kept on this agent: the plan and every host's progress
//! of the fleet rollouts that touched this host, and the control (pause,
//! resume, abort) anyone with an operator certificate set on them.
//!
//! There is no central server: the berthctl running a rollout writes its
//! record to every agent it touches, so any berthctl with the inventory
//! can show it, pause it, or resume it after the first one died. This
//! module owns `state_dir/rollouts/ID.json` (one file per rollout, written
//! durably; the newest [`KEEP`] by creation time are kept) and nothing
//! else: it does not run rollouts and never calls Docker. Writers are
//! serialized by one mutex held only on a blocking thread; readers read the
//! files, which are replaced atomically, without waiting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::atomicfile;
use crate::audit::{Actor, Audit};
use crate::clock::now_ms;
use crate::events::{EventBus, Severity};

/// Rollouts kept per agent; the oldest go first.
pub const KEEP: usize = 100;

/// Largest record accepted (its host list and spec included): a rollout of
/// a few thousand hosts fits; megabytes of junk do not.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// The control actions.
pub const ACTIONS: [&str; 3] = ["pause", "resume", "abort"];

/// One rollout's record, as its runner describes it. The agent stores it
/// and reads only `id`, `created_at_ms`, `status` and `service` from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollout {
    /// Unique per rollout; names the file.
    pub id: String,
    /// The fleet it runs over.
    pub fleet: String,
    /// The service it changes.
    pub service: String,
    /// The change, for people.
    pub change: String,
    /// The options it runs with.
    pub options: BTreeMap<String, String>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: u64,
    /// Who started it.
    pub created_by: String,
    /// Batches in order, by host name.
    pub batches: Vec<Batch>,
    /// Every host's progress.
    pub hosts: Vec<HostProgress>,
    /// planned, running, paused, rolling-back, succeeded, failed,
    /// rolled-back, aborted.
    pub status: String,
    /// A sentence about the status.
    pub detail: String,
    /// When the runner last wrote it.
    pub updated_at_ms: u64,
    /// The lock it holds while running.
    pub lock: String,
    /// The change itself: one of image, spec_toml, env, restart.
    pub image: String,
    /// A whole spec.
    pub spec_toml: String,
    /// An env change.
    pub env: Option<EnvChange>,
    /// A restart.
    pub restart: bool,
    /// The batch being run.
    pub batch: u32,
}

/// One batch of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Batch {
    /// Host names.
    pub hosts: Vec<String>,
    /// Whether it is the canary batch.
    pub canary: bool,
}

/// One host's progress in a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostProgress {
    /// The host's name in the inventory.
    pub host: String,
    /// Its address.
    pub address: String,
    /// Its batch (0-based).
    pub batch: u32,
    /// pending, running, succeeded, unchanged, failed, rolling-back,
    /// rolled-back, rollback-failed, skipped.
    pub state: String,
    /// The service's active revision before the rollout touched it.
    pub revision_before: u64,
    /// Its active revision after.
    pub revision_after: u64,
    /// Why it failed.
    pub error: String,
    /// When its deploy started and ended (ms since the epoch).
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// The version it reported serving.
    pub version: String,
    /// The phase of its deploy.
    pub phase: String,
}

/// An env change carried by a rollout. Values are secrets: only operators
/// read them back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvChange {
    /// Keys to set.
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    pub unset: Vec<String>,
    /// The env becomes exactly `set`.
    pub replace: bool,
}

/// The last control action set on a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Control {
    /// "", pause, resume or abort.
    pub action: String,
    /// Who set it.
    pub by: String,
    /// When.
    pub at_ms: u64,
}

/// What one file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stored {
    /// The runner's record.
    pub record: Rollout,
    /// The control set on it.
    pub control: Control,
}

/// Why a rollout call failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A bad request; names what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// No rollout with that id here.
    #[error("no rollout {0:?} is recorded on this agent")]
    NotFound(String),
    /// Reading or writing the files failed.
    #[error("{0}")]
    Disk(String),
}

/// The rollout records of this agent. Cheap to clone.
#[derive(Clone)]
pub struct Rollouts {
    dir: PathBuf,
    write: Arc<Mutex<()>>,
    bus: EventBus,
    audit: Audit,
}

impl Rollouts {
    /// Records under `state_dir/rollouts` (created on the first write).
    pub fn new(state_dir: &Path, bus: EventBus, audit: Audit) -> Self {
        Rollouts {
            dir: state_dir.join("rollouts"),
            write: Arc::new(Mutex::new(())),
            bus,
            audit,
        }
    }

    /// Creates or replaces `record`, keeping the control already set on it.
    /// A change of status is an event and an audit record.
    pub async fn put(&self, mut record: Rollout, who: &Actor) -> Result<Stored, RolloutError> {
        check_id(&record.id)?;
        if record.service.is_empty() {
            return Err(RolloutError::Invalid("a rollout record needs its service".into()));
        }
        if record.updated_at_ms == 0 {
            record.updated_at_ms = now_ms();
        }
        let this = self.clone();
        let who = who.to_owned();
        blocking(move || {
            let _writer = this
                .write
                .lock()
                .map_err(|_| RolloutError::Disk("rollout store poisoned".into()))?;
            let previous = this.read(&record.id)?;
            let (control, old_status) = match previous {
                Some(p) => (p.control, p.record.status),
                None => {
                    if record.created_at_ms == 0 {
                        record.created_at_ms = now_ms();
                    }
                    (Control::default(), String::new())
                }
            };
            let stored = Stored { record, control };
            this.write_file(&stored)?;
            if old_status.is_empty() {
                this.prune()?;
            }
            let r = &stored.record;
            if r.status != old_status {
                let severity = match r.status.as_str() {
                    "failed" | "rolled-back" | "rolling-back" | "aborted" => Severity::Warning,
                    _ => Severity::Info,
                };
                let detail = if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.detail)
                };
                this.bus.publish(
                    "rollout",
                    &r.service,
                    0,
                    severity,
                    format!("Rollout {} ({}) is {}{detail}.", r.id, r.change, r.status),
                );
                this.audit
                    .record(&who, "rollout", &r.service, &format!("{} {}", r.id, r.status), "ok");
            }
            Ok(stored)
        })
        .await
    }

    /// One rollout.
    pub async fn get(&self, id: &str) -> Result<Stored, RolloutError> {
        check_id(id)?;
        let this = self.clone();
        let id = id.to_owned();
        blocking(move || this.read(&id)?.ok_or(RolloutError::NotFound(id))).await
    }

    /// Every rollout kept here, newest first.
    pub async fn list(&self) -> Result<Vec<Stored>, RolloutError> {
        let this = self.clone();
        blocking(move || this.read_all()).await
    }

    /// Sets the control of rollout `id` (pause, resume or abort). An event
    /// and an audit record.
    pub async fn control(&self, id: &str, action: &str, who: &Actor) -> Result<Stored, RolloutError> {
        check_id(id)?;
        if !ACTIONS.contains(&action) {
            return Err(RolloutError::Invalid(format!(
                "unknown rollout action {action:?}; use one of: {}",
                ACTIONS.join(", ")
            )));
        }
        let this = self.clone();
        let (id, action, who) = (id.to_owned(), action.to_owned(), who.to_owned());
        blocking(move || {
            let _writer = this
                .write
                .lock()
                .map_err(|_| RolloutError::Disk("rollout store poisoned".into()))?;
            let mut stored = this.read(&id)?.ok_or_else(|| RolloutError::NotFound(id.clone()))?;
            stored.control = Control {
                action: action.clone(),
                by: who.name.clone(),
                at_ms: now_ms(),
            };
            this.write_file(&stored)?;
            let service = stored.record.service.clone();
            this.bus.publish(
                "rollout-control",
                &service,
                0,
                Severity::Warning,
                format!("{} asked rollout {id} to {action}.", who.name),
            );
            this.audit
                .record(&who, &format!("rollout {action}"), &service, &id, "ok");
            Ok(stored)
        })
        .await
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read(&self, id: &str) -> Result<Option<Stored>, RolloutError> {
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RolloutError::Disk(format!("{}: not a rollout record: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RolloutError::Disk(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Every record, newest first. A file that does not parse is skipped
    /// with a warning rather than hiding every other rollout.
    fn read_all(&self) -> Result<Vec<Stored>, RolloutError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RolloutError::Disk(format!("cannot list {}: {e}", self.dir.display()))),
        };
        let mut all = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_id(id).is_err() {
                continue;
            }
            match self.read(id) {
                Ok(Some(s)) => all.push(s),
                Ok(None) => {}
                Err(e) => tracing::warn!("Skipping a rollout record: {e}"),
            }
        }
        all.sort_by(|a, b| (b.record.created_at_ms, &b.record.id).cmp(&(a.record.created_at_ms, &a.record.id)));
        Ok(all)
    }

    fn write_file(&self, stored: &Stored) -> Result<(), RolloutError> {
        let bytes = serde_json::to_vec_pretty(stored).map_err(|e| RolloutError::Disk(e.to_string()))?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RolloutError::Invalid(format!(
                "rollout record of {} bytes is over the {} byte limit",
                bytes.len(),
                MAX_RECORD_BYTES
            )));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| RolloutError::Disk(format!("cannot create {}: {e}", self.dir.display())))?;
        let path = self.path(&stored.record.id);
        let tmp = self.dir.join(format!(".{}.json.tmp", stored.record.id));
        // 0600: an env rollout's record carries the values it sets.
        atomicfile::write(&path, &tmp, &bytes, 0o600).map_err(|(p, e)| {
            let _ = std::fs::remove_file(&tmp);
            RolloutError::Disk(format!("cannot write {}: {e}", p.display()))
        })
    }

    /// Drops the oldest records beyond [`KEEP`].
    fn prune(&self) -> Result<(), RolloutError> {
        for old in self.read_all()?.into_iter().skip(KEEP) {
            let path = self.path(&old.record.id);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("Cannot remove the old rollout record {}: {e}", path.display());
            }
        }
        Ok(())
    }
}

/// Ids name files: 1 to 64 of `A-Z a-z 0-9 - _`.
fn check_id(id: &str) -> Result<(), RolloutError> {
    let ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RolloutError::Invalid(format!(
            "rollout id {id:?} must be 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RolloutError> + Send + 'static,
) -> Result<T, RolloutError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RolloutError::Disk(format!("rollout store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Rollouts {
        Rollouts::new(
            dir,
            EventBus::new(),
            Audit::open(dir, &Default::default()).expect("audit"),
        )
    }

    fn record(id: &str, created: u64) -> Rollout {
        Rollout {
            id: id.into(),
            service: "web".into(),
            status: "running".into(),
            created_at_ms: created,
            ..Rollout::default()
        }
    }

    #[tokio::test]
    async fn put_keeps_the_control_and_get_reads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.put(record("r1", 10), &Actor::agent("alice")).await.expect("put");
        s.control("r1", "pause", &Actor::agent("bob")).await.expect("pause");
        let mut next = record("r1", 10);
        next.status = "paused".into();
        let stored = s.put(next, &Actor::agent("alice")).await.expect("put again");
        assert_eq!(stored.control.action, "pause");
        assert_eq!(stored.control.by, "bob");
        assert_eq!(s.get("r1").await.expect("get").record.status, "paused");
    }

    #[tokio::test]
    async fn keeps_the_newest_and_lists_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        for i in 0..(KEEP as u64 + 3) {
            s.put(record(&format!("r{i}"), 1000 + i), &Actor::agent("alice"))
                .await
                .expect("put");
        }
        let all = s.list().await.expect("list");
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].record.id, format!("r{}", KEEP + 2));
        assert!(matches!(s.get("r0").await, Err(RolloutError::NotFound(_))));
    }

    #[tokio::test]
    async fn bad_ids_and_actions_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        assert!(matches!(
            s.put(record("../x", 1), &Actor::agent("a")).await,
            Err(RolloutError::Invalid(_))
        ));
        s.put(record("ok", 1), &Actor::agent("a")).await.expect("put");
        let e = s
            .control("ok", "explode", &Actor::agent("a"))
            .await
            .expect_err("bad action");
        assert!(e.to_string().contains("pause, resume, abort"), "{e}");
        assert!(matches!(
            s.control("nope", "pause", &Actor::agent("a")).await,
            Err(RolloutError::NotFound(_))
        ));
    }
}

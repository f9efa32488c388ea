//! The audit trail: one JSON line per mutating call in `state_dir/audit.log`
//! (who, what, which service, outcome). Append-only; values of env vars
//! never reach it, only key names.
//!
//! Inputs: records from the supervisor's workers and the `Env` API (a
//! reveal). Output: the file, appended (not fsynced: the state file is what
//! must survive a crash) under a plain mutex so concurrent lines never
//! interleave. Cloning shares that mutex, so every writer of the one file
//! (the supervisor, the fleet lock) goes through it. No task; nothing to
//! shut down.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing::warn;

use crate::clock::now_ms;

/// Appends audit records. Clones share one file and one lock.
#[derive(Clone)]
pub struct Audit {
    path: Arc<PathBuf>,
    // Serializes whole lines so concurrent calls never interleave.
    lock: Arc<Mutex<()>>,
}

impl Audit {
    /// Audit log at `state_dir/audit.log`.
    pub fn new(state_dir: &Path) -> Self {
        Audit {
            path: Arc::new(state_dir.join("audit.log")),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Records that `who` did `action` on `service` with `outcome`. A failed
    /// write is logged, not fatal: the change itself is already durable.
    pub fn record(&self, who: &str, action: &str, service: &str, detail: &str, outcome: &str) {
        let line = json!({
            "ts_ms": now_ms(),
            "who": who,
            "action": action,
            "service": service,
            "detail": detail,
            "outcome": outcome,
        })
        .to_string();
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.as_path())
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = result {
            warn!(path = %self.path.display(), error = %e, "Cannot write the audit log.");
        }
    }
}

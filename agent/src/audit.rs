//! The audit trail: `state_dir/audit.log`, one hash-chained JSON record
//! (format in [`berth_core::audit`]) per change, denial and failed call:
//! who (certificate name, role, fingerprint, address), what, which
//! service, outcome. Values of env vars never reach it, only key names.
//!
//! Inputs: records from the gRPC layer ([`crate::grpc::audited`]: every
//! mutating call and every refused or failed one), the supervisor's
//! workers and the fleet lock (what changed). Output: the file, mode 0600,
//! appended and fsynced record by record under one mutex, so lines never
//! interleave and the chain stays in order; clones share it. Rotation by
//! size renames whole files (`audit.log` → `audit.log.1` → ...), so the
//! chain continues across them. [`Audit::files`] hands readers a
//! consistent cut of all files. No task; nothing to shut down.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_core::audit::{self as chain, Entry, GENESIS};
use berth_core::identity::Identity;
use tracing::warn;

use crate::clock::now_ms;
use crate::config::AuditConfig;

/// The file name in `state_dir`; rotated files get `.1`, `.2`, ...
pub const FILE: &str = "audit.log";

/// Who a record is about: a caller with its certificate, or a part of the
/// agent acting on its own (`file` for an env file edited by hand, `agent`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// Certificate name, or the agent part.
    pub name: String,
    /// `operator`/`viewer`; empty for the agent.
    pub role: String,
    /// SHA-256 of the caller's certificate; empty for the agent.
    pub cert: String,
    /// The caller's address; empty for the agent.
    pub peer: String,
}

impl Actor {
    /// The caller `identity`, connected from `peer`.
    pub fn caller(identity: &Identity, peer: &str) -> Actor {
        Actor {
            name: identity.name.clone(),
            role: identity.role.as_str().to_owned(),
            cert: identity.fingerprint.clone(),
            peer: peer.to_owned(),
        }
    }

    /// A part of the agent acting without a caller.
    pub fn agent(name: &str) -> Actor {
        Actor {
            name: name.to_owned(),
            ..Actor::default()
        }
    }
}

/// An audit log that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Appends audit records. Clones share one file, one chain and one lock.
#[derive(Clone)]
pub struct Audit {
    writer: Arc<Mutex<Writer>>,
}

struct Writer {
    dir: PathBuf,
    /// None after a failed write; reopened on the next record.
    file: Option<File>,
    size: u64,
    /// The last record's seq and hash: the next record links to them.
    seq: u64,
    last: String,
    max_size: u64,
    keep: u32,
    /// Records not yet on disk (a full or failing disk), oldest first;
    /// written, in order and chained, before the next record.
    pending: VecDeque<Entry>,
}

/// Records held while the disk refuses them; beyond this the oldest go
/// (each one is also in the agent's log).
const MAX_PENDING: usize = 10_000;

impl Audit {
    /// Opens `state_dir/audit.log` (creating it 0600, tightening a looser
    /// one) and finds where its chain ends, so the next record links on.
    pub fn open(state_dir: &Path, config: &AuditConfig) -> Result<Audit, AuditError> {
        let path = state_dir.join(FILE);
        let err = |source| AuditError {
            path: path.clone(),
            source,
        };
        let mut file = open_append(&path).map_err(err)?;
        tighten(&path, &file);
        let (seq, last) = match tail(&mut file).map_err(err)? {
            Some(line) => link_of(&line),
            // An empty current file right after a rotation: the chain ends
            // in the newest rotated file.
            None => match std::fs::File::open(state_dir.join(format!("{FILE}.1"))) {
                Ok(mut older) => tail(&mut older)
                    .map_err(err)?
                    .map(|l| link_of(&l))
                    .unwrap_or((0, GENESIS.into())),
                Err(_) => (0, GENESIS.to_owned()),
            },
        };
        let size = file.seek(SeekFrom::End(0)).map_err(err)?;
        Ok(Audit {
            writer: Arc::new(Mutex::new(Writer {
                dir: state_dir.to_owned(),
                file: Some(file),
                size,
                seq,
                last,
                max_size: config.max_file_size.bytes(),
                keep: config.keep_files.max(1),
                pending: VecDeque::new(),
            })),
        })
    }

    /// Records that `who` did `action` on `service` with `outcome`. The
    /// record is on disk (fsynced) when this returns. A failed write is
    /// logged, not fatal: the change itself is already durable.
    pub fn record(&self, who: &Actor, action: &str, service: &str, detail: &str, outcome: &str) {
        let entry = Entry {
            ts_ms: now_ms(),
            who: who.name.clone(),
            role: who.role.clone(),
            cert: who.cert.clone(),
            peer: who.peer.clone(),
            action: action.to_owned(),
            service: service.to_owned(),
            detail: detail.to_owned(),
            outcome: outcome.to_owned(),
        };
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.pending.push_back(entry);
        if w.pending.len() > MAX_PENDING {
            w.pending.pop_front();
        }
        if let Err(e) = w.flush() {
            // The record stays queued for the next write; the log has it now.
            let held = w.pending.len();
            warn!(dir = %w.dir.display(), error = %e, who = %who.name, action, service, detail, outcome, held,
                "Cannot write the audit log; the record is kept and written with the next one.");
        }
    }

    /// Every audit file, oldest first, with the length it had at this
    /// moment: a reader that stops there sees a whole, consistent log even
    /// while records are added and files rotate.
    pub fn files(&self) -> std::io::Result<Vec<(String, File, u64)>> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for name in rotated_names(&w.dir)?.into_iter().chain([FILE.to_owned()]) {
            let file = match File::open(w.dir.join(&name)) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            out.push((name, file, len));
        }
        Ok(out)
    }
}

impl Writer {
    /// Writes the queued records, oldest first, stopping at the first
    /// failure (that record and the later ones stay queued).
    fn flush(&mut self) -> std::io::Result<()> {
        while let Some(entry) = self.pending.front() {
            self.append(entry.clone())?;
            self.pending.pop_front();
        }
        Ok(())
    }

    fn append(&mut self, entry: Entry) -> std::io::Result<()> {
        let seq = self.seq + 1;
        let (mut line, hash) = chain::seal(entry, seq, &self.last);
        line.push('\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(&self.dir.join(FILE))?),
        };
        let written = file.write_all(line.as_bytes()).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut off what part of the line made it, so the chain on disk
            // stays whole; the next record reopens the file rather than
            // trusting a handle that failed mid-line.
            let _ = file.set_len(self.size);
            self.file = None;
            return Err(e);
        }
        self.size += len;
        self.seq = seq;
        self.last = hash;
        Ok(())
    }

    /// `audit.log.N-1` → `audit.log.N` ... `audit.log` → `audit.log.1`,
    /// dropping what falls beyond `keep`, then a fresh `audit.log`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let name = |n: u32| self.dir.join(format!("{FILE}.{n}"));
        match std::fs::remove_file(name(self.keep)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(name(n), name(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(self.dir.join(FILE), name(1))?;
        self.file = Some(open_append(&self.dir.join(FILE))?);
        File::open(&self.dir)?.sync_all()?;
        self.size = 0;
        Ok(())
    }
}

/// `audit.log.N` names present in `dir`, highest N (oldest) first.
fn rotated_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let prefix = format!("{FILE}.");
    let mut numbered: Vec<(u32, String)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            let n = name.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((n, name))
        })
        .collect();
    numbered.sort_by_key(|n| std::cmp::Reverse(n.0));
    Ok(numbered.into_iter().map(|(_, name)| name).collect())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

/// A log another agent version (or a hand) left readable to others is set
/// back to 0600: it names every caller and change.
fn tighten(path: &Path, file: &File) {
    let Ok(meta) = file.metadata() else { return };
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "The audit log was readable by others; setting it to 0600.");
        if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            warn!(path = %path.display(), error = %e, "Cannot tighten the audit log's mode.");
        }
    }
}

/// The last line of `file` (without its newline), if any. A last line cut
/// short by a crash gets its newline now, so the next record starts on a
/// line of its own (verification then names the cut line).
fn tail(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    // Records are far shorter than this; a longer last line is not one of
    // ours and is hashed as it is.
    let window = len.min(2 * chain::MAX_LINE as u64);
    file.seek(SeekFrom::Start(len - window))?;
    let mut buf = Vec::with_capacity(window as usize);
    file.read_to_end(&mut buf)?;
    if buf.last() != Some(&b'\n') {
        file.write_all(b"\n")?;
        file.sync_data()?;
    } else {
        buf.pop();
    }
    let start = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut line = String::new();
    std::io::BufReader::new(&buf[start..]).read_line(&mut line)?;
    Ok(Some(line))
}

/// The seq and hash the next record links to, after `line`.
fn link_of(line: &str) -> (u64, String) {
    match chain::open(line) {
        Ok(sealed) => (sealed.record.seq, sealed.hash),
        // A line from before the chain (or a damaged one): link to its text,
        // as the verifier does for lines before the first sealed record.
        Err(_) => (0, chain::sha256_hex(line.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::audit::{Place, Verifier};
    use berth_core::units::ByteSize;

    fn config(max: u64, keep: u32) -> AuditConfig {
        AuditConfig {
            max_file_size: ByteSize::new(max).expect("size"),
            keep_files: keep,
        }
    }

    fn verify(audit: &Audit) -> berth_core::audit::Verified {
        let mut v = Verifier::new();
        for (name, file, len) in audit.files().expect("files") {
            let reader = std::io::BufReader::new(file.take(len));
            for (i, line) in reader.lines().enumerate() {
                let place = Place {
                    file: name.clone(),
                    line: i as u64 + 1,
                };
                v.push(place, &line.expect("line")).expect("intact");
            }
        }
        v.finish()
    }

    #[test]
    fn records_chain_across_rotation_and_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let alice = Actor {
            name: "alice".into(),
            role: "operator".into(),
            cert: "ab".repeat(32),
            peer: "127.0.0.1:1".into(),
        };
        let audit = Audit::open(dir.path(), &config(4096, 3)).expect("open");
        for i in 0..40 {
            audit.record(&alice, "deploy", "web", &format!("revision {i}"), "ok");
        }
        // A restarted agent picks the chain up where it ended.
        let audit = Audit::open(dir.path(), &config(4096, 3)).expect("reopen");
        for i in 40..60 {
            audit.record(&Actor::agent("file"), "env file edited", "web", &format!("{i}"), "ok");
        }
        let names: Vec<_> = audit.files().expect("files").into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"]);
        let v = verify(&audit);
        assert_eq!(v.last_seq, 60);
        // The oldest files were dropped: the chain starts after them.
        assert!(!v.from_genesis && v.first_seq > 1, "{v:?}");
        let mode = std::fs::metadata(dir.path().join(FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_loose_log_is_tightened_and_a_torn_line_is_ended() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(FILE);
        std::fs::write(&path, "{\"ts_ms\":1,\"who\":\"old\",\"action\":\"deploy\"}\n{\"torn").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let audit = Audit::open(dir.path(), &AuditConfig::default()).expect("open");
        audit.record(&Actor::agent("agent"), "x", "", "", "ok");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("{\"torn\n{\"seq\":1,"), "{text}");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}

//! The agent's event bus: what it did and saw (deploys, restarts, OOM kills,
//! drift repairs), fanned out to `WatchEvents` streams and the log, and
//! kept as a history that survives restarts.
//!
//! A broadcast channel: publishing never blocks the supervisor, and a
//! watcher that falls behind loses the oldest events and is told how many.
//! Beside it, the last [`HISTORY`] events in memory and in
//! `state_dir/events.jsonl` (one JSON record a line, appended as they
//! happen, compacted to the last [`HISTORY`] when it holds twice that),
//! read back when the agent starts; a line that does not parse is skipped
//! with a warning, never a refusal to start. Every event gets a sequence
//! number, increasing across restarts, so a watcher that reconnects can ask
//! for what came after the last one it saw.
//!
//! Inputs: any task that did something (the owner, workers, the
//! reconciler, the pressure policy). Outputs: a log line per event, the
//! journal file and the receivers of [`EventBus::watch`]. No task of its
//! own: the journal is written on the publisher's thread (a short append
//! under the history lock, which is also what keeps a watcher's backlog and
//! its live events free of gaps and repeats), and a `WatchEvents` stream
//! ends on the agent's cancellation (see `grpc::services`), not when the
//! bus closes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::clock::now_ms;

/// Events buffered per watcher before the slowest starts losing them.
const CAPACITY: usize = 1024;

/// Events kept in the history, in memory and in the journal.
pub const HISTORY: usize = 10_000;

/// The journal's name in `state_dir`.
pub const JOURNAL: &str = "events.jsonl";

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine.
    Info,
    /// Something went wrong and was handled.
    Warning,
    /// Something went wrong and needs a person.
    Error,
}

impl Severity {
    /// As sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the agent's history: increasing, never reused, also
    /// across restarts. 0 for the notes a stream makes up ("dropped").
    pub seq: u64,
    /// When, ms since the epoch.
    pub timestamp_ms: u64,
    /// "deployed", "deploy-failed", "restarted", "crashed", "oom-killed", ...
    pub kind: String,
    /// The service concerned, or "" for the host.
    pub service: String,
    /// Its revision, or 0.
    pub revision: u64,
    /// One sentence for people. Never holds env values.
    pub message: String,
    /// How bad.
    pub severity: Severity,
}

/// Which past events a watcher wants before the live ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Events at or after this time, ms since the epoch; 0: none by time.
    pub since_ms: u64,
    /// Events after this sequence number; 0: none by number. When both are
    /// set, an event needs to pass both.
    pub after_seq: u64,
}

impl Backlog {
    fn wanted(&self) -> bool {
        self.since_ms > 0 || self.after_seq > 0
    }

    fn admits(&self, e: &Event) -> bool {
        e.timestamp_ms >= self.since_ms && e.seq > self.after_seq
    }
}

/// Why the history could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The journal could not be read, rewritten or opened for appending.
    #[error("event history {path}: {source}")]
    Journal {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Fan-out of [`Event`]s, with their history.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Arc<Mutex<History>>,
}

struct History {
    ring: VecDeque<Event>,
    next_seq: u64,
    journal: Option<Journal>,
}

/// The open journal file and how many lines it holds.
struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
    /// Set after a failed write, so a full disk is one warning, not one a
    /// event; cleared by the next write that works.
    failing: bool,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus whose history lives in memory only (tests).
    pub fn new() -> Self {
        Self::with(History {
            ring: VecDeque::new(),
            next_seq: 1,
            journal: None,
        })
    }

    /// A bus whose history is read from and kept in `state_dir/events.jsonl`.
    pub fn open(state_dir: &Path) -> Result<Self, EventsError> {
        let path = state_dir.join(JOURNAL);
        let err = |source| EventsError::Journal {
            path: path.clone(),
            source,
        };
        let ring = read_journal(&path).map_err(err)?;
        let next_seq = ring.back().map_or(1, |e| e.seq + 1);
        let journal = Journal::rewrite(path.clone(), &ring).map_err(err)?;
        if !ring.is_empty() {
            info!(path = %path.display(), events = ring.len(), "Read the event history.");
        }
        Ok(Self::with(History {
            ring,
            next_seq,
            journal: Some(journal),
        }))
    }

    fn with(history: History) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventBus {
            tx,
            history: Arc::new(Mutex::new(history)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        // A publisher that panicked mid-append leaves a usable history.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs the event, records it and hands it to every watcher.
    pub fn publish(
        &self,
        kind: &'static str,
        service: &str,
        revision: u64,
        severity: Severity,
        message: impl Into<String>,
    ) {
        let message = message.into();
        match severity {
            Severity::Info => info!(event = kind, service, revision, "{message}"),
            Severity::Warning | Severity::Error => warn!(event = kind, service, revision, "{message}"),
        }
        let mut h = self.lock();
        let event = Event {
            seq: h.next_seq,
            timestamp_ms: now_ms(),
            kind: kind.to_owned(),
            service: service.to_owned(),
            revision,
            message,
            severity,
        };
        h.next_seq += 1;
        h.record(&event);
        // No watchers is fine. Sent under the lock, so `watch` sees every
        // event either in its backlog or on its receiver, once.
        let _ = self.tx.send(event);
    }

    /// A new watcher, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// A new watcher: the past events `backlog` asks for, oldest first, and
    /// a receiver of every event after them.
    pub fn watch(&self, backlog: Backlog) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.lock();
        let past = if backlog.wanted() {
            h.ring.iter().filter(|e| backlog.admits(e)).cloned().collect()
        } else {
            Vec::new()
        };
        (past, self.tx.subscribe())
    }
}

impl History {
    fn record(&mut self, event: &Event) {
        self.ring.push_back(event.clone());
        while self.ring.len() > HISTORY {
            self.ring.pop_front();
        }
        let Some(j) = self.journal.as_mut() else { return };
        let written = if j.lines >= 2 * HISTORY {
            Journal::rewrite(j.path.clone(), &self.ring).map(|fresh| *j = fresh)
        } else {
            j.append(event)
        };
        match written {
            Ok(()) if j.failing => {
                j.failing = false;
                info!(path = %j.path.display(), "Writing the event history works again.");
            }
            Ok(()) => {}
            Err(e) if !j.failing => {
                j.failing = true;
                warn!(path = %j.path.display(), error = %e,
                    "Cannot write the event history; events are kept in memory until it works again.");
            }
            Err(_) => {}
        }
    }
}

impl Journal {
    /// Replaces the file with `events` and opens it for appending.
    fn rewrite(path: PathBuf, events: &VecDeque<Event>) -> std::io::Result<Journal> {
        let mut bytes = Vec::new();
        for e in events {
            serde_json::to_writer(&mut bytes, e).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let tmp = path.with_file_name(format!(".{JOURNAL}.tmp"));
        crate::atomicfile::write(&path, &tmp, &bytes, 0o600).map_err(|(_, e)| e)?;
        let file = OpenOptions::new().append(true).mode(0o600).open(&path)?;
        Ok(Journal {
            path,
            file,
            lines: events.len(),
            failing: false,
        })
    }

    fn append(&mut self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write per line, so a crash leaves at most a torn last line,
        // which the next start skips.
        self.file.write_all(&line)?;
        self.lines += 1;
        Ok(())
    }
}

/// The last [`HISTORY`] events of the journal at `path`, oldest first;
/// none when it does not exist.
fn read_journal(path: &Path) -> std::io::Result<VecDeque<Event>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VecDeque::new()),
        Err(e) => return Err(e),
    };
    let mut ring = VecDeque::new();
    let mut skipped = 0usize;
    let mut last_seq = 0;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            // Out of order means a hand edit or a torn write: skipped too,
            // so sequence numbers keep increasing.
            Ok(e) if e.seq > last_seq => {
                last_seq = e.seq;
                ring.push_back(e);
                if ring.len() > HISTORY {
                    ring.pop_front();
                }
            }
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        warn!(path = %path.display(), skipped, "Skipped event history lines that do not parse.");
    }
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn the_history_survives_a_reopen_and_numbers_keep_increasing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = EventBus::open(dir.path()).expect("open");
        bus.publish("deployed", "web", 1, Severity::Info, "revision 1 is healthy");
        bus.publish("crashed", "web", 1, Severity::Warning, "exited 1");
        drop(bus);
        let bus = EventBus::open(dir.path()).expect("reopen");
        bus.publish("restarted", "web", 1, Severity::Info, "again");
        let (past, _) = bus.watch(Backlog {
            since_ms: 1,
            after_seq: 0,
        });
        assert_eq!(kinds(&past), ["deployed", "crashed", "restarted"]);
        assert_eq!(past.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let (after, _) = bus.watch(Backlog {
            since_ms: 0,
            after_seq: 2,
        });
        assert_eq!(kinds(&after), ["restarted"]);
    }

    #[test]
    fn no_backlog_unless_asked_and_live_events_follow_it() {
        let bus = EventBus::new();
        bus.publish("deployed", "web", 1, Severity::Info, "one");
        let (past, mut rx) = bus.watch(Backlog::default());
        assert!(past.is_empty());
        bus.publish("crashed", "web", 1, Severity::Warning, "two");
        assert_eq!(rx.try_recv().expect("live").kind, "crashed");
        let later = Backlog {
            since_ms: now_ms() + 60_000,
            after_seq: 0,
        };
        assert!(bus.watch(later).0.is_empty());
    }

    #[test]
    fn a_broken_line_is_skipped_and_the_journal_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL);
        let good = |seq: u64| {
            serde_json::to_string(&Event {
                seq,
                timestamp_ms: seq,
                kind: "deployed".into(),
                service: "web".into(),
                revision: seq,
                message: "ok".into(),
                severity: Severity::Info,
            })
            .expect("json")
        };
        let mut text = String::new();
        for seq in 1..=(HISTORY as u64 + 5) {
            text.push_str(&good(seq));
            text.push('\n');
        }
        text.push_str("{\"seq\": torn");
        std::fs::write(&path, text).expect("write");
        let bus = EventBus::open(dir.path()).expect("open");
        let (past, _) = bus.watch(Backlog {
            since_ms: 1,
            after_seq: 0,
        });
        assert_eq!(past.len(), HISTORY);
        assert_eq!(past[0].seq, 6);
        bus.publish("crashed", "web", 1, Severity::Warning, "next");
        assert_eq!(
            bus.watch(Backlog {
                since_ms: 1,
                after_seq: HISTORY as u64 + 5
            })
            .0[0]
                .seq,
            HISTORY as u64 + 6
        );
        let lines = std::fs::read_to_string(&path).expect("read").lines().count();
        assert_eq!(lines, HISTORY + 1, "rewritten at open, then appended");
    }
}

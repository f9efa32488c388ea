//! Watching the env dir for edits made outside the agent (a person, a
//! config-management tool).
//!
//! Owns one task (on the agent's task tracker) that receives inotify events
//! from `notify`'s thread, debounces them — editors and tools write a file
//! in several steps (truncate, write, rename a temp file over it) — and
//! sends the supervisor one typed [`EnvWatch`] message per burst. It only
//! *triggers*: the supervisor re-reads the files and decides. The task
//! stops on cancellation, or when the supervisor's receiver is gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A burst ends after this long without another event.
pub const QUIET: Duration = Duration::from_secs(1);
/// A burst is reported after at most this long, even if events keep coming.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// What the watcher tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvWatch {
    /// These file names in the env dir were created, changed or removed.
    Changed(BTreeSet<String>),
    /// Events may have been lost (the kernel queue overflowed, the watch
    /// failed): look at every file.
    Rescan(String),
}

/// Collects events into bursts. Pure: time comes in as arguments.
#[derive(Debug, Default)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
    files: BTreeSet<String>,
    rescan: Option<String>,
}

impl Debounce {
    /// Notes a change to `file` at `now`.
    pub fn file(&mut self, file: String, now: Instant) {
        self.touch(now);
        self.files.insert(file);
    }

    /// Notes that everything must be looked at, and why.
    pub fn rescan(&mut self, why: String, now: Instant) {
        self.touch(now);
        self.rescan.get_or_insert(why);
    }

    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending burst is due; `None` when nothing is pending.
    pub fn due_at(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + QUIET).min(first + MAX_WAIT))
    }

    /// The burst's message if it is due at `now`, resetting for the next.
    pub fn take_due(&mut self, now: Instant) -> Option<EnvWatch> {
        if self.due_at()? > now {
            return None;
        }
        let done = std::mem::take(self);
        Some(match done.rescan {
            Some(why) => EnvWatch::Rescan(why),
            None => EnvWatch::Changed(done.files),
        })
    }
}

/// The file names in `dir` an event is about. Reads (access events) are
/// ignored, so the agent reading a file never wakes itself.
fn names_of(event: &notify::Event, dir: &Path) -> Vec<String> {
    if matches!(event.kind, EventKind::Access(a) if a != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
    {
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

/// Watches `dir` (which must exist) and sends bursts to `tx` from a task on
/// `tracker` until `cancel` fires.
pub fn spawn(
    dir: PathBuf,
    tx: mpsc::Sender<EnvWatch>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), notify::Error> {
    // notify calls this from its own inotify thread; an unbounded channel
    // keeps that thread from ever blocking on us.
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = raw_tx.send(res);
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracker.spawn(async move {
        // Owned here so the inotify watch lives exactly as long as the loop.
        let _watcher = watcher;
        let mut burst = Debounce::default();
        loop {
            // Asleep until an event, the burst's deadline or cancellation:
            // an idle watch costs no wakeups.
            let deadline = crate::clock::sleep_until(burst.due_at());
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = deadline => {}
                event = raw_rx.recv() => match event {
                    Some(Ok(event)) => {
                        if event.need_rescan() {
                            burst.rescan("the kernel dropped file events".into(), Instant::now());
                        }
                        for name in names_of(&event, &dir) {
                            burst.file(name, Instant::now());
                        }
                    }
                    Some(Err(e)) => {
                        warn!(dir = %dir.display(), error = %e, "Env dir watch reported an error; rescanning.");
                        burst.rescan(format!("the watch reported an error: {e}"), Instant::now());
                    }
                    None => break,
                },
            }
            if let Some(msg) = burst.take_due(Instant::now()) {
                debug!(?msg, "Env files changed.");
                // Waiting here is fine: events keep queueing in raw_rx, and
                // the next burst merges them.
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        }
        debug!("Env dir watcher stopped.");
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_reported_once_after_it_goes_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.due_at(), None);
        assert_eq!(d.take_due(t0), None);
        d.file("a.env".into(), t0);
        d.file("a.env".into(), t0 + Duration::from_millis(100));
        d.file("b.env".into(), t0 + Duration::from_millis(200));
        let last = t0 + Duration::from_millis(200);
        assert_eq!(d.take_due(last + QUIET - Duration::from_millis(1)), None, "still busy");
        let msg = d.take_due(last + QUIET).expect("due");
        assert_eq!(
            msg,
            EnvWatch::Changed(["a.env".to_owned(), "b.env".to_owned()].into_iter().collect())
        );
        assert_eq!(d.due_at(), None, "reset after taking");
    }

    #[test]
    fn a_steady_stream_is_still_reported_within_max_wait() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        let mut t = t0;
        while t < t0 + MAX_WAIT {
            d.file("a.env".into(), t);
            t += Duration::from_millis(100);
        }
        assert_eq!(d.due_at(), Some(t0 + MAX_WAIT));
        assert!(d.take_due(t0 + MAX_WAIT).is_some());
    }

    #[test]
    fn rescan_wins_over_file_names() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        d.file("a.env".into(), t0);
        d.rescan("overflow".into(), t0);
        assert_eq!(d.take_due(t0 + QUIET), Some(EnvWatch::Rescan("overflow".into())));
    }

    #[test]
    fn reads_and_other_dirs_are_ignored() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        let dir = Path::new("/etc/berth/env");
        let ev = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        assert!(
            names_of(
                &ev(
                    EventKind::Access(AccessKind::Open(AccessMode::Any)),
                    "/etc/berth/env/a.env"
                ),
                dir
            )
            .is_empty()
        );
        assert_eq!(
            names_of(
                &ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    "/etc/berth/env/a.env"
                ),
                dir
            ),
            vec!["a.env"]
        );
        assert_eq!(
            names_of(&ev(EventKind::Create(CreateKind::File), "/etc/berth/env/a.env"), dir),
            vec!["a.env"]
        );
        assert!(names_of(&ev(EventKind::Modify(ModifyKind::Any), "/etc/berth/env/sub/a.env"), dir).is_empty());
    }
}

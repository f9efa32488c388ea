//! The agent's event bus: what it did and saw (deploys, restarts, OOM kills,
//! drift repairs), fanned out to `WatchEvents` streams and the log.
//!
//! A broadcast channel: publishing never blocks the supervisor, and a
//! watcher that falls behind loses the oldest events and is told how many.
//! Inputs: any task that did something (the owner, workers, the
//! reconciler, the pressure policy). Outputs: a log line per event and the
//! receivers of [`EventBus::subscribe`]. No task of its own: a
//! `WatchEvents` stream ends on the agent's cancellation (see
//! `grpc::services`), not when the bus closes.

use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::clock::now_ms;

/// Events buffered per watcher before the slowest starts losing them.
const CAPACITY: usize = 1024;

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When, ms since the epoch.
    pub timestamp_ms: u64,
    /// "deployed", "deploy-failed", "restarted", "crashed", "oom-killed", ...
    pub kind: &'static str,
    /// The service concerned, or "" for the host.
    pub service: String,
    /// Its revision, or 0.
    pub revision: u64,
    /// One sentence for people. Never holds env values.
    pub message: String,
    /// How bad.
    pub severity: Severity,
}

/// Fan-out of [`Event`]s.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventBus { tx }
    }

    /// Logs the event and hands it to every watcher.
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
        // No watchers is fine.
        let _ = self.tx.send(Event {
            timestamp_ms: now_ms(),
            kind,
            service: service.to_owned(),
            revision,
            message,
            severity,
        });
    }

    /// A new watcher, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

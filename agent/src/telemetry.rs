//! Where the agent's logs go.
//!
//! One [`init`] decides: under systemd (`JOURNAL_STREAM` set) records go to
//! journald with their fields, through `systemd-journal-logger`, which is a
//! `log` backend; tracing reaches it through tracing's `log` feature, which
//! forwards events as `log` records when no tracing subscriber is installed.
//! Anywhere else a tracing subscriber writes text or JSON to stderr. Called
//! once by `main.rs` before the runtime starts; nothing to shut down.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat, parse_filter};

/// Where logs ended up, for the first log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// systemd's journal.
    Journald,
    /// Standard error.
    Stderr,
}

/// Installs the process-wide logger. `RUST_LOG` overrides the configured level.
pub fn init(config: &LogConfig) -> Sink {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journal) = systemd_journal_logger::JournalLog::new()
    {
        let journal = journal.with_syslog_identifier("berth-agent".to_owned());
        if log::set_boxed_logger(Box::new(NoSpanLifecycle(journal))).is_ok() {
            log::set_max_level(max_level(&filter));
            return Sink::Journald;
        }
    }
    let targets = parse_filter(&filter).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(targets);
    let _ = match config.format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
    Sink::Stderr
}

/// The most verbose level a tracing filter string asks for, for `log`'s
/// global switch (journald receives `log` records, which have no targets
/// filter of their own here).
fn max_level(filter: &str) -> log::LevelFilter {
    let f = filter.to_ascii_lowercase();
    if f.contains("trace") {
        log::LevelFilter::Trace
    } else if f.contains("debug") {
        log::LevelFilter::Debug
    } else if f.contains("info") {
        log::LevelFilter::Info
    } else if f.contains("warn") {
        log::LevelFilter::Warn
    } else if f.contains("error") {
        log::LevelFilter::Error
    } else {
        log::LevelFilter::Info
    }
}

/// Drops the records tracing's `log` feature emits when a span is entered,
/// exited or closed (targets `tracing::span` and `tracing::span::active`,
/// bodies like `-> reconcile;`): sent to journald they would be most of the
/// journal, several lines a second. Events are forwarded as they are.
struct NoSpanLifecycle<L>(L);

impl<L: log::Log> log::Log for NoSpanLifecycle<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        !is_span_lifecycle(metadata.target()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !is_span_lifecycle(record.target()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

fn is_span_lifecycle(target: &str) -> bool {
    target == "tracing::span" || target.starts_with("tracing::span::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_lifecycle_records_are_recognised_and_events_are_not() {
        assert!(is_span_lifecycle("tracing::span"));
        assert!(is_span_lifecycle("tracing::span::active"));
        assert!(!is_span_lifecycle("berth_agent::supervisor"));
        assert!(!is_span_lifecycle("tracing::spanner"));
    }
}

//! Where a rollout's time goes: a stopwatch the rollout marks at the end of
//! each step, logged as one debug line when the rollout ends
//! (`RUST_LOG=berth_agent::supervisor=debug`), e.g.
//! `phases="pull=21ms record=2ms stop+create=180ms start=301ms gate=12ms/2 ..."`.
//! Owns nothing else; no task.

use std::fmt;
use std::time::{Duration, Instant};

/// The durations of a rollout's steps, in the order they ended.
pub(super) struct Phases {
    started: Instant,
    last: Instant,
    marks: Vec<(&'static str, Duration, Option<u32>)>,
}

impl Phases {
    /// Starts the stopwatch.
    pub(super) fn start() -> Self {
        let now = Instant::now();
        Phases {
            started: now,
            last: now,
            marks: Vec::new(),
        }
    }

    /// The step `phase` ended now: it took the time since the last mark.
    pub(super) fn mark(&mut self, phase: &'static str) {
        self.mark_counted(phase, None);
    }

    /// Like [`Phases::mark`], with a count shown after the time (the gate's
    /// probes).
    pub(super) fn mark_counted(&mut self, phase: &'static str, count: Option<u32>) {
        let now = Instant::now();
        self.marks.push((phase, now - self.last, count));
        self.last = now;
    }

    /// Logs the steps at debug level.
    pub(super) fn log(&self, service: &str, revision: u64, outcome: &str) {
        tracing::debug!(
            service,
            revision,
            outcome,
            total_ms = self.started.elapsed().as_millis() as u64,
            phases = %self,
            "Rollout timings."
        );
    }
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (phase, took, count)) in self.marks.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{phase}={}ms", took.as_millis())?;
            if let Some(n) = count {
                write!(f, "/{n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_show_in_order_with_their_counts() {
        let mut p = Phases::start();
        p.mark("pull");
        p.mark_counted("gate", Some(3));
        let shown = p.to_string();
        let (pull, gate) = shown.split_once(' ').expect("two steps");
        assert!(pull.starts_with("pull=") && pull.ends_with("ms"), "{shown}");
        assert!(gate.starts_with("gate=") && gate.ends_with("ms/3"), "{shown}");
    }
}

//! The agent's wall clock: milliseconds since the Unix epoch, the unit of
//! every timestamp berth stores or sends (revisions, events, audit lines,
//! metrics snapshots) and of Docker's container times.
//!
//! One place, so every module reads time the same way and a clock before
//! 1970 (a host without RTC at boot) reads as 0 instead of panicking.
//! Durations and deadlines inside the agent use `Instant`, never this.
//! Owns no state and runs no task.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// [`now_ms`] as a signed number, to compare with Docker's container times
/// (`started_at_ms`, `finished_at_ms`), which are signed.
pub fn now_ms_signed() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_agree_and_are_after_2020() {
        let (a, b) = (now_ms(), now_ms_signed());
        assert!(a > 1_577_836_800_000, "{a}");
        assert!((b - a as i64).abs() < 1000, "{a} {b}");
    }
}

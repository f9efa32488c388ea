//! The agent's wall clock: milliseconds since the Unix epoch, the unit of
//! every timestamp berth stores or sends (revisions, events, audit lines,
//! metrics snapshots) and of Docker's container times.
//!
//! One place, so every module reads time the same way and a clock before
//! 1970 (a host without RTC at boot) reads as 0 instead of panicking.
//! Durations and deadlines inside the agent use `Instant`, never this;
//! [`sleep_until`] is the one wait on a deadline that may be unset;
//! [`thread_cpu`] the one CPU-time clock (what a metrics pass costs).
//! Owns no state and runs no task.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// CPU time the calling thread has used: what a piece of work on one
/// thread cost, whatever else the machine was running meanwhile.
pub fn thread_cpu() -> Duration {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Sleeps until `at`, or forever when there is none: the timer arm of a
/// `select!` loop whose deadline may be unset, so an idle loop never wakes.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

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

/// `ms` since the epoch as UTC, `2026-12-01T10:01:02Z`, for messages
/// people read (a lease's since and until).
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_calendar_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_796_123_456_789), "2026-12-01T11:10:56Z");
    }

    #[test]
    fn both_forms_agree_and_are_after_2020() {
        let (a, b) = (now_ms(), now_ms_signed());
        assert!(a > 1_577_836_800_000, "{a}");
        assert!((b - a as i64).abs() < 1000, "{a} {b}");
    }
}

//! A rollout's record as berthctl reads it back from many agents: each
//! agent the rollout touches keeps a copy, written by the runner as it goes.
//!
//! Pure. Owns how copies merge into one view ([`merge`]: the newest copy
//! for the rollout as a whole, each host's own copy for that host's entry,
//! since the runner writes a host's progress to that host first; the
//! newest control anyone set), the host and rollout states' names and
//! which of them are final, the counts a summary shows, and new ids.

use std::collections::BTreeMap;

use berth_proto::v1::{HostProgress, RolloutControl, RolloutRecord, RolloutState};

/// Host states.
pub mod host {
    /// Not started.
    pub const PENDING: &str = "pending";
    /// Its deploy runs.
    pub const RUNNING: &str = "running";
    /// Deployed and healthy.
    pub const SUCCEEDED: &str = "succeeded";
    /// At the target already: skipped.
    pub const UNCHANGED: &str = "unchanged";
    /// Its deploy failed, it was unreachable or too slow.
    pub const FAILED: &str = "failed";
    /// Being rolled back.
    pub const ROLLING_BACK: &str = "rolling-back";
    /// Rolled back to the revision it had.
    pub const ROLLED_BACK: &str = "rolled-back";
    /// The rollback failed: it needs a person.
    pub const ROLLBACK_FAILED: &str = "rollback-failed";
    /// Never started: the rollout stopped first.
    pub const SKIPPED: &str = "skipped";
}

/// Rollout states.
pub mod status {
    /// Planned, not started.
    pub const PLANNED: &str = "planned";
    /// Running.
    pub const RUNNING: &str = "running";
    /// Paused: no new host starts until resumed.
    pub const PAUSED: &str = "paused";
    /// Rolling the changed hosts back.
    pub const ROLLING_BACK: &str = "rolling-back";
    /// Every host done, none failed.
    pub const SUCCEEDED: &str = "succeeded";
    /// Stopped on failures; hosts left as they are.
    pub const FAILED: &str = "failed";
    /// Stopped on failures and the changed hosts rolled back.
    pub const ROLLED_BACK: &str = "rolled-back";
    /// Stopped by `rollout abort`.
    pub const ABORTED: &str = "aborted";
}

/// Whether a rollout in `status` has ended (nothing to resume).
pub fn is_final(s: &str) -> bool {
    matches!(
        s,
        status::SUCCEEDED | status::FAILED | status::ROLLED_BACK | status::ABORTED
    )
}

/// One agent's copy of a rollout.
#[derive(Debug, Clone)]
pub struct Copy {
    /// The host that keeps it (its inventory name).
    pub host: String,
    /// What it keeps.
    pub state: RolloutState,
}

/// The rollout as all `copies` together tell it; `None` without copies.
pub fn merge(copies: &[Copy]) -> Option<RolloutState> {
    let newest = copies
        .iter()
        .filter_map(|c| c.state.record.as_ref().map(|r| (c, r)))
        .max_by_key(|(_, r)| r.updated_at_ms)?;
    let mut record: RolloutRecord = newest.1.clone();
    let own: BTreeMap<&str, &HostProgress> = copies
        .iter()
        .filter_map(|c| {
            let r = c.state.record.as_ref()?;
            r.hosts.iter().find(|h| h.host == c.host).map(|h| (c.host.as_str(), h))
        })
        .collect();
    for h in &mut record.hosts {
        if let Some(mine) = own.get(h.host.as_str()) {
            *h = (*mine).clone();
        }
    }
    let control = copies
        .iter()
        .filter_map(|c| c.state.control.clone())
        .max_by_key(|c| c.at_ms)
        .filter(|c| !c.action.is_empty());
    Some(RolloutState {
        record: Some(record),
        control,
    })
}

/// The newest control set on any copy, if any.
pub fn newest_control(controls: impl IntoIterator<Item = RolloutControl>) -> Option<RolloutControl> {
    controls
        .into_iter()
        .filter(|c| !c.action.is_empty())
        .max_by_key(|c| c.at_ms)
}

/// Hosts per state, for a summary line.
pub fn counts(record: &RolloutRecord) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for h in &record.hosts {
        *out.entry(h.state.clone()).or_insert(0) += 1;
    }
    out
}

/// `4 succeeded, 1 failed, 3 skipped` in a fixed order.
pub fn counts_line(record: &RolloutRecord) -> String {
    let counts = counts(record);
    let order = [
        host::SUCCEEDED,
        host::UNCHANGED,
        host::FAILED,
        host::ROLLED_BACK,
        host::ROLLBACK_FAILED,
        host::RUNNING,
        host::ROLLING_BACK,
        host::PENDING,
        host::SKIPPED,
    ];
    let parts: Vec<String> = order
        .iter()
        .filter_map(|s| counts.get(*s).map(|n| format!("{n} {s}")))
        .collect();
    if parts.is_empty() {
        "no hosts".into()
    } else {
        parts.join(", ")
    }
}

/// Hosts that failed.
pub fn failures(record: &RolloutRecord) -> usize {
    record
        .hosts
        .iter()
        .filter(|h| {
            matches!(
                h.state.as_str(),
                host::FAILED | host::ROLLED_BACK | host::ROLLBACK_FAILED
            ) && !h.error.is_empty()
        })
        .count()
}

/// A new rollout id: `r` + the time in base 36 + 4 random hex digits, so
/// ids sort by creation and two started at once differ.
pub fn new_id(now_ms: u64, random: u16) -> String {
    let mut n = now_ms;
    let mut digits = Vec::new();
    while n > 0 {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    digits.reverse();
    format!("r{}-{random:04x}", String::from_utf8_lossy(&digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(host: &str, state: &str) -> HostProgress {
        HostProgress {
            host: host.into(),
            state: state.into(),
            ..HostProgress::default()
        }
    }

    fn copy(on: &str, updated: u64, hosts: &[(&str, &str)], control: Option<(&str, u64)>) -> Copy {
        Copy {
            host: on.into(),
            state: RolloutState {
                record: Some(RolloutRecord {
                    id: "r1".into(),
                    updated_at_ms: updated,
                    hosts: hosts.iter().map(|(h, s)| progress(h, s)).collect(),
                    ..RolloutRecord::default()
                }),
                control: control.map(|(a, at)| RolloutControl {
                    action: a.into(),
                    by: "bob".into(),
                    at_ms: at,
                }),
            },
        }
    }

    #[test]
    fn each_host_has_the_last_word_on_its_own_entry() {
        let copies = [
            // web-1's copy is older overall but newest about web-1.
            copy("web-1", 10, &[("web-1", "succeeded"), ("web-2", "pending")], None),
            copy(
                "web-2",
                20,
                &[("web-1", "running"), ("web-2", "running")],
                Some(("pause", 15)),
            ),
            copy(
                "web-3",
                5,
                &[("web-1", "pending"), ("web-2", "pending")],
                Some(("resume", 18)),
            ),
        ];
        let merged = merge(&copies).expect("copies");
        let r = merged.record.expect("record");
        assert_eq!(r.updated_at_ms, 20);
        assert_eq!(r.hosts[0].state, "succeeded");
        assert_eq!(r.hosts[1].state, "running");
        assert_eq!(merged.control.map(|c| c.action), Some("resume".to_owned()));
        assert!(merge(&[]).is_none());
    }

    #[test]
    fn ids_sort_by_time_and_counts_read_well() {
        let (a, b) = (new_id(1_700_000_000_000, 1), new_id(1_700_000_000_999, 0));
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with('r') && a.len() <= 64);
        let r = RolloutRecord {
            hosts: vec![
                progress("a", "succeeded"),
                progress("b", "succeeded"),
                progress("c", "skipped"),
            ],
            ..RolloutRecord::default()
        };
        assert_eq!(counts_line(&r), "2 succeeded, 1 skipped");
        assert!(is_final("rolled-back") && !is_final("paused"));
    }
}

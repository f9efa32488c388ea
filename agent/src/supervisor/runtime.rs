//! What the supervisor learns at run time, beside the desired state: crash
//! counts and backoff, restarts, OOM kills, exit codes, health verdicts,
//! memory-pressure holds, each service's running container, and the env
//! files' fingerprints.
//!
//! Owned by the owner task ([`super::owner`]) and changed only there; the
//! part people see (everything but the bookkeeping at the bottom of
//! [`Runtime`]) is copied into each [`super::Snapshot`]. The transitions
//! are plain methods taking the time as arguments, so they are tested
//! without a clock. Nothing here is persisted: it starts empty with the
//! agent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::docker::ContainerInfo;
use crate::health;
use crate::state::ServiceRecord;
use berth_core::spec::HealthCheck;

/// Longest wait between restarts of a crash-looping service.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a restarted container must run before its crash count resets
/// (as long as Docker's own restart policy waits).
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How often the health monitor reads again what a container reports
/// serving: a version rarely changes under a running container, but one
/// adopted after an agent restart has not been read at all.
pub const VERSION_REREAD: Duration = Duration::from_secs(60);

/// How far away a hold puts the reconciler's next start: "until released".
const HOLD: Duration = Duration::from_secs(365 * 24 * 3600);

/// The eager probing of a container that just (re)started: its first
/// live probe is due at once, and one that fails is tried again after
/// this, doubling up to the check's interval. Those early failures count
/// for nothing (a container a few milliseconds from listening is not
/// failing), so `retries` still means failures at the interval.
pub const RAMP_FIRST: Duration = Duration::from_millis(2);

/// Reports of one OOM kill by Docker and by the kernel log arrive within
/// this of each other.
const OOM_SAME_KILL: Duration = Duration::from_secs(5);

/// Whether `container` is in `check`'s start period at `now_ms`, when its
/// failures do not count.
fn in_start_period(container: &ContainerInfo, check: &HealthCheck, now_ms: i64) -> bool {
    container
        .started_at_ms
        .is_some_and(|t| (now_ms - t) < check.start_period.as_millis() as i64)
}

/// The delay before restart number `failures` (1-based) of a crashing
/// service: immediately the first time, then 1s, 2s, 4s ... up to
/// [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Who reported an OOM kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomSource {
    /// Docker's `oom` event.
    Docker,
    /// The kernel log (`oom-kill:` record naming the container's cgroup).
    Kernel,
}

/// What the supervisor has learnt about one service at run time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceRuntime {
    /// Restarts in a row that did not last [`STABLE_AFTER`].
    pub failures: u32,
    /// No automatic restart before this.
    pub not_before: Option<Instant>,
    /// Restarts by the agent since it started.
    pub restarts: u32,
    /// OOM kills seen since the agent started.
    pub oom_kills: u32,
    /// Docker `update` events seen since the agent started (limits changed
    /// in place): the metrics collector re-reads a container's limits when
    /// this moves.
    pub updates: u32,
    /// The last exit code seen.
    pub last_exit: Option<i64>,
    /// Why the memory-pressure policy keeps it stopped.
    pub held: Option<String>,
}

/// The health monitor's view of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    /// Failed probes in a row, counted after the start period.
    pub failures: u32,
    /// The last counted verdict; `None` before the first.
    pub healthy: Option<bool>,
    /// What the last probe saw.
    pub last_output: String,
    /// When the monitor probes it next.
    pub next_probe: Instant,
    /// It failed `retries` times in a row: the reconciler replaces it.
    pub unhealthy: bool,
    /// The `[health.deps]` check's verdict; `None` before its first probe.
    pub deps: Option<DepsState>,
    /// What it last reported serving (`[health.version]`).
    pub version: Option<String>,
    /// When the monitor reads its version next.
    pub next_version_read: Instant,
    /// Eager probing (see [`RAMP_FIRST`]): the wait after the next failed
    /// live probe; `None` once it passed or the wait reached the interval.
    pub ramp: Option<Duration>,
}

impl HealthState {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            healthy: None,
            last_output: String::new(),
            next_probe: now,
            unhealthy: false,
            deps: None,
            version: None,
            next_version_read: now,
            ramp: Some(RAMP_FIRST),
        }
    }
}

/// The `[health.deps]` check of one container: failing it marks the
/// service degraded, never replaces the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepsState {
    /// Failed probes in a row, counted after the start period.
    pub failures: u32,
    /// It failed `retries` times in a row and has not passed since.
    pub degraded: bool,
    /// What the last probe saw.
    pub last_output: String,
    /// When the monitor probes it next.
    pub next_probe: Instant,
}

/// A change of a dependency check's verdict, to tell people about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepsChange {
    /// It failed this many times in a row: the service is degraded.
    Degraded(u32),
    /// It passed again.
    Recovered,
}

/// Everything learnt at run time.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Per service.
    pub services: HashMap<String, ServiceRuntime>,
    /// Per container id.
    pub health: HashMap<String, HealthState>,
    /// The running container of each desired service, as last observed.
    pub primaries: HashMap<String, ContainerInfo>,
    /// Fingerprint of each service's env file as last handled (applied,
    /// refused, or written by the agent itself), so neither the agent's own
    /// writes nor a refused edit are handled twice.
    pub(super) env_seen: HashMap<String, u64>,
    /// Services with an env file check waiting for their permit.
    pub(super) env_checks: HashSet<String>,
    /// The last OOM kill counted per container and who reported it, so one
    /// kill seen by both Docker and the kernel log counts once.
    pub(super) oom_recent: HashMap<String, (Instant, OomSource)>,
}

impl Runtime {
    /// Counts a restart by the agent. A crash (exit, unhealthy) grows the
    /// backoff for the next one; recreating a removed container does not.
    pub fn count_restart(&mut self, service: &str, crash: bool, now: Instant) {
        let s = self.services.entry(service.to_owned()).or_default();
        s.restarts += 1;
        if crash {
            s.failures += 1;
            s.not_before = Some(now + backoff(s.failures + 1));
        }
    }

    /// A deploy brought a healthy revision up: no backoff is pending.
    pub fn deployed(&mut self, service: &str) {
        let s = self.services.entry(service.to_owned()).or_default();
        s.failures = 0;
        s.not_before = None;
    }

    /// Takes in what a reconcile pass saw: each service's running container
    /// of its active revision becomes its primary (for the health monitor
    /// and metrics), the crash count of a service whose container stayed up
    /// long enough is forgotten (judged by how long it ran, not by when the
    /// pass happens to look, so a crash after a long healthy run restarts at
    /// once), and health verdicts of containers that are gone are dropped.
    pub fn observe(&mut self, records: &BTreeMap<String, ServiceRecord>, observed: &[ContainerInfo], now_ms: i64) {
        self.primaries.clear();
        let stable = STABLE_AFTER.as_millis() as i64;
        for (name, record) in records {
            let mine = observed
                .iter()
                .filter(|c| c.service.as_deref() == Some(name) && c.revision == Some(record.active));
            let mut ran_long = false;
            for c in mine {
                let started = c.started_at_ms.unwrap_or(now_ms);
                if c.running {
                    self.primaries.insert(name.clone(), c.clone());
                    ran_long |= now_ms - started > stable;
                } else if let Some(finished) = c.finished_at_ms {
                    ran_long |= finished - started > stable;
                }
            }
            if ran_long && let Some(s) = self.services.get_mut(name) {
                s.failures = 0;
                s.not_before = None;
            }
        }
        let live: HashSet<&str> = observed.iter().map(|c| c.id.as_str()).collect();
        self.health.retain(|id, _| live.contains(id.as_str()));
    }

    /// Containers the reconciler should replace.
    pub fn unhealthy(&self) -> HashSet<String> {
        self.health
            .iter()
            .filter(|(_, h)| h.unhealthy)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Containers whose last counted health verdict was a pass.
    pub fn healthy(&self) -> HashSet<String> {
        self.health
            .iter()
            .filter(|(_, h)| h.healthy == Some(true))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Services that may not be restarted before an instant (backoff, holds).
    pub fn not_before(&self) -> HashMap<String, Instant> {
        self.services
            .iter()
            .filter_map(|(n, s)| s.not_before.map(|t| (n.clone(), t)))
            .collect()
    }

    /// Seeds the health monitor with a container that just passed its gate,
    /// so `ps` shows it healthy at once.
    /// `version` is what it reported serving, if the spec asserts one.
    pub fn mark_healthy(
        &mut self,
        container: &str,
        interval: Duration,
        output: String,
        version: Option<String>,
        now: Instant,
    ) {
        self.health.insert(
            container.to_owned(),
            HealthState {
                healthy: Some(true),
                last_output: output,
                next_probe: now + interval,
                next_version_read: now + VERSION_REREAD,
                version,
                ramp: None,
                ..HealthState::new(now)
            },
        );
    }

    /// Records one probe of `container`. Failures inside the start period
    /// do not count. Returns the failure count when the container just
    /// became unhealthy.
    pub fn record_probe(
        &mut self,
        container: &ContainerInfo,
        check: &HealthCheck,
        outcome: &health::Outcome,
        now: Instant,
        now_ms: i64,
    ) -> Option<u32> {
        let in_start_period = in_start_period(container, check, now_ms);
        let h = self.state_of(&container.id, now);
        let interval = check.interval.as_std();
        h.next_probe = now + interval;
        h.last_output = outcome.output.clone();
        if outcome.healthy {
            h.ramp = None;
        } else if let Some(wait) = h.ramp.filter(|w| *w < interval) {
            // Still coming up: try again soon, counting nothing.
            h.next_probe = now + wait;
            h.ramp = Some(wait * 2);
            return None;
        } else {
            h.ramp = None;
        }
        if outcome.unknown {
            // The agent could not probe (its own EMFILE, Docker away): the
            // verdict stands as it was.
        } else if outcome.healthy {
            h.failures = 0;
            h.healthy = Some(true);
        } else if !in_start_period {
            h.failures += 1;
            h.healthy = Some(false);
            if h.failures >= check.retries && !h.unhealthy {
                h.unhealthy = true;
                return Some(h.failures);
            }
        }
        None
    }

    /// Records one probe of `container`'s `[health.deps]` check. Failures
    /// inside the start period do not count, nor do probes the agent could
    /// not run. Returns the change of verdict, if any.
    pub fn record_deps(
        &mut self,
        container: &ContainerInfo,
        check: &HealthCheck,
        outcome: &health::Outcome,
        now: Instant,
        now_ms: i64,
    ) -> Option<DepsChange> {
        let in_start_period = in_start_period(container, check, now_ms);
        let h = self.state_of(&container.id, now);
        let d = h.deps.get_or_insert_with(|| DepsState {
            failures: 0,
            degraded: false,
            last_output: String::new(),
            next_probe: now,
        });
        d.next_probe = now + check.interval.as_std();
        d.last_output = outcome.output.clone();
        if outcome.unknown {
            None
        } else if outcome.healthy {
            d.failures = 0;
            std::mem::take(&mut d.degraded).then_some(DepsChange::Recovered)
        } else if in_start_period {
            None
        } else {
            d.failures += 1;
            (d.failures >= check.retries && !std::mem::replace(&mut d.degraded, true))
                .then_some(DepsChange::Degraded(d.failures))
        }
    }

    /// Records what `container` reported serving (`None`: it could not be
    /// read, and the last reading stands).
    pub fn record_version(&mut self, container: &str, version: Option<String>, now: Instant) {
        let h = self.state_of(container, now);
        h.next_version_read = now + VERSION_REREAD;
        if version.is_some() {
            h.version = version;
        }
    }

    /// Records Docker's verdict of the image's HEALTHCHECK on `container`
    /// (a `health_status` event), for a service without `[health]`. True
    /// when it just became unhealthy: the reconciler replaces it.
    pub fn record_docker_health(&mut self, container: &str, healthy: bool, now: Instant) -> bool {
        let h = self.state_of(container, now);
        h.healthy = Some(healthy);
        h.last_output = format!(
            "the image's HEALTHCHECK reports {}",
            if healthy { "healthy" } else { "unhealthy" }
        );
        !healthy && !std::mem::replace(&mut h.unhealthy, true)
    }

    /// The health monitor's view of `container`, made at `now` if new.
    fn state_of(&mut self, container: &str, now: Instant) -> &mut HealthState {
        self.health
            .entry(container.to_owned())
            .or_insert_with(|| HealthState::new(now))
    }

    /// Counts an OOM kill of `container` of `service`, unless the other
    /// source already reported the same kill. True when counted.
    pub fn record_oom(&mut self, service: &str, container: &str, source: OomSource, now: Instant) -> bool {
        self.oom_recent
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < OOM_SAME_KILL);
        match self.oom_recent.get(container) {
            Some((_, seen_by)) if *seen_by != source => {
                // The same kill, seen by the other source: counted already.
                self.oom_recent.remove(container);
                return false;
            }
            _ => {
                self.oom_recent.insert(container.to_owned(), (now, source));
            }
        }
        self.services.entry(service.to_owned()).or_default().oom_kills += 1;
        true
    }

    /// `container` of `service` exited with `code`. Its health verdict
    /// was about the run that ended: if it is started again, the health
    /// monitor probes it at once and eagerly, like a new container.
    pub fn exited(&mut self, service: &str, container: &str, code: Option<i64>) {
        self.services.entry(service.to_owned()).or_default().last_exit = code;
        self.health.remove(container);
    }

    /// Holds `service` stopped: the reconciler does not start it again until
    /// [`Runtime::release_hold`]. Returns the running container to stop.
    pub fn hold(&mut self, service: &str, why: String, now: Instant) -> Option<String> {
        let container = self.primaries.get(service).map(|c| c.id.clone())?;
        let s = self.services.entry(service.to_owned()).or_default();
        s.held = Some(why);
        s.not_before = Some(now + HOLD);
        Some(container)
    }

    /// Lets the reconciler start `service` again; true if it was held.
    pub fn release_hold(&mut self, service: &str) -> bool {
        match self.services.get_mut(service) {
            Some(s) if s.held.is_some() => {
                s.held = None;
                s.not_before = None;
                true
            }
            _ => false,
        }
    }

    /// A removed service leaves nothing behind.
    pub fn forget(&mut self, service: &str) {
        self.services.remove(service);
        self.primaries.remove(service);
    }

    /// Whether an env-file check of `service` should be scheduled: its file
    /// (fingerprint `print`, `None` when unreadable, so the check reports
    /// it) differs from what was last handled, and no check already waits.
    pub fn want_env_check(&mut self, service: &str, print: Option<u64>) -> bool {
        if print.is_some() && self.env_seen.get(service) == print.as_ref() {
            return false;
        }
        self.env_checks.insert(service.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, service: &str, revision: u64, running: bool, started: i64) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            service: Some(service.into()),
            revision: Some(revision),
            running,
            started_at_ms: Some(started),
            ..Default::default()
        }
    }

    fn check(text: &str) -> HealthCheck {
        let spec = berth_core::spec::parse(&format!(
            "name = \"web\"\nimage = \"app:v1\"\nports = [\"80\"]\n[health]\nhttp = \"/\"\n{text}"
        ))
        .expect("spec");
        spec.health.expect("health").ready
    }

    fn outcome(healthy: bool) -> health::Outcome {
        health::Outcome {
            healthy,
            unknown: false,
            output: if healthy { "ok" } else { "404" }.into(),
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn crashes_back_off_until_a_container_stays_up() {
        let now = Instant::now();
        let mut rt = Runtime::default();
        rt.count_restart("web", true, now);
        rt.count_restart("web", true, now);
        assert_eq!(rt.services["web"].failures, 2);
        assert_eq!(rt.services["web"].not_before, Some(now + Duration::from_secs(2)));
        rt.count_restart("web", false, now);
        assert_eq!(rt.services["web"].restarts, 3);
        assert_eq!(
            rt.services["web"].failures, 2,
            "recreating a removed container is not a crash"
        );

        let record: ServiceRecord = serde_json::from_value(serde_json::json!({
            "active": 1, "revisions": [], "next_revision": 2
        }))
        .expect("record");
        let records = BTreeMap::from([("web".to_owned(), record)]);
        let briefly = [container("a", "web", 1, true, 95_000)];
        rt.observe(&records, &briefly, 100_000);
        assert_eq!(rt.services["web"].failures, 2, "up for 5s only");
        assert_eq!(rt.primaries["web"].id, "a");
        let long = [container("a", "web", 1, true, 80_000)];
        rt.observe(&records, &long, 100_000);
        assert_eq!(rt.services["web"].failures, 0);
        assert_eq!(rt.services["web"].not_before, None);
    }

    #[test]
    fn probes_count_after_the_start_period_and_verdicts_of_gone_containers_drop() {
        let now = Instant::now();
        let check = check("retries = 2\nstart_period = \"10s\"\n");
        let mut rt = Runtime::default();
        let young = container("a", "web", 1, true, 95_000);
        assert_eq!(rt.record_probe(&young, &check, &outcome(false), now, 100_000), None);
        assert_eq!(rt.health["a"].failures, 0, "in its start period");
        // Past its eager first probes (see the test below).
        rt.health.get_mut("a").expect("probed").ramp = None;
        let old = container("a", "web", 1, true, 50_000);
        assert_eq!(rt.record_probe(&old, &check, &outcome(false), now, 100_000), None);
        assert_eq!(rt.record_probe(&old, &check, &outcome(false), now, 100_000), Some(2));
        assert_eq!(
            rt.record_probe(&old, &check, &outcome(false), now, 100_000),
            None,
            "said once"
        );
        assert_eq!(rt.unhealthy(), HashSet::from(["a".to_owned()]));
        rt.observe(&BTreeMap::new(), &[], 100_000);
        assert!(rt.health.is_empty());
    }

    #[test]
    fn a_restarted_container_is_probed_eagerly_and_its_early_failures_do_not_count() {
        let now = Instant::now();
        let check = check("interval = \"1s\"\nretries = 1\n");
        let mut rt = Runtime::default();
        let c = container("a", "web", 1, true, 0);
        rt.mark_healthy("a", Duration::from_secs(1), "ok".into(), None, now);
        rt.exited("web", "a", Some(137));
        assert!(
            !rt.health.contains_key("a"),
            "the verdict of the run that ended is dropped"
        );
        let mut at = now;
        let mut waits = Vec::new();
        while rt.record_probe(&c, &check, &outcome(false), at, 100_000).is_none() {
            let next = rt.health["a"].next_probe;
            waits.push(next - at);
            at = next;
            assert!(waits.len() < 20, "{waits:?}");
        }
        assert_eq!(waits[0], RAMP_FIRST, "retried at once, not after the interval");
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert!(
            at - now >= Duration::from_millis(500),
            "with retries = 1, unhealthy only after about an interval of failing, not at the first early failure: {waits:?}"
        );
        rt.exited("web", "a", Some(1));
        assert_eq!(rt.record_probe(&c, &check, &outcome(true), now, 100_000), None);
        assert_eq!(rt.health["a"].healthy, Some(true));
        assert_eq!(rt.health["a"].ramp, None);
        assert_eq!(rt.health["a"].next_probe, now + Duration::from_secs(1));
    }

    #[test]
    fn probes_the_agent_could_not_run_never_make_a_container_unhealthy() {
        let now = Instant::now();
        let check = check("retries = 2\n");
        let mut rt = Runtime::default();
        let c = container("a", "web", 1, true, 0);
        rt.record_probe(&c, &check, &outcome(true), now, 100_000);
        let emfile = health::Outcome {
            healthy: false,
            unknown: true,
            output: "Too many open files (os error 24)".into(),
        };
        for _ in 0..10 {
            assert_eq!(rt.record_probe(&c, &check, &emfile, now, 100_000), None);
        }
        assert_eq!(rt.health["a"].failures, 0);
        assert_eq!(rt.health["a"].healthy, Some(true), "the last real verdict stands");
        assert!(rt.unhealthy().is_empty());
    }

    #[test]
    fn a_failing_deps_check_degrades_without_replacing_and_recovers() {
        let now = Instant::now();
        let check = check("retries = 2\n");
        let mut rt = Runtime::default();
        let c = container("a", "web", 1, true, 0);
        assert_eq!(rt.record_deps(&c, &check, &outcome(false), now, 100_000), None);
        assert_eq!(
            rt.record_deps(&c, &check, &outcome(false), now, 100_000),
            Some(DepsChange::Degraded(2))
        );
        assert_eq!(
            rt.record_deps(&c, &check, &outcome(false), now, 100_000),
            None,
            "said once"
        );
        assert!(rt.unhealthy().is_empty(), "a dependency never replaces the container");
        assert_eq!(rt.health["a"].deps.as_ref().map(|d| d.degraded), Some(true));
        assert_eq!(
            rt.record_deps(&c, &check, &outcome(true), now, 100_000),
            Some(DepsChange::Recovered)
        );
        assert_eq!(rt.record_deps(&c, &check, &outcome(true), now, 100_000), None);
        rt.record_version("a", Some("v1".into()), now);
        rt.record_version("a", None, now);
        assert_eq!(
            rt.health["a"].version.as_deref(),
            Some("v1"),
            "an unreadable version keeps the last"
        );
    }

    #[test]
    fn one_kill_seen_by_docker_and_the_kernel_counts_once() {
        let now = Instant::now();
        let mut rt = Runtime::default();
        assert!(rt.record_oom("web", "c1", OomSource::Kernel, now));
        assert!(!rt.record_oom("web", "c1", OomSource::Docker, now + Duration::from_secs(1)));
        assert!(rt.record_oom("web", "c1", OomSource::Kernel, now + Duration::from_secs(2)));
        assert!(rt.record_oom("web", "c1", OomSource::Kernel, now + Duration::from_secs(3)));
        assert_eq!(rt.services["web"].oom_kills, 3);
    }

    #[test]
    fn holds_stop_restarts_until_released() {
        let now = Instant::now();
        let mut rt = Runtime::default();
        assert_eq!(rt.hold("web", "pressure".into(), now), None, "nothing running");
        rt.primaries.insert("web".into(), container("a", "web", 1, true, 0));
        assert_eq!(rt.hold("web", "pressure".into(), now).as_deref(), Some("a"));
        assert!(rt.not_before()["web"] > now + Duration::from_secs(3600));
        assert!(rt.release_hold("web"));
        assert!(!rt.release_hold("web"));
        assert!(rt.not_before().is_empty());
    }

    #[test]
    fn env_checks_are_wanted_once_per_unhandled_content() {
        let mut rt = Runtime::default();
        rt.env_seen.insert("web".into(), 7);
        assert!(!rt.want_env_check("web", Some(7)), "handled already");
        assert!(rt.want_env_check("web", Some(8)));
        assert!(!rt.want_env_check("web", Some(8)), "one waiting check is enough");
        rt.env_checks.remove("web");
        assert!(rt.want_env_check("web", None), "an unreadable file is reported");
    }
}

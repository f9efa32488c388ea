//! The pure half of alerting: which value a rule sees in a snapshot, and
//! when an alert instance fires and clears. No I/O and no clock of its own:
//! every call is given the instant it happens at, so tests drive it with
//! made-up instants.
//!
//! The rule, for `above = T` (mirrored for `below`): an instance fires once
//! the value has been over `T` at every pass for `for`; a firing instance
//! clears once the value has been at or under `T - hysteresis` at every
//! pass for `clear_for`. A value between the two levels keeps the instance
//! as it is and restarts whichever wait was running, so a value hovering
//! at the threshold neither fires nor clears. A pass without a value (the
//! service's container is not running) holds the state and restarts the
//! wait; a service that is no longer desired ends its instance (a firing
//! one clears).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{AlertMetric, AlertRule, Direction};
use crate::metrics::{AlertGauge, ContainerSample, HostSample, Snapshot};

/// What happened to an alert instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition has held for `for`.
    Fired,
    /// The clear condition has held for `clear_for`.
    Cleared,
}

/// The state of one alert instance: one rule on the host, or one rule on
/// one service.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    firing: bool,
    /// Since when the value has been on the other side (past the threshold
    /// while not firing, past the clear level while firing).
    since: Option<Instant>,
}

impl Instance {
    /// Whether the alert is firing.
    pub fn firing(&self) -> bool {
        self.firing
    }

    /// Takes one pass's value (`None`: no value this pass) seen at `now`.
    pub fn observe(&mut self, rule: &AlertRule, value: Option<f64>, now: Instant) -> Option<Transition> {
        let Some(v) = value else {
            self.since = None;
            return None;
        };
        let crossing = if self.firing {
            match rule.direction {
                Direction::Above => v <= rule.clear_level(),
                Direction::Below => v >= rule.clear_level(),
            }
        } else {
            match rule.direction {
                Direction::Above => v > rule.threshold,
                Direction::Below => v < rule.threshold,
            }
        };
        if !crossing {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let wait = if self.firing { rule.clear_for } else { rule.for_ };
        if now.saturating_duration_since(since) < wait.as_std() {
            return None;
        }
        self.since = None;
        self.firing = !self.firing;
        Some(if self.firing {
            Transition::Fired
        } else {
            Transition::Cleared
        })
    }
}

/// A counter's readings over a window, for its increase.
#[derive(Debug, Clone, Default)]
pub struct CounterWindow {
    readings: VecDeque<(Instant, u64)>,
}

impl CounterWindow {
    /// Records `value` at `now` and returns how much the counter grew over
    /// the last `window` (0 on first sight; a counter that went back, as
    /// when a service was removed and added again, starts over).
    pub fn increase(&mut self, value: u64, now: Instant, window: Duration) -> u64 {
        if self.readings.back().is_some_and(|&(_, last)| value < last) {
            self.readings.clear();
        }
        self.readings.push_back((now, value));
        while self
            .readings
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > window)
        {
            self.readings.pop_front();
        }
        let oldest = self.readings.front().map_or(value, |&(_, v)| v);
        value.saturating_sub(oldest)
    }
}

fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole * 100.0)
}

/// A host metric's value in a pass.
pub fn host_value(rule: &AlertRule, host: &HostSample) -> Option<f64> {
    match rule.metric {
        AlertMetric::HostCpuPercent => Some(host.cpu_percent),
        AlertMetric::HostMemoryPercent => percent(
            host.memory_total_bytes.saturating_sub(host.memory_available_bytes) as f64,
            host.memory_total_bytes as f64,
        ),
        AlertMetric::HostLoad1 => Some(host.load[0]),
        AlertMetric::HostDiskPercent => host
            .disks
            .iter()
            .filter(|d| rule.mount.as_deref().is_none_or(|m| m == d.mount))
            .filter_map(|d| {
                percent(
                    d.total_bytes.saturating_sub(d.available_bytes) as f64,
                    d.total_bytes as f64,
                )
            })
            .reduce(f64::max),
        _ => None,
    }
}

/// A service gauge's value in a pass: `None` when its container is not
/// running (nothing was read). Counters are handled by [`CounterWindow`].
pub fn service_level(rule: &AlertRule, c: &ContainerSample, host: &HostSample) -> Option<f64> {
    if c.source.is_empty() {
        return None;
    }
    match rule.metric {
        AlertMetric::ServiceCpuPercent => {
            // cpu_percent is in percent of one CPU; the limit is in CPUs.
            let of = if c.cpu_limit > 0.0 {
                c.cpu_limit
            } else {
                f64::from(host.cpus)
            };
            percent(c.cpu_percent / 100.0, of)
        }
        AlertMetric::ServiceMemoryPercent => {
            let of = if c.memory_limit_bytes > 0 {
                c.memory_limit_bytes
            } else {
                host.memory_total_bytes
            };
            percent(c.memory_bytes as f64, of as f64)
        }
        _ => None,
    }
}

/// One fire or clear, to be told to the world.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Index of the rule in the config.
    pub rule: usize,
    /// The service, or "" for a host rule.
    pub service: String,
    /// The value that made the change; `None` when the service went away.
    pub value: Option<f64>,
    /// Fired or cleared.
    pub transition: Transition,
}

#[derive(Debug, Default)]
struct Tracked {
    instance: Instance,
    counter: CounterWindow,
}

/// Every rule's instances, fed one snapshot at a time.
#[derive(Debug)]
pub struct Evaluator {
    rules: Vec<AlertRule>,
    /// By (rule index, service or "").
    tracked: BTreeMap<(usize, String), Tracked>,
}

impl Evaluator {
    /// An evaluator with nothing seen yet.
    pub fn new(rules: Vec<AlertRule>) -> Self {
        Evaluator {
            rules,
            tracked: BTreeMap::new(),
        }
    }

    /// The rules, as given.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Takes one pass seen at `now`; returns what fired or cleared.
    pub fn observe(&mut self, s: &Snapshot, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen: Vec<(usize, String)> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let mut values: Vec<(String, Option<f64>)> = Vec::new();
            if rule.metric.per_service() {
                for c in &s.containers {
                    if rule.service.as_deref().is_some_and(|want| want != c.service) {
                        continue;
                    }
                    let counter = match rule.metric {
                        AlertMetric::ServiceRestarts => Some(u64::from(c.restarts)),
                        AlertMetric::ServiceOomKills => Some(c.oom_kills),
                        _ => None,
                    };
                    let tracked = self.tracked.entry((i, c.service.clone())).or_default();
                    let value = match counter {
                        Some(n) => Some(tracked.counter.increase(n, now, rule.window.as_std()) as f64),
                        None => service_level(rule, c, &s.host),
                    };
                    values.push((c.service.clone(), value));
                }
            } else {
                values.push((String::new(), host_value(rule, &s.host)));
            }
            for (service, value) in values {
                let tracked = self.tracked.entry((i, service.clone())).or_default();
                if let Some(transition) = tracked.instance.observe(rule, value, now) {
                    changes.push(Change {
                        rule: i,
                        service: service.clone(),
                        value,
                        transition,
                    });
                }
                seen.push((i, service));
            }
        }
        // Services no longer desired end their instances.
        let gone: Vec<(usize, String)> = self.tracked.keys().filter(|k| !seen.contains(k)).cloned().collect();
        for key in gone {
            if let Some(t) = self.tracked.remove(&key)
                && t.instance.firing()
            {
                changes.push(Change {
                    rule: key.0,
                    service: key.1,
                    value: None,
                    transition: Transition::Cleared,
                });
            }
        }
        changes
    }

    /// One gauge per live instance, ordered by rule then service.
    pub fn gauges(&self) -> Vec<AlertGauge> {
        self.tracked
            .iter()
            .map(|((i, service), t)| AlertGauge {
                alert: self.rules[*i].name.clone(),
                service: service.clone(),
                active: t.instance.firing(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawAlertRule;

    fn rule(toml_text: &str) -> AlertRule {
        let raw: RawAlertRule = toml::from_str(&format!("name = \"r\"\n{toml_text}")).expect("raw rule");
        AlertRule::try_from(raw).expect("rule")
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn fires_only_after_holding_for_its_duration() {
        let r = rule("metric = \"host.cpu_percent\"\nabove = 50\nfor = \"30s\"\nhysteresis = 0");
        let t0 = Instant::now();
        let mut i = Instance::default();
        assert_eq!(i.observe(&r, Some(60.0), t0), None);
        assert_eq!(i.observe(&r, Some(70.0), secs(t0, 20)), None, "not yet 30s");
        // A dip restarts the wait.
        assert_eq!(i.observe(&r, Some(40.0), secs(t0, 25)), None);
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 30)), None);
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 50)), None);
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 60)), Some(Transition::Fired));
        assert!(i.firing());
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 70)), None, "fires once");
    }

    #[test]
    fn for_zero_fires_on_the_first_pass_and_exactly_at_the_threshold_does_not() {
        let r = rule("metric = \"host.load1\"\nabove = 2");
        let t0 = Instant::now();
        let mut i = Instance::default();
        assert_eq!(i.observe(&r, Some(2.0), t0), None, "at the threshold is not above it");
        assert_eq!(i.observe(&r, Some(2.5), t0), Some(Transition::Fired));
    }

    #[test]
    fn hysteresis_stops_a_hovering_value_from_flapping() {
        // Default hysteresis: 10% of 50 = 5, so it clears at 45 or less.
        let r = rule("metric = \"host.cpu_percent\"\nabove = 50");
        assert_eq!(r.clear_level(), 45.0);
        let t0 = Instant::now();
        let mut i = Instance::default();
        let mut changes = Vec::new();
        for (n, v) in [51.0, 49.0, 50.5, 48.0, 52.0, 46.0, 50.1, 47.0].into_iter().enumerate() {
            changes.extend(i.observe(&r, Some(v), secs(t0, n as u64)));
        }
        assert_eq!(
            changes,
            [Transition::Fired],
            "hovering around 50 fires once, never clears"
        );
        assert_eq!(i.observe(&r, Some(45.0), secs(t0, 20)), Some(Transition::Cleared));
        assert_eq!(
            i.observe(&r, Some(49.0), secs(t0, 21)),
            None,
            "below 50 does not fire again"
        );
    }

    #[test]
    fn clear_for_defaults_to_for_and_a_rise_restarts_it() {
        let r = rule("metric = \"host.memory_percent\"\nabove = 80\nfor = \"10s\"\nhysteresis = 10");
        let t0 = Instant::now();
        let mut i = Instance::default();
        i.observe(&r, Some(90.0), t0);
        assert_eq!(i.observe(&r, Some(90.0), secs(t0, 10)), Some(Transition::Fired));
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 11)), None);
        assert_eq!(
            i.observe(&r, Some(75.0), secs(t0, 15)),
            None,
            "between the levels: wait restarts"
        );
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 16)), None);
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 25)), None, "9s of 10s");
        assert_eq!(i.observe(&r, Some(60.0), secs(t0, 26)), Some(Transition::Cleared));
    }

    #[test]
    fn below_mirrors_above_and_a_missing_value_holds_the_state() {
        let r = rule("metric = \"host.cpu_percent\"\nbelow = 10\nfor = \"5s\"\nclear_for = \"0s\"\nhysteresis = 5");
        let t0 = Instant::now();
        let mut i = Instance::default();
        i.observe(&r, Some(5.0), t0);
        assert_eq!(i.observe(&r, None, secs(t0, 3)), None);
        assert_eq!(
            i.observe(&r, Some(5.0), secs(t0, 6)),
            None,
            "no value restarted the wait"
        );
        assert_eq!(i.observe(&r, Some(5.0), secs(t0, 11)), Some(Transition::Fired));
        assert_eq!(i.observe(&r, None, secs(t0, 12)), None);
        assert!(i.firing(), "no value does not clear");
        assert_eq!(i.observe(&r, Some(14.0), secs(t0, 13)), None, "under 15 stays firing");
        assert_eq!(i.observe(&r, Some(15.0), secs(t0, 14)), Some(Transition::Cleared));
    }

    #[test]
    fn counters_count_over_their_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut c = CounterWindow::default();
        assert_eq!(c.increase(3, t0, w), 0, "first sight");
        assert_eq!(c.increase(4, secs(t0, 10), w), 1);
        assert_eq!(c.increase(6, secs(t0, 50), w), 3);
        assert_eq!(c.increase(6, secs(t0, 65), w), 2, "the reading at 0s left the window");
        assert_eq!(c.increase(6, secs(t0, 200), w), 0);
        assert_eq!(
            c.increase(1, secs(t0, 201), w),
            0,
            "a counter that went back starts over"
        );
    }

    fn snapshot(services: &[(&str, f64)]) -> Snapshot {
        Snapshot {
            seq: 1,
            host: HostSample {
                cpus: 4,
                memory_total_bytes: 1000,
                memory_available_bytes: 250,
                disks: vec![
                    crate::metrics::DiskSample {
                        mount: "/".into(),
                        total_bytes: 100,
                        available_bytes: 60,
                    },
                    crate::metrics::DiskSample {
                        mount: "/data".into(),
                        total_bytes: 100,
                        available_bytes: 10,
                    },
                ],
                ..Default::default()
            },
            containers: services
                .iter()
                .map(|(name, cpu)| ContainerSample {
                    service: (*name).into(),
                    container_id: format!("{name}-id"),
                    cpu_percent: *cpu,
                    cpu_limit: 0.5,
                    source: "cgroup-v1",
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn host_values_come_from_the_snapshot() {
        let s = snapshot(&[]);
        let mem = rule("metric = \"host.memory_percent\"\nabove = 1");
        assert_eq!(host_value(&mem, &s.host), Some(75.0));
        let fullest = rule("metric = \"host.disk_percent\"\nabove = 1");
        assert_eq!(host_value(&fullest, &s.host), Some(90.0));
        let root = rule("metric = \"host.disk_percent\"\nabove = 1\nmount = \"/\"");
        assert_eq!(host_value(&root, &s.host), Some(40.0));
    }

    #[test]
    fn one_instance_per_service_and_a_removed_service_clears() {
        let rules = vec![rule("metric = \"service.cpu_percent\"\nabove = 50\nhysteresis = 0")];
        let mut e = Evaluator::new(rules);
        let t0 = Instant::now();
        // 40% of one CPU with a 0.5 CPU limit is 80% of the limit.
        let changes = e.observe(&snapshot(&[("web", 40.0), ("db", 10.0)]), t0);
        assert_eq!(
            changes,
            [Change {
                rule: 0,
                service: "web".into(),
                value: Some(80.0),
                transition: Transition::Fired
            }]
        );
        let gauges = e.gauges();
        assert_eq!(gauges.len(), 2, "{gauges:?}");
        assert!(gauges.iter().any(|g| g.service == "web" && g.active));
        assert!(gauges.iter().any(|g| g.service == "db" && !g.active));
        let changes = e.observe(&snapshot(&[("db", 10.0)]), secs(t0, 1));
        assert_eq!(
            changes,
            [Change {
                rule: 0,
                service: "web".into(),
                value: None,
                transition: Transition::Cleared
            }]
        );
        assert_eq!(e.gauges().len(), 1);
    }

    #[test]
    fn a_service_filter_watches_only_that_service() {
        let rules = vec![rule("metric = \"service.cpu_percent\"\nabove = 50\nservice = \"db\"")];
        let mut e = Evaluator::new(rules);
        let changes = e.observe(&snapshot(&[("web", 40.0), ("db", 10.0)]), Instant::now());
        assert!(changes.is_empty(), "{changes:?}");
        let gauges = e.gauges();
        assert_eq!(gauges.len(), 1);
        assert_eq!(gauges[0].service, "db");
    }
}

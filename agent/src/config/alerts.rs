//! `[[alerts]]`: threshold rules on the metrics the collector samples.
//!
//! Each rule is read through [`RawAlertRule`] (the keys as written, unknown
//! ones refused) and checked as it is converted into an [`AlertRule`], so a
//! bad rule fails with the line of its table: an unknown metric, both or
//! neither of `above`/`below`, a bad duration, a key that does not apply to
//! the metric. What needs all rules at once (unique names) is checked in
//! `Config::validate`. The rules are evaluated by `crate::alerts`.

use serde::Deserialize;

use berth_core::units::Duration;

/// What a rule watches. Host metrics have one value per host; service
/// metrics one per service (or only the service named by `service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum AlertMetric {
    /// Busy share of all the host's CPUs, 0-100.
    #[serde(rename = "host.cpu_percent")]
    HostCpuPercent,
    /// Memory in use (total minus available) as a share of the total, 0-100.
    #[serde(rename = "host.memory_percent")]
    HostMemoryPercent,
    /// The 1-minute load average.
    #[serde(rename = "host.load1")]
    HostLoad1,
    /// Space used on a file system, 0-100: the one at `mount`, or the
    /// fullest one.
    #[serde(rename = "host.disk_percent")]
    HostDiskPercent,
    /// A service's CPU use as a share of its CPU limit, 0-100 (of all the
    /// host's CPUs when it has no limit).
    #[serde(rename = "service.cpu_percent")]
    ServiceCpuPercent,
    /// A service's memory use as a share of its memory limit, 0-100 (of the
    /// host's memory when it has no limit).
    #[serde(rename = "service.memory_percent")]
    ServiceMemoryPercent,
    /// Restarts of a service by the agent within the last `window`.
    #[serde(rename = "service.restarts")]
    ServiceRestarts,
    /// OOM kills of a service within the last `window`.
    #[serde(rename = "service.oom_kills")]
    ServiceOomKills,
}

impl AlertMetric {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMetric::HostCpuPercent => "host.cpu_percent",
            AlertMetric::HostMemoryPercent => "host.memory_percent",
            AlertMetric::HostLoad1 => "host.load1",
            AlertMetric::HostDiskPercent => "host.disk_percent",
            AlertMetric::ServiceCpuPercent => "service.cpu_percent",
            AlertMetric::ServiceMemoryPercent => "service.memory_percent",
            AlertMetric::ServiceRestarts => "service.restarts",
            AlertMetric::ServiceOomKills => "service.oom_kills",
        }
    }

    /// One value per service rather than one per host.
    pub fn per_service(self) -> bool {
        matches!(
            self,
            AlertMetric::ServiceCpuPercent
                | AlertMetric::ServiceMemoryPercent
                | AlertMetric::ServiceRestarts
                | AlertMetric::ServiceOomKills
        )
    }

    /// A count of happenings, watched as its increase over `window`.
    pub fn is_counter(self) -> bool {
        matches!(self, AlertMetric::ServiceRestarts | AlertMetric::ServiceOomKills)
    }
}

/// Which side of the threshold is the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The value is over the threshold.
    Above,
    /// The value is under the threshold.
    Below,
}

impl Direction {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }
}

/// A checked `[[alerts]]` rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawAlertRule")]
pub struct AlertRule {
    /// Unique among the rules; names the gauge, event and hook input.
    pub name: String,
    /// What is watched.
    pub metric: AlertMetric,
    /// Only this service (service metrics only); `None` = every service.
    pub service: Option<String>,
    /// Only this mount point (`host.disk_percent` only); `None` = the fullest.
    pub mount: Option<String>,
    /// Above or below.
    pub direction: Direction,
    /// The level.
    pub threshold: f64,
    /// How far back past the threshold the value must go to clear.
    pub hysteresis: f64,
    /// How long the condition holds before the alert fires.
    pub for_: Duration,
    /// How long the clear condition holds before the alert clears.
    pub clear_for: Duration,
    /// Counter metrics: the span their increase is counted over.
    pub window: Duration,
    /// Program and arguments run on fire and on clear; empty = none.
    pub hook: Vec<String>,
    /// How long the hook may run before it is killed.
    pub hook_timeout: Duration,
}

impl AlertRule {
    /// The level at which a firing alert clears: the threshold moved back
    /// by the hysteresis.
    pub fn clear_level(&self) -> f64 {
        match self.direction {
            Direction::Above => self.threshold - self.hysteresis,
            Direction::Below => self.threshold + self.hysteresis,
        }
    }
}

/// An `[[alerts]]` table as written. Every key is user documentation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertRule {
    /// A name for the rule: 1-63 letters, digits, '-', '_' or '.'.
    pub name: String,
    /// `host.cpu_percent`, `host.memory_percent`, `host.load1`,
    /// `host.disk_percent`, `service.cpu_percent`, `service.memory_percent`,
    /// `service.restarts` or `service.oom_kills`.
    pub metric: AlertMetric,
    /// Fire when the value is over this (give `above` or `below`, not both).
    #[serde(default)]
    pub above: Option<f64>,
    /// Fire when the value is under this.
    #[serde(default)]
    pub below: Option<f64>,
    /// How long the condition must hold before the alert fires, e.g. "5m".
    #[serde(default, rename = "for")]
    pub for_: Option<Duration>,
    /// How long the value must stay past the clear level before the alert
    /// clears. Default: the same as `for`.
    #[serde(default)]
    pub clear_for: Option<Duration>,
    /// How far back the value must go to clear: `above = 50` with
    /// `hysteresis = 5` clears at 45 or less. Default: 10% of the
    /// threshold; 0 clears as soon as the value is back at the threshold.
    #[serde(default)]
    pub hysteresis: Option<f64>,
    /// Service metrics: only this service. Default: one alert per service.
    #[serde(default)]
    pub service: Option<String>,
    /// `host.disk_percent`: only this mount point. Default: the fullest.
    #[serde(default)]
    pub mount: Option<String>,
    /// `service.restarts` and `service.oom_kills`: count over this span.
    /// Default "5m".
    #[serde(default)]
    pub window: Option<Duration>,
    /// Program and arguments run when the alert fires and when it clears,
    /// with the event as JSON on stdin, e.g. `["/usr/local/bin/scale", "up"]`.
    #[serde(default)]
    pub hook: Vec<String>,
    /// How long the hook may run before it is killed. Default "30s".
    #[serde(default)]
    pub hook_timeout: Option<Duration>,
}

/// Default `window` of counter metrics.
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Default `hook_timeout`.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default hysteresis as a share of the threshold.
const DEFAULT_HYSTERESIS_SHARE: f64 = 0.1;

/// Whether `name` can name an alert (it becomes a label value and a StatsD
/// name component).
pub fn valid_alert_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TryFrom<RawAlertRule> for AlertRule {
    type Error = String;

    fn try_from(raw: RawAlertRule) -> Result<Self, String> {
        let name = raw.name;
        if !valid_alert_name(&name) {
            return Err(format!(
                "alerts.name: {name:?}: use 1-63 letters, digits, '-', '_' or '.'"
            ));
        }
        let at = |key: &str, message: String| format!("alerts.{key} (rule {name:?}): {message}");
        let metric = raw.metric;
        let (direction, threshold) = match (raw.above, raw.below) {
            (Some(t), None) => (Direction::Above, t),
            (None, Some(t)) => (Direction::Below, t),
            (Some(_), Some(_)) => return Err(at("above", "give `above` or `below`, not both".into())),
            (None, None) => {
                return Err(at(
                    "above",
                    "give `above = N` or `below = N`: the level the alert fires at".into(),
                ));
            }
        };
        if !threshold.is_finite() {
            return Err(at(direction.as_str(), format!("{threshold} is not a number")));
        }
        let hysteresis = raw.hysteresis.unwrap_or(threshold.abs() * DEFAULT_HYSTERESIS_SHARE);
        if !(hysteresis.is_finite() && hysteresis >= 0.0) {
            return Err(at("hysteresis", format!("{hysteresis}: must be 0 or more")));
        }
        if raw.service.is_some() && !metric.per_service() {
            return Err(at(
                "service",
                format!(
                    "{} is a host metric; `service` applies to service.* metrics",
                    metric.as_str()
                ),
            ));
        }
        if raw.service.as_deref() == Some("") {
            return Err(at(
                "service",
                "must name a service; leave it out for every service".into(),
            ));
        }
        if raw.mount.is_some() && metric != AlertMetric::HostDiskPercent {
            return Err(at("mount", "applies to host.disk_percent only".into()));
        }
        if raw.window.is_some() && !metric.is_counter() {
            return Err(at(
                "window",
                "applies to service.restarts and service.oom_kills only".into(),
            ));
        }
        let window = raw.window.unwrap_or(DEFAULT_WINDOW);
        if metric.is_counter() && window.as_std() < std::time::Duration::from_secs(1) {
            return Err(at("window", format!("\"{window}\" is too short: the minimum is 1s")));
        }
        if raw.hook.first().is_some_and(String::is_empty) {
            return Err(at(
                "hook",
                "must name a program, e.g. [\"/usr/local/bin/scale\", \"up\"]".into(),
            ));
        }
        let hook_timeout = raw.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT);
        if hook_timeout.as_std() < std::time::Duration::from_secs(1) {
            return Err(at(
                "hook_timeout",
                format!("\"{hook_timeout}\" is too short: the minimum is 1s"),
            ));
        }
        let for_ = raw.for_.unwrap_or(Duration::from_secs(0));
        Ok(AlertRule {
            name,
            metric,
            service: raw.service,
            mount: raw.mount,
            direction,
            threshold,
            hysteresis,
            for_,
            clear_for: raw.clear_for.unwrap_or(for_),
            window,
            hook: raw.hook,
            hook_timeout,
        })
    }
}

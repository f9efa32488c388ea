//! `[health]`: the checks a spec may carry, as TOML has them (`CheckToml`)
//! and in their checked form ([`Health`], [`HealthCheck`], [`Probe`],
//! [`VersionCheck`]).
//!
//! `[health]` itself holds the *ready* check (it gates a deploy and the
//! switch of nginx traffic) and, unless `[health.live]` is given, the *live*
//! check too (failing it `retries` times in a row replaces the container).
//! `[health.deps]` is a dependency check (failing it marks the service
//! degraded, never restarts it) and `[health.version]` asserts what the
//! container serves.

use serde::{Deserialize, Serialize};

use super::defaults;
use crate::units::Duration;

/// `[health]`: every check of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CheckToml", into = "CheckToml")]
pub struct Health {
    /// The keys of `[health]` itself: the check that gates a deploy and
    /// nginx traffic.
    pub ready: HealthCheck,
    /// `[health.live]`: the check whose failures replace the container;
    /// unset means the ready check.
    pub live: Option<HealthCheck>,
    /// `[health.deps]`: a dependency check; failing it marks the service
    /// degraded (an event and a metric), never restarts it.
    pub deps: Option<HealthCheck>,
    /// `[health.version]`: what the container must say it serves.
    pub version: Option<VersionCheck>,
}

impl Health {
    /// The check whose failures replace the container.
    pub fn live(&self) -> &HealthCheck {
        self.live.as_ref().unwrap_or(&self.ready)
    }
}

/// One check: what it probes and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CheckToml", into = "CheckToml")]
pub struct HealthCheck {
    /// What one check does.
    pub probe: Probe,
    /// Time between checks (`interval`, default `2s`).
    pub interval: Duration,
    /// How long one check may take before it counts as failed (`timeout`,
    /// default `1s`); at most `interval`.
    pub timeout: Duration,
    /// Consecutive failed checks that make the container unhealthy
    /// (`retries`, default 3, at least 1).
    pub retries: u32,
    /// Time after start during which failed checks do not count
    /// (`start_period`, default `0s`).
    pub start_period: Duration,
    /// Consecutive passes before a new container counts as good
    /// (`success_threshold`, default 1, at least 1).
    pub success_threshold: u32,
    /// How long a new container must stay passing before a deploy counts as
    /// good (`min_healthy`, default `0s`).
    pub min_healthy: Duration,
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `http = "/path"`: an HTTP GET of `path` on a container port.
    Http {
        /// The request path; starts with `/`.
        path: String,
        /// The container port (`port`); when unset,
        /// [`ServiceSpec::port_for`](super::ServiceSpec::port_for) picks the
        /// first TCP container port.
        port: Option<u16>,
    },
    /// `tcp = PORT`: a TCP connect to this container port.
    Tcp {
        /// The container port.
        port: u16,
    },
    /// `exec = ["cmd", "arg"]`: a command run inside the container; exit
    /// status 0 is healthy.
    Exec {
        /// The program and its arguments; not empty.
        command: Vec<String>,
    },
}

/// `[health.version]`: the deploy gate reads what the container serves and
/// requires it to be the version being deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionCheck {
    /// The path to GET, such as `/__version__`; starts with `/`.
    pub path: String,
    /// The container port. Default: the first TCP container port in `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The version the container must report, exactly. Default: the tag of
    /// the image being deployed. When the body is JSON, its `version` field
    /// is compared; otherwise the whole body, trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Instead of `expect`: a regular expression the reported version must
    /// match, such as `^1\.4\.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_regex: Option<String>,
}

impl VersionCheck {
    /// The version a response body reports: a JSON object's `version`
    /// field (a string or a number), else the whole body, trimmed.
    pub fn reported(body: &str) -> String {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(body) {
            match fields.get("version") {
                Some(serde_json::Value::String(v)) => return v.trim().to_owned(),
                Some(v @ serde_json::Value::Number(_)) => return v.to_string(),
                _ => {}
            }
        }
        body.trim().to_owned()
    }

    /// What a deploy of `image` must serve, for people: `expect`, the regex
    /// as `/PATTERN/`, or the image's tag.
    pub fn expected(&self, image: &crate::image::ImageRef) -> String {
        match (&self.expect, &self.expect_regex) {
            (Some(expect), _) => expect.clone(),
            (None, Some(pattern)) => format!("/{pattern}/"),
            (None, None) => image.tag().to_owned(),
        }
    }

    /// Whether `reported` is what a deploy of `image` must serve. The error
    /// names both versions: `serving 1.4.2, expected 1.4.3`.
    pub fn assert(&self, reported: &str, image: &crate::image::ImageRef) -> Result<(), String> {
        let good = match (&self.expect, &self.expect_regex) {
            (None, Some(pattern)) => regex_lite::Regex::new(pattern)
                .map_err(|e| format!("health.version.expect_regex {pattern:?}: {e}"))?
                .is_match(reported),
            _ => reported == self.expected(image),
        };
        if good {
            Ok(())
        } else {
            let shown = if reported.is_empty() {
                "an empty version"
            } else {
                reported
            };
            Err(format!("serving {shown}, expected {}", self.expected(image)))
        }
    }
}

/// `[health]` or one of its sub-tables exactly as written in TOML;
/// [`Health`] and [`HealthCheck`] are the checked forms. The sub-table keys
/// (`live`, `deps`, `version`) are only valid on `[health]` itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckToml {
    /// HTTP check: GET this path (starting with `/`) on the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    /// TCP check: connect to this container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<u16>,
    /// Exec check: run this command in the container; exit status 0 is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    /// Container port for the http check. Default: the first TCP container
    /// port in `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// Time between checks. Default `2s`.
    #[serde(default = "defaults::health_interval")]
    interval: Duration,
    /// How long one check may take before it counts as failed; at most
    /// `interval`. Default `1s`.
    #[serde(default = "defaults::health_timeout")]
    timeout: Duration,
    /// Consecutive failed checks that make the container unhealthy; at least 1.
    /// Default 3.
    #[serde(default = "defaults::health_retries")]
    retries: u32,
    /// Time after start during which failed checks do not count. Default `0s`.
    #[serde(default = "defaults::health_start_period")]
    start_period: Duration,
    /// Consecutive passes before a new container counts as good. Default 1.
    #[serde(default = "defaults::health_success_threshold")]
    success_threshold: u32,
    /// How long a new container must keep passing before a deploy counts as
    /// good. Default `0s`.
    #[serde(default = "defaults::health_min_healthy")]
    min_healthy: Duration,
    /// `[health.live]`: the check that replaces the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live: Option<Box<CheckToml>>,
    /// `[health.deps]`: a dependency check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deps: Option<Box<CheckToml>>,
    /// `[health.version]`: the version assertion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<VersionCheck>,
}

impl TryFrom<CheckToml> for Health {
    type Error = String;

    /// Splits `[health]` into its checks. This runs inside deserialization,
    /// so a message reaches the user as toml's, pointing at the table.
    fn try_from(mut raw: CheckToml) -> Result<Self, String> {
        let live = raw.live.take().map(|t| HealthCheck::try_from(*t)).transpose();
        let deps = raw.deps.take().map(|t| HealthCheck::try_from(*t)).transpose();
        let version = raw.version.take();
        Ok(Self {
            ready: HealthCheck::try_from(raw)?,
            live: live.map_err(|e| format!("[health.live]: {e}"))?,
            deps: deps.map_err(|e| format!("[health.deps]: {e}"))?,
            version,
        })
    }
}

impl From<Health> for CheckToml {
    fn from(health: Health) -> Self {
        Self {
            live: health.live.map(|c| Box::new(c.into())),
            deps: health.deps.map(|c| Box::new(c.into())),
            version: health.version,
            ..health.ready.into()
        }
    }
}

impl TryFrom<CheckToml> for HealthCheck {
    type Error = String;

    /// Picks the one probe.
    fn try_from(raw: CheckToml) -> Result<Self, String> {
        if raw.live.is_some() || raw.deps.is_some() || raw.version.is_some() {
            return Err("live, deps and version are sub-tables of [health] only".to_owned());
        }
        let chosen: Vec<&str> = [
            raw.http.as_ref().map(|_| "http"),
            raw.tcp.map(|_| "tcp"),
            raw.exec.as_ref().map(|_| "exec"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let probe = match (raw.http, raw.tcp, raw.exec) {
            (Some(path), None, None) => Probe::Http { path, port: raw.port },
            (None, Some(port), None) if raw.port.is_none() => Probe::Tcp { port },
            (None, None, Some(command)) if raw.port.is_none() => Probe::Exec { command },
            (None, None, None) => {
                return Err("[health] needs one of http, tcp or exec".to_owned());
            }
            _ if chosen.len() > 1 => {
                return Err(format!(
                    "[health] takes only one of http, tcp or exec, found {}",
                    chosen.join(" and ")
                ));
            }
            _ => {
                return Err(format!(
                    "health.port is only used with http; drop it, {} names what to check",
                    chosen.join("")
                ));
            }
        };
        Ok(Self {
            probe,
            interval: raw.interval,
            timeout: raw.timeout,
            retries: raw.retries,
            start_period: raw.start_period,
            success_threshold: raw.success_threshold,
            min_healthy: raw.min_healthy,
        })
    }
}

impl From<HealthCheck> for CheckToml {
    fn from(check: HealthCheck) -> Self {
        let (mut http, mut tcp, mut exec, mut port) = (None, None, None, None);
        match check.probe {
            Probe::Http { path, port: p } => (http, port) = (Some(path), p),
            Probe::Tcp { port: p } => tcp = Some(p),
            Probe::Exec { command } => exec = Some(command),
        }
        Self {
            http,
            tcp,
            exec,
            port,
            interval: check.interval,
            timeout: check.timeout,
            retries: check.retries,
            start_period: check.start_period,
            success_threshold: check.success_threshold,
            min_healthy: check.min_healthy,
            live: None,
            deps: None,
            version: None,
        }
    }
}

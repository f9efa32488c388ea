//! `[health]`: the one check a spec may carry, as TOML has it
//! (`HealthToml`) and in its checked form ([`HealthCheck`], [`Probe`]).

use serde::{Deserialize, Serialize};

use super::defaults;
use crate::units::Duration;

/// `[health]`: how the agent tells that the container works.
///
/// In TOML this is one table with exactly one of `http`, `tcp` or `exec`;
/// here that choice is the [`Probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HealthToml", into = "HealthToml")]
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
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `http = "/path"`: an HTTP GET of `path` on a container port.
    Http {
        /// The request path; starts with `/`.
        path: String,
        /// The container port (`port`); when unset,
        /// [`ServiceSpec::health_port`] picks the first TCP container port.
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

/// `[health]` exactly as written in TOML; [`HealthCheck`] is the checked form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthToml {
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
}

impl TryFrom<HealthToml> for HealthCheck {
    type Error = String;

    /// Picks the one probe. This runs inside deserialization, so the message
    /// reaches the user as toml's, pointing at the `[health]` line.
    fn try_from(raw: HealthToml) -> Result<Self, String> {
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
        })
    }
}

impl From<HealthCheck> for HealthToml {
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
        }
    }
}

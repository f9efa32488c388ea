//! The service spec: what one service on a host should look like.
//!
//! This module owns the TOML format users write (`berthctl apply -f SPEC.toml`),
//! its defaults, and every check that needs nothing but the spec:
//! [`parse`] = deserialize + [`ServiceSpec::validate`]. It also owns the checks
//! that need the spec plus facts about the host ([`check_host_ports`],
//! [`check_capacity`]). All of these are pure functions, run before anything
//! on the host changes; nothing here does I/O.
//!
//! Specs are stored in the agent's state and sent back to users, so a spec
//! round-trips through TOML ([`ServiceSpec::to_toml`] then [`parse`]) and
//! through serde_json. Errors are [`SpecError`]s whose text tells the user
//! which key is wrong and why: `resources.memory "16x": expected a size like
//! 512m or 16g`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{ByteSize, Cpus, Duration, InvalidValue, deserialize_from_str};

/// Every default of the spec that is not an enum's `#[default]` variant.
///
/// serde's `default = "..."` attributes and the `Default` impls both call
/// these, so each value is written down once.
mod defaults {
    use crate::units::Duration;

    pub(super) fn stop_timeout() -> Duration {
        Duration::from_secs(10)
    }

    pub(super) fn health_interval() -> Duration {
        Duration::from_secs(2)
    }

    pub(super) fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }

    pub(super) fn health_retries() -> u32 {
        3
    }

    pub(super) fn health_start_period() -> Duration {
        Duration::from_secs(0)
    }

    pub(super) fn health_deadline() -> Duration {
        Duration::from_secs(60)
    }

    pub(super) fn drain() -> Duration {
        Duration::from_secs(5)
    }

    pub(super) fn proxy_listen() -> Vec<u16> {
        vec![80]
    }

    pub(super) fn proxy_health_paths() -> Vec<String> {
        ["/__lbheartbeat__", "/__heartbeat__", "/__version__"]
            .map(String::from)
            .to_vec()
    }

    pub(super) fn proxy_read_timeout() -> Duration {
        Duration::from_secs(60)
    }

    pub(super) fn proxy_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

/// Docker refuses memory limits under 6 MiB.
const DOCKER_MIN_MEMORY: u64 = 6 << 20;

/// Label keys with this prefix belong to the agent (`berth.managed`,
/// `berth.service`, `berth.revision`); it adopts containers by them.
const RESERVED_LABEL_PREFIX: &str = "berth.";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not TOML or does not have the spec's shape: bad syntax, an
    /// unknown or missing key, a wrong type. Holds toml's message, which shows
    /// the line and column with a caret and, for an unknown key, the valid ones.
    #[error("{0}")]
    Syntax(String),
    /// A value breaks a rule. Displays as `{key} "{value}": {message}`, or
    /// `{key}: {message}` when no single value is to blame.
    #[error("{key}{}: {message}", Quoted(.value))]
    Invalid {
        /// Dotted path of the key, such as `resources.memory`.
        key: String,
        /// The offending value as the user wrote it, if one is to blame.
        value: Option<String>,
        /// What is wrong, or what was expected.
        message: String,
    },
}

/// Displays ` "value"` for `Some`, nothing for `None`.
struct Quoted<'a>(&'a Option<String>);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, " \"{value}\""),
            None => Ok(()),
        }
    }
}

/// An error blaming `value` of `key`.
fn invalid(key: &str, value: impl fmt::Display, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.to_owned(),
        value: Some(value.to_string()),
        message: message.into(),
    }
}

/// An error about `key` as a whole (a missing or contradictory setting).
fn invalid_key(key: &str, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.to_owned(),
        value: None,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// The spec
// ---------------------------------------------------------------------------

/// One service: the container to run and everything around it.
///
/// Written in TOML; see [`parse`]. Keys not listed here are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name, unique on the host: lowercase letters, digits, `_`,
    /// `.` and `-`, starting with a letter or digit, at most 63 characters.
    /// It names the container and the default env file.
    pub name: ServiceName,
    /// The image to run, such as `registry.example.com/app:1.4.3` or
    /// `app@sha256:...`. Without a tag, `latest`.
    pub image: ImageRef,
    /// Arguments for the image's entrypoint, such as `["web"]`, so one image
    /// can run several roles. Empty (the default) runs the image's own command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's entrypoint; `[]` clears it. Unset keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The env file, as a file name in the agent's env dir (no `/` and no
    /// `..`). Default: `NAME.env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// Ports to publish: `"8000"` publishes container port 8000 on a host port
    /// Docker picks, `"8080:8000"` pins host port 8080, `"127.0.0.1:8080:8000"`
    /// also pins the host address; add `/udp` for UDP (TCP is the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// When the agent restarts the container: `"always"` (default),
    /// `"on-failure"` (only after a non-zero exit) or `"never"`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// What to do when the env file changes: `"restart"` the container so it
    /// reads the new values (default), or `"none"`.
    #[serde(default)]
    pub env_change: EnvChange,
    /// Order under host memory pressure: services with a lower priority are
    /// acted on first. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// The signal that asks the container to stop: `SIGTERM` (default),
    /// `SIGINT`, `SIGQUIT`, `SIGHUP`, `SIGUSR1`, `SIGUSR2` or `SIGKILL`; the
    /// `SIG` prefix is optional.
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// How long the container gets to exit after `stop_signal` before it is
    /// killed, in whole seconds (Docker's unit). Default `10s`.
    #[serde(default = "defaults::stop_timeout")]
    pub stop_timeout: Duration,
    /// Docker labels for the container. Keys starting with `berth.` are the
    /// agent's own and cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Resource limits; unset means no limit.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// How to tell that the container works. Without it, running counts as
    /// healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// How a new image or spec replaces the running container.
    #[serde(default)]
    pub deploy: Deploy,
    /// An nginx site in front of the service. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
}

/// `[resources]`: limits Docker enforces on the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit, like `"512m"` or `"16g"` (powers of 1024, as in
    /// `docker run --memory`); at least `6m`. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU limit, like `8` or `0.5` (as in `docker run --cpus`), at most three
    /// decimals. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
}

impl Resources {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none()
    }
}

/// When the agent restarts a container that exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status.
    #[default]
    Always,
    /// Only after a non-zero exit status.
    OnFailure,
    /// Never; an exited container stays exited.
    Never,
}

/// What to do when the service's env file changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EnvChange {
    /// Restart the container so it reads the new values (`"restart"`).
    #[default]
    #[serde(rename = "restart")]
    Restart,
    /// Leave the container alone (`"none"`); new values apply at the next
    /// deploy or restart.
    #[serde(rename = "none")]
    Ignore,
}

/// How a deploy replaces the running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Stop the old container, then start the new one. There is a gap.
    Recreate,
    /// Start the new container next to the old one, wait until it is healthy,
    /// switch nginx to it, drain, then stop the old one. Needs `[proxy]`.
    BlueGreen,
}

/// `[deploy]`: how a new image or spec goes live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// `"blue-green"` or `"recreate"`. Default: blue-green when there is a
    /// `[proxy]` section, recreate otherwise. Read it with
    /// [`ServiceSpec::strategy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// How long a new container gets to become healthy before the deploy is
    /// rolled back. Default `60s`.
    #[serde(default = "defaults::health_deadline")]
    pub health_deadline: Duration,
    /// How long the old container keeps serving requests it already has after
    /// nginx switched away from it, before it is stopped. Default `5s`.
    #[serde(default = "defaults::drain")]
    pub drain: Duration,
}

impl Default for Deploy {
    fn default() -> Self {
        Self {
            strategy: None,
            health_deadline: defaults::health_deadline(),
            drain: defaults::drain(),
        }
    }
}

/// `[proxy]`: an nginx site that forwards to the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// Host names the site answers to, such as `["api.example.com"]`; `"_"`
    /// matches any, and `"*.example.com"` a whole domain. At least one.
    pub server_names: Vec<String>,
    /// Host ports nginx listens on for this site. Default `[80]`.
    #[serde(default = "defaults::proxy_listen")]
    pub listen: Vec<u16>,
    /// The container port nginx forwards to. Default: the first TCP container
    /// port in `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_port: Option<u16>,
    /// Absolute path of the TLS certificate (PEM). Set with `tls_key`, or
    /// neither.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "serialize_path")]
    pub tls_cert: Option<PathBuf>,
    /// Absolute path of the TLS private key (PEM). Set with `tls_cert`, or
    /// neither.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "serialize_path")]
    pub tls_key: Option<PathBuf>,
    /// Health paths the site serves, such as load-balancer heartbeats.
    /// Default `["/__lbheartbeat__", "/__heartbeat__", "/__version__"]`.
    #[serde(default = "defaults::proxy_health_paths")]
    pub health_paths: Vec<String>,
    /// How long nginx waits for the service to answer. Default `60s`.
    #[serde(default = "defaults::proxy_read_timeout")]
    pub read_timeout: Duration,
    /// How long nginx waits to connect to the service. Default `5s`.
    #[serde(default = "defaults::proxy_connect_timeout")]
    pub connect_timeout: Duration,
}

/// Writes a path as a string. `validate` refuses paths that are not UTF-8 (and
/// TOML cannot hold them), so the lossy conversion never loses anything for a
/// valid spec, and serializing a spec cannot fail.
fn serialize_path<S: Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_str(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

// ---------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Service names
// ---------------------------------------------------------------------------

const NAME_EXPECTING: &str = "a service name like \"web\"";

/// A service's name: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
///
/// Valid as a Docker container name and as a file name, so it can name both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

impl ServiceName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && bytes.len() <= 63 {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue::new(
                format!(
                    "expected {NAME_EXPECTING}: lowercase letters, digits, '_', '.' and '-', \
                     starting with a letter or digit, at most 63 characters"
                ),
                s,
            ))
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, NAME_EXPECTING)
    }
}

// ---------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------

const IMAGE_EXPECTING: &str = "an image reference like registry.example.com/app:1.4.3";

/// A Docker image reference: `[host[:port]/]path[:tag][@sha256:<64 hex>]`.
///
/// Checked by the grammar of Docker's reference package: the registry host is
/// the first component when it has a `.` or `:` or is `localhost`; path
/// components are lowercase letters and digits separated by `.`, `_`, `__` or
/// dashes; a tag is up to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or
/// `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Registry and path without tag or digest:
    /// `registry.example.com/contextgraph` for
    /// `registry.example.com/contextgraph:1.4.3`.
    pub fn repository(&self) -> &str {
        split_image(&self.0).0
    }

    /// The tag; `latest` when none is written. When there is a
    /// [digest](Self::digest), Docker pulls by the digest and the tag is only
    /// a label.
    pub fn tag(&self) -> &str {
        split_image(&self.0).1.unwrap_or("latest")
    }

    /// The digest, `sha256:<64 hex>`, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        split_image(&self.0).2
    }
}

/// Splits a reference into repository, tag and digest. A `:` is a tag's only
/// after the last `/`; before it, it belongs to a registry's port.
fn split_image(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (name_tag, digest) = match s.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (s, None),
    };
    let last_part = name_tag.rfind('/').map_or(0, |i| i + 1);
    match name_tag[last_part..].rfind(':') {
        Some(colon) => {
            let colon = last_part + colon;
            (&name_tag[..colon], Some(&name_tag[colon + 1..]), digest)
        }
        None => (name_tag, None, digest),
    }
}

/// Checks a reference; the error says which part is wrong.
fn check_image(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    let (repository, tag, digest) = split_image(s);
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("a digest is sha256: and 64 lowercase hex digits");
        }
    }
    if let Some(tag) = tag {
        let first_ok = tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || tag.len() > 128 {
            return Err("a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'");
        }
    }
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters");
    }
    let mut components: Vec<&str> = repository.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        // Docker's rule for telling a registry host from a path component.
        let is_registry =
            first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase());
        if is_registry {
            if !is_registry_host(first) {
                return Err("the registry is a host name or IP address with an optional :port");
            }
            components.remove(0);
        }
    }
    if !components.iter().all(|c| is_path_component(c)) {
        return Err(
            "the repository is lowercase letters and digits, in parts separated by '/' and \
             joined within a part by '.', '_', '__' or '-'",
        );
    }
    Ok(())
}

/// `host[:port]`, where host is a DNS name, an IPv4 address or `[IPv6]`.
fn is_registry_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    port_ok && ((host.is_empty() && s.starts_with('[')) || host.split('.').all(label_ok))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &s[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for ImageRef {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match check_image(s) {
            Ok(()) => Ok(Self(s.to_owned())),
            Err(reason) => Err(InvalidValue::new(format!("expected {IMAGE_EXPECTING} ({reason})"), s)),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, IMAGE_EXPECTING)
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

const PORT_EXPECTING: &str = "a port mapping like 8000, 8080:8000 or 127.0.0.1:8080:8000/udp";

/// A published port, written `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`.
///
/// `8000`, `8080:8000`, `127.0.0.1:8080:8000`, `127.0.0.1::8000` (address
/// pinned, port picked by Docker), `[::1]:8080:8000`, `53/udp`. Displays and
/// serializes in that form, leaving out `/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The host address to bind; `None` binds all of them.
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` lets Docker pick a free one.
    pub host_port: Option<u16>,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`, as Docker writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl PortMapping {
    /// True when both pin the same host port and protocol on addresses that
    /// overlap (no address or an unspecified one overlaps every address).
    pub fn collides_with(&self, other: &PortMapping) -> bool {
        let any = |ip: Option<IpAddr>| ip.is_none_or(|ip| ip.is_unspecified());
        self.host_port.is_some()
            && self.host_port == other.host_port
            && self.protocol == other.protocol
            && (any(self.host_ip) || any(other.host_ip) || self.host_ip == other.host_ip)
    }
}

fn parse_port_mapping(s: &str) -> Option<PortMapping> {
    let (address, protocol) = match s.rsplit_once('/') {
        Some((address, protocol)) => match protocol.to_ascii_lowercase().as_str() {
            "tcp" => (address, Protocol::Tcp),
            "udp" => (address, Protocol::Udp),
            _ => return None,
        },
        None => (s, Protocol::Tcp),
    };
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok().filter(|&p| p != 0)
    };
    let (host, container) = match address.rsplit_once(':') {
        Some((host, container)) => (Some(host), container),
        None => (None, address),
    };
    let container_port = port(container)?;
    let (host_ip, host_port) = match host {
        None => (None, None),
        Some(host) => {
            // The last ':' separates the host port; an IPv6 address before it
            // is in brackets, so its own colons do not confuse this.
            let (ip, host_port) = match host.rsplit_once(':') {
                Some((ip, host_port)) => (Some(parse_host_ip(ip)?), host_port),
                None => (None, host),
            };
            let host_port = match host_port {
                // "127.0.0.1::8000" pins the address only; ":8000" is a typo.
                "" if ip.is_some() => None,
                _ => Some(port(host_port)?),
            };
            (ip, host_port)
        }
    };
    Some(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

/// An IPv4 address, or an IPv6 one in brackets.
fn parse_host_ip(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => s.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

impl FromStr for PortMapping {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        parse_port_mapping(s).ok_or_else(|| InvalidValue::new(format!("expected {PORT_EXPECTING}"), s))
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        match self.host_port {
            Some(port) => write!(f, "{port}:")?,
            None if self.host_ip.is_some() => f.write_str(":")?,
            None => {}
        }
        write!(f, "{}", self.container_port)?;
        match self.protocol {
            Protocol::Tcp => Ok(()),
            Protocol::Udp => f.write_str("/udp"),
        }
    }
}

impl Serialize for PortMapping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, PORT_EXPECTING)
    }
}

// ---------------------------------------------------------------------------
// Stop signal
// ---------------------------------------------------------------------------

const SIGNAL_EXPECTING: &str = "a signal name like SIGTERM or TERM";

/// The signal that asks a container to stop.
///
/// Written `"SIGTERM"` or `"TERM"`, in any case; always stored and shown with
/// the `SIG` prefix, the form Docker's `StopSignal` takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StopSignal {
    /// `SIGTERM`, the default.
    #[default]
    Term,
    /// `SIGINT`.
    Int,
    /// `SIGQUIT`.
    Quit,
    /// `SIGHUP`.
    Hup,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGKILL`.
    Kill,
}

impl StopSignal {
    const ALL: [StopSignal; 7] = [
        Self::Term,
        Self::Int,
        Self::Quit,
        Self::Hup,
        Self::Usr1,
        Self::Usr2,
        Self::Kill,
    ];

    /// The name with its `SIG` prefix, such as `"SIGTERM"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
            Self::Quit => "SIGQUIT",
            Self::Hup => "SIGHUP",
            Self::Usr1 => "SIGUSR1",
            Self::Usr2 => "SIGUSR2",
            Self::Kill => "SIGKILL",
        }
    }
}

impl FromStr for StopSignal {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL
            .into_iter()
            .find(|signal| signal.as_str().strip_prefix("SIG") == Some(bare))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                InvalidValue::new(format!("expected {SIGNAL_EXPECTING} (one of {})", names.join(", ")), s)
            })
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StopSignal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, SIGNAL_EXPECTING)
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses and validates a spec written in TOML.
pub fn parse(text: &str) -> Result<ServiceSpec, SpecError> {
    let spec: ServiceSpec = toml::from_str(text).map_err(|e| from_toml_error(text, &e))?;
    spec.validate()?;
    Ok(spec)
}

/// Turns a toml error into a [`SpecError`].
///
/// A bad value in a newtype (`memory = "16x"`) fails inside serde, which knows
/// nothing of keys: toml only gets the newtype's message, `expected a size like
/// 512m or 16g, got "16x"`, and the span of the value. Rather than deserialize
/// every such field as a raw string and convert it again with its key name
/// (a second copy of every struct), we take the span toml reports, parse the
/// document again into toml's spanned tree (only on this error path), and
/// look up which key holds the value at that span. That yields
/// `resources.memory "16x": expected a size like 512m or 16g`, the same form
/// as the errors of [`ServiceSpec::validate`].
///
/// Everything else (bad syntax, unknown or missing keys, wrong types) keeps
/// toml's own message: it shows the line with a caret, and for an unknown key
/// lists the valid ones.
fn from_toml_error(text: &str, error: &toml::de::Error) -> SpecError {
    let value_error = InvalidValue::from_message(error.message());
    let key = error.span().and_then(|span| key_at(text, &span));
    match (value_error, key) {
        (Some(value_error), Some(key)) => SpecError::Invalid {
            key,
            value: Some(value_error.value().to_owned()),
            message: value_error.expected().to_owned(),
        },
        _ => SpecError::Syntax(error.to_string().trim_end().to_owned()),
    }
}

/// The dotted key path of the scalar value whose span contains `span`.
/// Array elements answer with the array's key (`ports`).
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(document.get_ref(), span, &mut path).then(|| path.join("."))
}

fn find_in_table<'a>(table: &'a toml::de::DeTable<'_>, span: &Range<usize>, path: &mut Vec<&'a str>) -> bool {
    for (key, value) in table {
        path.push(key.get_ref().as_ref());
        if find_in_value(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value<'a>(
    value: &'a toml::Spanned<toml::de::DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<&'a str>,
) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => find_in_table(table, span, path),
        toml::de::DeValue::Array(items) => items.iter().any(|item| find_in_value(item, span, path)),
        _ => {
            let found = value.span();
            found.start <= span.start && span.end <= found.end
        }
    }
}

// ---------------------------------------------------------------------------
// Validation and accessors
// ---------------------------------------------------------------------------

impl ServiceSpec {
    /// Checks the rules that involve more than one value, or that a newtype
    /// cannot hold by itself. [`parse`] calls this; call it again after
    /// changing a spec in code. Returns the first problem found.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_env_file()?;
        self.validate_ports()?;
        self.validate_resources()?;
        self.validate_labels()?;
        if !self.stop_timeout.as_millis().is_multiple_of(1000) {
            return Err(invalid(
                "stop_timeout",
                self.stop_timeout,
                "Docker counts stop timeouts in whole seconds",
            ));
        }
        if let Some(health) = &self.health {
            self.validate_health(health)?;
        }
        self.validate_deploy()?;
        if let Some(proxy) = &self.proxy {
            self.validate_proxy(proxy)?;
        }
        Ok(())
    }

    /// How deploys replace the container: `deploy.strategy`, or by default
    /// blue-green when there is a `[proxy]` and recreate otherwise.
    pub fn strategy(&self) -> Strategy {
        match (self.deploy.strategy, &self.proxy) {
            (Some(strategy), _) => strategy,
            (None, Some(_)) => Strategy::BlueGreen,
            (None, None) => Strategy::Recreate,
        }
    }

    /// The container port the health check connects to: `health.port` or the
    /// first TCP container port for http, the `tcp` port for tcp, and `None`
    /// for exec or when there is no check. Never `None` for http or tcp on a
    /// validated spec.
    pub fn health_port(&self) -> Option<u16> {
        match &self.health.as_ref()?.probe {
            Probe::Http { port, .. } => port.or_else(|| self.first_container_port()),
            Probe::Tcp { port } => Some(*port),
            Probe::Exec { .. } => None,
        }
    }

    /// The container port nginx forwards to: `proxy.upstream_port` or the
    /// first TCP container port; `None` without `[proxy]`. Never `None` with
    /// a proxy on a validated spec.
    pub fn upstream_port(&self) -> Option<u16> {
        let proxy = self.proxy.as_ref()?;
        proxy.upstream_port.or_else(|| self.first_container_port())
    }

    /// The env file's name in the agent's env dir: `env_file`, or `NAME.env`.
    pub fn env_file_name(&self) -> String {
        match &self.env_file {
            Some(name) => name.clone(),
            None => format!("{}.env", self.name),
        }
    }

    /// The spec as TOML that [`parse`] reads back to an equal spec.
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, list or table of those (paths go
        // through `serialize_path`), so toml's serializer has nothing to
        // refuse.
        toml::to_string(self).expect("a ServiceSpec always serializes to TOML")
    }

    /// The first TCP container port in `ports`: the default for health checks
    /// and for nginx, which both speak TCP.
    fn first_container_port(&self) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.container_port)
    }

    fn validate_env_file(&self) -> Result<(), SpecError> {
        let Some(name) = &self.env_file else {
            return Ok(());
        };
        // The agent joins this to its env dir; anything that could step out
        // of it, or name the dir itself, is refused.
        if name.is_empty() || name == "." || name.contains(['/', '\\', '\0']) || name.contains("..") {
            return Err(invalid(
                "env_file",
                name,
                "must be a file name in the agent's env dir, without '/' or '..'",
            ));
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), SpecError> {
        for (i, mapping) in self.ports.iter().enumerate() {
            if mapping.container_port == 0 || mapping.host_port == Some(0) {
                return Err(invalid("ports", mapping, "port 0 is not a port"));
            }
            let Some(host_port) = mapping.host_port else {
                continue;
            };
            if let Some(earlier) = self.ports[..i].iter().find(|e| e.collides_with(mapping)) {
                return Err(invalid(
                    "ports",
                    mapping,
                    format!("host port {host_port} is already used by \"{earlier}\""),
                ));
            }
            if self.strategy() == Strategy::BlueGreen {
                let unpinned = PortMapping {
                    host_ip: None,
                    host_port: None,
                    ..*mapping
                };
                return Err(invalid(
                    "ports",
                    mapping,
                    format!(
                        "a blue-green deploy runs the old and new container side by side, \
                         so they cannot share a fixed host port; write \"{unpinned}\" or use \
                         deploy.strategy = \"recreate\""
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), SpecError> {
        if let Some(memory) = self.resources.memory
            && memory.bytes() < DOCKER_MIN_MEMORY
        {
            return Err(invalid("resources.memory", memory, "Docker needs at least 6m"));
        }
        Ok(())
    }

    fn validate_labels(&self) -> Result<(), SpecError> {
        for key in self.labels.keys() {
            if key.is_empty() {
                return Err(invalid("labels", key, "a label key cannot be empty"));
            }
            if key.to_ascii_lowercase().starts_with(RESERVED_LABEL_PREFIX) {
                return Err(invalid(
                    "labels",
                    key,
                    "keys starting with \"berth.\" are reserved for the agent",
                ));
            }
        }
        Ok(())
    }

    fn validate_health(&self, health: &HealthCheck) -> Result<(), SpecError> {
        match &health.probe {
            Probe::Http { path, port } => {
                if !path.starts_with('/') {
                    return Err(invalid("health.http", path, "must start with /"));
                }
                if *port == Some(0) {
                    return Err(invalid("health.port", 0, "port 0 is not a port"));
                }
                if self.health_port().is_none() {
                    return Err(invalid_key(
                        "health.port",
                        "an http check needs a port: set health.port, or list the container \
                         port in ports",
                    ));
                }
            }
            Probe::Tcp { port: 0 } => {
                return Err(invalid("health.tcp", 0, "port 0 is not a port"));
            }
            Probe::Tcp { .. } => {}
            Probe::Exec { command } => {
                if command.first().is_none_or(String::is_empty) {
                    return Err(invalid_key(
                        "health.exec",
                        "must name a program, like [\"cmd\", \"arg\"]",
                    ));
                }
            }
        }
        if health.interval.is_zero() {
            return Err(invalid("health.interval", health.interval, "must be longer than 0s"));
        }
        if health.timeout.is_zero() {
            return Err(invalid("health.timeout", health.timeout, "must be longer than 0s"));
        }
        if health.timeout > health.interval {
            return Err(invalid(
                "health.timeout",
                health.timeout,
                format!("must not be longer than health.interval ({})", health.interval),
            ));
        }
        if health.retries == 0 {
            return Err(invalid("health.retries", 0, "must be at least 1"));
        }
        Ok(())
    }

    fn validate_deploy(&self) -> Result<(), SpecError> {
        if self.deploy.strategy == Some(Strategy::BlueGreen) && self.proxy.is_none() {
            return Err(invalid(
                "deploy.strategy",
                "blue-green",
                "needs a [proxy] section, since nginx is what switches traffic to the new \
                 container",
            ));
        }
        if self.deploy.health_deadline.is_zero() {
            return Err(invalid(
                "deploy.health_deadline",
                self.deploy.health_deadline,
                "must be longer than 0s",
            ));
        }
        Ok(())
    }

    fn validate_proxy(&self, proxy: &Proxy) -> Result<(), SpecError> {
        if proxy.server_names.is_empty() {
            return Err(invalid_key(
                "proxy.server_names",
                "list at least one host name, or \"_\" for any",
            ));
        }
        if let Some(name) = proxy.server_names.iter().find(|n| !is_server_name(n)) {
            return Err(invalid(
                "proxy.server_names",
                name,
                "expected a host name like api.example.com or *.example.com, or _ for any",
            ));
        }
        if proxy.listen.is_empty() {
            return Err(invalid_key("proxy.listen", "list at least one port"));
        }
        for (i, &port) in proxy.listen.iter().enumerate() {
            if port == 0 {
                return Err(invalid("proxy.listen", port, "port 0 is not a port"));
            }
            if proxy.listen[..i].contains(&port) {
                return Err(invalid("proxy.listen", port, "is listed twice"));
            }
            let taken = self
                .ports
                .iter()
                .find(|m| m.protocol == Protocol::Tcp && m.host_port == Some(port));
            if let Some(mapping) = taken {
                return Err(invalid(
                    "proxy.listen",
                    port,
                    format!("host port {port} is also published by ports \"{mapping}\""),
                ));
            }
        }
        if proxy.upstream_port == Some(0) {
            return Err(invalid("proxy.upstream_port", 0, "port 0 is not a port"));
        }
        if self.upstream_port().is_none() {
            return Err(invalid_key(
                "proxy.upstream_port",
                "nginx needs a container port to forward to: set proxy.upstream_port, or list \
                 the container port in ports",
            ));
        }
        match (&proxy.tls_cert, &proxy.tls_key) {
            (Some(_), None) => {
                return Err(invalid_key("proxy.tls_key", "is needed with proxy.tls_cert"));
            }
            (None, Some(_)) => {
                return Err(invalid_key("proxy.tls_cert", "is needed with proxy.tls_key"));
            }
            _ => {}
        }
        for (key, path) in [("proxy.tls_cert", &proxy.tls_cert), ("proxy.tls_key", &proxy.tls_key)] {
            if let Some(path) = path {
                check_absolute(key, path)?;
            }
        }
        if let Some(path) = proxy.health_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(invalid("proxy.health_paths", path, "must start with /"));
        }
        for (key, timeout) in [
            ("proxy.read_timeout", proxy.read_timeout),
            ("proxy.connect_timeout", proxy.connect_timeout),
        ] {
            if timeout.is_zero() {
                return Err(invalid(key, timeout, "must be longer than 0s"));
            }
        }
        Ok(())
    }
}

fn check_absolute(key: &str, path: &Path) -> Result<(), SpecError> {
    if path.to_str().is_none() {
        return Err(invalid(key, path.display(), "must be valid UTF-8"));
    }
    if !path.is_absolute() {
        return Err(invalid(key, path.display(), "must be an absolute path"));
    }
    Ok(())
}

/// A name nginx's `server_name` takes here: `_`, or a DNS name, optionally
/// starting with `*.`.
fn is_server_name(name: &str) -> bool {
    if name == "_" {
        return true;
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first().is_some_and(|b| *b != b'-')
            && bytes.last().is_some_and(|b| *b != b'-')
    };
    host.len() <= 253 && host.split('.').all(label_ok)
}

// ---------------------------------------------------------------------------
// Checks against the host
// ---------------------------------------------------------------------------

/// Checks that `spec` takes nothing on the host that another service holds:
/// fixed host ports (published ports and nginx listen ports), and for nginx
/// sites, the same server name on the same listen port (nginx would route it
/// to only one of them).
///
/// `others` are the other services on the host; one with `spec`'s name is the
/// service's own previous version, which `spec` replaces, and is skipped.
pub fn check_host_ports(spec: &ServiceSpec, others: &[&ServiceSpec]) -> Result<(), SpecError> {
    let nginx_ports = |s: &ServiceSpec| s.proxy.as_ref().map(|p| p.listen.clone()).unwrap_or_default();
    for other in others.iter().filter(|o| o.name != spec.name) {
        let used_by = |port: u16| format!("host port {port} is already used by service \"{}\"", other.name);
        for mapping in &spec.ports {
            let Some(port) = mapping.host_port else {
                continue;
            };
            if other.ports.iter().any(|theirs| theirs.collides_with(mapping)) {
                return Err(invalid("ports", mapping, used_by(port)));
            }
            if mapping.protocol == Protocol::Tcp && nginx_ports(other).contains(&port) {
                return Err(invalid(
                    "ports",
                    mapping,
                    format!("{} (nginx listens there for it)", used_by(port)),
                ));
            }
        }
        let Some(proxy) = &spec.proxy else {
            continue;
        };
        for &port in &proxy.listen {
            let published = other
                .ports
                .iter()
                .any(|m| m.protocol == Protocol::Tcp && m.host_port == Some(port));
            if published {
                return Err(invalid("proxy.listen", port, used_by(port)));
            }
        }
        if let Some(theirs) = &other.proxy {
            let shared_port = proxy.listen.iter().find(|p| theirs.listen.contains(p));
            let shared_name = proxy.server_names.iter().find(|n| theirs.server_names.contains(n));
            if let (Some(port), Some(name)) = (shared_port, shared_name) {
                return Err(invalid(
                    "proxy.server_names",
                    name,
                    format!("already served on port {port} by service \"{}\"", other.name),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `spec`'s limits fit the host at all: a CPU limit above the
/// host's CPU count or a memory limit above its memory could never be met.
pub fn check_capacity(spec: &ServiceSpec, host_cpus: f64, host_memory_bytes: u64) -> Result<(), SpecError> {
    if let Some(cpus) = spec.resources.cpus
        && cpus.as_f64() > host_cpus
    {
        let unit = if (host_cpus - 1.0).abs() < f64::EPSILON {
            "CPU"
        } else {
            "CPUs"
        };
        return Err(invalid(
            "resources.cpus",
            cpus,
            format!("the host has only {host_cpus} {unit}"),
        ));
    }
    if let Some(memory) = spec.resources.memory
        && memory.bytes() > host_memory_bytes
    {
        return Err(invalid(
            "resources.memory",
            memory,
            format!("the host has only {} of memory", approximate_size(host_memory_bytes)),
        ));
    }
    Ok(())
}

/// A size for people, to one decimal in the largest fitting unit: `23.4g`.
fn approximate_size(bytes: u64) -> String {
    let units = [
        ("p", 1u64 << 50),
        ("t", 1 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ];
    for (suffix, multiplier) in units {
        if bytes >= multiplier {
            // Precision loss is fine: this is rounded for display anyway.
            let value = format!("{:.1}", bytes as f64 / multiplier as f64);
            return format!("{}{suffix}", value.trim_end_matches(".0"));
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    // Not the prelude: its `Strategy` trait would clash with the spec's enum.
    use proptest::prelude::{Just, any, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as _;

    const EXAMPLE: &str = r#"
name    = "contextgraph-web"
image   = "registry.example.com/contextgraph:1.4.3"
command = ["web"]                 # the same image runs as "worker" in another spec
env_file = "contextgraph-web.env" # under the agent's env dir
ports   = ["8000"]                # container port; "8080:8000" pins a host port
restart = "always"

[resources]
memory = "16g"
cpus   = 8

[health]
http         = "/__lbheartbeat__" # or tcp = 8000, or exec = ["cmd", "arg"]
port         = 8000
interval     = "2s"
timeout      = "1s"
retries      = 3
start_period = "10s"

[proxy]                           # optional: nginx site in front
server_names = ["api.example.com"]
listen       = [80]
upstream_port = 8000

[deploy]
strategy = "blue-green"           # or "recreate"
health_deadline = "2m"
drain = "10s"
"#;

    const MINIMAL: &str = "name = \"w\"\nimage = \"busybox\"\n";

    fn ok(text: &str) -> ServiceSpec {
        match parse(text) {
            Ok(spec) => spec,
            Err(e) => panic!("spec should parse:\n{text}\n---\n{e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(spec) => panic!("spec should not parse:\n{text}\n---\n{spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The minimal spec plus `extra` lines.
    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}\n")
    }

    #[test]
    fn design_example_parses() {
        let spec = ok(EXAMPLE);
        assert_eq!(spec.name.as_str(), "contextgraph-web");
        assert_eq!(spec.image.repository(), "registry.example.com/contextgraph");
        assert_eq!(spec.image.tag(), "1.4.3");
        assert_eq!(spec.command, ["web"]);
        assert_eq!(spec.env_file_name(), "contextgraph-web.env");
        assert_eq!(spec.ports.len(), 1);
        assert_eq!(spec.ports[0].container_port, 8000);
        assert_eq!(spec.ports[0].host_port, None);
        assert_eq!(spec.restart, RestartPolicy::Always);
        assert_eq!(spec.resources.memory, ByteSize::new(16 << 30));
        assert_eq!(spec.resources.cpus.map(Cpus::nano_cpus), Some(8_000_000_000));
        let health = spec.health.as_ref().map(|h| (&h.probe, h.start_period, h.retries));
        let probe = Probe::Http {
            path: "/__lbheartbeat__".to_owned(),
            port: Some(8000),
        };
        assert_eq!(health, Some((&probe, Duration::from_secs(10), 3)));
        assert_eq!(spec.health_port(), Some(8000));
        assert_eq!(spec.upstream_port(), Some(8000));
        assert_eq!(spec.strategy(), Strategy::BlueGreen);
        assert_eq!(spec.deploy.health_deadline, Duration::from_secs(120));
        assert_eq!(spec.deploy.drain, Duration::from_secs(10));
        let proxy = spec
            .proxy
            .as_ref()
            .map(|p| (&p.server_names, &p.listen, &p.health_paths[0]));
        let names = vec!["api.example.com".to_owned()];
        assert_eq!(proxy, Some((&names, &vec![80], &"/__lbheartbeat__".to_owned())));
    }

    #[test]
    fn minimal_spec_gets_the_defaults() {
        let spec = ok(MINIMAL);
        assert_eq!(spec.image.repository(), "busybox");
        assert_eq!(spec.image.tag(), "latest");
        assert!(spec.command.is_empty());
        assert_eq!(spec.entrypoint, None);
        assert_eq!(spec.env_file_name(), "w.env");
        assert!(spec.ports.is_empty());
        assert_eq!(spec.restart, RestartPolicy::Always);
        assert_eq!(spec.env_change, EnvChange::Restart);
        assert_eq!(spec.priority, 0);
        assert_eq!(spec.stop_signal, StopSignal::Term);
        assert_eq!(spec.stop_timeout, Duration::from_secs(10));
        assert!(spec.labels.is_empty());
        assert_eq!(spec.resources, Resources::default());
        assert_eq!(spec.health, None);
        assert_eq!(spec.health_port(), None);
        assert_eq!(spec.proxy, None);
        assert_eq!(spec.upstream_port(), None);
        assert_eq!(spec.strategy(), Strategy::Recreate);
        assert_eq!(spec.deploy, Deploy::default());
        assert_eq!(spec.deploy.health_deadline, Duration::from_secs(60));
        assert_eq!(spec.deploy.drain, Duration::from_secs(5));
    }

    #[test]
    fn health_and_proxy_defaults() {
        let spec = ok(&with(
            "ports = [\"53/udp\", \"9000\"]\n[health]\nhttp = \"/\"\n[proxy]\nserver_names = [\"_\"]",
        ));
        let health = spec
            .health
            .clone()
            .map(|h| (h.interval, h.timeout, h.retries, h.start_period));
        assert_eq!(
            health,
            Some((
                Duration::from_secs(2),
                Duration::from_secs(1),
                3,
                Duration::from_secs(0)
            ))
        );
        // The first *TCP* container port; health checks and nginx speak TCP.
        assert_eq!(spec.health_port(), Some(9000));
        assert_eq!(spec.upstream_port(), Some(9000));
        assert_eq!(spec.strategy(), Strategy::BlueGreen);
        let proxy = spec
            .proxy
            .clone()
            .map(|p| (p.listen, p.health_paths, p.read_timeout, p.connect_timeout));
        let paths = ["/__lbheartbeat__", "/__heartbeat__", "/__version__"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            proxy,
            Some((vec![80], paths, Duration::from_secs(60), Duration::from_secs(5)))
        );
    }

    #[test]
    fn other_probes_and_options_parse() {
        let spec = ok(&with(
            "entrypoint = []\nenv_file = \"shared.env\"\nrestart = \"on-failure\"\n\
             env_change = \"none\"\npriority = -5\nstop_signal = \"quit\"\nstop_timeout = \"1m\"\n\
             [labels]\n\"com.example.team\" = \"search\"\n[health]\ntcp = 6379\n",
        ));
        assert_eq!(spec.entrypoint, Some(vec![]));
        assert_eq!(spec.env_file_name(), "shared.env");
        assert_eq!(spec.restart, RestartPolicy::OnFailure);
        assert_eq!(spec.env_change, EnvChange::Ignore);
        assert_eq!(spec.priority, -5);
        assert_eq!(spec.stop_signal, StopSignal::Quit);
        assert_eq!(spec.stop_signal.as_str(), "SIGQUIT");
        assert_eq!(spec.stop_timeout, Duration::from_secs(60));
        assert_eq!(spec.labels.get("com.example.team").map(String::as_str), Some("search"));
        assert_eq!(spec.health_port(), Some(6379));
        let spec = ok(&with("[health]\nexec = [\"pg_isready\", \"-q\"]"));
        assert_eq!(spec.health_port(), None);
        assert!(matches!(spec.health.map(|h| h.probe), Some(Probe::Exec { command }) if command.len() == 2));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            err(&with("[resources]\nmemory = \"16x\"")),
            r#"resources.memory "16x": expected a size like 512m or 16g"#
        );
        assert_eq!(
            err(&with("resources.cpus = 0.0001")),
            r#"resources.cpus "0.0001": expected a CPU count like 0.5 or 8 (more than 0, at most 3 decimals)"#
        );
        assert_eq!(
            err(&with("[health]\nhttp = \"/\"\ninterval = \"2 seconds\"")),
            r#"health.interval "2 seconds": expected a duration like 500ms, 2s or 1m"#
        );
        assert_eq!(
            err(&with("ports = [\"8000\", \"80:x\"]")),
            r#"ports "80:x": expected a port mapping like 8000, 8080:8000 or 127.0.0.1:8080:8000/udp"#
        );
        assert_eq!(
            err("name = \"Web\"\nimage = \"busybox\""),
            "name \"Web\": expected a service name like \"web\": lowercase letters, digits, '_', \
             '.' and '-', starting with a letter or digit, at most 63 characters"
        );
        assert!(
            err("name = \"w\"\nimage = \"Busybox\"")
                .starts_with(r#"image "Busybox": expected an image reference like registry.example.com/app:1.4.3 ("#)
        );
        assert_eq!(
            err(&with("stop_signal = \"SIGFOO\"")),
            r#"stop_signal "SIGFOO": expected a signal name like SIGTERM or TERM (one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL)"#
        );
        assert_eq!(
            err(&with("deploy.drain = \"soon\"")),
            r#"deploy.drain "soon": expected a duration like 500ms, 2s or 1m"#
        );
    }

    #[test]
    fn unknown_keys_name_the_key_the_line_and_the_valid_keys() {
        let text = err(&with("[resources]\nmemroy = \"1g\""));
        assert!(text.contains("line 4"), "{text}");
        assert!(text.contains("memroy = \"1g\""), "{text}");
        assert!(
            text.contains("unknown field `memroy`, expected `memory` or `cpus`"),
            "{text}"
        );
        let text = err(&with("comand = [\"web\"]"));
        assert!(text.contains("line 3"), "{text}");
        assert!(
            text.contains("unknown field `comand`, expected one of `name`, `image`, `command`"),
            "{text}"
        );
        let text = err(&with("[health]\nhttp = \"/\"\nintreval = \"1s\""));
        assert!(text.contains("line 5"), "{text}");
        assert!(text.contains("unknown field `intreval`"), "{text}");
        assert!(text.contains("`interval`"), "{text}");
    }

    #[test]
    fn syntax_and_type_errors_keep_tomls_position() {
        let text = err("name = \"w\nimage = \"busybox\"");
        assert!(text.starts_with("TOML parse error at line 1"), "{text}");
        let text = err(&with("priority = \"high\""));
        assert!(
            text.contains("line 3") && text.contains("invalid type: string \"high\""),
            "{text}"
        );
        let text = err(&with("[resources]\nmemory = 16"));
        assert!(
            text.contains("line 4") && text.contains("expected a size like 512m or 16g"),
            "{text}"
        );
        let text = err("image = \"busybox\"");
        assert!(text.contains("missing field `name`"), "{text}");
        let text = err(&with("restart = \"sometimes\""));
        assert!(
            text.contains("unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
            "{text}"
        );
    }

    #[test]
    fn health_takes_exactly_one_probe() {
        let text = err(&with("[health]\nhttp = \"/\"\ntcp = 80"));
        assert!(text.contains("line 3"), "{text}");
        assert!(
            text.contains("[health] takes only one of http, tcp or exec, found http and tcp"),
            "{text}"
        );
        let text = err(&with("[health]\ninterval = \"5s\""));
        assert!(text.contains("[health] needs one of http, tcp or exec"), "{text}");
        let text = err(&with("[health]\ntcp = 80\nport = 80"));
        assert!(
            text.contains("health.port is only used with http; drop it, tcp names what to check"),
            "{text}"
        );
    }

    #[test]
    fn validation_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "env_file = \"../etc/passwd\"",
                r#"env_file "../etc/passwd": must be a file name in the agent's env dir, without '/' or '..'"#,
            ),
            (
                "env_file = \"a/b.env\"",
                r#"env_file "a/b.env": must be a file name in the agent's env dir, without '/' or '..'"#,
            ),
            (
                "ports = [\"8080:8000\", \"8080:9000\"]",
                r#"ports "8080:9000": host port 8080 is already used by "8080:8000""#,
            ),
            (
                "resources.memory = \"4m\"",
                r#"resources.memory "4m": Docker needs at least 6m"#,
            ),
            (
                "labels = { \"berth.service\" = \"x\" }",
                r#"labels "berth.service": keys starting with "berth." are reserved for the agent"#,
            ),
            (
                "stop_timeout = \"1500ms\"",
                r#"stop_timeout "1s500ms": Docker counts stop timeouts in whole seconds"#,
            ),
            (
                "[health]\nhttp = \"health\"\nport = 80",
                r#"health.http "health": must start with /"#,
            ),
            (
                "[health]\nhttp = \"/health\"",
                "health.port: an http check needs a port: set health.port, or list the container port in ports",
            ),
            (
                "[health]\nexec = []",
                r#"health.exec: must name a program, like ["cmd", "arg"]"#,
            ),
            ("[health]\ntcp = 0", r#"health.tcp "0": port 0 is not a port"#),
            (
                "[health]\ntcp = 80\ntimeout = \"5s\"",
                r#"health.timeout "5s": must not be longer than health.interval (2s)"#,
            ),
            (
                "[health]\ntcp = 80\nretries = 0",
                r#"health.retries "0": must be at least 1"#,
            ),
            (
                "[health]\ntcp = 80\ninterval = \"0s\"",
                r#"health.interval "0s": must be longer than 0s"#,
            ),
            (
                "[deploy]\nstrategy = \"blue-green\"",
                r#"deploy.strategy "blue-green": needs a [proxy] section, since nginx is what switches traffic to the new container"#,
            ),
            (
                "[deploy]\nhealth_deadline = \"0s\"",
                r#"deploy.health_deadline "0s": must be longer than 0s"#,
            ),
            (
                "ports = [\"8080:8000\"]\n[proxy]\nserver_names = [\"a.example.com\"]",
                r#"ports "8080:8000": a blue-green deploy runs the old and new container side by side, so they cannot share a fixed host port; write "8000" or use deploy.strategy = "recreate""#,
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = []",
                r#"proxy.server_names: list at least one host name, or "_" for any"#,
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"bad name\"]",
                r#"proxy.server_names "bad name": expected a host name like api.example.com or *.example.com, or _ for any"#,
            ),
            (
                "[proxy]\nserver_names = [\"a.example.com\"]",
                "proxy.upstream_port: nginx needs a container port to forward to: set proxy.upstream_port, or list the container port in ports",
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nlisten = [80, 80]",
                r#"proxy.listen "80": is listed twice"#,
            ),
            (
                "ports = [\"80:8000\"]\n[deploy]\nstrategy = \"recreate\"\n[proxy]\nserver_names = [\"_\"]",
                r#"proxy.listen "80": host port 80 is also published by ports "80:8000""#,
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\ntls_cert = \"/etc/ssl/a.pem\"",
                "proxy.tls_key: is needed with proxy.tls_cert",
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\ntls_key = \"/etc/ssl/a.key\"",
                "proxy.tls_cert: is needed with proxy.tls_key",
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\ntls_cert = \"a.pem\"\ntls_key = \"/k\"",
                r#"proxy.tls_cert "a.pem": must be an absolute path"#,
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nhealth_paths = [\"ping\"]",
                r#"proxy.health_paths "ping": must start with /"#,
            ),
            (
                "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nread_timeout = \"0s\"",
                r#"proxy.read_timeout "0s": must be longer than 0s"#,
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(&err(&with(extra)), expected, "for {extra:?}");
        }
    }

    #[test]
    fn round_trips_through_toml_and_json() {
        let full = with(
            "command = [\"web\", \"--port=8000\"]\nentrypoint = [\"/bin/app\"]\n\
             ports = [\"8000\", \"127.0.0.1::9000\", \"[::1]:5353:53/udp\"]\nstop_signal = \"HUP\"\n\
             labels = { \"com.example.team\" = \"search\", plain = \"\" }\n\
             resources = { memory = \"1536m\", cpus = 0.25 }\n\
             [health]\nexec = [\"true\"]\nstart_period = \"1m30s\"\n\
             [proxy]\nserver_names = [\"*.example.com\", \"_\"]\nlisten = [80, 443]\n\
             tls_cert = \"/etc/ssl/a.pem\"\ntls_key = \"/etc/ssl/a.key\"\nupstream_port = 9000\n\
             [deploy]\nstrategy = \"recreate\"",
        );
        for text in [EXAMPLE, MINIMAL, full.as_str()] {
            let spec = ok(text);
            let toml = spec.to_toml();
            assert_eq!(parse(&toml), Ok(spec.clone()), "TOML:\n{toml}");
            let json = serde_json::to_string(&spec).unwrap_or_default();
            let back: Option<ServiceSpec> = serde_json::from_str(&json).ok();
            assert_eq!(back, Some(spec), "JSON:\n{json}");
        }
    }

    #[test]
    fn to_toml_reads_like_a_spec() {
        let toml = ok(MINIMAL).to_toml();
        assert!(toml.starts_with("name = \"w\"\nimage = \"busybox\"\n"), "{toml}");
        assert!(!toml.contains("[resources]"), "{toml}");
        let toml = ok(EXAMPLE).to_toml();
        for line in [
            "memory = \"16g\"",
            "cpus = 8",
            "ports = [\"8000\"]",
            "interval = \"2s\"",
            "strategy = \"blue-green\"",
        ] {
            assert!(toml.contains(line), "{line:?} in\n{toml}");
        }
    }

    fn spec_with(name: &str, extra: &str) -> ServiceSpec {
        ok(&format!("name = \"{name}\"\nimage = \"busybox\"\n{extra}\n"))
    }

    #[test]
    fn host_port_conflicts() {
        let api = spec_with("api", "ports = [\"8080:8000\", \"9000\"]");
        let web = spec_with(
            "web",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"web.example.com\"]",
        );
        let check = |spec: &ServiceSpec| check_host_ports(spec, &[&api, &web]).map_err(|e| e.to_string());

        let taken = spec_with("new", "ports = [\"8080:8000\"]");
        assert_eq!(
            check(&taken),
            Err(r#"ports "8080:8000": host port 8080 is already used by service "api""#.to_owned())
        );
        let pinned_ip = spec_with("new", "ports = [\"127.0.0.1:8080:80\"]");
        assert_eq!(
            check(&pinned_ip),
            Err(r#"ports "127.0.0.1:8080:80": host port 8080 is already used by service "api""#.to_owned())
        );
        let nginx = spec_with("new", "ports = [\"80:8000\"]");
        assert_eq!(
            check(&nginx),
            Err(
                r#"ports "80:8000": host port 80 is already used by service "web" (nginx listens there for it)"#
                    .to_owned()
            )
        );
        let same_site = spec_with(
            "new",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"web.example.com\"]",
        );
        assert_eq!(
            check(&same_site),
            Err(r#"proxy.server_names "web.example.com": already served on port 80 by service "web""#.to_owned())
        );
        let listen_taken = spec_with(
            "new",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nlisten = [8080]",
        );
        assert_eq!(
            check(&listen_taken),
            Err(r#"proxy.listen "8080": host port 8080 is already used by service "api""#.to_owned())
        );

        // Fine: other ports, other protocol, other address, another site on
        // the shared nginx port, and the service's own previous version.
        for extra in [
            "ports = [\"8081:8000\", \"8000\"]",
            "ports = [\"8080:8000/udp\"]",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"new.example.com\"]",
        ] {
            assert_eq!(check(&spec_with("new", extra)), Ok(()), "{extra}");
        }
        let a = spec_with("new", "ports = [\"127.0.0.1:7000:80\"]");
        let b = spec_with("other", "ports = [\"127.0.0.2:7000:80\"]");
        assert_eq!(check_host_ports(&a, &[&b]), Ok(()));
        assert_eq!(check(&spec_with("api", "ports = [\"8080:8000\"]")), Ok(()));
    }

    #[test]
    fn capacity() {
        let spec = spec_with("big", "resources = { cpus = 16, memory = \"64g\" }");
        let check = |cpus, memory| check_capacity(&spec, cpus, memory).map_err(|e| e.to_string());
        assert_eq!(
            check(2.0, 1 << 40),
            Err(r#"resources.cpus "16": the host has only 2 CPUs"#.to_owned())
        );
        assert_eq!(
            check(1.0, 1 << 40),
            Err(r#"resources.cpus "16": the host has only 1 CPU"#.to_owned())
        );
        assert_eq!(
            check(32.0, 25_165_824_000),
            Err(r#"resources.memory "64g": the host has only 23.4g of memory"#.to_owned())
        );
        assert_eq!(check(16.0, 64 << 30), Ok(()));
        assert_eq!(check_capacity(&ok(MINIMAL), 1.0, 1 << 30), Ok(()));
    }

    #[test]
    fn image_references() {
        let parts = |s: &str| {
            s.parse::<ImageRef>().map(|r| {
                (
                    r.repository().to_owned(),
                    r.tag().to_owned(),
                    r.digest().map(str::to_owned),
                )
            })
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        let some = |r: &str, t: &str, d: Option<&str>| Ok((r.to_owned(), t.to_owned(), d.map(str::to_owned)));
        assert_eq!(parts("busybox"), some("busybox", "latest", None));
        assert_eq!(parts("library/busybox:1.36"), some("library/busybox", "1.36", None));
        assert_eq!(parts("localhost:5000/app"), some("localhost:5000/app", "latest", None));
        assert_eq!(
            parts("localhost:5000/team/app:v1.2_rc-3"),
            some("localhost:5000/team/app", "v1.2_rc-3", None)
        );
        assert_eq!(parts("127.0.0.1:5000/app:1"), some("127.0.0.1:5000/app", "1", None));
        assert_eq!(parts("[::1]:5000/app:1"), some("[::1]:5000/app", "1", None));
        assert_eq!(
            parts("Registry.Example.com/a__b/c--d.e:x"),
            some("Registry.Example.com/a__b/c--d.e", "x", None)
        );
        assert_eq!(parts(&format!("app@{digest}")), some("app", "latest", Some(&digest)));
        assert_eq!(
            parts(&format!("r.io/app:1@{digest}")),
            some("r.io/app", "1", Some(&digest))
        );
        for bad in [
            "",
            "Busybox",
            "app:",
            "app:-x",
            "app:.x",
            "a/b/",
            "/a",
            "a//b",
            "a_-b",
            "a...b",
            "-a",
            "a-",
            "r.io:port/app",
            "bad_host.io/app",
            "app@sha256:abc",
            "app@md5:0000",
            "app:tag:tag",
            "app name",
            "UPPER",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} should not parse");
        }
        assert!(format!("app:{}", "t".repeat(128)).parse::<ImageRef>().is_ok());
        assert!(format!("app:{}", "t".repeat(129)).parse::<ImageRef>().is_err());
    }

    #[test]
    fn service_names() {
        for good in ["w", "web", "contextgraph-web", "a.b_c-d", "0", &"a".repeat(63)] {
            assert!(good.parse::<ServiceName>().is_ok(), "{good:?}");
        }
        for bad in ["", "Web", "-web", "_web", ".web", "web/x", "web x", &"a".repeat(64)] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_mappings() {
        let show = |s: &str| {
            s.parse::<PortMapping>()
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        };
        for (input, shown) in [
            ("8000", "8000"),
            ("8000/tcp", "8000"),
            ("8000/TCP", "8000"),
            ("53/udp", "53/udp"),
            ("8080:8000", "8080:8000"),
            ("127.0.0.1:8080:8000", "127.0.0.1:8080:8000"),
            ("127.0.0.1::8000", "127.0.0.1::8000"),
            ("[::1]:8080:8000/udp", "[::1]:8080:8000/udp"),
            ("[::]::8000", "[::]::8000"),
        ] {
            assert_eq!(show(input), Ok(shown.to_owned()), "{input}");
        }
        for bad in [
            "",
            "0",
            "80:0",
            "0:80",
            "65536",
            ":8000",
            "x",
            "8000/sctp",
            "1.2.3:80:80",
            "::1:80:80",
            "a:b:c:d",
            "+80",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad:?}");
        }
        let mapping = "127.0.0.1:8080:8000/udp".parse::<PortMapping>().ok();
        let expected = PortMapping {
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host_port: Some(8080),
            container_port: 8000,
            protocol: Protocol::Udp,
        };
        assert_eq!(mapping, Some(expected));
    }

    #[test]
    fn stop_signals_normalize() {
        for (input, signal) in [
            ("SIGTERM", StopSignal::Term),
            ("TERM", StopSignal::Term),
            ("int", StopSignal::Int),
            ("SigKill", StopSignal::Kill),
            ("USR2", StopSignal::Usr2),
        ] {
            assert_eq!(input.parse::<StopSignal>(), Ok(signal), "{input}");
        }
        for bad in ["", "SIG", "SIGSTOP", "9", "SIGSIGTERM"] {
            assert!(bad.parse::<StopSignal>().is_err(), "{bad:?}");
        }
        let toml = ok(&with("stop_signal = \"term\"")).to_toml();
        assert!(toml.contains("stop_signal = \"SIGTERM\""), "{toml}");
    }

    fn any_port_mapping() -> impl proptest::strategy::Strategy<Value = PortMapping> {
        let ip = prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
            any::<[u16; 8]>().prop_map(|s| Some(IpAddr::from(s))),
        ];
        (ip, proptest::option::of(1..=u16::MAX), 1..=u16::MAX, any::<bool>()).prop_map(
            |(host_ip, host_port, container_port, udp)| PortMapping {
                host_ip,
                host_port,
                container_port,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            },
        )
    }

    proptest! {
        #[test]
        fn port_mapping_display_round_trips(mapping in any_port_mapping()) {
            prop_assert_eq!(mapping.to_string().parse::<PortMapping>(), Ok(mapping));
        }
    }
}

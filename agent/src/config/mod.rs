//! The agent's configuration file (`/etc/berth/agent.toml` by default).
//!
//! Owns parsing and validation: [`Config::load`] reads TOML with unknown keys
//! refused (the error names the key and its line), then [`Config::validate`]
//! checks what serde cannot (paths present, intervals in range). Defaults
//! live here and only here; every system path is a field so tests and the
//! quickstart run unprivileged in a temp dir.
//!
//! This file holds the keys (one type per table, a `///` on every field:
//! it is the user documentation) and their defaults; `load.rs` reads and
//! checks a file ([`Config::load`]). Read once at start; owns no task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr as _;

use serde::Deserialize;

use berth_core::units::{ByteSize, Duration};

mod alerts;
mod load;
mod logfilter;

pub use alerts::{AlertMetric, AlertRule, Direction, RawAlertRule, valid_alert_name};
pub use logfilter::parse_filter;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/agent.toml";

/// A config that could not be loaded; each variant names the file and the
/// thing to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong shape; the message
    /// carries the line, column and key from the TOML parser.
    #[error("config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and key.
        message: String,
    },
    /// A file the config names cannot be opened.
    #[error("{key}: cannot open {path}: {source}")]
    MissingFile {
        /// Dotted key path, e.g. `tls.cert`.
        key: &'static str,
        /// The file named.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value that parsed but makes no sense.
    #[error("config {path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key path, e.g. `metrics.interval`.
        key: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC API listens on (mutual TLS only). Port 0 picks a free
    /// port; see `listen_address_file` to learn which.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// When set, the agent writes the address it actually listens on to this
    /// file once it accepts connections (useful with port 0 in tests).
    #[serde(default)]
    pub listen_address_file: Option<PathBuf>,
    /// Desired specs, revisions and the audit log live here.
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    /// One env file per service, `NAME.env`, mode 0600.
    #[serde(default = "defaults::env_dir")]
    pub env_dir: PathBuf,
    /// Mutual TLS material.
    #[serde(default)]
    pub tls: TlsConfig,
    /// How to reach the Docker Engine.
    #[serde(default)]
    pub docker: DockerConfig,
    /// The nginx sites the agent renders in front of proxied services.
    #[serde(default)]
    pub nginx: NginxConfig,
    /// Metrics collection and delivery.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// What the agent does when the host runs short of memory.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How many connections the gRPC listener holds, and for how long.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// The audit log (`state_dir/audit.log`) and its rotation.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Credentials for private registries, chosen by the image's registry host.
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    /// Threshold rules (`[[alerts]]`) on host and service metrics, checked
    /// at every metrics pass.
    #[serde(default)]
    pub alerts: Vec<AlertRule>,
}

/// Credentials for one registry, from one of three sources: a password
/// file read at start (mode 0600, so the config can be world-readable and
/// kept in version control), a `password_command` run when a pull needs
/// the password (e.g. `aws ecr get-login-password`, whose tokens last 12
/// hours), or a Docker credential helper (`docker-credential-NAME get`).
/// What a command or helper hands out is kept in memory until `ttl` passes
/// or the registry refuses it, then asked for again; it never reaches a log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host[:port] as it appears in image references, e.g. "registry.example.com".
    pub registry: String,
    /// User name; needed with `password_file` and `password_command` (for
    /// ECR, "AWS"). A credential helper names its own.
    #[serde(default)]
    pub username: String,
    /// File holding the password or token (first line), read at start.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Program and arguments printing the password on the first line of its
    /// stdout, e.g. ["aws", "ecr", "get-login-password", "--region",
    /// "us-west-2"]. Run without a shell, with the agent's environment.
    #[serde(default)]
    pub password_command: Option<Vec<String>>,
    /// A Docker credential helper: "ecr-login" runs
    /// `docker-credential-ecr-login get` from PATH (a value with a '/' is
    /// the helper's path), with the registry on stdin, as Docker does.
    #[serde(default)]
    pub credential_helper: Option<String>,
    /// How long what `password_command` or `credential_helper` handed out
    /// is used before they are asked again (default 1h, 1s to 24h). A pull
    /// the registry refuses asks again at once.
    #[serde(default)]
    pub ttl: Option<Duration>,
}

/// The default [`RegistryConfig::ttl`].
pub const REGISTRY_TTL: Duration = Duration::from_secs(3600);

/// TLS files of the agent. The CA verifies client certificates; the
/// certificate and key are what the agent presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM) that signed the client certificates to accept.
    #[serde(default = "defaults::tls_ca")]
    pub ca: PathBuf,
    /// The agent's certificate (PEM), signed by a CA its clients trust.
    #[serde(default = "defaults::tls_cert")]
    pub cert: PathBuf,
    /// The agent's private key (PEM). Keep it 0600: the agent warns when
    /// group or others may read it.
    #[serde(default = "defaults::tls_key")]
    pub key: PathBuf,
    /// Certificate revocation list(s) (PEM, or one DER list) from the CA:
    /// client certificates listed there are refused at the handshake.
    /// `berthctl certs revoke` writes one. Unset: no revocation check.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

/// The audit log: one hash-chained record per change, denial and failure,
/// fsynced as it is written. When `audit.log` would grow past
/// `max_file_size` it becomes `audit.log.1` (older files shift up, the
/// oldest beyond `keep_files` is deleted); the chain runs on across files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Size at which `audit.log` is rotated, e.g. "16m".
    #[serde(default = "defaults::audit_max_file_size")]
    pub max_file_size: ByteSize,
    /// Rotated files kept (`audit.log.1` ... `audit.log.N`), at least 1.
    #[serde(default = "defaults::audit_keep_files")]
    pub keep_files: u32,
}

/// The Docker Engine connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Unix socket of the Docker Engine API.
    #[serde(default = "defaults::docker_socket")]
    pub socket: PathBuf,
    /// Time allowed for one Docker API call, e.g. "30s".
    #[serde(default = "defaults::docker_timeout")]
    pub timeout: Duration,
    /// This agent's name on the engine: its containers carry
    /// `berth.instance=<instance>` and it never touches containers of another
    /// instance. Only matters when several agents share one Docker Engine.
    #[serde(default = "defaults::docker_instance")]
    pub instance: String,
    /// Containers logging to json-file or local (the default) get their log
    /// rotated at this size, e.g. "50m", unless their spec's `[logging]`
    /// says otherwise; so a chatty container cannot fill the disk.
    #[serde(default = "defaults::docker_log_max_size")]
    pub log_max_size: ByteSize,
    /// How many rotated log files such a container keeps, at least 1.
    #[serde(default = "defaults::docker_log_max_file")]
    pub log_max_file: u32,
    /// Recreate services on a bridge or named network join a network
    /// holder of their own, which keeps their address and ports across
    /// deploys and restarts, so those skip Docker's network set-up. `false`
    /// gives every container its own network, as `docker run` does.
    #[serde(default = "defaults::docker_network_holders")]
    pub network_holders: bool,
}

/// nginx integration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxConfig {
    /// Directory nginx includes site files from; berth writes `berth-NAME.conf`.
    #[serde(default = "defaults::nginx_sites_dir")]
    pub sites_dir: PathBuf,
    /// Command that validates nginx's whole configuration.
    #[serde(default = "defaults::nginx_test")]
    pub test_command: Vec<String>,
    /// Command that makes nginx load its configuration gracefully.
    #[serde(default = "defaults::nginx_reload")]
    pub reload_command: Vec<String>,
}

/// Metrics collection and delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Collection interval, at least 1s.
    #[serde(default = "defaults::metrics_interval")]
    pub interval: Duration,
    /// Address of the Prometheus text endpoint; "" turns it off.
    #[serde(default = "defaults::prometheus_listen")]
    pub prometheus_listen: String,
    /// StatsD/DogStatsD address to push to, e.g. "127.0.0.1:8125"; "" is off.
    #[serde(default)]
    pub statsd: String,
    /// How pushed metrics name the service: `"statsd"` puts it in the name
    /// (`berth.container.web.cpu_percent`), `"dogstatsd"` in a tag
    /// (`berth.container.cpu_percent` with `#service:web`).
    #[serde(default)]
    pub statsd_flavor: StatsdFlavor,
    /// First component of every pushed metric name.
    #[serde(default = "defaults::statsd_prefix")]
    pub statsd_prefix: String,
    /// Where the cgroup filesystem is mounted; container metrics are read
    /// from the files under it (v1 or v2, cgroupfs or systemd layout).
    #[serde(default = "defaults::cgroup_root")]
    pub cgroup_root: PathBuf,
    /// Where procfs is mounted; container network counters come from
    /// `PROC/PID/net/dev` of a process in the container.
    #[serde(default = "defaults::proc_root")]
    pub proc_root: PathBuf,
}

/// The wire dialect of the StatsD push.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsdFlavor {
    /// Plain StatsD: every service gets its own metric names.
    #[default]
    Statsd,
    /// DogStatsD (Datadog agent): one name per metric, `service` as a tag.
    Dogstatsd,
}

/// `[limits]`: the host memory-pressure policy. Per-service limits live in
/// each spec's `[resources]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Available memory under which the host counts as under pressure: a
    /// size like `"500m"` or `"2g"`, or a share of total memory like `"5%"`.
    /// `""` (the default) turns the policy off.
    #[serde(default)]
    pub memory_pressure_threshold: String,
    /// What to do to the lowest-priority running service (spec `priority`,
    /// lower first) once pressure has lasted `pressure_sustained`: `"log"`
    /// (only an event), `"restart"` it, or `"stop"` it until memory recovers.
    #[serde(default)]
    pub pressure_action: PressureAction,
    /// How long available memory must stay under the threshold before the
    /// agent acts.
    #[serde(default = "defaults::pressure_sustained")]
    pub pressure_sustained: Duration,
    /// The least time between two actions, so one action can take effect
    /// before the next service is touched.
    #[serde(default = "defaults::pressure_cooldown")]
    pub pressure_cooldown: Duration,
    /// The kernel log, read for OOM kills that Docker misses (on cgroup v1
    /// it does not report the kill of a container's PID 1). Needs root;
    /// `""` turns it off.
    #[serde(default = "defaults::kernel_log")]
    pub kernel_log: PathBuf,
}

/// The available-memory level under which the host is under pressure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryThreshold {
    /// An absolute amount.
    Bytes(u64),
    /// A share of total memory, 0-100.
    Percent(f64),
}

impl MemoryThreshold {
    /// Parses `"500m"`, `"2g"` or `"5%"`; `""` is `None` (policy off). The
    /// error reads as a sentence for the config's `key: message`.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!(
                "{:?}: expected a size like 500m or 2g, or a share of memory like 5%, or \"\" for off",
                berth_core::text::shown(text)
            )
        };
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Some(MemoryThreshold::Percent(p)));
        }
        ByteSize::from_str(text)
            .map(|b| Some(MemoryThreshold::Bytes(b.bytes())))
            .map_err(|_| bad())
    }

    /// The threshold in bytes for a host with `total` bytes of memory.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MemoryThreshold::Bytes(b) => b,
            MemoryThreshold::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// What the memory-pressure policy does to a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PressureAction {
    /// Publish an event naming the service it would act on; change nothing.
    #[default]
    Log,
    /// Replace the service's container with a fresh one (health-gated).
    Restart,
    /// Stop the service's container and keep it stopped until available
    /// memory is back over the threshold.
    Stop,
}

impl PressureAction {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            PressureAction::Log => "log",
            PressureAction::Restart => "restart",
            PressureAction::Stop => "stop",
        }
    }
}

/// `[connections]`: what the gRPC listener lets one peer, and everyone
/// together, hold. Whoever reaches the port can open TCP connections without
/// a certificate; these bounds keep that from exhausting the agent's file
/// descriptors (which its health probes need too).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Connections held at once, handshaking or established. Lowered at
    /// start to fit the open-file limit (`LimitNOFILE`), keeping room for
    /// Docker, probes and files.
    #[serde(default = "defaults::max_connections")]
    pub max: u32,
    /// Connections held at once from one source address.
    #[serde(default = "defaults::max_connections_per_address")]
    pub max_per_address: u32,
    /// TLS handshakes in progress at once.
    #[serde(default = "defaults::max_handshakes")]
    pub max_handshakes: u32,
    /// TLS handshakes in progress at once from one source address.
    #[serde(default = "defaults::max_handshakes_per_address")]
    pub max_handshakes_per_address: u32,
    /// How long a peer gets to finish its TLS handshake.
    #[serde(default = "defaults::handshake_timeout")]
    pub handshake_timeout: Duration,
    /// HTTP/2 streams (calls) one connection may have open at once.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged (HTTP/2 PING and TCP
    /// keepalive); one that does not answer within the same time is closed.
    #[serde(default = "defaults::keepalive")]
    pub keepalive: Duration,
    /// How long one connection may live. It is then closed gracefully
    /// (HTTP/2 GOAWAY: no new calls on it; berthctl reconnects), so a
    /// client's identity is checked again, against the current CA, CRL and
    /// certificate, at least this often. A connection never outlives its
    /// client certificate's notAfter either.
    #[serde(default = "defaults::max_connection_age")]
    pub max_connection_age: Duration,
    /// How long calls in progress at `max_connection_age` (a deploy waiting
    /// on its health gate) get to finish before the connection is closed.
    #[serde(default = "defaults::max_connection_age_grace")]
    pub max_connection_age_grace: Duration,
}

/// Log output. Under systemd (`JOURNAL_STREAM` set) logs go to journald.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (stderr only).
    #[serde(default = "defaults::log_format")]
    pub format: LogFormat,
    /// A log filter: a default level and `TARGET=LEVEL` directives,
    /// comma-separated, e.g. "info" or "info,berth_agent::reconcile=debug"
    /// (no span or field filters). `RUST_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Default values, in one place.
mod defaults {
    use super::*;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 7443))
    }
    pub fn state_dir() -> PathBuf {
        "/var/lib/berth".into()
    }
    pub fn env_dir() -> PathBuf {
        "/etc/berth/env".into()
    }
    pub fn tls_ca() -> PathBuf {
        "/etc/berth/tls/ca.pem".into()
    }
    pub fn tls_cert() -> PathBuf {
        "/etc/berth/tls/agent.pem".into()
    }
    pub fn tls_key() -> PathBuf {
        "/etc/berth/tls/agent-key.pem".into()
    }
    pub fn audit_max_file_size() -> ByteSize {
        ByteSize::new(16 * 1024 * 1024).expect("16 MiB is a valid size")
    }
    pub fn audit_keep_files() -> u32 {
        8
    }
    pub fn docker_socket() -> PathBuf {
        "/var/run/docker.sock".into()
    }
    pub fn docker_timeout() -> Duration {
        Duration::from_secs(120)
    }
    pub fn docker_instance() -> String {
        "default".into()
    }
    pub fn docker_log_max_size() -> ByteSize {
        ByteSize::new(50 * 1024 * 1024).expect("50 MiB is a valid size")
    }
    pub fn docker_network_holders() -> bool {
        true
    }

    pub fn docker_log_max_file() -> u32 {
        3
    }
    pub fn nginx_sites_dir() -> PathBuf {
        "/etc/nginx/conf.d".into()
    }
    pub fn nginx_test() -> Vec<String> {
        vec!["nginx".into(), "-t".into()]
    }
    pub fn nginx_reload() -> Vec<String> {
        vec!["nginx".into(), "-s".into(), "reload".into()]
    }
    pub fn metrics_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn prometheus_listen() -> String {
        "127.0.0.1:9464".into()
    }
    pub fn statsd_prefix() -> String {
        "berth".into()
    }
    pub fn cgroup_root() -> PathBuf {
        "/sys/fs/cgroup".into()
    }
    pub fn proc_root() -> PathBuf {
        "/proc".into()
    }
    pub fn pressure_sustained() -> Duration {
        Duration::from_secs(30)
    }
    pub fn pressure_cooldown() -> Duration {
        Duration::from_secs(60)
    }
    pub fn kernel_log() -> PathBuf {
        "/dev/kmsg".into()
    }
    pub fn max_connections() -> u32 {
        512
    }
    pub fn max_connections_per_address() -> u32 {
        64
    }
    pub fn max_handshakes() -> u32 {
        64
    }
    pub fn max_handshakes_per_address() -> u32 {
        16
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn max_concurrent_streams() -> u32 {
        128
    }
    pub fn keepalive() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connection_age() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn max_connection_age_grace() -> Duration {
        Duration::from_secs(600)
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Text
    }
    pub fn log_level() -> String {
        "info".into()
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca: defaults::tls_ca(),
            cert: defaults::tls_cert(),
            key: defaults::tls_key(),
            crl: None,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_file_size: defaults::audit_max_file_size(),
            keep_files: defaults::audit_keep_files(),
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: defaults::docker_socket(),
            timeout: defaults::docker_timeout(),
            instance: defaults::docker_instance(),
            log_max_size: defaults::docker_log_max_size(),
            log_max_file: defaults::docker_log_max_file(),
            network_holders: defaults::docker_network_holders(),
        }
    }
}

impl Default for NginxConfig {
    fn default() -> Self {
        Self {
            sites_dir: defaults::nginx_sites_dir(),
            test_command: defaults::nginx_test(),
            reload_command: defaults::nginx_reload(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            interval: defaults::metrics_interval(),
            prometheus_listen: defaults::prometheus_listen(),
            statsd: String::new(),
            statsd_flavor: StatsdFlavor::default(),
            statsd_prefix: defaults::statsd_prefix(),
            cgroup_root: defaults::cgroup_root(),
            proc_root: defaults::proc_root(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_pressure_threshold: String::new(),
            pressure_action: PressureAction::default(),
            pressure_sustained: defaults::pressure_sustained(),
            pressure_cooldown: defaults::pressure_cooldown(),
            kernel_log: defaults::kernel_log(),
        }
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max: defaults::max_connections(),
            max_per_address: defaults::max_connections_per_address(),
            max_handshakes: defaults::max_handshakes(),
            max_handshakes_per_address: defaults::max_handshakes_per_address(),
            handshake_timeout: defaults::handshake_timeout(),
            max_concurrent_streams: defaults::max_concurrent_streams(),
            keepalive: defaults::keepalive(),
            max_connection_age: defaults::max_connection_age(),
            max_connection_age_grace: defaults::max_connection_age_grace(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: defaults::log_format(),
            level: defaults::log_level(),
        }
    }
}

//! The spec's types as users write them in TOML, with their defaults and the
//! accessors that derive settings from several keys (strategy, ports).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use super::defaults;
use super::{
    Health, HealthCheck, ImageRef, Logging, PortMapping, Probe, Protocol, ServiceName, StopSignal, Ulimit, VolumeMount,
};
use crate::units::{ByteSize, Cpus, Duration};

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
    /// Layered env files, such as `["common.env", "worker.env"]`: file names
    /// in the agent's env dir, read in order, a later file overriding an
    /// earlier one. Several services may share a file; an edit of it rolls
    /// each of them, one after the other. Not together with `env_file`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_files: Vec<String>,
    /// Inline, non-secret env values, such as `LAUNCH_ENVIRONMENT = "prod"`.
    /// The env files override them. Secrets belong in env files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Mounts, as `docker run -v` takes them: `"/data/piper:/data"` binds
    /// an absolute host path (a missing host directory is created, mode
    /// 0750), `"cache:/cache"` mounts the named volume `cache` (created and
    /// labelled by berth, kept across deploys and rollbacks, removed only by
    /// `berthctl rm --volumes`); `:ro` mounts read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
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
    /// `[logging]`: the log driver and rotation. Default: json-file, rotated
    /// by the agent's `[docker] log_max_size` and `log_max_file`.
    #[serde(default, skip_serializing_if = "Logging::is_empty")]
    pub logging: Logging,
    /// The user the command runs as: `USER`, `UID`, `USER:GROUP` or
    /// `UID:GID` (`docker run --user`). Unset: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The working directory, an absolute path (`--workdir`). Unset: the
    /// image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The container's host name (`--hostname`). Unset: Docker's (the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Extra `/etc/hosts` entries, `NAME:ADDRESS` (`--add-host`), such as
    /// `"db.internal:10.0.0.5"` or `"host.docker.internal:host-gateway"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// The network: `"bridge"` (Docker's default), `"host"`, `"none"`, or a
    /// name of a network berth creates (labelled) if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `[ulimits]`: `nofile = 65536` or `nofile = "1024:65536"` (soft:hard).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Mount the container's root filesystem read-only (`--read-only`);
    /// give it writable `tmpfs` paths. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// tmpfs mounts, `"/tmp"` or `"/run:size=64m,mode=1777"` (`--tmpfs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// Capabilities to add (`--cap-add`), like `"NET_ADMIN"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`--cap-drop`), like `"ALL"` or `"NET_RAW"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Run an init process as PID 1 that reaps zombies and forwards
    /// signals (`--init`). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Size of `/dev/shm`, like `"256m"` (`--shm-size`). Unset: Docker's 64m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// How to tell that the container works: the ready check (`[health]`
    /// itself), and optionally `[health.live]`, `[health.deps]` and
    /// `[health.version]`. Without it, the image's own HEALTHCHECK is used
    /// when it has one, else running counts as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
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
    /// A soft memory limit the kernel reclaims toward under pressure, like
    /// `"256m"` (`--memory-reservation`); at most `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<ByteSize>,
    /// Memory plus swap, like `"1g"` (`--memory-swap`); needs `memory` and
    /// is at least it. Unset: equal to `memory`, so no swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<ByteSize>,
    /// The most processes and threads the container may run (`--pids-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
}

impl Resources {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
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

impl ServiceSpec {
    /// How deploys replace the container: `deploy.strategy`, or by default
    /// blue-green when there is a `[proxy]` and recreate otherwise.
    pub fn strategy(&self) -> Strategy {
        match (self.deploy.strategy, &self.proxy) {
            (Some(strategy), _) => strategy,
            (None, Some(_)) => Strategy::BlueGreen,
            (None, None) => Strategy::Recreate,
        }
    }

    /// The container port the ready check connects to; see
    /// [`ServiceSpec::port_for`]. `None` when there is no check.
    pub fn health_port(&self) -> Option<u16> {
        self.port_for(&self.health.as_ref()?.ready)
    }

    /// The container port `check` connects to: its `port` or the first TCP
    /// container port for http, the `tcp` port for tcp, and `None` for exec.
    /// Never `None` for http or tcp on a validated spec.
    pub fn port_for(&self, check: &HealthCheck) -> Option<u16> {
        match &check.probe {
            Probe::Http { port, .. } => port.or_else(|| self.first_container_port()),
            Probe::Tcp { port } => Some(*port),
            Probe::Exec { .. } => None,
        }
    }

    /// The container port `[health.version]` reads from: its `port` or the
    /// first TCP container port. `None` without a version check.
    pub fn version_port(&self) -> Option<u16> {
        let version = self.health.as_ref()?.version.as_ref()?;
        version.port.or_else(|| self.first_container_port())
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

    /// True when the env is layered: `env_files` or inline `[env]` values.
    /// The agent then builds the env from the spec and the files, never
    /// writes those files, and `berthctl env set` does not apply.
    pub fn layered_env(&self) -> bool {
        !self.env_files.is_empty() || !self.env.is_empty()
    }

    /// The env files a service reads, in order (later ones override
    /// earlier ones): `env_files`, or the one of [`Self::env_file_name`].
    pub fn env_file_names(&self) -> Vec<String> {
        if self.env_files.is_empty() {
            vec![self.env_file_name()]
        } else {
            self.env_files.clone()
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
}

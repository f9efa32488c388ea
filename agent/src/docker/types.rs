//! The plain types the rest of the agent sees instead of bollard's models:
//! what to create, what a container looks like, pull progress, log lines
//! and events. Data only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Facts about the engine, as `GetInfo` reports them.
#[derive(Debug, Clone)]
pub struct EngineVersion {
    /// Engine version, e.g. "20.10.24+dfsg1".
    pub version: String,
    /// The API version the agent speaks to it after negotiation.
    pub api_version: String,
}

/// What [`super::Engine::create`] makes: one container of one service revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    /// Container name (unique on the host).
    pub name: String,
    /// Image reference; it must already be present (see [`super::Engine::pull`]).
    pub image: String,
    /// Command (Docker's `Cmd`); empty keeps the image's default.
    pub command: Vec<String>,
    /// Entrypoint; `None` keeps the image's, `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Environment, each `KEY=VALUE`.
    pub env: Vec<String>,
    /// Ports to expose and publish.
    pub ports: Vec<PortBinding>,
    /// Memory limit in bytes, also used as the memory+swap limit so the
    /// container gets no swap beyond it; `None` = unlimited.
    pub memory_bytes: Option<u64>,
    /// CPU limit in billionths of a CPU (`0.5` CPU = 500_000_000); `None` =
    /// unlimited.
    pub nano_cpus: Option<i64>,
    /// All labels, including [`berth_core::labels::MANAGED`], [`berth_core::labels::SERVICE`] and
    /// [`berth_core::labels::REVISION`]: the caller supplies them.
    pub labels: HashMap<String, String>,
    /// Signal `docker stop` sends first, e.g. "SIGTERM"; empty keeps the
    /// image's (or Docker's SIGTERM).
    pub stop_signal: String,
    /// How long `docker stop` waits before SIGKILL; rounded up to whole
    /// seconds, Docker's unit.
    pub stop_timeout: Duration,
    /// Mounts as Docker's `Binds` writes them: `SOURCE:TARGET[:ro]`, the
    /// source a host path or a volume name. Named volumes must exist
    /// already (see [`super::Engine::ensure_volume`]), so they carry berth's
    /// labels.
    pub binds: Vec<String>,
    /// The log driver and its options (`max-size`, `max-file` for
    /// json-file).
    pub log_driver: String,
    /// Options of `log_driver`.
    pub log_options: HashMap<String, String>,
    /// Run-time flags beyond limits.
    pub flags: RunFlags,
}

/// The `docker run` flags a spec sets beyond image, command and limits.
/// `None` and empty keep Docker's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// `--user`.
    pub user: Option<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--add-host`, each `NAME:ADDRESS`.
    pub extra_hosts: Vec<String>,
    /// `--network`: bridge, host, none or a network name (which must exist,
    /// see [`super::Engine::ensure_network`]).
    pub network: Option<String>,
    /// `--ulimit`: name, soft, hard.
    pub ulimits: Vec<(String, i64, i64)>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--tmpfs`: container path to mount options ("" for none).
    pub tmpfs: HashMap<String, String>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--init`.
    pub init: bool,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// The soft limits Docker can change in place (see
    /// [`super::Engine::update_limits`]).
    pub soft: SoftLimits,
}

/// Limits beyond memory and CPUs that `docker update` changes in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftLimits {
    /// `--memory-reservation` in bytes.
    pub memory_reservation: Option<u64>,
    /// `--memory-swap` in bytes (memory plus swap); `None` = the memory
    /// limit, so no swap.
    pub memory_swap: Option<u64>,
    /// `--pids-limit`.
    pub pids_limit: Option<u32>,
}

/// One published port of a [`CreateRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// The port inside the container.
    pub container_port: u16,
    /// "tcp" or "udp" ("sctp" also works); empty means "tcp".
    pub protocol: String,
    /// Host address to bind; `None` = all addresses.
    pub host_ip: Option<String>,
    /// Host port; `None` lets Docker pick a free one.
    pub host_port: Option<u16>,
}

/// A port Docker actually bound on the host for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// The port inside the container.
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// The host address bound ("0.0.0.0", "::" or a specific one).
    pub host_ip: String,
    /// The host port bound.
    pub host_port: u16,
}

/// A container as `docker inspect` shows it, reduced to what berth uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name, without Docker's leading '/'.
    pub name: String,
    /// The image reference the container was created from (`Config.Image`),
    /// e.g. `127.0.0.1:5000/berth-test/app:v1`.
    pub image: String,
    /// All labels.
    pub labels: HashMap<String, String>,
    /// The [`berth_core::labels::SERVICE`] label.
    pub service: Option<String>,
    /// The [`berth_core::labels::REVISION`] label, when it is a number.
    pub revision: Option<u64>,
    /// The [`berth_core::labels::HOLDER`] label: this container is the
    /// network holder of that service, not one of its containers.
    pub holder_of: Option<String>,
    /// The network holder this container joined (`network_mode
    /// container:ID`), and how it is. While both run, `ip`, `mac` and
    /// `host_ports` are the holder's: the address the container answers on.
    pub joined: Option<Joined>,
    /// Docker's state: created, running, restarting, exited, paused, dead
    /// (or removing).
    pub state: String,
    /// Whether the container is running (a paused container is too).
    pub running: bool,
    /// Exit code of the last run; `None` before the first one ended.
    pub exit_code: Option<i64>,
    /// Whether the kernel OOM-killed the last run.
    pub oom_killed: bool,
    /// Start of the last run, in ms since the Unix epoch.
    pub started_at_ms: Option<i64>,
    /// End of the last run, in ms since the Unix epoch.
    pub finished_at_ms: Option<i64>,
    /// The container's address: the first network's (by name), else
    /// `NetworkSettings.IPAddress`. `None` when not running.
    pub ip: Option<IpAddr>,
    /// The MAC address of the network `ip` is on.
    pub mac: Option<[u8; 6]>,
    /// Host ports actually bound (empty when not running).
    pub host_ports: Vec<PublishedPort>,
    /// `HostConfig.Memory` in bytes; 0 = unlimited.
    pub memory_bytes: i64,
    /// `HostConfig.MemorySwap` in bytes (memory + swap); 0 = Docker's default,
    /// -1 = unlimited swap.
    pub memory_swap_bytes: i64,
    /// `HostConfig.NanoCpus`; 0 = unlimited.
    pub nano_cpus: i64,
    /// The limits of [`SoftLimits`] as Docker reports them (0 = none).
    pub memory_reservation_bytes: i64,
    /// The process limit (0 or -1 = none).
    pub pids_limit: i64,
    /// `HostConfig.Binds`, as [`CreateRequest::binds`] wrote them, sorted.
    pub binds: Vec<String>,
    /// How often Docker itself restarted it (always 0 for berth's containers,
    /// whose restart policy is "no").
    pub restart_count: i64,
    /// The image's own HEALTHCHECK as Docker runs it (`State.Health`):
    /// `None` when the image defines none.
    pub docker_health: Option<DockerHealth>,
}

/// The network holder a container joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The holder's full id (Docker resolves the name at create).
    pub holder: String,
    /// Whether the holder runs, is stopped, or is gone.
    pub state: HolderState,
}

/// How a joined container's network holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderState {
    /// It runs: the container has its network.
    Running,
    /// It runs, but started after the container did (someone restarted
    /// it): the container is still in the namespace of the holder's
    /// previous run, which has no network any more.
    Restarted,
    /// It exists but is stopped: starting it first gives the container its
    /// network back.
    Stopped,
    /// It no longer exists (or is not one of this instance's holders): the
    /// container can never start again, since Docker resolved its network
    /// to that holder's id when it was created.
    Gone,
}

impl ContainerInfo {
    /// Takes the network facts of `holder` (the one [`Self::joined`]
    /// names, or `None` when it is not found): its state, and while both
    /// run its address and published ports.
    pub fn join(&mut self, holder: Option<&ContainerInfo>) {
        let Some(joined) = self.joined.as_mut() else { return };
        let holder = holder.filter(|h| h.id == joined.holder && h.holder_of.is_some());
        joined.state = match holder {
            None => HolderState::Gone,
            Some(h) if h.running && self.running && h.started_at_ms > self.started_at_ms => HolderState::Restarted,
            Some(h) if h.running => HolderState::Running,
            Some(_) => HolderState::Stopped,
        };
        if let Some(h) = holder.filter(|h| h.running && self.running && joined.state == HolderState::Running) {
            self.ip = h.ip;
            self.mac = h.mac;
            self.host_ports = h.host_ports.clone();
        }
    }

    /// Whether this container joined a holder that is not running.
    pub fn network_lost(&self) -> bool {
        self.joined.as_ref().is_some_and(|j| j.state != HolderState::Running)
    }
}

/// Docker's verdict of an image's HEALTHCHECK on one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerHealth {
    /// "starting", "healthy" or "unhealthy".
    pub status: String,
    /// What the last check printed, trimmed.
    pub output: String,
}

/// One progress message of [`super::Engine::pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer (short id) the message is about; empty or the tag for
    /// messages about the whole image.
    pub layer: String,
    /// Docker's status, e.g. "Downloading", "Pull complete", "Digest: ...".
    pub status: String,
    /// Bytes done, when the status has a progress bar; else 0.
    pub current: u64,
    /// Bytes in all, when known; else 0.
    pub total: u64,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// "stdout" or "stderr".
    pub stream: String,
    /// The line, without its line break.
    pub line: String,
}

/// Something that happened to a berth container, from Docker's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// Docker's action: "start", "die", "oom", "destroy", "stop", "kill",
    /// "update", "create", "restart", "pause", "unpause", "rename", or
    /// "health_status: healthy" / "health_status: unhealthy" (Docker appends
    /// the status).
    pub action: String,
    /// Full container id.
    pub container_id: String,
    /// The container's [`berth_core::labels::SERVICE`] label.
    pub service: Option<String>,
    /// The container's [`berth_core::labels::REVISION`] label.
    pub revision: Option<u64>,
    /// The exit code, on "die".
    pub exit_code: Option<i64>,
    /// When it happened, in ms since the Unix epoch.
    pub time_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str, started_at_ms: i64) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            running: true,
            started_at_ms: Some(started_at_ms),
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn a_joined_container_shows_its_running_holders_address_and_ports() {
        let mut holder = running("h", 1_000);
        holder.holder_of = Some("web".into());
        holder.ip = Some("172.17.0.9".parse().expect("an address"));
        holder.host_ports = vec![PublishedPort {
            container_port: 8000,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: 49_000,
        }];
        let mut app = running("a", 2_000);
        app.joined = Some(Joined {
            holder: "h".into(),
            state: HolderState::Gone,
        });
        let mut joined = app.clone();
        joined.join(Some(&holder));
        assert_eq!(joined.joined.as_ref().map(|j| j.state), Some(HolderState::Running));
        assert_eq!((joined.ip, joined.host_ports.len()), (holder.ip, 1));
        assert!(!joined.network_lost());

        // Restarted under the container: its namespace is the old one.
        let mut restarted = holder.clone();
        restarted.started_at_ms = Some(3_000);
        let mut lost = app.clone();
        lost.join(Some(&restarted));
        assert_eq!(lost.joined.as_ref().map(|j| j.state), Some(HolderState::Restarted));
        assert!(lost.network_lost() && lost.ip.is_none());

        let mut stopped = holder.clone();
        stopped.running = false;
        let mut lost = app.clone();
        lost.join(Some(&stopped));
        assert_eq!(lost.joined.as_ref().map(|j| j.state), Some(HolderState::Stopped));

        // Not found, or not a holder: gone.
        let mut not_holder = holder.clone();
        not_holder.holder_of = None;
        for found in [None, Some(&not_holder)] {
            let mut gone = app.clone();
            gone.join(found);
            assert_eq!(gone.joined.as_ref().map(|j| j.state), Some(HolderState::Gone));
        }
    }
}

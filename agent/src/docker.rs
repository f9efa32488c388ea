//! The agent's connection to the Docker Engine API.
//!
//! Owns everything berth says to dockerd. [`connect`] opens a client on the
//! configured unix socket and negotiates the API version: the engine on a host
//! may be older than bollard's default (Docker 20.10 speaks API 1.41), so the
//! client version is lowered to the engine's on first contact and again after
//! every reconnect. [`Engine`] wraps that client for the rest of the agent:
//! pulling images (with per-registry credentials), creating, starting,
//! stopping, updating and removing the containers berth manages, reading their
//! logs, running commands in them and watching their events.
//!
//! Inputs are the [`DockerConfig`] and the registry credentials; outputs are
//! plain types ([`ContainerInfo`], [`EngineEvent`], [`LogLine`], ...) so no
//! other module needs bollard's models. Containers are berth's when they carry
//! [`labels::MANAGED`]`=true`; this module never touches anything else unless
//! handed its id. It keeps no state besides the client: every call asks
//! Docker afresh, and there is nothing to shut down. Streams ([`Engine::logs`],
//! [`Engine::events`]) end when dropped, or end or fail when dockerd goes away,
//! and the caller reconnects.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::image::{DOCKER_HUB, ImageRef};
use berth_core::labels;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerUpdateBody, EventMessage, ExecConfig, HostConfig,
    HostConfigLogConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::config::DockerConfig;

/// Most bytes of output [`Engine::exec`] keeps; health checks and error
/// reports need the start of the output, not megabytes of it.
const EXEC_OUTPUT_LIMIT: usize = 4096;

/// How many containers [`Engine::list_managed`] inspects at once: enough to
/// hide round trips, few enough not to flood a busy dockerd.
const INSPECT_CONCURRENCY: usize = 8;

/// Docker event actions [`Engine::events`] asks for. Everything else a
/// container emits (`exec_create`/`exec_start`/`exec_die` from every exec
/// health check, `attach`, `resize`, `top`, `copy`, ...) would only wake the
/// reconciler for nothing.
const EVENT_ACTIONS: [&str; 13] = [
    "create",
    "start",
    "restart",
    "die",
    "oom",
    "kill",
    "stop",
    "destroy",
    "pause",
    "unpause",
    "update",
    "rename",
    "health_status",
];

/// Docker could not be reached or answered with an error.
///
/// Every variant names the container or image involved; the text is meant
/// for a person and says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket is missing or refused the connection.
    #[error("cannot reach the Docker Engine at {socket}: {source}")]
    Connect {
        /// The configured socket.
        socket: PathBuf,
        /// bollard's error.
        source: bollard::errors::Error,
    },
    /// The engine did not answer in time.
    #[error("the Docker Engine at {socket} did not answer within {seconds}s")]
    Timeout {
        /// The configured socket.
        socket: PathBuf,
        /// How long we waited.
        seconds: u64,
    },
    /// The engine went away or stopped answering during a call (dockerd
    /// restarting, the socket gone): reconnect and try again.
    #[error("cannot {action}: the Docker Engine at {socket} is unreachable: {message}")]
    Unreachable {
        /// The configured socket.
        socket: PathBuf,
        /// What we were doing, e.g. "start container web-3".
        action: String,
        /// The transport's error.
        message: String,
    },
    /// The engine refused a request; the message is Docker's.
    #[error("cannot {action}: {message}")]
    Api {
        /// What we were doing, e.g. "start container web-3".
        action: String,
        /// The HTTP status Docker answered with, when it answered at all.
        status: Option<u16>,
        /// Docker's explanation.
        message: String,
    },
    /// The container does not exist (any more).
    #[error("no such container: {container}")]
    NoSuchContainer {
        /// The name or id asked for.
        container: String,
    },
    /// A container with the requested name already exists.
    #[error(
        "cannot create container {container}: the name is already in use; remove or rename the \
         other container first ({message})"
    )]
    Conflict {
        /// The requested container name.
        container: String,
        /// Docker's explanation, naming the container that holds the name.
        message: String,
    },
    /// The image to create a container from is not on this host.
    #[error("cannot create container {container}: image {image} is not present on this host; pull it first")]
    ImageMissing {
        /// The container that was to be created.
        container: String,
        /// The image reference.
        image: String,
    },
    /// Pulling an image failed (unknown tag, registry down, bad credentials).
    #[error("cannot pull {image}: {message}")]
    Pull {
        /// The image reference as given.
        image: String,
        /// The registry's or Docker's explanation.
        message: String,
    },
    /// `docker update` can set or change a limit but never remove one (it
    /// reads 0 as "unchanged"), so lifting it needs a new container.
    #[error(
        "cannot lift the {limit} limit of container {container} in place (docker update can only \
         change a limit); recreate the container to run it without one"
    )]
    LimitNotRemovable {
        /// The container's name or id.
        container: String,
        /// "memory" or "CPU".
        limit: &'static str,
    },
    /// An exec'd command did not finish in time. Docker cannot kill an exec'd
    /// process, so it may still be running in the container.
    #[error("command {command:?} in container {container} did not finish within {seconds:.1}s")]
    ExecTimeout {
        /// The container's name or id.
        container: String,
        /// The command, joined with spaces.
        command: String,
        /// The timeout.
        seconds: f64,
    },
    /// The request cannot be expressed to Docker (a value out of range, an
    /// unknown protocol).
    #[error("invalid request for container {container}: {message}")]
    Invalid {
        /// The container's name.
        container: String,
        /// What is wrong.
        message: String,
    },
}

impl DockerError {
    /// True when the engine could not be reached at all, so the caller should
    /// reconnect (with backoff) rather than treat the call as refused.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Unreachable { .. }
        )
    }
}

/// Facts about the engine, as `GetInfo` reports them.
#[derive(Debug, Clone)]
pub struct EngineVersion {
    /// Engine version, e.g. "20.10.24+dfsg1".
    pub version: String,
    /// The API version the agent speaks to it after negotiation.
    pub api_version: String,
}

/// Opens a client on the configured socket and negotiates the API version.
pub async fn connect(config: &DockerConfig) -> Result<Docker, DockerError> {
    let socket = config.socket.clone();
    let timeout = config.timeout.as_std();
    let docker = Docker::connect_with_unix(
        &socket.to_string_lossy(),
        timeout.as_secs().max(1),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|source| DockerError::Connect {
        socket: socket.clone(),
        source,
    })?;
    // Negotiation is one small request; a short deadline keeps a wedged
    // engine from stalling the agent's start.
    let negotiate = Duration::from_secs(5);
    match tokio::time::timeout(negotiate, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(source)) => Err(DockerError::Connect { socket, source }),
        Err(_) => Err(DockerError::Timeout {
            socket,
            seconds: negotiate.as_secs(),
        }),
    }
}

/// Asks the engine for its version.
pub async fn engine_version(docker: &Docker, socket: &std::path::Path) -> Result<EngineVersion, DockerError> {
    let deadline = Duration::from_secs(5);
    let v = tokio::time::timeout(deadline, docker.version())
        .await
        .map_err(|_| DockerError::Timeout {
            socket: socket.to_owned(),
            seconds: deadline.as_secs(),
        })?
        .map_err(|source| DockerError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let client = docker.client_version();
    Ok(EngineVersion {
        version: v.version.unwrap_or_default(),
        api_version: format!("{}.{}", client.major_version, client.minor_version),
    })
}

/// Credentials for one registry, used for pulls from that registry only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry's `host[:port]` as it appears in image references, e.g.
    /// `registry.example.com` or `127.0.0.1:5000`; `docker.io` for Docker Hub.
    pub registry: String,
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What [`Engine::create`] makes: one container of one service revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Container name (unique on the host).
    pub name: String,
    /// Image reference; it must already be present (see [`Engine::pull`]).
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
    /// All labels, including [`labels::MANAGED`], [`labels::SERVICE`] and
    /// [`labels::REVISION`]: the caller supplies them.
    pub labels: HashMap<String, String>,
    /// Signal `docker stop` sends first, e.g. "SIGTERM"; empty keeps the
    /// image's (or Docker's SIGTERM).
    pub stop_signal: String,
    /// How long `docker stop` waits before SIGKILL; rounded up to whole
    /// seconds, Docker's unit.
    pub stop_timeout: Duration,
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
    /// The [`labels::SERVICE`] label.
    pub service: Option<String>,
    /// The [`labels::REVISION`] label, when it is a number.
    pub revision: Option<u64>,
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
    /// Host ports actually bound (empty when not running).
    pub host_ports: Vec<PublishedPort>,
    /// `HostConfig.Memory` in bytes; 0 = unlimited.
    pub memory_bytes: i64,
    /// `HostConfig.MemorySwap` in bytes (memory + swap); 0 = Docker's default,
    /// -1 = unlimited swap.
    pub memory_swap_bytes: i64,
    /// `HostConfig.NanoCpus`; 0 = unlimited.
    pub nano_cpus: i64,
    /// How often Docker itself restarted it (always 0 for berth's containers,
    /// whose restart policy is "no").
    pub restart_count: i64,
}

/// One progress message of [`Engine::pull`].
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
    /// The container's [`labels::SERVICE`] label.
    pub service: Option<String>,
    /// The container's [`labels::REVISION`] label.
    pub revision: Option<u64>,
    /// The exit code, on "die".
    pub exit_code: Option<i64>,
    /// When it happened, in ms since the Unix epoch.
    pub time_ms: i64,
}

/// A connected Docker Engine plus the registry credentials to pull with.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    socket: PathBuf,
    /// The configured per-call timeout, also the longest a pull may go
    /// without any word from the registry.
    timeout: Duration,
    registries: Arc<[RegistryAuth]>,
    instance: String,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .field("registries", &self.registries)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Connects to the configured socket (see [`connect`]) and keeps
    /// `registries` for pulls.
    pub async fn connect(config: &DockerConfig, registries: Vec<RegistryAuth>) -> Result<Engine, DockerError> {
        let docker = connect(config).await?;
        Ok(Engine {
            docker,
            socket: config.socket.clone(),
            timeout: config.timeout.as_std().max(Duration::from_secs(1)),
            registries: registries.into(),
            instance: config.instance.clone(),
        })
    }

    /// The agent instance whose containers this engine lists and watches.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Label filters selecting this instance's containers.
    fn owned_filter(&self) -> Vec<String> {
        vec![
            format!("{}=true", labels::MANAGED),
            format!("{}={}", labels::INSTANCE, self.instance),
        ]
    }

    /// The underlying bollard client, for calls this module does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The socket this engine was reached on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every container labelled `berth.managed=true`, in any state, each
    /// inspected (so limits, ports and exit codes are known). A container
    /// removed between listing and inspecting is left out.
    pub async fn list_managed(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let filters = HashMap::from([("label".to_owned(), self.owned_filter())]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.fail("list berth's containers".to_owned(), e))?;
        let infos: Vec<Option<ContainerInfo>> = futures::stream::iter(summaries)
            .filter_map(|s| futures::future::ready(s.id))
            .map(|id| async move { self.inspect(&id).await })
            .buffered(INSPECT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(infos.into_iter().flatten().collect())
    }

    /// Inspects one container; `Ok(None)` when it does not exist.
    pub async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, DockerError> {
        match self
            .docker
            .inspect_container(id_or_name, None::<InspectContainerOptions>)
            .await
        {
            Ok(response) => Ok(Some(container_info(response))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.fail(format!("inspect container {id_or_name}"), e)),
        }
    }

    /// Pulls `image`, with the credentials of its registry when there are
    /// some. A reference without tag or digest pulls `:latest` only, never
    /// every tag.
    ///
    /// Progress is best effort: a message that does not fit in `progress`
    /// is dropped, so a slow reader never stalls the pull. The pull fails
    /// when Docker sends nothing for the configured timeout.
    pub async fn pull(
        &self,
        image_ref: &ImageRef,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<(), DockerError> {
        let image = image_ref.as_str();
        let (name, tag) = image_ref.pull_target();
        let options = CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let credentials = credentials_for(&self.registries, image_ref.registry());
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        loop {
            let next = tokio::time::timeout(self.timeout, stream.next())
                .await
                .map_err(|_| DockerError::Pull {
                    image: image.to_owned(),
                    message: format!(
                        "no progress from Docker or the registry for {}s",
                        self.timeout.as_secs()
                    ),
                })?;
            let info = match next {
                None => return Ok(()),
                Some(Ok(info)) => info,
                Some(Err(e)) => return Err(self.pull_error(image, e)),
            };
            if let Some(tx) = &progress {
                let detail = info.progress_detail.unwrap_or_default();
                let message = PullProgress {
                    layer: info.id.unwrap_or_default(),
                    status: info.status.unwrap_or_default(),
                    current: non_negative(detail.current),
                    total: non_negative(detail.total),
                };
                // Full or closed: progress is best effort (see above).
                let _ = tx.try_send(message);
            }
        }
    }

    /// Whether `image` is present on this host.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.fail(format!("inspect image {image}"), e)),
        }
    }

    /// Creates (does not start) a container and returns its id.
    ///
    /// Docker's restart policy is "no" (the agent owns restarts and their
    /// backoff); logs go to json-file capped at 3 files of 10 MB, so a chatty
    /// service cannot fill the disk; no init process, not privileged, no TTY.
    pub async fn create(&self, req: &CreateRequest) -> Result<String, DockerError> {
        let body = create_body(req)?;
        let options = CreateContainerOptions {
            name: Some(req.name.clone()),
            ..Default::default()
        };
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(container = %req.name, %warning, "Docker warned on create.");
                }
                Ok(created.id)
            }
            Err(e) => Err(match server_error(&e) {
                Some((409, message)) => DockerError::Conflict {
                    container: req.name.clone(),
                    message: message.to_owned(),
                },
                Some((404, message)) if message.contains("image") => DockerError::ImageMissing {
                    container: req.name.clone(),
                    image: req.image.clone(),
                },
                _ => self.fail(format!("create container {}", req.name), e),
            }),
        }
    }

    /// Starts a created or stopped container; already running = Ok.
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| self.container_error(id, format!("start container {id}"), e))
    }

    /// Sends the container's stop signal, waits `timeout`, then SIGKILL
    /// (Docker's stop). Already stopped, or gone, = Ok.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(whole_seconds_up(timeout)).unwrap_or(i32::MAX)),
            signal: None,
        };
        // Docker answers only once the container is down, which can take the
        // whole grace period: give this one call that much longer.
        let docker = self.docker.clone().with_timeout(self.timeout + timeout);
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.fail(format!("stop container {id}"), e)),
        }
    }

    /// Force-removes a container (killing it if running) with its anonymous
    /// volumes; a missing container = Ok.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => match server_error(&e) {
                Some((404, _)) => Ok(()),
                // Someone else is already removing it: the outcome we want.
                Some((409, message)) if message.contains("already in progress") => Ok(()),
                _ => Err(self.fail(format!("remove container {id}"), e)),
            },
        }
    }

    /// `docker update`: sets the memory limit (and memory+swap to the same
    /// value, i.e. no swap beyond the limit) and `NanoCpus`.
    ///
    /// `None` means unlimited. Docker's update reads 0 as "leave unchanged"
    /// and cannot remove a limit, so `None` for a container that has a limit
    /// is [`DockerError::LimitNotRemovable`]: recreate it instead.
    pub async fn update_limits(
        &self,
        id: &str,
        memory_bytes: Option<u64>,
        nano_cpus: Option<i64>,
    ) -> Result<(), DockerError> {
        let current = self.inspect(id).await?.ok_or_else(|| DockerError::NoSuchContainer {
            container: id.to_owned(),
        })?;
        if memory_bytes.is_none() && current.memory_bytes > 0 {
            return Err(DockerError::LimitNotRemovable {
                container: id.to_owned(),
                limit: "memory",
            });
        }
        if nano_cpus.is_none() && current.nano_cpus > 0 {
            return Err(DockerError::LimitNotRemovable {
                container: id.to_owned(),
                limit: "CPU",
            });
        }
        let memory = memory_limit(id, memory_bytes)?.unwrap_or(0);
        let body = ContainerUpdateBody {
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(nano_cpus.unwrap_or(0)),
            ..Default::default()
        };
        self.docker
            .update_container(id, body)
            .await
            .map_err(|e| self.container_error(id, format!("update the limits of container {id}"), e))
    }

    /// The last `n` lines of stdout and stderr, for error reports. Best
    /// effort: when the logs cannot be read, what was read so far (often
    /// nothing) is returned and the reason logged at debug level.
    pub async fn log_tail(&self, id: &str, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        let tail = u32::try_from(n).unwrap_or(u32::MAX);
        let mut lines = Vec::new();
        let mut stream = std::pin::pin!(self.logs(id, false, tail));
        let read = tokio::time::timeout(self.timeout, async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(line) => lines.push(line.line),
                    Err(e) => {
                        tracing::debug!(container = %id, error = %e, "Cannot read logs.");
                        break;
                    }
                }
            }
        })
        .await;
        if read.is_err() {
            tracing::debug!(container = %id, "Reading logs timed out.");
        }
        // Docker may split one long line into several; `tail` counts entries.
        let skip = lines.len().saturating_sub(n);
        lines.split_off(skip)
    }

    /// Streams log lines (stdout and stderr, no timestamps), following new
    /// output if `follow`; `tail` = how many lines of the past to start with,
    /// 0 = all. Without `follow` the stream ends after the existing lines;
    /// with it, when the container stops.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: u32,
    ) -> impl Stream<Item = Result<LogLine, DockerError>> + Send + 'static + use<> {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: false,
            tail: if tail == 0 { "all".to_owned() } else { tail.to_string() },
            ..Default::default()
        };
        let errors = self.error_context();
        let id = id.to_owned();
        self.docker
            .logs(&id, Some(options))
            .map(move |item| match item {
                Ok(output) => log_lines(output).into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(errors.container(
                    &id,
                    format!("read the logs of container {id}"),
                    e,
                ))],
            })
            .flat_map(futures::stream::iter)
    }

    /// Runs `cmd` in the running container and returns its exit code and its
    /// combined stdout+stderr, cut to the first 4 KiB (lossy UTF-8).
    ///
    /// Fails with [`DockerError::ExecTimeout`] after `timeout`; Docker cannot
    /// kill an exec'd process, so it may linger in the container.
    pub async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<(i64, String), DockerError> {
        let action = || format!("run {:?} in container {id}", cmd.join(" "));
        let run = async {
            let config = ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                attach_stdin: Some(false),
                tty: Some(false),
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            };
            let created = self
                .docker
                .create_exec(id, config)
                .await
                .map_err(|e| self.container_error(id, action(), e))?;
            let options = StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            };
            let started = self
                .docker
                .start_exec(&created.id, Some(options))
                .await
                .map_err(|e| self.container_error(id, action(), e))?;
            let mut output = Vec::new();
            if let StartExecResults::Attached { output: mut stream, .. } = started {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.container_error(id, action(), e))?;
                    // Keep draining past the limit: the command's exit code
                    // is only final once its output is consumed.
                    let bytes = chunk.into_bytes();
                    let room = EXEC_OUTPUT_LIMIT.saturating_sub(output.len());
                    output.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            // The output can end a moment before dockerd records the exit
            // code; the outer timeout bounds this wait.
            loop {
                let inspected = self
                    .docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.container_error(id, action(), e))?;
                if inspected.running != Some(true)
                    && let Some(code) = inspected.exit_code
                {
                    return Ok((code, String::from_utf8_lossy(&output).into_owned()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| DockerError::ExecTimeout {
                container: id.to_owned(),
                command: cmd.join(" "),
                seconds: timeout.as_secs_f64(),
            })?
    }

    /// Docker events for containers labelled `berth.managed=true` (the
    /// actions listed on [`EngineEvent::action`]).
    ///
    /// The subscription starts when this is called, not when the stream is
    /// first polled: it asks Docker for events since one second before the
    /// call, which dockerd replays from its buffer. So "call `events()`,
    /// then list containers" misses nothing; an event from just before the
    /// call may arrive, which is harmless for triggers. The stream ends, or
    /// yields an error, when dockerd goes away; the caller reconnects.
    pub fn events(&self) -> impl Stream<Item = Result<EngineEvent, DockerError>> + Send + 'static + use<> {
        let since = SystemTime::now()
            .checked_sub(Duration::from_secs(1))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), self.owned_filter()),
            (
                "event".to_owned(),
                EVENT_ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
            ),
        ]);
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(filters),
        };
        let errors = self.error_context();
        self.docker.events(Some(options)).filter_map(move |item| {
            futures::future::ready(match item {
                Ok(message) => engine_event(message).map(Ok),
                Err(e) => Some(Err(errors.fail("watch Docker events".to_owned(), e))),
            })
        })
    }

    fn pull_error(&self, image: &str, e: BollardError) -> DockerError {
        match e {
            BollardError::DockerResponseServerError { message, .. }
            | BollardError::DockerStreamError { error: message } => DockerError::Pull {
                image: image.to_owned(),
                message,
            },
            e => self.fail(format!("pull {image}"), e),
        }
    }

    fn error_context(&self) -> ErrorContext {
        ErrorContext {
            socket: self.socket.clone(),
            timeout: self.timeout,
        }
    }

    fn fail(&self, action: String, e: BollardError) -> DockerError {
        self.error_context().fail(action, e)
    }

    fn container_error(&self, id: &str, action: String, e: BollardError) -> DockerError {
        self.error_context().container(id, action, e)
    }
}

/// What turning a bollard error into a [`DockerError`] needs, detached from
/// the [`Engine`] so `'static` streams can carry it.
#[derive(Debug, Clone)]
struct ErrorContext {
    socket: PathBuf,
    timeout: Duration,
}

impl ErrorContext {
    fn fail(&self, action: String, e: BollardError) -> DockerError {
        let message = match e {
            BollardError::DockerResponseServerError { status_code, message } => {
                return DockerError::Api {
                    action,
                    status: Some(status_code),
                    message,
                };
            }
            BollardError::DockerStreamError { error } => {
                return DockerError::Api {
                    action,
                    status: None,
                    message: error,
                };
            }
            BollardError::RequestTimeoutError => {
                format!("no answer within {}s", self.timeout.as_secs())
            }
            e @ (BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::SocketNotFoundError(_)) => e.to_string(),
            e => {
                return DockerError::Api {
                    action,
                    status: None,
                    message: e.to_string(),
                };
            }
        };
        DockerError::Unreachable {
            socket: self.socket.clone(),
            action,
            message,
        }
    }

    /// Like [`Self::fail`], with a 404 meaning the container is gone.
    fn container(&self, id: &str, action: String, e: BollardError) -> DockerError {
        if status_of(&e) == Some(404) {
            DockerError::NoSuchContainer {
                container: id.to_owned(),
            }
        } else {
            self.fail(action, e)
        }
    }
}

/// The HTTP status and message of an error Docker answered with.
fn server_error(e: &BollardError) -> Option<(u16, &str)> {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => Some((*status_code, message)),
        _ => None,
    }
}

fn status_of(e: &BollardError) -> Option<u16> {
    server_error(e).map(|(status, _)| status)
}

fn non_negative(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// `d` in whole seconds, rounded up (Docker's timeouts are whole seconds;
/// rounding down could turn a 500 ms grace period into none).
fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn memory_limit(container: &str, bytes: Option<u64>) -> Result<Option<i64>, DockerError> {
    bytes
        .map(|b| {
            i64::try_from(b).map_err(|_| DockerError::Invalid {
                container: container.to_owned(),
                message: format!("memory limit of {b} bytes is too large"),
            })
        })
        .transpose()
}

/// The body of `POST /containers/create` for `req`.
fn create_body(req: &CreateRequest) -> Result<ContainerCreateBody, DockerError> {
    let memory = memory_limit(&req.name, req.memory_bytes)?;
    let mut exposed_ports = HashMap::new();
    let mut port_bindings: HashMap<String, Option<Vec<bollard::models::PortBinding>>> = HashMap::new();
    for port in &req.ports {
        let protocol = match port.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            "sctp" => "sctp",
            other => {
                return Err(DockerError::Invalid {
                    container: req.name.clone(),
                    message: format!("port {}: protocol {other:?} is not tcp or udp", port.container_port),
                });
            }
        };
        let key = format!("{}/{protocol}", port.container_port);
        exposed_ports.insert(key.clone(), HashMap::new());
        port_bindings
            .entry(key)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(bollard::models::PortBinding {
                host_ip: Some(port.host_ip.clone().unwrap_or_default()),
                // "" lets Docker pick a free port.
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    let stop_timeout = i64::try_from(whole_seconds_up(req.stop_timeout)).map_err(|_| DockerError::Invalid {
        container: req.name.clone(),
        message: format!("stop timeout {:?} is too long", req.stop_timeout),
    })?;
    let log_options = HashMap::from([
        ("max-size".to_owned(), "10m".to_owned()),
        ("max-file".to_owned(), "3".to_owned()),
    ]);
    Ok(ContainerCreateBody {
        image: Some(req.image.clone()),
        cmd: (!req.command.is_empty()).then(|| req.command.clone()),
        entrypoint: req.entrypoint.clone(),
        env: Some(req.env.clone()),
        labels: Some(req.labels.clone()),
        exposed_ports: Some(exposed_ports),
        stop_signal: (!req.stop_signal.is_empty()).then(|| req.stop_signal.clone()),
        stop_timeout: Some(stop_timeout),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(HostConfig {
            memory,
            memory_swap: memory,
            nano_cpus: req.nano_cpus,
            port_bindings: Some(port_bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(log_options),
            }),
            init: Some(false),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Reduces `docker inspect` output to a [`ContainerInfo`].
fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let labels = r.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let host = r.host_config.unwrap_or_default();
    let network = r.network_settings.unwrap_or_default();
    let running = state.running.unwrap_or(false);

    let mut networks: Vec<_> = network.networks.unwrap_or_default().into_iter().collect();
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let ip = networks
        .into_iter()
        .filter_map(|(_, endpoint)| endpoint.ip_address)
        .chain(network.ip_address)
        .find_map(|ip| ip.parse().ok());

    let mut host_ports = Vec::new();
    for (key, bindings) in network.ports.unwrap_or_default() {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse() else {
            continue;
        };
        for binding in bindings.unwrap_or_default() {
            let Some(host_port) = binding.host_port.and_then(|p| p.parse().ok()) else {
                continue;
            };
            host_ports.push(PublishedPort {
                container_port,
                protocol: protocol.to_owned(),
                host_ip: binding.host_ip.unwrap_or_default(),
                host_port,
            });
        }
    }
    host_ports
        .sort_by(|a, b| (a.container_port, &a.protocol, &a.host_ip).cmp(&(b.container_port, &b.protocol, &b.host_ip)));

    // Docker reports exit code 0 for a container that never ran; a failed
    // start (exec format error, missing binary) has a non-zero one but no
    // finish time.
    let finished_at_ms = state.finished_at.as_deref().and_then(parse_time_ms);
    let exit_code = if running || (finished_at_ms.is_none() && state.exit_code == Some(0)) {
        None
    } else {
        state.exit_code
    };

    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r.name.map(|n| n.trim_start_matches('/').to_owned()).unwrap_or_default(),
        image: r.config.and_then(|c| c.image).or(r.image).unwrap_or_default(),
        service: labels.get(labels::SERVICE).cloned(),
        revision: labels.get(labels::REVISION).and_then(|v| v.parse().ok()),
        labels,
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at_ms: state.started_at.as_deref().and_then(parse_time_ms),
        finished_at_ms,
        ip,
        host_ports,
        memory_bytes: host.memory.unwrap_or(0),
        memory_swap_bytes: host.memory_swap.unwrap_or(0),
        nano_cpus: host.nano_cpus.unwrap_or(0),
        restart_count: r.restart_count.unwrap_or(0),
    }
}

/// Turns a Docker event into an [`EngineEvent`]; `None` for one without a
/// container id.
fn engine_event(message: EventMessage) -> Option<EngineEvent> {
    let actor = message.actor?;
    let container_id = actor.id.filter(|id| !id.is_empty())?;
    let attributes = actor.attributes.unwrap_or_default();
    let time_ms = match (message.time_nano, message.time) {
        (Some(nanos), _) if nanos > 0 => nanos / 1_000_000,
        (_, Some(secs)) => secs.saturating_mul(1000),
        _ => 0,
    };
    Some(EngineEvent {
        action: message.action.unwrap_or_default(),
        container_id,
        service: attributes.get(labels::SERVICE).cloned(),
        revision: attributes.get(labels::REVISION).and_then(|v| v.parse().ok()),
        exit_code: attributes.get("exitCode").and_then(|v| v.parse().ok()),
        time_ms,
    })
}

/// Splits one chunk of Docker's log stream into lines.
fn log_lines(output: LogOutput) -> Vec<LogLine> {
    let stream = match &output {
        LogOutput::StdErr { .. } => "stderr",
        LogOutput::StdIn { .. } => "stdin",
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => "stdout",
    };
    let bytes = output.into_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n')
        .map(|line| LogLine {
            stream: stream.to_owned(),
            line: line.strip_suffix('\r').unwrap_or(line).to_owned(),
        })
        .collect()
}

/// The credentials configured for `registry`, if any, as Docker's
/// `X-Registry-Auth` wants them.
fn credentials_for(registries: &[RegistryAuth], registry: &str) -> Option<DockerCredentials> {
    let wanted = normalize_registry(registry);
    let auth = registries.iter().find(|r| normalize_registry(&r.registry) == wanted)?;
    let serveraddress = if wanted == DOCKER_HUB {
        // What Docker Hub's auth expects, as `docker login` stores it.
        "https://index.docker.io/v1/".to_owned()
    } else {
        wanted
    };
    Some(DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.clone()),
        serveraddress: Some(serveraddress),
        ..Default::default()
    })
}

/// A registry name as configured or parsed, reduced to `host[:port]`, with
/// Docker Hub's aliases folded into "docker.io".
fn normalize_registry(registry: &str) -> String {
    let host = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

/// Parses Docker's RFC 3339 timestamps (`2024-05-01T12:34:56.123456789Z`,
/// or with a `+02:00` offset) into ms since the Unix epoch. Docker's zero
/// time (`0001-01-01T00:00:00Z`, "never") and anything unparsable are `None`.
fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if year <= 1 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms_digits = &fraction[..digits.min(3)];
        millis = ms_digits.parse::<i64>().ok()? * 10_i64.pow(3 - ms_digits.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // ------------------------------------------------------------------
    // Pure helpers.
    // ------------------------------------------------------------------

    #[test]
    fn registries_are_compared_by_host() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("Registry.Example.com"), "registry.example.com");
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("http://127.0.0.1:5000/"), "127.0.0.1:5000");
    }

    #[test]
    fn credentials_are_chosen_by_the_images_registry() {
        let registries = vec![
            RegistryAuth {
                registry: "registry.example.com".into(),
                username: "alice".into(),
                password: "secret-a".into(),
            },
            RegistryAuth {
                registry: "https://index.docker.io/v1/".into(),
                username: "hub".into(),
                password: "secret-h".into(),
            },
        ];
        let found = credentials_for(&registries, "registry.example.com").expect("credentials for registry.example.com");
        assert_eq!(found.username.as_deref(), Some("alice"));
        assert_eq!(found.serveraddress.as_deref(), Some("registry.example.com"));
        let hub = credentials_for(&registries, DOCKER_HUB).expect("credentials for Docker Hub");
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert_eq!(hub.serveraddress.as_deref(), Some("https://index.docker.io/v1/"));
        assert!(credentials_for(&registries, "127.0.0.1:5000").is_none());
    }

    #[test]
    fn registry_auth_debug_hides_the_password() {
        let auth = RegistryAuth {
            registry: "r.example.com".into(),
            username: "bob".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("bob") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn docker_timestamps_parse_to_millis() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time_ms("2024-05-01T12:34:56.123456789Z"), Some(1_714_566_896_123));
        assert_eq!(parse_time_ms("2024-05-01T14:34:56.5+02:00"), Some(1_714_566_896_500));
        assert_eq!(parse_time_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_time_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time_ms(""), None);
        assert_eq!(parse_time_ms("yesterday at noon"), None);
        assert_eq!(parse_time_ms("2024-05-01T12:34:56."), None);
    }

    #[test]
    fn stop_timeouts_round_up_to_seconds() {
        assert_eq!(whole_seconds_up(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
    }

    #[test]
    fn inspect_output_becomes_container_info() {
        let json = serde_json::json!({
            "Id": "abc123",
            "Name": "/web-3",
            "Image": "sha256:feed",
            "RestartCount": 0,
            "State": {
                "Status": "exited", "Running": false, "OOMKilled": true, "ExitCode": 137,
                "StartedAt": "2024-05-01T12:34:56.123456789Z",
                "FinishedAt": "2024-05-01T12:35:56Z"
            },
            "Config": {
                "Image": "127.0.0.1:5000/berth-test/app:v1",
                "Labels": {"berth.managed": "true", "berth.service": "web", "berth.revision": "3"}
            },
            "HostConfig": {"Memory": 67108864, "MemorySwap": 67108864, "NanoCpus": 500000000},
            "NetworkSettings": {
                "IPAddress": "",
                "Ports": {
                    "8000/tcp": [
                        {"HostIp": "0.0.0.0", "HostPort": "49153"},
                        {"HostIp": "::", "HostPort": "49153"}
                    ],
                    "9000/udp": null
                },
                "Networks": {"bridge": {"IPAddress": "172.17.0.2"}}
            }
        });
        let response: ContainerInspectResponse = serde_json::from_value(json).expect("sample inspect output parses");
        let info = container_info(response);
        assert_eq!(info.id, "abc123");
        assert_eq!(info.name, "web-3");
        assert_eq!(info.image, "127.0.0.1:5000/berth-test/app:v1");
        assert_eq!(info.service.as_deref(), Some("web"));
        assert_eq!(info.revision, Some(3));
        assert_eq!(info.state, "exited");
        assert!(!info.running && info.oom_killed);
        assert_eq!(info.exit_code, Some(137));
        assert_eq!(info.started_at_ms, Some(1_714_566_896_123));
        assert_eq!(info.finished_at_ms, Some(1_714_566_956_000));
        assert_eq!(info.ip, Some("172.17.0.2".parse().expect("an address")));
        assert_eq!(info.host_ports.len(), 2);
        assert_eq!(info.host_ports[0].host_port, 49153);
        assert_eq!(info.host_ports[0].protocol, "tcp");
        assert_eq!(info.memory_bytes, 67_108_864);
        assert_eq!(info.nano_cpus, 500_000_000);
    }

    #[test]
    fn a_container_that_never_ran_has_no_exit_code() {
        let json = serde_json::json!({
            "Id": "abc", "Name": "/x",
            "State": {"Status": "created", "Running": false, "ExitCode": 0,
                      "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}
        });
        let response: ContainerInspectResponse = serde_json::from_value(json).expect("sample inspect output parses");
        let info = container_info(response);
        assert_eq!(info.exit_code, None);
        assert_eq!(info.started_at_ms, None);
    }

    #[test]
    fn die_events_carry_exit_code_and_labels() {
        let json = serde_json::json!({
            "Type": "container", "Action": "die",
            "Actor": {"ID": "abc", "Attributes": {
                "exitCode": "3", "berth.service": "web", "berth.revision": "7", "name": "web-7"
            }},
            "time": 1_714_566_896, "timeNano": 1_714_566_896_123_456_789_i64
        });
        let message: EventMessage = serde_json::from_value(json).expect("sample event parses");
        let event = engine_event(message).expect("an event with an actor");
        assert_eq!(event.action, "die");
        assert_eq!(event.container_id, "abc");
        assert_eq!(event.service.as_deref(), Some("web"));
        assert_eq!(event.revision, Some(7));
        assert_eq!(event.exit_code, Some(3));
        assert_eq!(event.time_ms, 1_714_566_896_123);
    }

    #[test]
    fn create_body_sets_policy_limits_ports_and_log_caps() {
        let req = CreateRequest {
            name: "web-1".into(),
            image: "img:v1".into(),
            command: vec![],
            entrypoint: None,
            env: vec!["A=1".into()],
            ports: vec![
                PortBinding {
                    container_port: 8000,
                    protocol: "tcp".into(),
                    host_ip: None,
                    host_port: None,
                },
                PortBinding {
                    container_port: 8000,
                    protocol: "".into(),
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(8080),
                },
            ],
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            labels: HashMap::new(),
            stop_signal: "SIGTERM".into(),
            stop_timeout: Duration::from_millis(1500),
        };
        let body = create_body(&req).expect("a valid request");
        let json = serde_json::to_value(&body).expect("serializes");
        assert_eq!(json["Cmd"], serde_json::Value::Null);
        assert_eq!(json["StopTimeout"], 2);
        assert_eq!(json["StopSignal"], "SIGTERM");
        assert_eq!(json["ExposedPorts"], serde_json::json!({"8000/tcp": {}}));
        let host = &json["HostConfig"];
        assert_eq!(host["Memory"], 67_108_864);
        assert_eq!(host["MemorySwap"], 67_108_864);
        assert_eq!(host["NanoCpus"], 500_000_000);
        assert_eq!(host["RestartPolicy"]["Name"], "no");
        assert_eq!(host["Init"], false);
        assert_eq!(host["Privileged"], false);
        assert_eq!(host["LogConfig"]["Type"], "json-file");
        assert_eq!(host["LogConfig"]["Config"]["max-size"], "10m");
        assert_eq!(host["LogConfig"]["Config"]["max-file"], "3");
        assert_eq!(
            host["PortBindings"]["8000/tcp"],
            serde_json::json!([
                {"HostIp": "", "HostPort": ""},
                {"HostIp": "127.0.0.1", "HostPort": "8080"}
            ])
        );

        let bad = CreateRequest {
            ports: vec![PortBinding {
                container_port: 1,
                protocol: "icmp".into(),
                host_ip: None,
                host_port: None,
            }],
            ..req
        };
        let err = create_body(&bad).expect_err("icmp is no port protocol");
        assert!(err.to_string().contains("icmp"), "{err}");
    }

    #[test]
    fn log_chunks_split_into_lines() {
        let lines = log_lines(LogOutput::StdErr {
            message: "one\r\ntwo\n".into(),
        });
        assert_eq!(
            lines,
            vec![
                LogLine {
                    stream: "stderr".into(),
                    line: "one".into()
                },
                LogLine {
                    stream: "stderr".into(),
                    line: "two".into()
                },
            ]
        );
    }

    // ------------------------------------------------------------------
    // Against the real Docker Engine and the local registry. These never
    // skip: without Docker they fail, naming what is missing.
    // ------------------------------------------------------------------

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc;

    const SETUP_HINT: &str = "these tests need the Docker Engine on /var/run/docker.sock and the \
                              test registry; run `bash scripts/test-env.sh`";

    fn test_image(tag: &str) -> String {
        let registry = std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned());
        format!("{registry}/berth-test/app:{tag}")
    }

    /// This test process's instance: a running agent (quickstart, e2e tests)
    /// never sees these containers, and these tests never see its.
    fn test_instance() -> String {
        format!("dockertest-{}", std::process::id())
    }

    async fn engine() -> Engine {
        let config = DockerConfig {
            instance: test_instance(),
            ..DockerConfig::default()
        };
        match Engine::connect(&config, Vec::new()).await {
            Ok(engine) => engine,
            Err(e) => panic!("{e}; {SETUP_HINT}"),
        }
    }

    fn image_ref(image: &str) -> ImageRef {
        image.parse().expect("a valid test image reference")
    }

    async fn ensure_image(engine: &Engine, tag: &str) -> String {
        let image = test_image(tag);
        if let Err(e) = engine.pull(&image_ref(&image), None).await {
            panic!("{e}; {SETUP_HINT}");
        }
        image
    }

    /// Removes the test's containers when the test ends, pass or fail, with
    /// the docker CLI (blocking is fine in a drop at the end of a test).
    #[derive(Default)]
    struct Cleanup {
        names: Vec<String>,
    }

    impl Cleanup {
        /// A unique container name, removed on drop.
        fn name(&mut self) -> String {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("berth-dockertest-{}-{n}", std::process::id());
            self.names.push(name.clone());
            name
        }
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for name in &self.names {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v", name])
                    .output();
            }
        }
    }

    fn request(name: &str, image: &str, service: &str) -> CreateRequest {
        CreateRequest {
            name: name.to_owned(),
            image: image.to_owned(),
            command: vec![],
            entrypoint: None,
            env: vec![],
            ports: vec![],
            memory_bytes: None,
            nano_cpus: None,
            labels: HashMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::INSTANCE.to_owned(), test_instance()),
                (labels::SERVICE.to_owned(), service.to_owned()),
                (labels::REVISION.to_owned(), "1".to_owned()),
                ("berth.test".to_owned(), "true".to_owned()),
            ]),
            stop_signal: "SIGTERM".to_owned(),
            stop_timeout: Duration::from_secs(5),
        }
    }

    async fn inspect_existing(engine: &Engine, id: &str) -> ContainerInfo {
        engine
            .inspect(id)
            .await
            .expect("inspect works")
            .expect("the container exists")
    }

    #[tokio::test]
    async fn pull_reports_progress_and_names_unknown_tags() {
        let engine = engine().await;
        let image = test_image("v1");
        let (tx, mut rx) = mpsc::channel(1024);
        if let Err(e) = engine.pull(&image_ref(&image), Some(tx)).await {
            panic!("{e}; {SETUP_HINT}");
        }
        let mut messages = Vec::new();
        while let Some(message) = rx.recv().await {
            messages.push(message);
        }
        assert!(!messages.is_empty(), "no progress while pulling {image}");
        assert!(messages.iter().any(|m| !m.status.is_empty()), "{messages:?}");
        assert!(engine.image_exists(&image).await.expect("inspect image"));

        let missing = test_image("v9-does-not-exist");
        assert!(!engine.image_exists(&missing).await.expect("inspect image"));
        let err = engine
            .pull(&image_ref(&missing), None)
            .await
            .expect_err("the tag does not exist");
        assert!(matches!(err, DockerError::Pull { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot pull {missing}: ")), "{text}");
        assert!(
            text.contains("manifest unknown") || text.contains("not found"),
            "{text}"
        );

        // No tag means ":latest" only; the test registry has no such tag, so
        // the pull fails naming it (pulling every tag would have succeeded).
        let untagged = image.rsplit_once(':').map_or(image.as_str(), |(name, _)| name);
        let err = engine
            .pull(&image_ref(untagged), None)
            .await
            .expect_err("the test registry has no :latest");
        assert!(err.to_string().contains(":latest"), "{err}");
    }

    #[tokio::test]
    async fn runs_a_limited_container_end_to_end() {
        let engine = engine().await;
        let image = ensure_image(&engine, "v1").await;
        let mut cleanup = Cleanup::default();
        let name = cleanup.name();
        let mut req = request(&name, &image, "dockertest-web");
        req.memory_bytes = Some(64 * 1024 * 1024);
        req.nano_cpus = Some(500_000_000);
        req.ports = vec![PortBinding {
            container_port: 8000,
            protocol: "tcp".into(),
            host_ip: Some("127.0.0.1".into()),
            host_port: None,
        }];

        let id = engine.create(&req).await.expect("create");
        let created = inspect_existing(&engine, &id).await;
        assert_eq!(created.state, "created");
        assert_eq!(created.exit_code, None);

        engine.start(&id).await.expect("start");
        engine.start(&id).await.expect("starting a running container is Ok");
        let info = inspect_existing(&engine, &id).await;
        assert_eq!(info.id, id);
        assert_eq!(info.name, name);
        assert_eq!(info.image, image);
        assert_eq!(info.service.as_deref(), Some("dockertest-web"));
        assert_eq!(info.revision, Some(1));
        assert!(info.running, "{info:?}");
        assert_eq!(info.state, "running");
        assert_eq!(info.memory_bytes, 67_108_864);
        assert_eq!(info.memory_swap_bytes, 67_108_864);
        assert_eq!(info.nano_cpus, 500_000_000);
        assert!(info.ip.is_some(), "no IP: {info:?}");
        assert!(info.started_at_ms.is_some());
        let bound = info
            .host_ports
            .iter()
            .find(|p| p.container_port == 8000 && p.protocol == "tcp")
            .unwrap_or_else(|| panic!("port 8000 not published: {info:?}"));
        assert!(bound.host_port > 0);
        assert_eq!(bound.host_ip, "127.0.0.1");

        // The health endpoint answers, inside (exec) and through the port.
        let health = vec![
            "wget".to_owned(),
            "-q".to_owned(),
            "-O-".to_owned(),
            "http://127.0.0.1:8000/health".to_owned(),
        ];
        let mut last = None;
        for _ in 0..50 {
            let result = engine.exec(&id, &health, Duration::from_secs(5)).await.expect("exec");
            if result == (0, "ok".to_owned()) {
                last = Some(result);
                break;
            }
            last = Some(result);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last, Some((0, "ok".to_owned())));
        let failing = engine
            .exec(
                &id,
                &["sh".into(), "-c".into(), "echo oops >&2; exit 7".into()],
                Duration::from_secs(5),
            )
            .await
            .expect("exec");
        assert_eq!(failing, (7, "oops\n".to_owned()));
        let slow = engine
            .exec(&id, &["sleep".into(), "5".into()], Duration::from_millis(300))
            .await
            .expect_err("sleep outlasts the timeout");
        assert!(matches!(slow, DockerError::ExecTimeout { .. }), "{slow:?}");

        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", bound.host_port))
            .await
            .expect("published port accepts connections");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read response");
        assert!(
            response.starts_with("HTTP/1.") && response.contains(" 200 "),
            "{response}"
        );

        // Limits change in place; lifting one is refused with a reason.
        engine
            .update_limits(&id, Some(128 * 1024 * 1024), Some(1_000_000_000))
            .await
            .expect("update limits");
        let updated = inspect_existing(&engine, &id).await;
        assert_eq!(updated.memory_bytes, 134_217_728);
        assert_eq!(updated.memory_swap_bytes, 134_217_728);
        assert_eq!(updated.nano_cpus, 1_000_000_000);
        let err = engine
            .update_limits(&id, None, Some(1_000_000_000))
            .await
            .expect_err("docker update cannot lift a memory limit");
        assert!(
            matches!(err, DockerError::LimitNotRemovable { limit: "memory", .. }),
            "{err:?}"
        );

        let managed = engine.list_managed().await.expect("list managed");
        assert!(managed.iter().any(|c| c.id == id), "{id} not listed");

        // Stop and remove are idempotent.
        engine.stop(&id, Duration::from_secs(5)).await.expect("stop");
        engine.stop(&id, Duration::from_secs(5)).await.expect("stop again");
        let stopped = inspect_existing(&engine, &id).await;
        assert!(!stopped.running);
        assert_eq!(stopped.state, "exited");
        assert!(stopped.host_ports.is_empty());
        engine.remove(&id).await.expect("remove");
        engine.remove(&id).await.expect("remove again");
        assert_eq!(engine.inspect(&id).await.expect("inspect"), None);
        engine
            .stop(&id, Duration::from_secs(1))
            .await
            .expect("stop a removed container");
        let err = engine.start(&id).await.expect_err("start a removed container");
        assert!(matches!(err, DockerError::NoSuchContainer { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_crashing_container_reports_die_with_its_exit_code() {
        let engine = engine().await;
        let image = ensure_image(&engine, "crashy").await;
        let mut cleanup = Cleanup::default();
        let name = cleanup.name();

        // Subscribe before the container exists; the stream is polled later.
        let events = engine.events();
        let id = engine
            .create(&request(&name, &image, "dockertest-crashy"))
            .await
            .expect("create");
        engine.start(&id).await.expect("start");

        let mut events = std::pin::pin!(events);
        let mut seen = Vec::new();
        let die = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = events.next().await {
                let event = event.expect("event stream");
                if event.container_id != id {
                    continue;
                }
                seen.push(event.action.clone());
                if event.action == "die" {
                    return Some(event);
                }
            }
            None
        })
        .await;
        let die = match die {
            Ok(Some(die)) => die,
            other => panic!("no die event for {id} ({other:?}); saw {seen:?}"),
        };
        assert_eq!(die.exit_code, Some(3));
        assert_eq!(die.service.as_deref(), Some("dockertest-crashy"));
        assert_eq!(die.revision, Some(1));
        assert!(die.time_ms > 0);
        assert!(seen.iter().any(|a| a == "start"), "{seen:?}");

        let info = inspect_existing(&engine, &id).await;
        assert!(!info.running);
        assert_eq!(info.state, "exited");
        assert_eq!(info.exit_code, Some(3));
        assert!(!info.oom_killed);
        assert!(info.finished_at_ms >= info.started_at_ms, "{info:?}");

        let tail = engine.log_tail(&id, 5).await;
        assert!(tail.iter().any(|l| l.contains("crashy: exiting with 3")), "{tail:?}");
        let last_one = engine.log_tail(&id, 1).await;
        assert_eq!(last_one.len(), 1, "{last_one:?}");

        // A finished container's log stream ends even when following.
        let lines: Vec<LogLine> =
            tokio::time::timeout(Duration::from_secs(10), engine.logs(&id, true, 0).try_collect())
                .await
                .expect("the log stream of a stopped container ends")
                .expect("logs");
        assert!(
            lines
                .iter()
                .any(|l| l.stream == "stdout" && l.line == "crashy: starting"),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.line == "crashy: exiting with 3"), "{lines:?}");

        let missing: Result<Vec<LogLine>, _> = engine
            .logs("berth-dockertest-no-such-container", false, 0)
            .try_collect()
            .await;
        assert!(
            matches!(missing, Err(DockerError::NoSuchContainer { .. })),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn create_names_conflicts_and_missing_images() {
        let engine = engine().await;
        let image = ensure_image(&engine, "v1").await;
        let mut cleanup = Cleanup::default();
        let name = cleanup.name();
        let req = request(&name, &image, "dockertest-conflict");
        engine.create(&req).await.expect("first create");
        let err = engine.create(&req).await.expect_err("same name twice");
        assert!(matches!(err, DockerError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains(&name), "{err}");

        let other = cleanup.name();
        let missing_image = test_image("never-pulled");
        let err = engine
            .create(&request(&other, &missing_image, "dockertest-conflict"))
            .await
            .expect_err("image not present");
        assert!(matches!(err, DockerError::ImageMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("pull it first"), "{err}");
    }

    #[tokio::test]
    async fn list_managed_finds_only_labelled_containers() {
        let engine = engine().await;
        let image = ensure_image(&engine, "v1").await;
        let mut cleanup = Cleanup::default();
        let mut ours = Vec::new();
        for _ in 0..2 {
            let name = cleanup.name();
            ours.push(
                engine
                    .create(&request(&name, &image, "dockertest-list"))
                    .await
                    .expect("create"),
            );
        }
        let unmanaged_name = cleanup.name();
        let mut unmanaged = request(&unmanaged_name, &image, "dockertest-list");
        unmanaged.labels.remove(labels::MANAGED);
        let unmanaged_id = engine.create(&unmanaged).await.expect("create");

        let listed = engine.list_managed().await.expect("list managed");
        for id in &ours {
            let info = listed
                .iter()
                .find(|c| &c.id == id)
                .unwrap_or_else(|| panic!("{id} not listed"));
            assert_eq!(info.service.as_deref(), Some("dockertest-list"));
            assert_eq!(info.labels.get("berth.test").map(String::as_str), Some("true"));
            assert_eq!(info.state, "created");
        }
        assert!(listed.iter().all(|c| c.id != unmanaged_id));
        assert!(
            listed
                .iter()
                .all(|c| c.labels.get(labels::MANAGED).map(String::as_str) == Some("true"))
        );
    }
}

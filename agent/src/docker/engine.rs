//! The engine calls: one [`Engine`] per connection, cheap to clone, used
//! from whichever task needs Docker (never from the supervisor's owner).
//! Every call has the configured timeout; streams end when dropped. Tested
//! against the real engine in `tests/tests/docker_engine.rs`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::image::ImageRef;
use berth_core::labels;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerUpdateBody, ExecConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::{Stream, StreamExt, TryStreamExt};

use super::auth::RegistryAuth;
use super::convert::{
    container_info, create_body, engine_event, log_lines, memory_limit, non_negative, whole_seconds_up,
};
use super::error::{DockerError, ErrorContext, server_error, status_of};
use super::logins::{self, Logins};
use super::types::{ContainerInfo, CreateRequest, EngineEvent, EngineVersion, LogLine, PullProgress, SoftLimits};
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
    logins: Arc<Logins>,
    instance: String,
    log_max_size: String,
    log_max_file: String,
    network_holders: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .field("registries", &self.logins)
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
            logins: Arc::new(Logins::new(registries)),
            instance: config.instance.clone(),
            log_max_size: config.log_max_size.to_string(),
            log_max_file: config.log_max_file.to_string(),
            network_holders: config.network_holders && super::pause::pause_supported(),
        })
    }

    /// The agent's default json-file rotation, as Docker's `max-size` and
    /// `max-file` options (config `docker.log_max_size`, `log_max_file`).
    pub fn default_log_rotation(&self) -> (&str, &str) {
        (&self.log_max_size, &self.log_max_file)
    }

    /// Whether services may join network holders: config
    /// `docker.network_holders`, on a build that can run the holders' pause
    /// program.
    pub fn network_holders(&self) -> bool {
        self.network_holders
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
    /// A container joined to one of berth's network holders shows the
    /// holder's address and ports (see [`ContainerInfo::join`]).
    pub async fn list_managed(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let summaries = self.list_summaries().await?;
        let infos: Vec<Option<ContainerInfo>> = futures::stream::iter(summaries)
            .filter_map(|s| futures::future::ready(s.id))
            .map(|id| async move { self.inspect_one(&id).await })
            .buffered(INSPECT_CONCURRENCY)
            .try_collect()
            .await?;
        let mut infos: Vec<ContainerInfo> = infos.into_iter().flatten().collect();
        // Holders are berth's too, so they are in the same listing.
        let holders: Vec<ContainerInfo> = infos.iter().filter(|c| c.holder_of.is_some()).cloned().collect();
        for c in &mut infos {
            if let Some(holder) = c.joined.as_ref().map(|j| holders.iter().find(|h| h.id == j.holder)) {
                c.join(holder);
            }
        }
        Ok(infos)
    }

    /// The id and state of every container [`Engine::list_managed`] would
    /// inspect, sorted by id, from one listing and no inspect: what the
    /// reconciler's resync compares with its last full pass. States are
    /// spelt as [`ContainerInfo::state`].
    pub async fn list_states(&self) -> Result<Vec<(String, String)>, DockerError> {
        let mut states: Vec<(String, String)> = self
            .list_summaries()
            .await?
            .into_iter()
            .filter_map(|s| {
                let state = s.state.map(|st| st.to_string()).unwrap_or_default();
                Some((s.id?, state))
            })
            .collect();
        states.sort();
        Ok(states)
    }

    async fn list_summaries(&self) -> Result<Vec<bollard::models::ContainerSummary>, DockerError> {
        let filters = HashMap::from([("label".to_owned(), self.owned_filter())]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.fail("list berth's containers".to_owned(), e))
    }

    /// Inspects one container; `Ok(None)` when it does not exist. One
    /// joined to a network holder shows the holder's address and ports
    /// (see [`ContainerInfo::join`]).
    pub async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let Some(mut info) = self.inspect_one(id_or_name).await? else {
            return Ok(None);
        };
        if let Some(joined) = &info.joined {
            let holder = self.inspect_one(&joined.holder).await?;
            info.join(holder.as_ref());
        }
        Ok(Some(info))
    }

    async fn inspect_one(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, DockerError> {
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
    /// every tag. Credentials from a `password_command` or credential
    /// helper that the registry refuses are fetched again and the pull
    /// tried once more (the token expired before its ttl).
    ///
    /// Progress is best effort: a message that does not fit in `progress`
    /// is dropped, so a slow reader never stalls the pull. The pull fails
    /// when Docker sends nothing for the configured timeout.
    pub async fn pull(
        &self,
        image_ref: &ImageRef,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<(), DockerError> {
        let login = |fresh| async move {
            self.logins
                .credentials(image_ref.registry(), fresh)
                .await
                .map_err(|e| DockerError::Pull {
                    image: image_ref.as_str().to_owned(),
                    message: e.to_string(),
                })
        };
        let first = login(false).await?;
        let retry_fresh = first.as_ref().is_some_and(|l| l.retry_fresh);
        let result = self
            .pull_with(image_ref, progress.as_ref(), first.map(|l| l.credentials))
            .await;
        match result {
            Err(DockerError::Pull { message, .. }) if retry_fresh && logins::refused(&message) => {
                tracing::info!(
                    image = image_ref.as_str(),
                    "The registry refused the cached credentials; fetching new ones."
                );
                let fresh = login(true).await?;
                self.pull_with(image_ref, progress.as_ref(), fresh.map(|l| l.credentials))
                    .await
            }
            other => other,
        }
    }

    async fn pull_with(
        &self,
        image_ref: &ImageRef,
        progress: Option<&tokio::sync::mpsc::Sender<PullProgress>>,
        credentials: Option<bollard::auth::DockerCredentials>,
    ) -> Result<(), DockerError> {
        let image = image_ref.as_str();
        let (name, tag) = image_ref.pull_target();
        let options = CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
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
            if let Some(tx) = progress {
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
    /// backoff); logs go where `req` says (the supervisor caps json-file
    /// logs, so a chatty service cannot fill the disk); not privileged, no
    /// TTY.
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

    /// `docker update`: sets the memory limit, memory+swap (by default the
    /// same value, i.e. no swap beyond the limit), `NanoCpus`, the memory
    /// reservation and the pids limit.
    ///
    /// `None` means unlimited. Docker's update reads 0 as "leave unchanged"
    /// and cannot remove a limit, so `None` for a container that has a limit
    /// is [`DockerError::LimitNotRemovable`]: recreate it instead.
    pub async fn update_limits(
        &self,
        id: &str,
        memory_bytes: Option<u64>,
        nano_cpus: Option<i64>,
        soft: SoftLimits,
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
        if soft.memory_reservation.is_none() && current.memory_reservation_bytes > 0 {
            return Err(DockerError::LimitNotRemovable {
                container: id.to_owned(),
                limit: "memory reservation",
            });
        }
        let memory = memory_limit(id, memory_bytes)?.unwrap_or(0);
        let swap = match soft.memory_swap {
            Some(swap) => memory_limit(id, Some(swap))?.unwrap_or(0),
            None => memory,
        };
        let body = ContainerUpdateBody {
            memory: Some(memory),
            memory_swap: Some(swap),
            nano_cpus: Some(nano_cpus.unwrap_or(0)),
            memory_reservation: memory_limit(id, soft.memory_reservation)?,
            // Docker reads 0 or -1 as no limit, so a pids limit can be lifted.
            pids_limit: Some(soft.pids_limit.map_or(0, i64::from)),
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

    pub(super) fn fail(&self, action: String, e: BollardError) -> DockerError {
        self.error_context().fail(action, e)
    }

    fn container_error(&self, id: &str, action: String, e: BollardError) -> DockerError {
        self.error_context().container(id, action, e)
    }
}

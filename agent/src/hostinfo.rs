//! Facts about the host the agent runs on, for `GetInfo`.
//!
//! Static facts (hostname, OS, kernel, CPUs, memory) are read once at start;
//! they do not change while the agent runs and re-reading them would put
//! file reads on every `GetInfo`. The Docker Engine's version is asked for at
//! most every [`DOCKER_TTL`], because an operator wants to see Docker come and
//! go without each call paying a round trip to the engine. Used by
//! `GetInfo` on its request's task; no task of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use sysinfo::{CpuRefreshKind, System};
use tokio::sync::Mutex;

use crate::clock::now_ms;
use crate::config::DockerConfig;
use crate::docker::{self, EngineVersion};

/// How long a Docker version answer is reused.
pub const DOCKER_TTL: Duration = Duration::from_secs(5);

/// Host facts that do not change while the agent runs.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The host's name.
    pub hostname: String,
    /// Distribution name and version.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU architecture.
    pub arch: &'static str,
    /// Logical CPUs.
    pub cpus: u32,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// When the agent started, in ms since the epoch.
    pub agent_started_at_ms: u64,
}

impl HostFacts {
    /// Reads the host's facts.
    pub fn read() -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_list(CpuRefreshKind::nothing());
        sys.refresh_memory();
        let hostname = System::host_name()
            .or_else(|| hostname::get().ok().map(|h| h.to_string_lossy().into_owned()))
            .unwrap_or_default();
        HostFacts {
            hostname,
            os: System::long_os_version().unwrap_or_else(|| "unknown".into()),
            kernel: System::kernel_version().unwrap_or_else(|| "unknown".into()),
            arch: std::env::consts::ARCH,
            cpus: u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX),
            memory_bytes: sys.total_memory(),
            agent_started_at_ms: now_ms(),
        }
    }

    /// Seconds since the host booted.
    pub fn uptime_seconds(&self) -> u64 {
        System::uptime()
    }
}

/// The engine as last seen: its version, or why it could not be reached.
pub type DockerStatus = Result<EngineVersion, String>;

/// A cached view of the Docker Engine's reachability and version.
#[derive(Clone)]
pub struct DockerProbe {
    config: DockerConfig,
    inner: Arc<Mutex<ProbeState>>,
}

struct ProbeState {
    client: Option<Docker>,
    last: Option<(Instant, DockerStatus)>,
}

impl DockerProbe {
    /// A probe for the configured engine; nothing is contacted yet.
    pub fn new(config: DockerConfig) -> Self {
        DockerProbe {
            config,
            inner: Arc::new(Mutex::new(ProbeState {
                client: None,
                last: None,
            })),
        }
    }

    /// The engine's version, or why it is unreachable; at most [`DOCKER_TTL`] old.
    pub async fn status(&self) -> DockerStatus {
        let mut state = self.inner.lock().await;
        if let Some((at, status)) = &state.last
            && at.elapsed() < DOCKER_TTL
        {
            return status.clone();
        }
        let status = self.ask(&mut state).await;
        state.last = Some((Instant::now(), status.clone()));
        status
    }

    async fn ask(&self, state: &mut ProbeState) -> DockerStatus {
        if state.client.is_none() {
            state.client = Some(docker::connect(&self.config).await.map_err(|e| e.to_string())?);
        }
        let Some(client) = state.client.as_ref() else {
            return Err("no Docker client".into());
        };
        match docker::engine_version(client, &self.config.socket).await {
            Ok(v) => Ok(v),
            Err(e) => {
                // Reconnect (and renegotiate) next time: the engine may have
                // been replaced by an older or newer one.
                state.client = None;
                Err(e.to_string())
            }
        }
    }
}

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
use tokio::sync::Mutex;

use crate::clock::now_ms;
use crate::config::DockerConfig;
use crate::docker::{self, EngineVersion};
use crate::metrics::host::{parse_meminfo, parse_stat};

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
    /// Reads the host's facts: `uname`, `/proc/stat` and `/proc/meminfo`
    /// (with the metrics' parsers), `/etc/os-release`.
    pub fn read() -> Self {
        let uts = rustix::system::uname();
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let cpus = read("/proc/stat")
            .map(|text| parse_stat(&text).1)
            .filter(|&n| n > 0)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
            .unwrap_or(1);
        HostFacts {
            hostname: uts.nodename().to_string_lossy().into_owned(),
            os: os_name(read("/etc/os-release").as_deref(), read("/etc/lsb-release").as_deref()),
            kernel: uts.release().to_string_lossy().into_owned(),
            arch: std::env::consts::ARCH,
            cpus,
            memory_bytes: read("/proc/meminfo").map(|text| parse_meminfo(&text).0).unwrap_or(0),
            agent_started_at_ms: now_ms(),
        }
    }

    /// Seconds since the host booted.
    pub fn uptime_seconds(&self) -> u64 {
        u64::try_from(rustix::system::sysinfo().uptime).unwrap_or(0)
    }
}

/// "Linux (Debian GNU/Linux 12)": the distribution's `NAME` and
/// `VERSION_ID` from os-release(5), or `DISTRIB_ID` and `DISTRIB_RELEASE`
/// from an older `/etc/lsb-release` when os-release names neither; "Linux"
/// alone when neither file does.
pub fn os_name(os_release: Option<&str>, lsb_release: Option<&str>) -> String {
    fn field(text: Option<&str>, key: &str) -> Option<String> {
        text?.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            Some(value.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        })
    }
    let name = field(os_release, "NAME").or_else(|| field(lsb_release, "DISTRIB_ID"));
    let version = field(os_release, "VERSION_ID").or_else(|| field(lsb_release, "DISTRIB_RELEASE"));
    match (name, version) {
        (name, Some(version)) => format!("Linux ({} {version})", name.as_deref().unwrap_or("unknown")),
        (Some(name), None) => format!("Linux ({name})"),
        (None, None) => "Linux".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_is_named_from_os_release_then_lsb_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n";
        assert_eq!(os_name(Some(debian), None), "Linux (Debian GNU/Linux 12)");
        // Unquoted values, as os-release(5) allows; ID= is not NAME=.
        assert_eq!(os_name(Some("ID=arch\nNAME=Arch Linux\n"), None), "Linux (Arch Linux)");
        let lsb = "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\n";
        assert_eq!(os_name(None, Some(lsb)), "Linux (Ubuntu 14.04)");
        assert_eq!(os_name(Some("VERSION_ID='9'\n"), None), "Linux (unknown 9)");
        assert_eq!(os_name(None, None), "Linux");
    }

    #[test]
    fn this_hosts_facts_are_read() {
        let facts = HostFacts::read();
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0, "MemTotal from /proc/meminfo");
        assert!(!facts.kernel.is_empty() && !facts.hostname.is_empty());
        assert!(facts.os.starts_with("Linux"), "{}", facts.os);
        assert!(facts.uptime_seconds() > 0);
    }
}

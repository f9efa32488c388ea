//! The `berth.v1.Host` service: `GetInfo`, from host facts read once at
//! start, Docker's version (cached by [`crate::hostinfo::DockerProbe`]),
//! the agent's capabilities and the caller's identity. Unary; nothing to
//! shut down.

use berth_proto::v1::host_server::Host;
use berth_proto::v1::{Caller, GetInfoRequest, HostInfo};
use tonic::{Request, Response, Status};

use crate::hostinfo::{DockerProbe, HostFacts};

/// Serves host facts, Docker reachability and the agent's capabilities.
pub struct HostApi {
    facts: HostFacts,
    docker: DockerProbe,
    capabilities: Vec<String>,
    cert_not_after_ms: u64,
}

impl HostApi {
    /// `capabilities` lists what this agent serves, for clients to check;
    /// `cert_not_after_ms` is when the agent's certificate expires (0 unknown).
    pub fn new(facts: HostFacts, docker: DockerProbe, capabilities: Vec<String>, cert_not_after_ms: u64) -> Self {
        HostApi {
            facts,
            docker,
            capabilities,
            cert_not_after_ms,
        }
    }
}

#[tonic::async_trait]
impl Host for HostApi {
    async fn get_info(&self, request: Request<GetInfoRequest>) -> Result<Response<HostInfo>, Status> {
        let who = super::caller(&request)?;
        let f = &self.facts;
        let (docker_version, docker_api_version, docker_error) = match self.docker.status().await {
            Ok(v) => (v.version, v.api_version, String::new()),
            Err(e) => (String::new(), String::new(), e),
        };
        Ok(Response::new(HostInfo {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: f.hostname.clone(),
            os: f.os.clone(),
            kernel: f.kernel.clone(),
            arch: f.arch.to_owned(),
            cpus: f.cpus,
            memory_bytes: f.memory_bytes,
            uptime_seconds: f.uptime_seconds(),
            docker_version,
            docker_api_version,
            docker_error,
            capabilities: self.capabilities.clone(),
            caller: Some(Caller {
                name: who.name,
                role: who.role.as_str().to_owned(),
            }),
            agent_started_at_ms: f.agent_started_at_ms,
            agent_cert_not_after_ms: self.cert_not_after_ms,
        }))
    }
}

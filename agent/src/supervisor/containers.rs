//! Creating berth's containers: name, labels, env, ports and limits of one
//! revision; and where nginx reaches a container. Used by deploy workers and
//! reconcile passes, on their own tasks; owns nothing.

use std::collections::HashMap;
use std::time::Duration;

use super::{Supervisor, SupervisorError};
use crate::docker::{ContainerInfo, CreateRequest, PortBinding};
use crate::envfiles;
use berth_core::labels;
use berth_core::spec::ServiceSpec;

impl Supervisor {
    /// Creates and starts a container of `spec` at `revision`, with the
    /// env that revision keeps (see [`Supervisor::revision_env`]). Returns
    /// its id.
    pub(crate) async fn create_container(&self, spec: &ServiceSpec, revision: u64) -> Result<String, SupervisorError> {
        let engine = self.engine()?;
        let env = self.revision_env(spec, revision)?;
        let mut labels: HashMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(labels::MANAGED.into(), "true".into());
        labels.insert(labels::INSTANCE.into(), engine.instance().to_owned());
        labels.insert(labels::SERVICE.into(), spec.name.as_str().to_owned());
        labels.insert(labels::REVISION.into(), revision.to_string());
        labels.insert(
            labels::SPEC.into(),
            serde_json::to_string(spec).map_err(|e| SupervisorError::Internal(e.to_string()))?,
        );
        let req = CreateRequest {
            name: container_name(spec.name.as_str(), revision),
            image: spec.image.as_str().to_owned(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: envfiles::to_docker(&env),
            ports: spec
                .ports
                .iter()
                .map(|p| PortBinding {
                    container_port: p.container_port,
                    protocol: p.protocol.as_str().to_owned(),
                    host_ip: p.host_ip.map(|ip| ip.to_string()),
                    host_port: p.host_port,
                })
                .collect(),
            memory_bytes: spec.resources.memory.map(|m| m.bytes()),
            nano_cpus: spec.resources.cpus.map(|c| c.nano_cpus()),
            labels,
            stop_signal: spec.stop_signal.as_str().to_owned(),
            stop_timeout: spec.stop_timeout.as_std(),
        };
        let id = engine
            .create(&req)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        if let Err(e) = engine.start(&id).await {
            let _ = engine.remove(&id).await;
            return Err(SupervisorError::Internal(e.to_string()));
        }
        Ok(id)
    }

    /// Stops then removes a container, giving it the spec's stop timeout.
    pub(crate) async fn stop_and_remove(&self, id: &str, timeout: Duration) -> Result<(), SupervisorError> {
        let engine = self.engine()?;
        engine
            .stop(id, timeout)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))?;
        engine
            .remove(id)
            .await
            .map_err(|e| SupervisorError::Internal(e.to_string()))
    }
}

/// Where nginx should send a proxied service's traffic: the container's own
/// address on the upstream port (no host port needed, so old and new can
/// run side by side), or the published port on loopback when the container
/// has no address of its own (host networking).
pub fn upstream_of(container: &ContainerInfo, spec: &ServiceSpec) -> Option<std::net::SocketAddr> {
    let port = spec.upstream_port()?;
    match container.ip {
        Some(ip) => Some(std::net::SocketAddr::new(ip, port)),
        None => container
            .host_ports
            .iter()
            .find(|p| p.container_port == port && p.protocol == "tcp")
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p.host_port))),
    }
}

/// `NAME-rREV-XXXX`: unique per container, readable in `docker ps`.
fn container_name(service: &str, revision: u64) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag = (nanos ^ std::process::id().rotate_left(16) ^ SEQ.fetch_add(0x9E37, Ordering::Relaxed)) & 0xffff;
    format!("{service}-r{revision}-{tag:04x}")
}

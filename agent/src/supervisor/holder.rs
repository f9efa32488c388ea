//! Network holders: one small container per service that owns the
//! service's network namespace (address, published ports, hostname and
//! host entries) while the service's own containers join it with
//! `network_mode = container:HOLDER`, as a Kubernetes pod's pause container
//! or a Nomad group's network namespace do.
//!
//! Why: most of a `docker start` on a bridge is Docker wiring a fresh
//! namespace (veth pair, bridge port, NAT rules, docker-proxy). A container
//! that joins a running holder skips all of it, so a recreate deploy and a
//! restart after a crash are that much faster, and the service keeps one
//! address across deploys (nginx and the host's neighbour table never see
//! it move).
//!
//! Which services: recreate deploys on a bridge or a named network (not
//! blue-green, whose old and new containers run side by side with their
//! own addresses; not `host` or `none`), unless the agent's config turns
//! holders off (`[docker] network_holders = false`) or the build cannot run
//! the pause program ([`crate::docker::pause_supported`]). A holder is named after its service and
//! a hash of its instance and network settings, so a deploy that changes
//! none of them reuses it, and one that changes any gets a fresh holder.
//! Starting a holder first stops the service's other holders (the old one
//! may hold the host ports the new one binds); they are stopped, not
//! removed, so a failed deploy can still start the old container again.
//! The reconciler removes holders no container joins (see
//! [`crate::reconcile`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::{Supervisor, SupervisorError};
use crate::docker::{CreateRequest, DockerError, Engine, HolderState, PAUSE_COMMAND, PAUSE_IMAGE, RunFlags};
use berth_core::labels;
use berth_core::spec::ServiceSpec;

/// The holder a container of `spec` joins, on agent instance `instance`;
/// `None` when the service keeps its own network (see the module docs).
pub(crate) fn holder_request(spec: &ServiceSpec, instance: &str) -> Option<CreateRequest> {
    let own_network = matches!(spec.network.as_deref(), Some("host" | "none"));
    if super::rollout::deploys_blue_green(spec) || own_network {
        return None;
    }
    let ports: Vec<_> = super::containers::port_bindings(spec);
    let flags = RunFlags {
        hostname: spec.hostname.clone(),
        extra_hosts: spec.extra_hosts.clone(),
        network: spec.network.clone(),
        ..Default::default()
    };
    // What the holder's namespace is made of; the same settings, the same
    // holder.
    let mut identity = format!(
        "{instance}\n{}\n{}\n",
        spec.network.as_deref().unwrap_or(""),
        spec.hostname.as_deref().unwrap_or("")
    );
    for port in &spec.ports {
        let _ = write!(identity, "{port} ");
    }
    identity.push('\n');
    for host in &spec.extra_hosts {
        let _ = write!(identity, "{host} ");
    }
    let name = format!("{}-net-{:08x}", spec.name.as_str(), fnv1a(identity.as_bytes()) as u32);
    let labels = HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (labels::HOLDER.to_owned(), spec.name.as_str().to_owned()),
    ]);
    Some(CreateRequest {
        name,
        image: PAUSE_IMAGE.to_owned(),
        command: vec![PAUSE_COMMAND.to_owned()],
        ports,
        labels,
        // PID 1 without a handler ignores SIGTERM; there is nothing to
        // shut down gracefully.
        stop_signal: "SIGKILL".to_owned(),
        stop_timeout: Duration::from_secs(1),
        log_driver: "none".to_owned(),
        flags,
        ..Default::default()
    })
}

/// 64-bit FNV-1a: a hash that stays the same across agent builds, unlike
/// std's, so an upgraded agent finds its holders again.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Supervisor {
    /// Makes sure the holder of `spec` exists (created, not started: the
    /// old container may still hold its ports) and returns the network mode
    /// its containers join it with; `None` when `spec` has no holder.
    pub(super) async fn prepare_holder(&self, spec: &ServiceSpec) -> Result<Option<String>, SupervisorError> {
        let engine = self.engine()?;
        if !engine.network_holders() {
            return Ok(None);
        }
        let Some(req) = holder_request(spec, engine.instance()) else {
            return Ok(None);
        };
        let internal = |e: DockerError| SupervisorError::Internal(format!("network holder {}: {e}", req.name));
        if engine.inspect(&req.name).await.map_err(internal)?.is_none() {
            engine.ensure_pause_image().await.map_err(internal)?;
            match engine.create(&req).await {
                Ok(_) => tracing::info!(holder = %req.name, "Created the service's network holder."),
                // Made meanwhile by another change of the same service.
                Err(DockerError::Conflict { .. }) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(Some(format!("container:{}", req.name)))
    }
}

/// Before container `id` of `service` starts: starts the holder it joined
/// if that is stopped, stopping the service's other holders first. A
/// container whose holder is gone cannot start; the error says so, and the
/// reconciler replaces the container.
pub(super) async fn start_joined(engine: &Engine, id: &str) -> Result<(), DockerError> {
    let Some(info) = engine.inspect(id).await? else {
        return Ok(());
    };
    let Some(joined) = info.joined.as_ref() else {
        return Ok(());
    };
    match joined.state {
        HolderState::Running | HolderState::Restarted => Ok(()),
        HolderState::Gone => Err(DockerError::Invalid {
            container: info.name.clone(),
            message: format!(
                "its network holder {} is gone, so it cannot start; a new container of its revision replaces it",
                short(&joined.holder)
            ),
        }),
        HolderState::Stopped => {
            let service = info.service.as_deref().unwrap_or_default();
            for other in engine.holders(service, true).await? {
                if other != joined.holder {
                    engine.stop(&other, Duration::ZERO).await?;
                }
            }
            engine.start(&joined.holder).await
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::spec::ServiceSpec;

    fn spec(toml: &str) -> ServiceSpec {
        berth_core::spec::parse(&format!("name = \"api\"\nimage = \"registry.local/api:1\"\n{toml}"))
            .expect("a valid spec")
    }

    #[test]
    fn recreate_services_on_a_bridge_get_a_holder_named_by_their_network_settings() {
        let a = holder_request(&spec("ports = [\"8000:8000\"]"), "one").expect("a holder");
        assert!(a.name.starts_with("api-net-"), "{}", a.name);
        assert_eq!(a.ports.len(), 1);
        assert_eq!(a.labels.get(labels::HOLDER).map(String::as_str), Some("api"));
        assert!(!a.labels.contains_key(labels::SERVICE));
        assert_eq!(a.stop_signal, "SIGKILL");
        // Same settings, same holder; another image or env changes nothing.
        let same = holder_request(&spec("ports = [\"8000:8000\"]\nenv = { A = \"1\" }"), "one").expect("a holder");
        assert_eq!(same.name, a.name);
        // Another port, network, hostname or instance: another holder.
        for other in [
            holder_request(&spec("ports = [\"8001:8000\"]"), "one"),
            holder_request(&spec("ports = [\"8000:8000\"]\nnetwork = \"backend\""), "one"),
            holder_request(&spec("ports = [\"8000:8000\"]\nhostname = \"api1\""), "one"),
            holder_request(&spec("ports = [\"8000:8000\"]"), "two"),
        ] {
            assert_ne!(other.expect("a holder").name, a.name);
        }
    }

    #[test]
    fn blue_green_and_host_or_none_networks_keep_their_own_network() {
        assert!(holder_request(&spec("network = \"host\""), "one").is_none());
        assert!(holder_request(&spec("network = \"none\""), "one").is_none());
        let blue_green = spec("[proxy]\nserver_names = [\"api.local\"]\nupstream_port = 8000");
        assert!(holder_request(&blue_green, "one").is_none());
    }

    #[test]
    fn the_name_hash_is_fixed_fnv1a() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

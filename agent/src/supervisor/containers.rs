//! Creating berth's containers: name, labels, env, ports, limits, mounts,
//! logging and run flags of one revision, and the host dirs, named volumes,
//! network and network holder they need; starting them (and their holder)
//! so traffic reaches them at once;
//! and where nginx reaches a container. Used by deploy workers and
//! reconcile passes, on their own tasks; owns nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{Supervisor, SupervisorError};

use crate::docker::{ContainerInfo, CreateRequest, DockerError, Engine, Ensured, PortBinding, RunFlags, SoftLimits};
use crate::envfiles;
use crate::neighbours;
use berth_core::labels;
use berth_core::spec::{ServiceSpec, VolumeSource, is_builtin_network};

impl Supervisor {
    /// Creates and starts a container of `spec` at `revision`, with the
    /// env that revision keeps (see [`Supervisor::revision_env`]). Returns
    /// its id.
    pub(crate) async fn create_container(&self, spec: &ServiceSpec, revision: u64) -> Result<String, SupervisorError> {
        let id = self.create_stopped(spec, revision).await?;
        self.start_created(&id).await?;
        Ok(id)
    }

    /// Starts a container made by [`Supervisor::create_stopped`]; one that
    /// cannot start is removed.
    pub(crate) async fn start_created(&self, id: &str) -> Result<(), SupervisorError> {
        let engine = self.engine()?;
        if let Err(e) = start(&engine, id).await {
            let _ = engine.remove(id).await;
            return Err(SupervisorError::Internal(e.to_string()));
        }
        Ok(())
    }

    /// Creates (does not start) a container of `spec` at `revision`, as
    /// [`Supervisor::create_container`] does. Returns its id.
    pub(crate) async fn create_stopped(&self, spec: &ServiceSpec, revision: u64) -> Result<String, SupervisorError> {
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
        let mut req = CreateRequest {
            name: container_name(spec.name.as_str(), revision),
            image: spec.image.as_str().to_owned(),
            command: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: envfiles::to_docker(&env),
            ports: port_bindings(spec),
            memory_bytes: spec.resources.memory.map(|m| m.bytes()),
            nano_cpus: spec.resources.cpus.map(|c| c.nano_cpus()),
            labels,
            stop_signal: spec.stop_signal.as_str().to_owned(),
            stop_timeout: spec.stop_timeout.as_std(),
            binds: spec.volumes.iter().map(ToString::to_string).collect(),
            log_driver: spec.logging.driver().to_owned(),
            log_options: log_options(spec, engine.default_log_rotation()),
            flags: run_flags(spec),
        };
        self.prepare_mounts(spec).await?;
        if let Some(network) = self.prepare_holder(spec).await? {
            // The holder has the ports, hostname and host entries; Docker
            // refuses them on a container that joins another's network.
            req.flags.network = Some(network);
            req.ports.clear();
            req.flags.hostname = None;
            req.flags.extra_hosts.clear();
        }
        let mut tries = 1;
        loop {
            match engine.create(&req).await {
                Ok(id) => return Ok(id),
                // Names only have to be unique per engine, and other agents
                // (another `[docker] instance`) may share it: a fresh tag
                // is as good a name.
                Err(DockerError::Conflict { .. }) if tries < NAME_TRIES => {
                    tries += 1;
                    req.name = container_name(spec.name.as_str(), revision);
                }
                Err(e) => return Err(SupervisorError::Internal(e.to_string())),
            }
        }
    }

    /// Makes what the container of `spec` mounts and joins exist before it
    /// is created: missing bind-mount host directories (mode 0750, owned by
    /// the agent's user), named volumes and a named network, the latter two
    /// labelled as berth's. Blue-green's old and new containers, and every
    /// revision, share them; nothing here is removed by a deploy or rollback.
    async fn prepare_mounts(&self, spec: &ServiceSpec) -> Result<(), SupervisorError> {
        let engine = self.engine()?;
        let service = spec.name.as_str();
        for mount in &spec.volumes {
            match &mount.source {
                VolumeSource::Bind(path) => create_host_dir(Path::new(path)).map_err(SupervisorError::Invalid)?,
                VolumeSource::Named(name) => {
                    let made = engine
                        .ensure_volume(name, service)
                        .await
                        .map_err(|e| SupervisorError::Internal(format!("volumes \"{mount}\": {e}")))?;
                    if made == Ensured::Created {
                        tracing::info!(volume = %name, "Created the named volume.");
                    }
                }
            }
        }
        if let Some(network) = spec.network.as_deref().filter(|n| !is_builtin_network(n)) {
            let made = engine
                .ensure_network(network, service)
                .await
                .map_err(|e| SupervisorError::Internal(format!("network \"{network}\": {e}")))?;
            if made == Ensured::Created {
                tracing::info!(%network, "Created the network.");
            }
        }
        Ok(())
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

/// Starts container `id` (first its network holder, if it joined one that
/// is stopped: see [`super::holder`]), then fills in the host's neighbour
/// entry for the container's address if the kernel could not resolve it
/// (see [`crate::neighbours`]): what sent to the address while the
/// container was down (nginx, docker-proxy, probes) reaches it at once, not
/// at the kernel's next retry up to a second later. Every start berth makes
/// goes through here.
pub(crate) async fn start(engine: &Engine, id: &str) -> Result<(), DockerError> {
    super::holder::start_joined(engine, id).await?;
    engine.start(id).await?;
    fill_in_neighbour(engine, id).await;
    Ok(())
}

/// Best effort: a failure costs only the kernel's own retry, so it is
/// logged (a warning once, for a host that refuses it) and not returned.
async fn fill_in_neighbour(engine: &Engine, id: &str) {
    static REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let result = async {
        // The dump is cheap; the inspect is paid only when some entry is
        // unresolved, which after a deploy's start is rare.
        let unresolved = blocking(neighbours::unresolved).await?;
        if unresolved.is_empty() {
            return Ok(None);
        }
        let Some((ip, mac)) = engine
            .inspect(id)
            .await
            .ok()
            .flatten()
            .and_then(|c| Some((c.ip?, c.mac?)))
        else {
            return Ok(None);
        };
        let mine: Vec<_> = unresolved.into_iter().filter(|e| e.addr == ip).collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let filled = mine.len();
        blocking(move || neighbours::resolve(&mine, mac)).await?;
        Ok::<_, std::io::Error>(Some((ip, filled)))
    };
    match result.await {
        Ok(None) => {}
        Ok(Some((ip, filled))) => tracing::debug!(
            container = id,
            %ip,
            entries = filled,
            "Filled in the host's unresolved neighbour entry for the started container's address."
        ),
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !REFUSED.swap(true, std::sync::atomic::Ordering::Relaxed) =>
        {
            tracing::warn!(
                error = %e,
                "Cannot change the host's neighbour table (needs CAP_NET_ADMIN and AF_NETLINK): traffic \
                 to a restarted container may wait up to a second for the kernel's next ARP retry."
            );
        }
        Err(e) => tracing::debug!(container = id, error = %e, "Could not read or change the host's neighbour table."),
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
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

/// The published ports of `spec`, as Docker's create takes them.
pub(super) fn port_bindings(spec: &ServiceSpec) -> Vec<PortBinding> {
    spec.ports
        .iter()
        .map(|p| PortBinding {
            container_port: p.container_port,
            protocol: p.protocol.as_str().to_owned(),
            host_ip: p.host_ip.map(|ip| ip.to_string()),
            host_port: p.host_port,
        })
        .collect()
}

/// Docker's log options for `spec`: its `[logging] options`, plus for the
/// rotating drivers (json-file, local) `max-size` and `max-file`, from the
/// spec or the agent's defaults.
fn log_options(spec: &ServiceSpec, (max_size, max_file): (&str, &str)) -> HashMap<String, String> {
    let logging = &spec.logging;
    let mut options: HashMap<String, String> = logging.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if logging.rotates() {
        let size = logging.max_size.map_or_else(|| max_size.to_owned(), |s| s.to_string());
        let files = logging.max_file.map_or_else(|| max_file.to_owned(), |n| n.to_string());
        options.insert("max-size".into(), size);
        options.insert("max-file".into(), files);
    }
    options
}

/// The `docker run` flags of `spec`.
fn run_flags(spec: &ServiceSpec) -> RunFlags {
    let caps = |caps: &[String]| {
        caps.iter()
            .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_owned())
            .collect()
    };
    RunFlags {
        user: spec.user.clone(),
        workdir: spec.workdir.clone(),
        hostname: spec.hostname.clone(),
        extra_hosts: spec.extra_hosts.clone(),
        network: spec.network.clone(),
        ulimits: spec
            .ulimits
            .iter()
            .map(|(name, l)| (name.clone(), l.soft, l.hard))
            .collect(),
        read_only: spec.read_only,
        tmpfs: spec
            .tmpfs
            .iter()
            .map(|entry| match entry.split_once(':') {
                Some((path, options)) => (path.to_owned(), options.to_owned()),
                None => (entry.clone(), String::new()),
            })
            .collect(),
        cap_add: caps(&spec.cap_add),
        cap_drop: caps(&spec.cap_drop),
        init: spec.init,
        shm_size: spec.shm_size.map(|s| s.bytes()),
        soft: soft_limits(spec),
    }
}

/// The limits of `spec` that `docker update` changes in place.
pub fn soft_limits(spec: &ServiceSpec) -> SoftLimits {
    SoftLimits {
        memory_reservation: spec.resources.memory_reservation.map(|m| m.bytes()),
        memory_swap: spec.resources.memory_swap.map(|m| m.bytes()),
        pids_limit: spec.resources.pids_limit,
    }
}

/// A bind mount's missing host directory is created, mode 0750 (with its
/// missing parents), rather than left to Docker, which would create it as
/// root with mode 0755. An existing file or directory is used as it is.
fn create_host_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    if path.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
        .map_err(|e| format!("volumes: cannot create the host directory {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "Created the bind mount's host directory (mode 0750).");
    Ok(())
}

/// How many names a create tries before a name conflict is an error.
const NAME_TRIES: u32 = 3;

/// `NAME-rREV-XXXX`: unique per container, readable in `docker ps`. The tag
/// is 16 bits of a hash keyed per process (std's `RandomState`), so agents
/// sharing one engine draw independent tags even at the same instant.
fn container_name(service: &str, revision: u64) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: LazyLock<std::collections::hash_map::RandomState> = LazyLock::new(Default::default);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = KEYS.build_hasher();
    h.write_u128(nanos);
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    let tag = h.finish() & 0xffff;
    format!("{service}-r{revision}-{tag:04x}")
}

#[cfg(test)]
mod tests {
    use super::container_name;

    #[test]
    fn names_read_as_service_and_revision_and_draw_fresh_tags() {
        let names: std::collections::BTreeSet<String> = (0..256).map(|_| container_name("api", 7)).collect();
        for n in &names {
            let tag = n.strip_prefix("api-r7-").expect("NAME-rREV-");
            assert!(tag.len() == 4 && u16::from_str_radix(tag, 16).is_ok(), "{n}");
        }
        // 256 draws of 16 bits: a few repeats at most, never a constant.
        assert!(names.len() > 240, "{} distinct of 256", names.len());
    }
}

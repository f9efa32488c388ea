//! berth agent: supervises a host's Docker services, their env files and the
//! nginx sites in front of them, and serves the `berth.v1` API over mutual TLS.
//!
//! [`run`] is the composition root: it builds each concern, wires them with
//! channels (the supervisor's handle; the metrics targets and Docker client
//! the collector reads; the kernel log's OOM ids; the reconciler's
//! wake-ups), spawns every task on one [`TaskTracker`] under one
//! [`CancellationToken`], and returns when the token is cancelled and the
//! tasks have finished. `main.rs` only parses arguments, loads the config,
//! installs logging and waits for signals.
//!
//! Layers point down: `berth-core` → adapters of the outside world
//! ([`clock`], [`config`], [`dirs`], [`docker`], [`nginx`], [`envfiles`],
//! [`envwatch`], [`state`], [`health`], [`metrics`], [`oomwatch`],
//! [`events`], [`audit`], ...) → [`supervisor`] → [`reconcile`] and
//! [`limits`] and [`alerts`] → [`grpc`] → this file. `agent/tests/layers.rs` checks it
//! (no upward edge, no circle) and prints the graph.

pub mod alerts;
pub mod atomicfile;
pub mod audit;
pub mod clock;
pub mod config;
pub mod dirs;
pub mod docker;
pub mod envfiles;
pub mod envwatch;
pub mod events;
pub mod fleet;
pub mod grpc;
pub mod health;
pub mod hostinfo;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod neighbours;
pub mod nginx;
pub mod notify;
pub mod oomwatch;
pub mod preflight;
pub mod reconcile;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod tlsreload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use berth_proto::v1::audit_server::AuditServer;
use berth_proto::v1::env_server::EnvServer;
use berth_proto::v1::fleet_lock_server::FleetLockServer;
use berth_proto::v1::host_server::HostServer;
use berth_proto::v1::metrics_server::MetricsServer;
use berth_proto::v1::rollouts_server::RolloutsServer;
use berth_proto::v1::services_server::ServicesServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tracing::{Instrument as _, info, info_span, warn};

use crate::audit::Audit;
use crate::config::Config;
use crate::docker::{Engine, RegistryAuth, Secret};
use crate::events::EventBus;
use crate::grpc::services::{ServicesApi, Streams};
use crate::hostinfo::{DockerProbe, HostFacts};
use crate::supervisor::{Capacity, Setup, Starter, Supervisor};

/// What this agent build serves, reported by `GetInfo` so clients can tell
/// an agent that lacks a feature from one that failed.
pub const CAPABILITIES: &[&str] = &[
    "host",
    "grpc-health",
    "services",
    "events",
    "logs",
    "nginx",
    "env",
    "fleet-lock",
    "audit",
    "rollouts",
];

/// Runs the agent until `cancel` fires. Binds `config.listen` (port 0 picks
/// a free port; `listen_address_file` then says which).
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    dirs::make_private("state_dir", &config.state_dir)?;
    dirs::make_private("env_dir", &config.env_dir)?;
    if let Some(warning) = tls::key_mode_warning(&config.tls.key) {
        warn!("{warning}");
    }
    let tls = tls::server_config(&config.tls).context("cannot load the agent's TLS material")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local: SocketAddr = listener.local_addr().context("listener has no local address")?;

    let registries = registry_auth(&config)?;
    let facts = HostFacts::read();
    let capacity = Capacity {
        cpus: f64::from(facts.cpus),
        memory_bytes: facts.memory_bytes,
    };
    let probe = DockerProbe::new(config.docker.clone());
    let mut capabilities: Vec<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    capabilities.extend(metrics::capabilities(&config));
    if oomwatch::readable(&config.limits.kernel_log) {
        capabilities.push("limits.oom-kernel-log".to_owned());
    }
    let cert_not_after = tls::not_after_ms(&config.tls.cert).unwrap_or(0);
    let host = grpc::host::HostApi::new(facts, probe, capabilities, cert_not_after);
    // Bound before anything is spawned, so a taken port fails the start.
    let prometheus = metrics::prometheus::bind(&config.metrics.prometheus_listen)
        .await
        .map_err(anyhow::Error::msg)?;

    // The supervisor's handle exists from the start; calls get UNAVAILABLE
    // with the reason until Docker has been reached.
    let (targets_tx, targets_rx) = watch::channel(Arc::new(Vec::new()));
    let (docker_tx, docker_rx) = watch::channel(None);
    let (oom_tx, oom_rx) = mpsc::channel(oomwatch::QUEUE);
    let oom_ids = oomwatch::spawn(&config.limits.kernel_log, oom_tx).then_some(oom_rx);
    let audit = Audit::open(&config.state_dir, &config.audit)?;
    let bus = EventBus::open(&config.state_dir)?;
    // Leases are independent of Docker: the keeper runs from the start.
    let locks = fleet::locks::Locks::start(
        config.state_dir.clone(),
        bus.clone(),
        audit.clone(),
        &tracker,
        cancel.child_token(),
    )
    .map_err(anyhow::Error::msg)?;
    let rollouts = fleet::rollouts::Rollouts::new(&config.state_dir, bus.clone(), audit.clone());
    let (sup, starter) = Supervisor::new(
        Setup {
            state_dir: config.state_dir.clone(),
            env_dir: config.env_dir.clone(),
            sites: nginx::Sites::new(config.nginx.clone()),
            capacity,
            bus: bus.clone(),
            audit: audit.clone(),
            metrics_targets: targets_tx,
            oom_ids,
        },
        tracker.clone(),
        cancel.child_token(),
    );
    // READY=1 needs both halves: the address announced and the supervisor
    // running. Whichever finishes second says so (twice is harmless).
    let announced = Arc::new(AtomicBool::new(false));
    let (first_attempt, first_attempt_done) = tokio::sync::oneshot::channel();
    tracker.spawn(
        start_supervisor(
            config.clone(),
            registries,
            starter,
            Started {
                sup: sup.clone(),
                docker: docker_tx,
                first_attempt,
                announced: announced.clone(),
            },
            cancel.child_token(),
        )
        .instrument(info_span!("supervisor")),
    );
    let hub = metrics::spawn(
        &config,
        metrics::Inputs {
            targets: targets_rx,
            docker: docker_rx,
        },
        &tracker,
        cancel.child_token(),
    );
    let (alert_gauges, alert_gauges_rx) = watch::channel(Arc::new(Vec::new()));
    alerts::spawn(
        &config,
        hub.clone(),
        alerts::Outputs {
            bus,
            gauges: alert_gauges,
        },
        &tracker,
        cancel.child_token(),
    );
    if let Some(listener) = prometheus {
        if let Ok(addr) = listener.local_addr() {
            info!(addr = %addr, "Serving Prometheus metrics at http://{addr}/metrics.");
        }
        let sources = metrics::prometheus::Sources {
            hub: hub.clone(),
            alerts: alert_gauges_rx,
        };
        tracker.spawn(
            metrics::prometheus::serve(listener, sources, tracker.clone(), cancel.child_token())
                .instrument(info_span!("prometheus")),
        );
    }
    if let Ok(target) = config.metrics.statsd.parse::<SocketAddr>() {
        tracker.spawn(
            metrics::statsd::push_loop(
                target,
                config.metrics.statsd_prefix.clone(),
                config.metrics.statsd_flavor,
                hub.clone(),
                cancel.child_token(),
            )
            .instrument(info_span!("statsd")),
        );
    }
    tracker.spawn(
        limits::run(
            config.limits.clone(),
            hub.clone(),
            sup.clone(),
            tracker.clone(),
            cancel.child_token(),
        )
        .instrument(info_span!("limits")),
    );
    let streams = Streams {
        tracker: tracker.clone(),
        cancel: cancel.child_token(),
    };
    let metrics_api = grpc::metrics::MetricsApi::new(hub, streams.clone());
    let services = ServicesApi::new(sup.clone(), streams.clone());
    let audit_api = grpc::audit::AuditApi::new(audit.clone(), streams.clone());
    let env = grpc::env::EnvApi::new(sup.clone(), streams);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<HostServer<grpc::host::HostApi>>().await;
    health.set_serving::<ServicesServer<ServicesApi>>().await;
    health.set_serving::<EnvServer<grpc::env::EnvApi>>().await;
    health.set_serving::<MetricsServer<grpc::metrics::MetricsApi>>().await;
    health.set_serving::<FleetLockServer<grpc::locks::LocksApi>>().await;
    health.set_serving::<AuditServer<grpc::audit::AuditApi>>().await;
    health
        .set_serving::<RolloutsServer<grpc::rollouts::RolloutsApi>>()
        .await;

    let (limits, nofile) = grpc::listener::fit_to_fd_limit(grpc::listener::Limits::from_config(&config.connections));
    info!(
        max_connections = limits.max,
        per_address = limits.max_per_address,
        max_handshakes = limits.max_handshakes,
        nofile = ?nofile,
        "Connection limits."
    );
    let tls = tlsreload::spawn(config.tls.clone(), tls, &tracker, cancel.child_token());
    let incoming = grpc::listener::incoming(listener, tls, limits, &tracker, cancel.child_token());
    let keepalive = config.connections.keepalive.as_std();
    let server = Server::builder()
        .max_concurrent_streams(Some(config.connections.max_concurrent_streams))
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive))
        // GOAWAY at the age. Not tonic's max_connection_age_grace: with it
        // set, tonic 0.14 skips the GOAWAY and only drops the connection
        // after age + grace. The listener's connection does the hard close.
        .max_connection_age(limits.max_age)
        .layer(grpc::audited::AuditLayer::new(audit));
    let routes = grpc::routes::Routes::default()
        .add_service(health_service)
        .add_service(HostServer::new(host))
        .add_service(ServicesServer::new(services))
        .add_service(EnvServer::new(env))
        .add_service(MetricsServer::new(metrics_api))
        .add_service(FleetLockServer::new(grpc::locks::LocksApi::new(locks)))
        .add_service(AuditServer::new(audit_api))
        .add_service(RolloutsServer::new(grpc::rollouts::RolloutsApi::new(
            sup.clone(),
            rollouts,
        )));
    let server = server.serve_with_incoming_shutdown(routes, incoming, cancel.clone().cancelled_owned());

    // Say we listen (and write the address file) once the first attempt to
    // reach Docker has settled, so a client that starts right after us is
    // not told "not supervising services yet" for the few milliseconds that
    // takes. Connections made meanwhile wait in the listen backlog; a
    // dockerd that hangs delays this by at most FIRST_ATTEMPT.
    let _ = tokio::time::timeout(FIRST_ATTEMPT, first_attempt_done).await;
    info!(addr = %local, "Listening for berthctl (mutual TLS).");
    if let Some(path) = &config.listen_address_file {
        write_address_file(path, local)
            .with_context(|| format!("cannot write listen_address_file {}", path.display()))?;
    }
    announced.store(true, Ordering::SeqCst);
    if sup.is_running() {
        notify::ready();
    }

    let server = server.instrument(info_span!("grpc"));
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = cancel.cancelled() => {
            // Graceful shutdown waits for every client to acknowledge
            // GOAWAY; one that stopped reading (a suspended berthctl) never
            // does. Calls get DRAIN to finish, then connections are dropped.
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(drain = ?DRAIN, "Dropping client connections that did not close within the drain time.");
                    Ok(())
                }
            }
        }
    };
    // Whatever ended the server, the rest must stop too.
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    result.context("gRPC server failed")
}

/// How long connections get to close after shutdown starts, well inside
/// main's grace, so clients that never answer GOAWAY cannot hold it.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// How long start-up waits for the first attempt to reach Docker before
/// announcing the listener anyway.
const FIRST_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the supervisor's start-up hands on and reports back to `run`.
struct Started {
    /// The handle, for the reconcile loop.
    sup: Supervisor,
    /// Where the metrics collector finds the Docker client.
    docker: watch::Sender<Option<bollard::Docker>>,
    /// Fires once the first try to reach Docker has succeeded or failed.
    first_attempt: tokio::sync::oneshot::Sender<()>,
    /// Set by `run` once the listen address is announced.
    announced: Arc<AtomicBool>,
}

/// Connects to Docker (retrying until it answers, since the agent may start
/// before dockerd), starts the supervisor and then the reconcile loop.
/// `first_attempt` fires once the first try has succeeded or failed.
async fn start_supervisor(
    config: Config,
    registries: Vec<RegistryAuth>,
    mut starter: Starter,
    started: Started,
    cancel: CancellationToken,
) {
    let Started {
        sup,
        docker,
        first_attempt,
        announced,
    } = started;
    let mut first_attempt = Some(first_attempt);
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        let attempt = async {
            let engine = Engine::connect(&config.docker, registries.clone())
                .await
                .map_err(|e| e.to_string())?;
            let triggers = starter.start(engine.clone()).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((engine, triggers))
        };
        match attempt.await {
            Ok((engine, triggers)) => {
                info!(state_dir = %config.state_dir.display(), "Supervising services.");
                docker.send_replace(Some(engine.docker().clone()));
                // On the tracker next to the supervisor's own tasks; this
                // task ends here.
                sup.tracker().spawn(
                    reconcile::run(sup.clone(), triggers, cancel.child_token()).instrument(info_span!("reconcile")),
                );
                if announced.load(Ordering::SeqCst) {
                    notify::ready();
                }
                if let Some(done) = first_attempt.take() {
                    let _ = done.send(());
                }
                return;
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "Cannot start supervising yet.");
                notify::status(&format!("Waiting for Docker: {e}"));
                starter.waiting(e);
                if let Some(done) = first_attempt.take() {
                    let _ = done.send(());
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}

/// Registry credentials from the config: password files read now, commands
/// and helpers kept to be run when a pull needs them.
fn registry_auth(config: &Config) -> anyhow::Result<Vec<RegistryAuth>> {
    config
        .registries
        .iter()
        .map(|r| {
            let secret = match (&r.password_file, &r.password_command, &r.credential_helper) {
                (Some(file), _, _) => {
                    let password = std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read registries.password_file {}", file.display()))?;
                    Secret::Password(password.lines().next().unwrap_or("").to_owned())
                }
                (None, Some(argv), _) => Secret::Command(argv.clone()),
                (None, None, Some(helper)) => Secret::Helper(RegistryAuth::helper_program(helper)),
                // `validate` asks for exactly one.
                (None, None, None) => anyhow::bail!("registries entry {}: no password source", r.registry),
            };
            Ok(RegistryAuth {
                registry: r.registry.clone(),
                username: r.username.clone(),
                secret,
                ttl: r.ttl.unwrap_or(config::REGISTRY_TTL).as_std(),
            })
        })
        .collect()
}

/// Writes the bound address atomically, so a reader never sees half of it.
fn write_address_file(path: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}

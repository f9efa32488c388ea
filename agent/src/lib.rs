//! berth agent: supervises a host's Docker services, their env files and the
//! nginx sites in front of them, and serves the `berth.v1` API over mutual TLS.
//!
//! [`run`] is the composition root: it builds each concern, spawns its tasks
//! on one [`TaskTracker`] under one [`CancellationToken`], and returns when
//! the token is cancelled and the tasks have finished. `main.rs` only parses
//! arguments, loads the config, installs logging and waits for signals.

pub mod config;
pub mod docker;
pub mod grpc;
pub mod hostinfo;
pub mod spec;
pub mod telemetry;
pub mod tls;
pub mod units;

use std::net::SocketAddr;

use anyhow::Context as _;
use berth_proto::v1::host_server::HostServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tracing::{Instrument as _, info, info_span};

use crate::config::Config;
use crate::hostinfo::{DockerProbe, HostFacts};

/// What this agent build serves, reported by `GetInfo` so clients can tell
/// an agent that lacks a feature from one that failed.
pub const CAPABILITIES: &[&str] = &["host", "grpc-health"];

/// Runs the agent until `cancel` fires. Binds `config.listen` (port 0 picks
/// a free port; `listen_address_file` then says which).
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let tls = tls::server_config(&config.tls).context("cannot load the agent's TLS material")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local: SocketAddr = listener
        .local_addr()
        .context("listener has no local address")?;

    let facts = HostFacts::read();
    let probe = DockerProbe::new(config.docker.clone());
    let capabilities = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    let host = grpc::host::HostApi::new(facts, probe, capabilities);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<HostServer<grpc::host::HostApi>>()
        .await;

    let incoming = grpc::listener::incoming(listener, tls, &tracker, cancel.child_token());
    let server = Server::builder()
        .add_service(health_service)
        .add_service(HostServer::new(host))
        .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());

    info!(addr = %local, "Listening for berthctl (mutual TLS).");
    if let Some(path) = &config.listen_address_file {
        write_address_file(path, local)
            .with_context(|| format!("cannot write listen_address_file {}", path.display()))?;
    }

    let result = server.instrument(info_span!("grpc")).await;
    // Whatever ended the server, the rest must stop too.
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    result.context("gRPC server failed")
}

/// Writes the bound address atomically, so a reader never sees half of it.
fn write_address_file(path: &std::path::Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, path)
}

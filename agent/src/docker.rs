//! The agent's connection to the Docker Engine API.
//!
//! Owns connecting over the configured unix socket and negotiating the API
//! version: the engine on a host may be older than bollard's default (Docker
//! 20.10 speaks API 1.41), so the client version is lowered to the engine's
//! on first contact and again after every reconnect.

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;

use crate::config::DockerConfig;

/// Docker could not be reached or answered with an error.
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
pub async fn engine_version(
    docker: &Docker,
    socket: &std::path::Path,
) -> Result<EngineVersion, DockerError> {
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

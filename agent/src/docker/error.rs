//! What can go wrong talking to Docker: [`DockerError`], each variant naming
//! the container or image involved, and turning bollard's errors into it.

use std::path::PathBuf;
use std::time::Duration;

use bollard::errors::Error as BollardError;

/// Docker could not be reached or answered with an error.
///
/// Every variant names the container or image involved; the text is meant
/// for a person and says what to do where there is something to do.
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
    /// The engine went away or stopped answering during a call (dockerd
    /// restarting, the socket gone): reconnect and try again.
    #[error("cannot {action}: the Docker Engine at {socket} is unreachable: {message}")]
    Unreachable {
        /// The configured socket.
        socket: PathBuf,
        /// What we were doing, e.g. "start container web-3".
        action: String,
        /// The transport's error.
        message: String,
    },
    /// The engine refused a request; the message is Docker's.
    #[error("cannot {action}: {message}")]
    Api {
        /// What we were doing, e.g. "start container web-3".
        action: String,
        /// The HTTP status Docker answered with, when it answered at all.
        status: Option<u16>,
        /// Docker's explanation.
        message: String,
    },
    /// The container does not exist (any more).
    #[error("no such container: {container}")]
    NoSuchContainer {
        /// The name or id asked for.
        container: String,
    },
    /// A container with the requested name already exists.
    #[error(
        "cannot create container {container}: the name is already in use; remove or rename the \
         other container first ({message})"
    )]
    Conflict {
        /// The requested container name.
        container: String,
        /// Docker's explanation, naming the container that holds the name.
        message: String,
    },
    /// The image to create a container from is not on this host.
    #[error("cannot create container {container}: image {image} is not present on this host; pull it first")]
    ImageMissing {
        /// The container that was to be created.
        container: String,
        /// The image reference.
        image: String,
    },
    /// Pulling an image failed (unknown tag, registry down, bad credentials).
    #[error("cannot pull {image}: {message}")]
    Pull {
        /// The image reference as given.
        image: String,
        /// The registry's or Docker's explanation.
        message: String,
    },
    /// `docker update` can set or change a limit but never remove one (it
    /// reads 0 as "unchanged"), so lifting it needs a new container.
    #[error(
        "cannot lift the {limit} limit of container {container} in place (docker update can only \
         change a limit); recreate the container to run it without one"
    )]
    LimitNotRemovable {
        /// The container's name or id.
        container: String,
        /// "memory" or "CPU".
        limit: &'static str,
    },
    /// An exec'd command did not finish in time. Docker cannot kill an exec'd
    /// process, so it may still be running in the container.
    #[error("command {command:?} in container {container} did not finish within {seconds:.1}s")]
    ExecTimeout {
        /// The container's name or id.
        container: String,
        /// The command, joined with spaces.
        command: String,
        /// The timeout.
        seconds: f64,
    },
    /// The request cannot be expressed to Docker (a value out of range, an
    /// unknown protocol).
    #[error("invalid request for container {container}: {message}")]
    Invalid {
        /// The container's name.
        container: String,
        /// What is wrong.
        message: String,
    },
}

impl DockerError {
    /// True when the engine could not be reached at all, so the caller should
    /// reconnect (with backoff) rather than treat the call as refused.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Unreachable { .. }
        )
    }
}

/// What turning a bollard error into a [`DockerError`] needs, detached from
/// the [`Engine`] so `'static` streams can carry it.
#[derive(Debug, Clone)]
pub(super) struct ErrorContext {
    pub(super) socket: PathBuf,
    pub(super) timeout: Duration,
}

impl ErrorContext {
    pub(super) fn fail(&self, action: String, e: BollardError) -> DockerError {
        let message = match e {
            BollardError::DockerResponseServerError { status_code, message } => {
                return DockerError::Api {
                    action,
                    status: Some(status_code),
                    message,
                };
            }
            BollardError::DockerStreamError { error } => {
                return DockerError::Api {
                    action,
                    status: None,
                    message: error,
                };
            }
            BollardError::RequestTimeoutError => {
                format!("no answer within {}s", self.timeout.as_secs())
            }
            e @ (BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::SocketNotFoundError(_)) => e.to_string(),
            e => {
                return DockerError::Api {
                    action,
                    status: None,
                    message: e.to_string(),
                };
            }
        };
        DockerError::Unreachable {
            socket: self.socket.clone(),
            action,
            message,
        }
    }

    /// Like [`Self::fail`], with a 404 meaning the container is gone.
    pub(super) fn container(&self, id: &str, action: String, e: BollardError) -> DockerError {
        if status_of(&e) == Some(404) {
            DockerError::NoSuchContainer {
                container: id.to_owned(),
            }
        } else {
            self.fail(action, e)
        }
    }
}

/// The HTTP status and message of an error Docker answered with.
pub(super) fn server_error(e: &BollardError) -> Option<(u16, &str)> {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => Some((*status_code, message)),
        _ => None,
    }
}

pub(super) fn status_of(e: &BollardError) -> Option<u16> {
    server_error(e).map(|(status, _)| status)
}

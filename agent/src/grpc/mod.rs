//! gRPC adapters: the `berth.v1` services as thin layers over the agent's
//! domain modules.
//!
//! Owns the mutual-TLS listener ([`listener`]), caller identity and role
//! checks, and the conversions between wire types and domain types. Domain
//! errors become `tonic::Status` here and only here. The server stops
//! accepting when the cancellation token fires and finishes in-flight calls.

pub mod audit;
pub mod audited;
pub mod env;
pub mod host;
pub mod listener;
pub mod locks;
pub mod metrics;
pub mod rollouts;
pub mod routes;
pub mod services;

use tonic::{Request, Status};

use berth_core::identity::{Identity, Role};
use listener::PeerInfo;

use crate::audit::Actor;

/// The longest error message sent to a caller, in bytes. An error that
/// echoes huge input would not fit the status header gRPC carries it in,
/// and would leave the caller with a broken call instead of a reason.
const MAX_MESSAGE: usize = 2048;

/// `message` cut to [`MAX_MESSAGE`] bytes at a character boundary, saying
/// how much was cut.
pub fn bounded(message: impl Into<String>) -> String {
    let mut message = message.into();
    let cut = berth_core::text::truncate_bytes(&mut message, MAX_MESSAGE);
    if cut > 0 {
        message.push_str(&format!("… ({cut} more bytes cut)"));
    }
    message
}

/// INVALID_ARGUMENT with a [`bounded`] message: the one way a bad request
/// is refused.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    Status::invalid_argument(bounded(message))
}

/// The verified caller of a request. Every connection went through mutual
/// TLS, so a missing identity means a certificate without a usable subject.
pub fn caller<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.identity.clone())
        .ok_or_else(|| {
            Status::unauthenticated(
                "no caller identity: the client certificate has no commonName; \
                 issue one with `berthctl certs issue client`",
            )
        })
}

/// The verified caller of a request as the audit log names it: name,
/// role, certificate fingerprint and address.
pub fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    let who = caller(request)?;
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .map(|p| p.remote_addr.to_string())
        .unwrap_or_default();
    Ok(Actor::caller(&who, &peer))
}

/// The caller as an [`Actor`], if it may change things; PERMISSION_DENIED
/// otherwise.
pub fn operator<T>(request: &Request<T>) -> Result<Actor, Status> {
    require_operator(request)?;
    actor(request)
}

/// The caller, if it may change things; PERMISSION_DENIED otherwise.
pub fn require_operator<T>(request: &Request<T>) -> Result<Identity, Status> {
    let who = caller(request)?;
    if who.role != Role::Operator {
        return Err(Status::permission_denied(format!(
            "{} has role {}; this call needs an operator certificate \
             (berthctl certs issue client --role operator)",
            who.name,
            who.role.as_str()
        )));
    }
    Ok(who)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_MESSAGE);
        let cut = bounded(long.clone());
        assert!(cut.len() < MAX_MESSAGE + 40, "{}", cut.len());
        assert!(
            cut.ends_with(&format!("… ({} more bytes cut)", long.len() - MAX_MESSAGE)),
            "{cut}"
        );
    }
}

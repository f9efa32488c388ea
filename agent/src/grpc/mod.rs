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
pub mod services;

use tonic::{Request, Status};

use berth_core::identity::{Identity, Role};
use listener::PeerInfo;

use crate::audit::Actor;

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

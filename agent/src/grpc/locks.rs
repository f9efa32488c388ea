//! The `berth.v1.FleetLock` service: thin adapters over the fleet-lock
//! keeper ([`crate::fleet::locks`]).
//!
//! Owns the wire↔domain conversions for leases and who may do what:
//! acquire, renew, release and break need an operator (the holder is the
//! caller's certificate name); `ListLocks` is open to viewers. A lease's id
//! goes back only to whoever acquired or renewed it. Unary calls; nothing
//! to shut down.

use berth_proto::v1::fleet_lock_server::FleetLock;
use berth_proto::v1::{
    self as pb, AcquireLockRequest, BreakLockRequest, ListLocksRequest, ListLocksResponse, ReleaseLockRequest,
    ReleaseLockResponse, RenewLockRequest,
};
use tonic::{Request, Response, Status};

use crate::clock::now_ms;
use crate::fleet::locks::{LockError, Locks, held_message};
use crate::leases::{Acquire, Lease, LeaseError};

/// Longest purpose or client text kept; they are shown in tables.
const MAX_TEXT: usize = 200;

/// The FleetLock API.
pub struct LocksApi {
    locks: Locks,
}

impl LocksApi {
    /// Serves the keeper behind `locks`.
    pub fn new(locks: Locks) -> Self {
        LocksApi { locks }
    }
}

/// A lease on the wire; `with_id` only for its holder.
fn lease_of(l: Lease, with_id: bool) -> pb::Lease {
    pb::Lease {
        name: l.name,
        holder: l.holder,
        lease_id: if with_id { l.lease_id } else { String::new() },
        expires_at_ms: l.expires_at_ms,
        purpose: l.purpose,
        client: l.client,
        acquired_at_ms: l.acquired_at_ms,
        renewed_at_ms: l.renewed_at_ms,
        ttl_seconds: u32::try_from(l.ttl_ms / 1000).unwrap_or(u32::MAX),
        now_ms: now_ms(),
    }
}

/// Lock errors → gRPC status, in one place.
fn status(e: LockError) -> Status {
    match e {
        LockError::Lease(LeaseError::Held(lease)) => Status::failed_precondition(held_message(&lease, now_ms())),
        LockError::Lease(e @ LeaseError::NotHolder { .. }) => Status::failed_precondition(e.to_string()),
        LockError::Lease(LeaseError::Invalid(m)) => super::invalid_argument(m),
        LockError::Disk(m) => Status::internal(m),
        LockError::Stopping => Status::unavailable("the agent is shutting down"),
    }
}

/// A caller-supplied text, trimmed to what a table can show.
fn text(s: String) -> String {
    let s = s.trim();
    if s.chars().count() > MAX_TEXT {
        s.chars().take(MAX_TEXT).collect()
    } else {
        s.to_owned()
    }
}

fn ttl_ms(seconds: u32) -> u64 {
    u64::from(seconds) * 1000
}

#[tonic::async_trait]
impl FleetLock for LocksApi {
    async fn acquire_lock(&self, request: Request<AcquireLockRequest>) -> Result<Response<pb::Lease>, Status> {
        super::audited::target(&request, &request.get_ref().name);
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let lease = self
            .locks
            .acquire(
                Acquire {
                    name: req.name,
                    holder: who.name.clone(),
                    purpose: text(req.purpose),
                    client: text(req.client),
                    ttl_ms: ttl_ms(req.ttl_seconds),
                },
                who,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(lease_of(lease, true)))
    }

    async fn renew_lock(&self, request: Request<RenewLockRequest>) -> Result<Response<pb::Lease>, Status> {
        super::audited::target(&request, &request.get_ref().name);
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let lease = self
            .locks
            .renew(who, req.name, req.lease_id, ttl_ms(req.ttl_seconds))
            .await
            .map_err(status)?;
        Ok(Response::new(lease_of(lease, true)))
    }

    async fn release_lock(
        &self,
        request: Request<ReleaseLockRequest>,
    ) -> Result<Response<ReleaseLockResponse>, Status> {
        super::audited::target(&request, &request.get_ref().name);
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let released = self.locks.release(who, req.name, req.lease_id).await.map_err(status)?;
        Ok(Response::new(ReleaseLockResponse {
            released: released.is_some(),
        }))
    }

    async fn list_locks(&self, request: Request<ListLocksRequest>) -> Result<Response<ListLocksResponse>, Status> {
        super::caller(&request)?;
        let leases = self.locks.list().await.map_err(status)?;
        Ok(Response::new(ListLocksResponse {
            leases: leases.into_iter().map(|l| lease_of(l, false)).collect(),
            now_ms: now_ms(),
        }))
    }

    async fn break_lock(&self, request: Request<BreakLockRequest>) -> Result<Response<pb::Lease>, Status> {
        super::audited::target(&request, &request.get_ref().name);
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let name = req.name.clone();
        match self
            .locks
            .break_lease(who, req.name, text(req.reason))
            .await
            .map_err(status)?
        {
            Some(lease) => Ok(Response::new(lease_of(lease, false))),
            None => Err(Status::not_found(format!(
                "no lock named {name:?} is held on this agent (see berthctl lock status)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_only_for_the_holder_and_refusals_name_the_holder() {
        let lease = Lease {
            name: "deploy".into(),
            lease_id: "secret".into(),
            holder: "alice".into(),
            purpose: "rollout".into(),
            client: String::new(),
            acquired_at_ms: 0,
            renewed_at_ms: 0,
            expires_at_ms: 30_000,
            ttl_ms: 30_000,
        };
        assert_eq!(lease_of(lease.clone(), true).lease_id, "secret");
        assert!(lease_of(lease.clone(), false).lease_id.is_empty());
        assert_eq!(lease_of(lease.clone(), false).ttl_seconds, 30);
        let s = status(LockError::Lease(LeaseError::Held(Box::new(lease))));
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(
            s.message()
                .contains("held by alice for \"rollout\" since 1970-01-01T00:00:00Z"),
            "{}",
            s.message()
        );
        assert_eq!(text("x".repeat(500)).len(), MAX_TEXT);
    }
}

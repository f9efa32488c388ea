//! What this agent keeps for orchestrators working across a fleet: the
//! fleet-lock leases ([`locks`]), so two fleet-wide changes never race, and
//! the records of the rollouts that touched this host ([`rollouts`]), so
//! any berthctl can show, pause or resume them. The lease keeper is one
//! task owning its table; the rollout records are files behind a handle.
//! The gRPC adapters hold the handles.

pub mod locks;
pub mod rollouts;

//! What this agent keeps for orchestrators working across a fleet: the
//! fleet-lock leases ([`locks`]), so two fleet-wide changes never race.
//! Each concern is one task owning its table; the gRPC adapters hold a
//! handle.

pub mod locks;

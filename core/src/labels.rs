//! The Docker labels berth puts on the containers it creates. They are how
//! an agent recognises its own containers (and only those), adopts them
//! after a restart and rebuilds a lost state file; tests and operators find
//! berth's containers by them too.

/// Prefix of every berth label; a spec may not set labels under it.
pub const PREFIX: &str = "berth.";
/// Marks a container as berth's; its value is `"true"`.
pub const MANAGED: &str = "berth.managed";
/// The agent instance that owns a container (config `docker.instance`), so
/// agents sharing one engine never touch each other's containers.
pub const INSTANCE: &str = "berth.instance";
/// The service a container runs.
pub const SERVICE: &str = "berth.service";
/// The service revision (a decimal number) a container runs.
pub const REVISION: &str = "berth.revision";
/// The container's whole spec as JSON, so a lost state file can be rebuilt
/// from Docker alone.
pub const SPEC: &str = "berth.spec";
/// Marks a network holder: the container that keeps a service's network
/// namespace (its address and published ports) while the service's own
/// containers, joined to it, are replaced. Its value is the service's name.
/// A holder carries [`MANAGED`] and [`INSTANCE`] but not [`SERVICE`], so
/// nothing that lists a service's containers mistakes it for one.
pub const HOLDER: &str = "berth.holder";

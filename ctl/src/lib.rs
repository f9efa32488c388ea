//! berthctl: drive berth agents over mutual-TLS gRPC.
//!
//! The library holds what the binary and the end-to-end tests share:
//! - [`client`]: reaching an agent (address, TLS files, dialing), the one
//!   way to call it ([`client::Agent::call`]: connect → call → explain) and
//!   the sentences its failures become;
//! - [`certs`]: minting the CA, agent and client certificates;
//! - [`output`]: tables and units, and the [`output::Sink`] every renderer
//!   prints to (one host as is, or many hosts side by side);
//! - [`fleet`]: the inventory, host lists from discovery, `--select`;
//! - [`rollout`]: fleet rollouts (the pure planner);
//! - [`cmd`]: one module per subcommand.

pub mod certs;
pub mod client;
pub mod cmd;
pub mod fleet;
pub mod output;
pub mod rollout;

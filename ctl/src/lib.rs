//! berthctl: drive berth agents over mutual-TLS gRPC.
//!
//! The library holds what the binary and the end-to-end tests share: agent
//! connections and their error messages ([`client`]), certificate minting
//! ([`certs`]), output formatting ([`output`]) and one module per subcommand
//! ([`cmd`]).

pub mod certs;
pub mod client;
pub mod cmd;
pub mod fleet;
pub mod output;
pub mod rollout;

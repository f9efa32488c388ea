//! Connecting to agents over mutual TLS, and saying why it failed.
//!
//! berthctl and the end-to-end tests use this same code. One concern per
//! file:
//! - [`target`]: the agent's address as the user wrote it ([`Target`]);
//! - [`tls_files`]: the client's CA, certificate and key ([`TlsFiles`]);
//! - [`dial`]: the rustls connector and the channel ([`connect`]);
//! - [`explain`](mod@explain): transport, TLS and status errors in words
//!   ([`ConnectError`]);
//! - [`agent`]: one agent and the one way to call it, connect → call →
//!   explain ([`Agent::call`]).

pub mod agent;
pub mod dial;
pub mod explain;
pub mod target;
pub mod tls_files;

pub use agent::Agent;
pub use dial::{CONNECT_TIMEOUT, client_config, connect, connect_with};
pub use explain::{ConnectError, explain, explain_status};
pub use target::{DEFAULT_PORT, Target};
pub use tls_files::{TlsFiles, default_tls_dir};

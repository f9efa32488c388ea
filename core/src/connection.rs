//! What the agent and berthctl agree on about a connection's life.
//!
//! The agent closes every connection at its maximum age (and at its client
//! certificate's notAfter). Streams that follow (`logs -f`, `events`, `top`)
//! would hold the connection open past that, so the agent ends them first
//! with UNAVAILABLE and the [`RECONNECT`] trailer; berthctl reads that as
//! "open it again on a new connection and carry on", not as a failure.

/// The trailer (gRPC metadata) key that marks a stream the agent ended
/// because its connection reached its age; its value says why.
pub const RECONNECT: &str = "berth-reconnect";

/// The value of [`RECONNECT`] when the connection reached
/// `connections.max_connection_age`.
pub const MAX_AGE: &str = "max-connection-age";

/// The value of [`RECONNECT`] when the client certificate expires.
pub const CERT_EXPIRY: &str = "client-certificate-expiry";

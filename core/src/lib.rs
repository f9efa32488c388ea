//! berth-core: what the agent and berthctl must mean the same way.
//!
//! The service spec (types, parsing with key and line errors, validation),
//! the units it is written in (sizes, durations, CPUs), names and image
//! references, the env-file syntax, the certificate role contract and the
//! labels on berth's containers, and the audit record with its hash
//! chain. Everything here is pure: no I/O, no async,
//! so both binaries and the fuzzers can use it as it is. Checks that need a
//! host (ports in use, its CPUs and memory) belong to the agent.

pub mod audit;
pub mod connection;
pub mod envfile;
pub mod identity;
pub mod image;
pub mod labels;
#[cfg(feature = "manpages")]
pub mod manpages;
pub mod names;
pub mod spec;
pub mod text;
pub mod tomlfile;
pub mod units;

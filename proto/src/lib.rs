//! The `berth.v1` gRPC API, generated from `proto/berth/v1/berth.proto`.
//!
//! This crate holds only generated code. Conversions between these wire types
//! and the agent's domain types live in the agent's `grpc` module.

#![allow(missing_docs, clippy::all)]

/// Version 1 of the berth agent API.
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

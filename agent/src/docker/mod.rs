//! The agent's connection to the Docker Engine API.
//!
//! Owns everything berth says to dockerd. [`connect`] opens a client on the
//! configured unix socket and negotiates the API version: the engine on a host
//! may be older than bollard's default (Docker 20.10 speaks API 1.41), so the
//! client version is lowered to the engine's on first contact and again after
//! every reconnect. [`Engine`] wraps that client for the rest of the agent:
//! pulling images (with per-registry credentials), creating, starting,
//! stopping, updating and removing the containers berth manages, reading their
//! logs, running commands in them and watching their events.
//!
//! Inputs are the [`DockerConfig`](crate::config::DockerConfig) and the
//! registry credentials; outputs are plain types ([`ContainerInfo`],
//! [`EngineEvent`], [`LogLine`], ...) so no other module needs bollard's
//! models. Containers are berth's when they carry
//! [`berth_core::labels::MANAGED`]`=true`; this module never touches
//! anything else unless handed its id. It keeps no state besides the
//! client: every call asks Docker afresh, and there is nothing to shut
//! down. Streams ([`Engine::logs`], [`Engine::events`]) end when dropped,
//! or end or fail when dockerd goes away, and the caller reconnects.
//!
//! Parts: [`engine`] (the calls), [`error`] (what can go wrong, as
//! [`DockerError`]), [`types`] (the plain types the rest of the agent
//! sees), `convert` (bollard's models to and from those types), [`auth`]
//! (registry credentials), [`logins`] (the ones a command or credential
//! helper hands out, kept until they expire), `time` (Docker's
//! timestamps), `volumes` (the volumes and networks berth creates) and
//! `pause` (the network holders' image, and finding a service's holders).

pub mod auth;
mod convert;
pub mod engine;
pub mod error;
pub mod logins;
mod pause;
mod time;
pub mod types;
mod volumes;

pub use auth::{RegistryAuth, Secret};
pub use engine::{Engine, connect, engine_version};
pub use error::DockerError;
pub use pause::{PAUSE_COMMAND, PAUSE_IMAGE, pause_supported};
pub use types::{
    ContainerInfo, CreateRequest, DockerHealth, EngineEvent, EngineVersion, HolderState, Joined, LogLine, PortBinding,
    PublishedPort, PullProgress, RunFlags, SoftLimits,
};
pub use volumes::Ensured;

//! The service spec: what one service on a host should look like.
//!
//! This module owns the TOML format users write (`berthctl apply -f SPEC.toml`),
//! its defaults, and every check that needs nothing but the spec:
//! [`parse`] = deserialize + [`ServiceSpec::validate`]. Checks that need facts
//! about a host (ports in use, its CPUs and memory) live in the agent. All of
//! these are pure functions; nothing here does I/O.
//!
//! Specs are stored in the agent's state and sent back to users, so a spec
//! round-trips through TOML ([`ServiceSpec::to_toml`] then [`parse`]) and
//! through serde_json. Errors are [`SpecError`]s whose text tells the user
//! which key is wrong and why: `resources.memory "16x": expected a size like
//! 512m or 16g`.
//!
//! Parts: the types and their accessors ([`types`]), health checks
//! ([`health`]), port mappings ([`ports`]), stop signals ([`signal`]) and the
//! cross-field rules ([`validate`]).

pub mod diff;
pub mod health;
pub mod ports;
pub mod run;
pub mod signal;
pub mod types;
pub mod validate;
pub mod volumes;

#[cfg(test)]
mod tests;

use std::fmt;

pub use health::{Health, HealthCheck, Probe, VersionCheck};
pub use ports::{PortMapping, Protocol};
pub use run::{Logging, Ulimit, is_builtin_network};
pub use signal::StopSignal;
pub use types::{Deploy, EnvChange, Proxy, Resources, RestartPolicy, ServiceSpec, Strategy};
pub use volumes::{VolumeMount, VolumeSource};

pub use crate::image::ImageRef;
pub use crate::names::ServiceName;
use crate::text::{capped, cut, shown};
use crate::units::InvalidValue;

/// Every default of the spec that is not an enum's `#[default]` variant.
///
/// serde's `default = "..."` attributes and the `Default` impls both call
/// these, so each value is written down once.
pub(crate) mod defaults {
    use crate::units::Duration;

    pub(crate) fn stop_timeout() -> Duration {
        Duration::from_secs(10)
    }

    pub(crate) fn health_interval() -> Duration {
        Duration::from_secs(2)
    }

    pub(crate) fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }

    pub(crate) fn health_retries() -> u32 {
        3
    }

    pub(crate) fn health_start_period() -> Duration {
        Duration::from_secs(0)
    }

    pub(crate) fn health_success_threshold() -> u32 {
        1
    }

    pub(crate) fn health_min_healthy() -> Duration {
        Duration::from_secs(0)
    }

    pub(crate) fn health_deadline() -> Duration {
        Duration::from_secs(60)
    }

    pub(crate) fn drain() -> Duration {
        Duration::from_secs(5)
    }

    pub(crate) fn proxy_listen() -> Vec<u16> {
        vec![80]
    }

    pub(crate) fn proxy_health_paths() -> Vec<String> {
        ["/__lbheartbeat__", "/__heartbeat__", "/__version__"]
            .map(String::from)
            .to_vec()
    }

    pub(crate) fn proxy_read_timeout() -> Duration {
        Duration::from_secs(60)
    }

    pub(crate) fn proxy_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

/// Docker refuses memory limits under 6 MiB.
pub(crate) const DOCKER_MIN_MEMORY: u64 = 6 << 20;

/// Label keys with this prefix belong to the agent (`berth.managed`,
/// `berth.service`, `berth.revision`); it adopts containers by them.
pub(crate) const RESERVED_LABEL_PREFIX: &str = "berth.";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not TOML or does not have the spec's shape: bad syntax, an
    /// unknown or missing key, a wrong type. Holds toml's message, which shows
    /// the line and column with a caret and, for an unknown key, the valid ones.
    #[error("{0}")]
    Syntax(String),
    /// A value breaks a rule. Displays as `{key} "{value}": {message}`, or
    /// `{key}: {message}` when no single value is to blame.
    #[error("{key}{}: {message}", Quoted(.value))]
    Invalid {
        /// Dotted path of the key, such as `resources.memory`.
        key: String,
        /// The offending value as the user wrote it, if one is to blame.
        value: Option<String>,
        /// What is wrong, or what was expected.
        message: String,
    },
}

/// Displays ` "value"` for `Some`, nothing for `None`.
struct Quoted<'a>(&'a Option<String>);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, " \"{value}\""),
            None => Ok(()),
        }
    }
}

/// An error blaming `value` of `key`.
pub fn invalid(key: &str, value: impl fmt::Display, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: shown_key(key),
        value: Some(shown(&value.to_string())),
        message: capped(message.into(), MESSAGE_MAX),
    }
}

/// Longest key path an error names, in characters. Keys of maps (`env`,
/// `labels`, `logging.options`) are the user's and may be any length.
const SHOWN_KEY: usize = 160;

/// Most bytes of an error's own message: messages that quote another
/// value (`already mounted by "..."`) stay bounded too.
const MESSAGE_MAX: usize = 1024;

fn shown_key(key: &str) -> String {
    cut(key, SHOWN_KEY)
}

/// An error about `key` as a whole (a missing or contradictory setting).
pub fn invalid_key(key: &str, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: shown_key(key),
        value: None,
        message: capped(message.into(), MESSAGE_MAX),
    }
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// The largest spec text accepted. Every spec is kept in the agent's state,
/// in each of its revisions and in `berthctl ps`, so a spec is kept small
/// enough that a host full of them still answers in one message.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

/// Labels per spec.
pub const MAX_LABELS: usize = 64;

/// Bytes of one label key.
pub const MAX_LABEL_KEY: usize = 128;

/// Bytes of one label value.
pub const MAX_LABEL_VALUE: usize = 1024;

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses and validates a spec written in TOML.
pub fn parse(text: &str) -> Result<ServiceSpec, SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(invalid_key(
            "spec",
            format!(
                "is {} bytes; a spec may be at most {} KiB (keep big data in env files or the image)",
                text.len(),
                MAX_SPEC_BYTES / 1024
            ),
        ));
    }
    let spec: ServiceSpec = toml::from_str(text).map_err(|e| from_toml_error(text, &e))?;
    spec.validate()?;
    Ok(spec)
}

/// Turns a toml error into a [`SpecError`].
///
/// A bad value in a newtype (`memory = "16x"`) fails inside serde, which knows
/// nothing of keys: toml only gets the newtype's message, `expected a size like
/// 512m or 16g, got "16x"`, and the span of the value. Rather than deserialize
/// every such field as a raw string and convert it again with its key name
/// (a second copy of every struct), we take the span toml reports, parse the
/// document again into toml's spanned tree (only on this error path), and
/// look up which key holds the value at that span. That yields
/// `resources.memory "16x": expected a size like 512m or 16g`, the same form
/// as the errors of [`ServiceSpec::validate`].
///
/// Everything else (bad syntax, unknown or missing keys, wrong types) keeps
/// toml's own message: it shows the line with a caret, and for an unknown key
/// lists the valid ones.
fn from_toml_error(text: &str, error: &toml::de::Error) -> SpecError {
    let value_error = InvalidValue::from_message(error.message());
    let key = error.span().and_then(|span| crate::tomlfile::key_at(text, &span));
    match (value_error, key) {
        (Some(value_error), Some(key)) => SpecError::Invalid {
            key: shown_key(&key),
            value: Some(shown(value_error.value())),
            message: capped(value_error.expected().to_owned(), MESSAGE_MAX),
        },
        _ => SpecError::Syntax(crate::text::toml_error_text(error)),
    }
}

//! Service names: what a service is called on a host, in container names,
//! env file names, labels and nginx site names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::units::{InvalidValue, deserialize_from_str};

const NAME_EXPECTING: &str = "a service name like \"web\"";

/// A service's name: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
///
/// Valid as a Docker container name and as a file name, so it can name both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

impl ServiceName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServiceName {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && bytes.len() <= 63 {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue::new(
                format!(
                    "expected {NAME_EXPECTING}: lowercase letters, digits, '_', '.' and '-', \
                     starting with a letter or digit, at most 63 characters"
                ),
                s,
            ))
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, NAME_EXPECTING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        for good in ["w", "web", "contextgraph-web", "a.b_c-d", "0", &"a".repeat(63)] {
            assert!(good.parse::<ServiceName>().is_ok(), "{good:?}");
        }
        for bad in ["", "Web", "-web", "_web", ".web", "web/x", "web x", &"a".repeat(64)] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad:?}");
        }
    }
}

//! The certificate contract between berthctl and the agent: who a caller is
//! and what it may do travel inside its client certificate. The subject's
//! commonName is the caller's name; its organizationalUnitName is the role
//! (`OU=operator` or `OU=viewer`). `berthctl certs issue client` writes both;
//! the agent reads them from the verified certificate of every connection.

use std::fmt;
use std::str::FromStr;

/// What a caller may do, from its client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Role {
    /// May deploy, roll back, change env: every call.
    Operator,
    /// May read and watch only.
    Viewer,
}

impl Role {
    /// The role's name as written in certificates (the OU).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("{other:?} is not a role (operator or viewer)")),
        }
    }
}

/// Who is calling, taken from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate's commonName.
    pub name: String,
    /// From organizationalUnitName; a certificate without a known role is a
    /// viewer, so a stray certificate from the CA can never change anything.
    pub role: Role,
}

impl Identity {
    /// Reads name and role from a DER client certificate.
    pub fn from_der(der: &[u8]) -> Option<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_owned();
        let role = subject
            .iter_organizational_unit()
            .filter_map(|ou| ou.as_str().ok())
            .find_map(|ou| ou.parse::<Role>().ok())
            .unwrap_or(Role::Viewer);
        Some(Identity { name, role })
    }
}

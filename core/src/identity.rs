//! The certificate contract between berthctl and the agent: who a caller is
//! and what it may do travel inside its client certificate. The subject's
//! commonName is the caller's name; its organizationalUnitName is the role
//! (`OU=operator` or `OU=viewer`). `berthctl certs issue client` writes both;
//! the agent reads them from the verified certificate of every connection.

use std::fmt;
use std::str::FromStr;

use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::der::asn1::{Any, Ia5StringRef, ObjectIdentifier, PrintableStringRef, TeletexStringRef, Utf8StringRef};

/// X.520's commonName and organizationalUnitName.
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

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
    /// The certificate's commonName; never empty.
    pub name: String,
    /// From organizationalUnitName; a certificate without a known role is a
    /// viewer, so a stray certificate from the CA can never change anything.
    pub role: Role,
    /// SHA-256 of the certificate (DER, hex), for the audit log: tells two
    /// certificates with the same name apart.
    pub fingerprint: String,
}

/// Why a client certificate names no usable caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a parsable X.509 certificate.
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// No commonName, or an empty one: the audit log could not say who.
    #[error("the client certificate has no commonName; issue one with `berthctl certs issue client --name NAME`")]
    NoName,
    /// Both `OU=operator` and `OU=viewer`: which one holds would depend on
    /// their order.
    #[error("the client certificate {name:?} carries both OU=operator and OU=viewer; issue it with one role")]
    ConflictingRoles {
        /// Its commonName.
        name: String,
    },
}

/// When a DER certificate stops being valid (its notAfter), or `None` if
/// it cannot be parsed.
pub fn not_after(der: &[u8]) -> Option<std::time::SystemTime> {
    let cert = Certificate::from_der(der).ok()?;
    Some(std::time::UNIX_EPOCH + cert.tbs_certificate.validity.not_after.to_unix_duration())
}

/// The subject's attributes of type `oid`, as text, in the certificate's
/// order; values that are not a string type are skipped.
fn subject_texts<'a>(cert: &'a Certificate, oid: ObjectIdentifier) -> impl Iterator<Item = &'a str> + 'a {
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(move |atv| atv.oid == oid)
        .filter_map(|atv| text(&atv.value))
}

/// A directory string's text: UTF8String (what berthctl writes),
/// PrintableString, IA5String or TeletexString.
fn text(value: &Any) -> Option<&str> {
    if let Ok(s) = value.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.as_str());
    }
    if let Ok(s) = value.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.as_str());
    }
    if let Ok(s) = value.decode_as::<Ia5StringRef<'_>>() {
        return Some(s.as_str());
    }
    value.decode_as::<TeletexStringRef<'_>>().ok().map(|s| s.as_str())
}

impl Identity {
    /// Reads name and role from a DER client certificate. Refuses one
    /// without a name or with two different roles.
    pub fn from_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let cert = Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let name = subject_texts(&cert, COMMON_NAME).next().unwrap_or("").trim().to_owned();
        if name.is_empty() {
            return Err(IdentityError::NoName);
        }
        let mut roles = subject_texts(&cert, ORGANIZATIONAL_UNIT).filter_map(|ou| ou.parse::<Role>().ok());
        let role = roles.next().unwrap_or(Role::Viewer);
        if roles.any(|other| other != role) {
            return Err(IdentityError::ConflictingRoles { name });
        }
        Ok(Identity {
            name,
            role,
            fingerprint: crate::audit::sha256_hex(der),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (t, v) in subject {
            dn.push(t.clone(), *v);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn name_role_and_fingerprint_come_from_the_certificate() {
        use rcgen::DnType::{CommonName, OrganizationalUnitName};
        let der = cert(&[(CommonName, "alice"), (OrganizationalUnitName, "operator")]);
        let id = Identity::from_der(&der).expect("identity");
        assert_eq!((id.name.as_str(), id.role), ("alice", Role::Operator));
        assert_eq!(id.fingerprint, crate::audit::sha256_hex(&der));
        let id = Identity::from_der(&cert(&[(CommonName, "dash")])).expect("no OU");
        assert_eq!(id.role, Role::Viewer);
        // The same role twice, or an unrelated OU next to it, is fine.
        // rcgen keeps one value per type: the same OID under another key
        // makes a second OU.
        let der = cert(&[
            (CommonName, "bob"),
            (OrganizationalUnitName, "ops"),
            (rcgen::DnType::CustomDnType(vec![2, 5, 4, 11]), "operator"),
        ]);
        assert_eq!(Identity::from_der(&der).expect("identity").role, Role::Operator);
    }

    #[test]
    fn empty_names_and_conflicting_roles_are_refused() {
        use rcgen::DnType::{CommonName, OrganizationalUnitName};
        let der = cert(&[(CommonName, ""), (OrganizationalUnitName, "operator")]);
        assert_eq!(Identity::from_der(&der), Err(IdentityError::NoName));
        let der = cert(&[(OrganizationalUnitName, "operator")]);
        assert_eq!(Identity::from_der(&der), Err(IdentityError::NoName));
        for order in [["operator", "viewer"], ["viewer", "operator"]] {
            let der = cert(&[
                (CommonName, "eve"),
                (OrganizationalUnitName, order[0]),
                (rcgen::DnType::CustomDnType(vec![2, 5, 4, 11]), order[1]),
            ]);
            assert!(
                matches!(Identity::from_der(&der), Err(IdentityError::ConflictingRoles { .. })),
                "{order:?}"
            );
        }
    }

    #[test]
    fn a_name_in_a_printable_string_is_read_too() {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        let name = rcgen::string::PrintableString::try_from("carol").expect("printable");
        dn.push(rcgen::DnType::CommonName, rcgen::DnValue::PrintableString(name));
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        let id = Identity::from_der(&der).expect("identity");
        assert_eq!((id.name.as_str(), id.role), ("carol", Role::Viewer));
        assert!(matches!(
            Identity::from_der(b"not a certificate"),
            Err(IdentityError::Unparsable(_))
        ));
    }

    #[test]
    fn not_after_is_read_from_the_certificate() {
        let mut params = rcgen::CertificateParams::default();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        let at = not_after(&der).expect("parsable");
        let secs = at.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
        assert_eq!(secs, 1_936_742_400);
        assert_eq!(not_after(b"not a certificate"), None);
    }
}

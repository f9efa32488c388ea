//! Minting the certificates berth's mutual TLS runs on.
//!
//! Owns the CA (`ca.pem`, `ca-key.pem`), agent certificates (server auth,
//! with the addresses clients dial as SANs) and client certificates (client
//! auth, the caller's name in commonName and its role in
//! organizationalUnitName, which is where the agent reads it), and the
//! CA's revocation list (`crl.pem`, the agent's `tls.crl`). Every file is
//! written with mode 0600 and never overwritten unless asked to (the list
//! is rewritten whole, keeping what it already revoked).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RevocationReason, SanType,
};
use time::{Duration, OffsetDateTime};

/// The role a client certificate carries: the contract is the agent's and
/// berthctl's both, in `berth_core`.
pub use berth_core::identity::Role;

/// Default lifetime of a CA: long, since replacing it means reissuing all.
pub const CA_DAYS: i64 = 3650;
/// Default lifetime of an agent certificate.
pub const AGENT_DAYS: i64 = 825;
/// Default lifetime of a client certificate: people leave, so shorter.
pub const CLIENT_DAYS: i64 = 365;

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file exists and `--force` was not given.
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA files are missing.
    #[error("no CA in {dir}: run `berthctl certs init --dir {dir}` first ({source})")]
    NoCa {
        /// The directory searched.
        dir: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// rcgen refused the parameters.
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A name or SAN that cannot go into a certificate.
    #[error("{0}")]
    Invalid(String),
}

/// The validity window of a new certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (tolerating clock skew between hosts) for `days`.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// Paths of a certificate and its key, `NAME.pem` and `NAME-key.pem`.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl Pair {
    /// `DIR/NAME.pem` and `DIR/NAME-key.pem`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Pair {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }
}

/// Creates a new CA in `dir` (`ca.pem`, `ca-key.pem`).
pub fn init_ca(dir: &Path, validity: Validity, force: bool) -> Result<Pair, CertError> {
    let pair = Pair::in_dir(dir, "ca");
    refuse_overwrite(&pair, force)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let key = KeyPair::generate()?;
    // A distinct name per CA: TLS stacks look issuers up by name, and two
    // CAs both called "berth CA" turn "wrong CA" into a confusing
    // signature error.
    let tag: String = key
        .public_key_raw()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("berth CA {tag}"));
    params.distinguished_name.push(DnType::OrganizationName, "berth");
    // Path length 0: this CA signs agents and clients, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.self_signed(&key)?;
    write_pair(dir, &pair, &cert.pem(), &key.serialize_pem(), force)?;
    Ok(pair)
}

/// Issues an agent (server) certificate valid for `sans` (host names or IPs
/// that clients dial).
pub fn issue_agent(
    dir: &Path,
    name: &str,
    sans: &[String],
    validity: Validity,
    force: bool,
) -> Result<Pair, CertError> {
    check_name(name)?;
    if sans.is_empty() {
        return Err(CertError::Invalid(
            "an agent certificate needs at least one --san: the host name or IP address clients connect to".into(),
        ));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationalUnitName, "agent");
    for san in sans {
        let entry =
            match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into().map_err(|_| {
                    CertError::Invalid(format!("--san {san:?} is neither an IP address nor a DNS name"))
                })?),
            };
        params.subject_alt_names.push(entry);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    issue(dir, name, params, validity, force)
}

/// Issues a client certificate for `name` with `role`.
pub fn issue_client(dir: &Path, name: &str, role: Role, validity: Validity, force: bool) -> Result<Pair, CertError> {
    check_name(name)?;
    if name == "ca" {
        return Err(CertError::Invalid(
            "\"ca\" names the CA's own files; choose another name".into(),
        ));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    issue(dir, name, params, validity, force)
}

fn issue(
    dir: &Path,
    name: &str,
    mut params: CertificateParams,
    validity: Validity,
    force: bool,
) -> Result<Pair, CertError> {
    let pair = Pair::in_dir(dir, name);
    refuse_overwrite(&pair, force)?;
    let ca = Pair::in_dir(dir, "ca");
    let read_ca = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CertError::NoCa {
            dir: dir.to_owned(),
            source,
        })
    };
    let ca_cert = read_ca(&ca.cert)?;
    let ca_key = KeyPair::from_pem(&read_ca(&ca.key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)?;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(dir, &pair, &cert.pem(), &key.serialize_pem(), force)?;
    Ok(pair)
}

/// Adds the certificates at `certs` to the revocation list at `crl` (made
/// when missing; entries already there are kept), signed by `dir`'s CA and
/// valid `days`. Returns how many serials the list now holds.
pub fn revoke(dir: &Path, certs: &[PathBuf], crl: &Path, days: i64) -> Result<usize, CertError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CertError::Io { path, source }
    };
    let invalid = |path: &Path, what: String| CertError::Invalid(format!("{}: {what}", path.display()));
    let ca = Pair::in_dir(dir, "ca");
    let read_ca = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CertError::NoCa {
            dir: dir.to_owned(),
            source,
        })
    };
    let issuer = Issuer::from_ca_cert_pem(&read_ca(&ca.cert)?, KeyPair::from_pem(&read_ca(&ca.key)?)?)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked: Vec<rcgen::RevokedCertParams> = Vec::new();
    if crl.exists() {
        let pem = std::fs::read(crl).map_err(io(crl))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
            .map_err(|e| invalid(crl, format!("not a PEM revocation list: {e}")))?;
        let (_, list) = x509_parser::parse_x509_crl(&pem.contents)
            .map_err(|e| invalid(crl, format!("not a revocation list: {e}")))?;
        for r in list.iter_revoked_certificates() {
            revoked.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(r.raw_serial()),
                revocation_time: r.revocation_date.to_datetime(),
                reason_code: None,
                invalidity_date: None,
            });
        }
    }
    for path in certs {
        let pem = std::fs::read(path).map_err(io(path))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&pem).map_err(|e| invalid(path, format!("not a PEM certificate: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
            .map_err(|e| invalid(path, format!("not a certificate: {e}")))?;
        let serial = rcgen::SerialNumber::from_slice(cert.raw_serial());
        if !revoked.iter().any(|r| r.serial_number == serial) {
            revoked.push(rcgen::RevokedCertParams {
                serial_number: serial,
                revocation_time: now,
                reason_code: Some(RevocationReason::Superseded),
                invalidity_date: None,
            });
        }
    }
    let count = revoked.len();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(days),
        // Seconds since the epoch: a later list always has a larger number.
        crl_number: rcgen::SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(0)),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let list = params.signed_by(&issuer)?;
    write_0600(crl, &list.pem()?, true)?;
    Ok(count)
}

fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(format!(
            "--name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@' (it becomes the file name NAME.pem)"
        )))
    }
}

/// Checks both files before writing either, so a refusal leaves nothing half-done.
fn refuse_overwrite(pair: &Pair, force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    for p in [&pair.cert, &pair.key] {
        if p.exists() {
            return Err(CertError::Exists(p.clone()));
        }
    }
    Ok(())
}

fn write_pair(dir: &Path, pair: &Pair, cert: &str, key: &str, force: bool) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    write_0600(&pair.key, key, force)?;
    write_0600(&pair.cert, cert, force)
}

/// Writes a file readable by its owner only. Without `force` the file must
/// not exist (O_EXCL), which also closes the race with a concurrent writer.
fn write_0600(path: &Path, contents: &str, force: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_owned())
        } else {
            io(e)
        }
    })?;
    // An existing file keeps its old mode when truncated; tighten it.
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn ca_agent_client_files_are_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        init_ca(d, Validity::days(CA_DAYS), false).expect("init");
        issue_agent(
            d,
            "agent",
            &["127.0.0.1".into(), "localhost".into()],
            Validity::days(AGENT_DAYS),
            false,
        )
        .expect("agent");
        issue_client(d, "alice", Role::Operator, Validity::days(CLIENT_DAYS), false).expect("client");
        for f in [
            "ca.pem",
            "ca-key.pem",
            "agent.pem",
            "agent-key.pem",
            "alice.pem",
            "alice-key.pem",
        ] {
            let mode = std::fs::metadata(d.join(f)).expect(f).permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let err = init_ca(d, Validity::days(1), false).expect_err("must refuse");
        assert!(err.to_string().contains("--force"), "{err}");
        let before = std::fs::read(d.join("alice.pem")).expect("read");
        let err = issue_client(d, "alice", Role::Viewer, Validity::days(1), false).expect_err("refuse");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(before, std::fs::read(d.join("alice.pem")).expect("read"));
        issue_client(d, "alice", Role::Viewer, Validity::days(1), true).expect("force replaces");
        assert_ne!(before, std::fs::read(d.join("alice.pem")).expect("read"));
    }

    #[test]
    fn role_and_name_are_in_the_subject() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        init_ca(d, Validity::days(1), false).expect("init");
        let pair = issue_client(d, "bob", Role::Viewer, Validity::days(1), false).expect("client");
        let pem = std::fs::read(&pair.cert).expect("read");
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        let cert = parsed.parse_x509().expect("x509");
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=bob"), "{subject}");
        assert!(subject.contains("OU=viewer"), "{subject}");
    }

    #[test]
    fn issuing_without_a_ca_says_how_to_make_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = issue_client(dir.path(), "x", Role::Viewer, Validity::days(1), false).expect_err("no ca");
        assert!(err.to_string().contains("berthctl certs init"), "{err}");
    }
}

//! The client's TLS files: which ones, and what they hold.
//!
//! Owns where they live by default ([`default_tls_dir`]), resolving `--tls-dir` and `--cert` into the CA, certificate and key
//! paths ([`TlsFiles::resolve`]; without `--cert`, the only client
//! certificate in the directory), and reading them as rustls types. Input:
//! a directory and an optional name; output: [`TlsFiles`] or a
//! [`ConnectError::Setup`] that says which file is missing and how to make
//! it. Reads files only; nothing to shut down.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ConnectError;

/// `~/.config/berth` (or `$XDG_CONFIG_HOME/berth`).
pub fn default_tls_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".config").join("berth")
}

/// The client's TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA that signed the agents' certificates.
    pub ca: PathBuf,
    /// Our client certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `DIR/ca.pem` plus `DIR/NAME.pem` and `DIR/NAME-key.pem`; without a
    /// name, the only client certificate in `dir`.
    pub fn resolve(dir: &Path, name: Option<&str>) -> Result<Self, ConnectError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => only_client_cert(dir)?,
        };
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        for p in [&files.ca, &files.cert, &files.key] {
            if !p.exists() {
                return Err(ConnectError::Setup(format!(
                    "{} does not exist; --tls-dir must hold ca.pem, NAME.pem and NAME-key.pem \
                     (make them with `berthctl certs init` and `berthctl certs issue client`)",
                    p.display()
                )));
            }
        }
        Ok(files)
    }
}

/// Finds the one `NAME.pem` in `dir` that is a client certificate.
fn only_client_cert(dir: &Path) -> Result<String, ConnectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ConnectError::Setup(format!(
            "cannot read TLS dir {}: {e}; set --tls-dir or BERTH_TLS_DIR",
            dir.display()
        ))
    })?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".pem") else {
            continue;
        };
        if name == "ca" || name.ends_with("-key") || !dir.join(format!("{name}-key.pem")).exists() {
            continue;
        }
        if is_client_cert(&entry.path()) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    match names.len() {
        1 => Ok(names.remove(0)),
        0 => Err(ConnectError::Setup(format!(
            "no client certificate in {}; make one with `berthctl certs issue client --dir {} --name NAME --role operator`",
            dir.display(),
            dir.display()
        ))),
        _ => Err(ConnectError::Setup(format!(
            "several client certificates in {} ({}); choose one with --cert NAME",
            dir.display(),
            names.join(", ")
        ))),
    }
}

fn is_client_cert(path: &Path) -> bool {
    let Ok(pem) = std::fs::read(path) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let pem = std::fs::read(path).map_err(|e| ConnectError::Setup(format!("cannot read {}: {e}", path.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ConnectError::Setup(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConnectError::Setup(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnectError> {
    let pem = std::fs::read(path).map_err(|e| ConnectError::Setup(format!("cannot read {}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| ConnectError::Setup(format!("{}: {e}", path.display())))?
        .ok_or_else(|| ConnectError::Setup(format!("{} holds no private key", path.display())))
}

/// When `cert` expires, for messages; `None` when it cannot be read.
pub(super) fn not_after(cert: &Path) -> Option<String> {
    let pem = std::fs::read(cert).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_string())
}

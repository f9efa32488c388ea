//! Mutual TLS for the agent's gRPC listener.
//!
//! Owns loading the agent's certificate, key, client CA and revocation
//! lists into a rustls `ServerConfig` that *requires* a client certificate
//! signed by that CA, not revoked, and naming a caller: who the caller is,
//! read from its verified certificate, is the contract in
//! [`berth_core::identity`], and a certificate without a name or with two
//! roles is refused at the handshake. A bad file stops the agent before it
//! listens; no task.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use berth_core::identity::Identity;

use crate::config::TlsConfig;

/// TLS material that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file, e.g. "CA certificate".
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file held no usable PEM item.
    #[error("{what} {path} holds no {expected}")]
    Empty {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM item expected.
        expected: &'static str,
    },
    /// rustls refused the material.
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// Builds the listener's TLS config: agent identity plus a verifier that
/// requires a client certificate chaining to the configured CA. Only h2 is
/// offered, since the listener speaks gRPC alone.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let ca = read_certs(&tls.ca, "CA certificate")?;
    let chain = read_certs(&tls.cert, "agent certificate")?;
    let key = read_key(&tls.key)?;

    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| TlsError::Rustls(format!("CA certificate {}: {e}", tls.ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(path) = &tls.crl {
        // Revocation is checked where a list from the issuer is at hand; an
        // expired list still refuses what it lists.
        builder = builder.with_crls(read_crls(path)?).allow_unknown_revocation_status();
    }
    let webpki = builder
        .build()
        .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
    let verifier = Arc::new(NamedCallers { inner: webpki });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Rustls(format!(
                "agent certificate {} and key {} do not fit together: {e}",
                tls.cert.display(),
                tls.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The CA's verdict, then berth's own: the certificate must name exactly
/// one caller (a commonName, at most one role).
#[derive(Debug)]
struct NamedCallers {
    inner: Arc<dyn ClientCertVerifier>,
}

/// Why berth refused a certificate the CA vouches for; the listener words
/// the refusal from it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unusable(pub berth_core::identity::IdentityError);

impl ClientCertVerifier for NamedCallers {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        Identity::from_der(end_entity.as_ref()).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(Unusable(
                e,
            )))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Revocation lists from `path`: PEM `X509 CRL` blocks, or one DER list.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let what = "revocation list (tls.crl)";
    let (bytes, crls) = read_pem(path, what, |pem| rustls_pemfile::crls(pem).collect())?;
    if !crls.is_empty() {
        return Ok(crls);
    }
    // DER starts with a SEQUENCE tag; anything else is not a list at all.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(TlsError::Empty {
        what,
        path: path.to_owned(),
        expected: "X509 CRL block",
    })
}

/// The bytes of `path` and the PEM items `parse` finds in them.
fn read_pem<T>(
    path: &Path,
    what: &'static str,
    parse: impl FnOnce(&mut &[u8]) -> Result<Vec<T>, std::io::Error>,
) -> Result<(Vec<u8>, Vec<T>), TlsError> {
    let read_err = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(read_err)?;
    let items = parse(&mut bytes.as_slice()).map_err(read_err)?;
    Ok((bytes, items))
}

/// A warning when the agent's key may be read by group or others; None
/// when it is private (or cannot be looked at: loading it will say why).
pub fn key_mode_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "tls.key {} has mode {mode:o}: group or others may read the agent's private key; \
             run chmod 600 {} (and chown it to the user the agent runs as)",
            path.display(),
            path.display()
        )
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let (_, certs) = read_pem(path, what, |pem| rustls_pemfile::certs(pem).collect())?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "agent key";
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PRIVATE KEY block",
        })
}

/// When the first certificate in the PEM file at `path` stops being valid
/// (ms since the epoch), for `GetInfo`: fleet views flag agents whose
/// certificate is about to expire. `None` when it cannot be read.
pub fn not_after_ms(path: &Path) -> Option<u64> {
    let pem = std::fs::read(path).ok()?;
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok()?;
    let at = berth_core::identity::not_after(der.as_ref())?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

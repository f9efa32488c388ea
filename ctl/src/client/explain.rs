//! Explaining failures: the sentences berthctl prints when a connection or
//! a call fails.
//!
//! Owns [`ConnectError`] and the mapping from transport, TLS and gRPC status
//! errors to a message that says which side refused and what to do
//! ([`explain`] for errors while dialing, [`explain_status`] for a failed
//! call). Input: the target, our TLS files and the error; output: a
//! `ConnectError`. Pure apart from reading our certificate's expiry for the
//! message; nothing to shut down.

use super::dial::CONNECT_TIMEOUT;
use super::tls_files::not_after;
use super::{Target, TlsFiles};

/// Why a connection or call failed, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Local setup: TLS files missing or unreadable.
    #[error("{0}")]
    Setup(String),
    /// The agent could not be reached: nothing listens, no answer, or one
    /// side refused the other's certificate.
    #[error("{target}: {message}")]
    Unreachable {
        /// Which agent.
        target: String,
        /// What happened and what to do.
        message: String,
    },
    /// The agent answered, with an error.
    #[error("{target}: {message}")]
    Agent {
        /// Which agent.
        target: String,
        /// What happened and what to do.
        message: String,
    },
    /// The agent ended a stream because its connection is due to close
    /// (`connections.max_connection_age`, or the client certificate's
    /// expiry): open it again, on a new connection.
    #[error("{target}: {message}")]
    Reconnect {
        /// Which agent.
        target: String,
        /// What the agent said.
        message: String,
    },
}

impl ConnectError {
    /// True when the agent was never reached (as opposed to answering with
    /// an error); fleet summaries count these as unreachable.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConnectError::Unreachable { .. })
    }

    /// True when the agent ended a stream so that it be opened again on a
    /// new connection ([`ConnectError::Reconnect`]).
    pub fn is_reconnect(&self) -> bool {
        matches!(self, ConnectError::Reconnect { .. })
    }

    /// The message without the agent's address in front, for views that
    /// name the host themselves.
    pub fn message(&self) -> &str {
        match self {
            ConnectError::Setup(m) => m,
            ConnectError::Unreachable { message, .. }
            | ConnectError::Agent { message, .. }
            | ConnectError::Reconnect { message, .. } => message,
        }
    }
}

/// Turns a failure anywhere in the error chain into a sentence that names
/// which side refused and why.
pub fn explain(target: &Target, files: &TlsFiles, err: &(dyn std::error::Error + 'static)) -> ConnectError {
    let message = explain_message(target, files, err);
    ConnectError::Unreachable {
        target: target.to_string(),
        message,
    }
}

fn explain_message(target: &Target, files: &TlsFiles, err: &(dyn std::error::Error + 'static)) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as T};

    let refused = find::<std::io::Error>(err).is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if target.plaintext && !refused {
        return "refused a plaintext connection: berth agents speak mutual TLS only; \
                drop the http:// prefix"
            .to_owned();
    }
    let ours = files.cert.display();
    let ca = files.ca.display();
    let chain = chain(err);
    // h2 flattens the io::Error carrying the rustls alert into a string, so
    // an alert the agent sent may only survive as text.
    let alert = find_tls_error(err).cloned().or_else(|| alert_in_text(&chain));
    if let Some(tls) = alert.as_ref() {
        return match tls {
            // The agent refused us (it sent an alert).
            // DecryptError: the agent's CA has our CA's name but not its key.
            T::AlertReceived(A::UnknownCA | A::DecryptError) => format!(
                "the agent refused your client certificate {ours}: it is not signed by the CA the agent trusts (its tls.ca); \
                 use a certificate issued from that CA"
            ),
            T::AlertReceived(A::CertificateExpired) => format!(
                "the agent refused your client certificate {ours}: it has expired or is not valid yet{}; \
                 issue a new one with `berthctl certs issue client`",
                not_after(&files.cert)
                    .map(|d| format!(" (valid until {d})"))
                    .unwrap_or_default()
            ),
            T::AlertReceived(A::CertificateRequired) => {
                "the agent requires a client certificate and got none".to_owned()
            }
            T::AlertReceived(A::BadCertificate | A::UnsupportedCertificate) => format!(
                "the agent refused your client certificate {ours} as unusable for client auth; \
                 issue one with `berthctl certs issue client`"
            ),
            T::AlertReceived(A::CertificateRevoked) => format!(
                "the agent refused your client certificate {ours}: it has been revoked (it is listed in the agent's tls.crl); \
                 ask an operator for a new one (`berthctl certs issue client`)"
            ),
            T::AlertReceived(alert) => format!("the agent aborted the TLS handshake ({alert:?})"),
            // We refused the agent.
            T::InvalidCertificate(C::UnknownIssuer) => format!(
                "berthctl refused the agent's certificate: it is not signed by your CA {ca}; \
                 is this the right host, and the right --tls-dir?"
            ),
            T::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "berthctl refused the agent's certificate: it has expired; reissue it with \
                 `berthctl certs issue agent` and restart the agent"
                    .to_owned()
            }
            T::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => format!(
                "berthctl refused the agent's certificate: it is for {} and not for {}; \
                 reissue it with `berthctl certs issue agent --san {}` or connect by a name it holds",
                presented.join(", "),
                target.host,
                target.host
            ),
            T::InvalidCertificate(C::NotValidForName) => format!(
                "berthctl refused the agent's certificate: it is not valid for {}; reissue it with \
                 `berthctl certs issue agent --san {}`",
                target.host, target.host
            ),
            other => format!("TLS failed: {other}"),
        };
    }
    if let Some(io) = find::<std::io::Error>(err) {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionRefused => {
                return format!(
                    "connection refused: nothing listens on port {}; is berth-agent running there?",
                    target.port
                );
            }
            K::TimedOut => {
                return "no answer (timed out): is the host up and the port open?".to_owned();
            }
            K::ConnectionReset | K::UnexpectedEof | K::BrokenPipe => {
                return format!("the agent closed the connection during the TLS handshake ({chain})");
            }
            _ => {}
        }
        if io.to_string().contains("failed to lookup address") || chain.contains("Name or service not known") {
            return format!("cannot resolve host {:?}", target.host);
        }
    }
    if chain.contains("timed out") {
        return format!(
            "no answer within {}s: is the host up and the port open?",
            CONNECT_TIMEOUT.as_secs()
        );
    }
    chain
}

/// Recovers a rustls alert from its Display text ("received fatal alert: X").
fn alert_in_text(text: &str) -> Option<rustls::Error> {
    use rustls::AlertDescription as A;
    let name = text.split("received fatal alert: ").nth(1)?;
    let name: String = name.chars().take_while(char::is_ascii_alphanumeric).collect();
    let alert = match name.as_str() {
        "UnknownCA" => A::UnknownCA,
        "DecryptError" => A::DecryptError,
        "CertificateExpired" => A::CertificateExpired,
        "CertificateRequired" => A::CertificateRequired,
        "BadCertificate" => A::BadCertificate,
        "UnsupportedCertificate" => A::UnsupportedCertificate,
        "HandshakeFailure" => A::HandshakeFailure,
        "AccessDenied" => A::AccessDenied,
        _ => return None,
    };
    Some(rustls::Error::AlertReceived(alert))
}

/// The whole `source()` chain, joined, for errors we have no words for.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn find<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// The rustls error, whether bare or wrapped in an io::Error.
fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(t) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// A failed call's status in words. Transport failures go through
/// [`explain`]; agent-side errors keep the agent's message, which already
/// says what to do.
pub fn explain_status(target: &Target, files: &TlsFiles, status: &tonic::Status) -> ConnectError {
    use tonic::Code;
    if status.metadata().get(berth_core::connection::RECONNECT).is_some() {
        return ConnectError::Reconnect {
            target: target.to_string(),
            message: status.message().to_owned(),
        };
    }
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Internal if std::error::Error::source(status).is_some() => {
            explain(target, files, status)
        }
        Code::Unimplemented => ConnectError::Agent {
            target: target.to_string(),
            message: format!(
                "this agent does not serve that call ({}); upgrade berth-agent there",
                status.message()
            ),
        },
        _ => ConnectError::Agent {
            target: target.to_string(),
            message: format!("{}: {}", code_word(status.code()), status.message()),
        },
    }
}

fn code_word(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "invalid",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::FailedPrecondition => "refused",
        Code::Aborted => "aborted",
        Code::DeadlineExceeded => "timed out",
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "busy",
        _ => "error",
    }
}

//! Connecting to agents over mutual TLS, and saying why it failed.
//!
//! Owns resolving the client's TLS files (`--tls-dir`, `--cert`), dialing an
//! agent with our own rustls connector (so the TLS error reaches us intact),
//! and [`explain`], which turns a transport or TLS failure into a sentence
//! that says which side refused and what to do. berthctl and the end-to-end
//! tests use this same code.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The agent's default gRPC port.
pub const DEFAULT_PORT: u16 = 7443;
/// How long dialing (TCP + TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An agent address as the user wrote it: `HOST`, `HOST:PORT`, `[V6]:PORT`,
/// optionally with `https://`. `http://` is kept so we can tell the user
/// that agents speak mutual TLS only, after the agent has refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// True when the user asked for `http://`.
    pub plaintext: bool,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (plaintext, rest) = if let Some(r) = s.strip_prefix("http://") {
            (true, r)
        } else {
            (false, s.strip_prefix("https://").unwrap_or(s))
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(format!(
                "{s:?}: expected HOST or HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after an IPv6 address"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => parse_port(p, s)?,
                None if tail.is_empty() => DEFAULT_PORT,
                None => return Err(format!("{s:?}: expected [IPv6]:PORT")),
            };
            (h.to_owned(), port)
        } else if rest.parse::<IpAddr>().is_ok() {
            (rest.to_owned(), DEFAULT_PORT)
        } else if let Some((h, p)) = rest.rsplit_once(':') {
            (h.to_owned(), parse_port(p, s)?)
        } else {
            (rest.to_owned(), DEFAULT_PORT)
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "{s:?}: expected HOST or HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}"
            ));
        }
        Ok(Target { host, port, plaintext })
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{whole:?}: {p:?} is not a port (1-65535)"))
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

/// Why a connection or call failed, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Local setup: TLS files missing or unreadable.
    #[error("{0}")]
    Setup(String),
    /// The agent could not be reached, or refused us.
    #[error("{target}: {message}")]
    Agent {
        /// Which agent.
        target: String,
        /// What happened and what to do.
        message: String,
    },
}

/// Dials `target` with mutual TLS and returns a channel for gRPC clients.
pub async fn connect(target: &Target, files: &TlsFiles) -> Result<Channel, ConnectError> {
    connect_with(target, files, |e| e).await
}

/// [`connect`], with the endpoint adjusted by `tune` first (for example a
/// small HTTP/2 receive window to play a slow client in tests).
pub async fn connect_with(
    target: &Target,
    files: &TlsFiles,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ConnectError> {
    let endpoint = tune(
        Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| ConnectError::Setup(format!("{target}: not a valid address: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true),
    );
    let connect = if target.plaintext {
        endpoint.connect().await
    } else {
        let config = Arc::new(client_config(files)?);
        let server_name = server_name(&target.host)?;
        let addr = target.to_string();
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let config = config.clone();
                let server_name = server_name.clone();
                let addr = addr.clone();
                async move {
                    let tcp = TcpStream::connect(&addr).await?;
                    let _ = tcp.set_nodelay(true);
                    let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(await_verdict(tls).await?))
                }
            }))
            .await
    };
    connect.map_err(|e| explain(target, files, &e))
}

/// Waits for the agent's first bytes after the handshake. In TLS 1.3 the
/// client finishes its handshake before the agent has checked the client
/// certificate; a refusal arrives as an alert afterwards, and once h2 is
/// running it flattens that into "operation was canceled". Reading here
/// surfaces the alert as a rustls error at connect time. An accepting agent
/// sends its HTTP/2 SETTINGS first thing, which is replayed to h2.
async fn await_verdict(mut tls: TlsStream<TcpStream>) -> std::io::Result<Primed<TlsStream<TcpStream>>> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(CONNECT_TIMEOUT, tls.read(&mut buf))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the agent sent nothing after the TLS handshake",
            )
        })??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the agent closed the connection right after the TLS handshake",
        ));
    }
    buf.truncate(n);
    Ok(Primed {
        head: buf,
        pos: 0,
        inner: tls,
    })
}

/// A stream that yields `head` before reading from `inner`.
struct Primed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Primed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Primed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Builds the client TLS config: trust only our CA, present our certificate.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, ConnectError> {
    let setup = |m: String| ConnectError::Setup(m);
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&files.ca)? {
        roots
            .add(cert)
            .map_err(|e| setup(format!("{}: not a usable CA certificate: {e}", files.ca.display())))?;
    }
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            setup(format!(
                "{} and {} do not fit together: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn server_name(host: &str) -> Result<ServerName<'static>, ConnectError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| ConnectError::Setup(format!("{host:?} is neither a host name nor an IP address")))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let pem = std::fs::read(path).map_err(|e| ConnectError::Setup(format!("cannot read {}: {e}", path.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ConnectError::Setup(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConnectError::Setup(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnectError> {
    let pem = std::fs::read(path).map_err(|e| ConnectError::Setup(format!("cannot read {}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| ConnectError::Setup(format!("{}: {e}", path.display())))?
        .ok_or_else(|| ConnectError::Setup(format!("{} holds no private key", path.display())))
}

/// Turns a failure anywhere in the error chain into a sentence that names
/// which side refused and why.
pub fn explain(target: &Target, files: &TlsFiles, err: &(dyn std::error::Error + 'static)) -> ConnectError {
    let message = explain_message(target, files, err);
    ConnectError::Agent {
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

fn not_after(cert: &Path) -> Option<String> {
    let pem = std::fs::read(cert).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_string())
}

/// A failed call's status in words. Transport failures go through
/// [`explain`]; agent-side errors keep the agent's message, which already
/// says what to do.
pub fn explain_status(target: &Target, files: &TlsFiles, status: &tonic::Status) -> ConnectError {
    use tonic::Code;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_default_port() {
        let t: Target = "10.0.0.5".parse().expect("ok");
        assert_eq!(
            (t.host.as_str(), t.port, t.plaintext),
            ("10.0.0.5", DEFAULT_PORT, false)
        );
        let t: Target = "https://h.example:9000/".parse().expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("h.example", 9000));
        let t: Target = "[::1]:7000".parse().expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("::1", 7000));
        assert_eq!(t.to_string(), "[::1]:7000");
        let t: Target = "::1".parse().expect("ok");
        assert_eq!(t.port, DEFAULT_PORT);
        let t: Target = "http://h:1".parse().expect("ok");
        assert!(t.plaintext);
        assert!("h:0".parse::<Target>().is_err());
        assert!(
            "h:http"
                .parse::<Target>()
                .expect_err("not a port")
                .contains("not a port")
        );
        assert!("".parse::<Target>().is_err());
    }
}

//! Dialing an agent: mutual TLS with our own rustls connector.
//!
//! Owns the endpoint settings (timeouts, keep-alive), the rustls client
//! config (trust only our CA, present our certificate), and waiting for the
//! agent's verdict on our certificate before handing the stream to h2, so a
//! refusal reaches [`explain`](super::explain()) as a TLS error instead of a
//! cancelled request. Input: a [`Target`] and [`TlsFiles`]; output: a tonic
//! [`Channel`] or an explained [`ConnectError`]. The channel closes its
//! connection when the last clone is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::tls_files::{read_certs, read_key};
use super::{ConnectError, Target, TlsFiles, explain};

/// How long dialing (TCP + TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

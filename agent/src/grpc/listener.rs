//! The mutual-TLS listener under the gRPC server.
//!
//! Owns accepting TCP connections and running each TLS handshake on its own
//! task with a deadline, so one slow or hostile peer cannot hold up others.
//! Refused handshakes are logged with the peer address and the reason (a
//! client from another CA, an expired certificate, a plaintext client), which
//! is what an operator needs when someone cannot connect. Accepted
//! connections carry the caller's [`Identity`], read once per connection.
//! Stops accepting when the cancellation token fires.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use berth_core::identity::Identity;

/// How long a peer gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the gRPC server to pick them up. The
/// server drains this as fast as it can; the bound only keeps a burst of
/// handshakes from piling up memory if it stalls.
const ACCEPT_QUEUE: usize = 64;

/// Per-connection facts handed to every request as an extension.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Who the verified client certificate says is calling.
    pub identity: Option<Identity>,
}

/// A TLS connection that tonic can serve, carrying [`PeerInfo`].
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` and yields those whose mutual-TLS
/// handshake succeeded. Each handshake uses the newest config on `config`
/// (see [`crate::tlsreload`]), so a reissued certificate serves new
/// connections while open ones carry on. The accept loop runs on `tracker`
/// until `cancel`.
pub fn incoming(
    listener: TcpListener,
    config: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let handshakes = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (tcp, remote_addr) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "Accept failed; retrying in 100ms.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            let cancel = cancel.clone();
            handshakes.spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let stream = tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = handshake => match result {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            warn!(peer = %remote_addr, reason = %explain_refusal(&e), "Refused a connection.");
                            return;
                        }
                        Err(_) => {
                            warn!(peer = %remote_addr, "Refused a connection: TLS handshake took longer than 10s.");
                            return;
                        }
                    },
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|der| Identity::from_der(der).ok());
                debug!(peer = %remote_addr, caller = ?identity, "Accepted a connection.");
                let conn = TlsConn {
                    stream,
                    peer: PeerInfo { remote_addr, identity },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Turns a failed server handshake into words an operator can act on.
fn explain_refusal(e: &io::Error) -> String {
    use rustls::{CertificateError, Error as TlsErr};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<TlsErr>()) else {
        return format!("{e}");
    };
    match tls {
        TlsErr::InvalidMessage(_) | TlsErr::InappropriateMessage { .. } => {
            "the client did not speak TLS (a plaintext client?); this agent accepts mutual TLS only".to_owned()
        }
        TlsErr::NoCertificatesPresented => {
            "the client presented no certificate; this agent requires a client certificate".to_owned()
        }
        // BadSignature: a CA with the same name as ours but another key.
        TlsErr::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the client certificate is not signed by this agent's CA (tls.ca)".to_owned()
        }
        TlsErr::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the client certificate has expired".to_owned()
        }
        TlsErr::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "the client certificate is not valid yet (check clocks)".to_owned()
        }
        TlsErr::InvalidCertificate(CertificateError::Revoked) => {
            "the client certificate has been revoked (it is listed in tls.crl)".to_owned()
        }
        TlsErr::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<crate::tls::Unusable>() {
                Some(unusable) => unusable.to_string(),
                None => format!("the client certificate was refused: {other}"),
            }
        }
        TlsErr::AlertReceived(alert) => format!("the client aborted the handshake: {alert:?}"),
        other => format!("TLS handshake failed: {other}"),
    }
}

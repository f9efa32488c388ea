//! A connection flood, as anyone who can reach an agent's port could send:
//! idle TCP connections that never speak, and TLS handshakes that stop
//! after the first bytes of a ClientHello. Each kind comes from its own
//! loopback source address (127.0.0.2, 127.0.0.3), so a real client on
//! 127.0.0.1 is a different peer to the agent, as it would be in life.
//!
//! The sockets stay open until the [`Flood`] is dropped. Also: how many
//! sockets a process holds ([`open_sockets`]), the flood's figure of merit.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

/// Where the idle connections come from.
pub const IDLE_SOURCE: [u8; 4] = [127, 0, 0, 2];
/// Where the stalled handshakes come from.
pub const STALLED_SOURCE: [u8; 4] = [127, 0, 0, 3];

/// The first bytes of a TLS 1.2/1.3 ClientHello record: a handshake record
/// header announcing 512 bytes, of which only the message header follows.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// Open flood sockets; dropping closes them.
pub struct Flood {
    rt: tokio::runtime::Runtime,
    sockets: Vec<TcpStream>,
    /// Connections whose connect failed (the backlog was full, say).
    pub failed: usize,
}

impl Flood {
    /// Opens `idle` TCP connections that send nothing and `stalled` that
    /// start a TLS handshake and stop, to `target`.
    pub fn open(target: SocketAddr, idle: usize, stalled: usize) -> Flood {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the flood");
        let (sockets, failed) = rt.block_on(async {
            let mut sockets = Vec::with_capacity(idle + stalled);
            let mut failed = 0;
            for (count, source, hello) in [(idle, IDLE_SOURCE, false), (stalled, STALLED_SOURCE, true)] {
                for _ in 0..count {
                    match connect(source, target, hello).await {
                        Ok(s) => sockets.push(s),
                        Err(_) => failed += 1,
                    }
                }
            }
            (sockets, failed)
        });
        Flood { rt, sockets, failed }
    }

    /// How many flood connections the test holds open.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether the flood holds nothing.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.sockets.clear();
    }
}

async fn connect(source: [u8; 4], target: SocketAddr, hello: bool) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(2), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    if hello {
        stream.write_all(PARTIAL_CLIENT_HELLO).await?;
    }
    Ok(stream)
}

/// How many sockets process `pid` has open (its `/proc/PID/fd` entries that
/// are sockets): the listener, Docker's pool and every connection held.
pub fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

/// A connection from a valid client that finishes the mutual-TLS handshake
/// and then sends nothing, not even HTTP/2's preface: a berthctl suspended
/// at the wrong moment. Open until dropped.
pub struct IdleClient {
    rt: tokio::runtime::Runtime,
    stream: Option<tokio_rustls::client::TlsStream<TcpStream>>,
}

impl IdleClient {
    /// Connects to `addr` (`127.0.0.1:PORT`) as the client in `tls_dir`.
    pub fn connect(tls_dir: &std::path::Path, addr: SocketAddr) -> IdleClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let files = berthctl::client::TlsFiles::resolve(tls_dir, None).expect("client certificate");
        let config = berthctl::client::client_config(&files).expect("client TLS config");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let stream = rt.block_on(async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            connector.connect(name, tcp).await.expect("mutual TLS handshake")
        });
        IdleClient {
            rt,
            stream: Some(stream),
        }
    }
}

impl Drop for IdleClient {
    fn drop(&mut self) {
        let _guard = self.rt.enter();
        self.stream = None;
    }
}

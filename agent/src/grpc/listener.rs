//! The mutual-TLS listener under the gRPC server.
//!
//! Owns accepting TCP connections and running each TLS handshake on its own
//! task with a deadline, so one slow or hostile peer cannot hold up others.
//! Anyone who reaches the port can open connections before any certificate
//! is checked, so the listener caps connections and handshakes, overall and
//! per source address ([`Limits`], `[connections]` in the config), and
//! closes those over a cap at once. Refused connections are logged with the
//! peer address and the reason (a client from another CA, an expired
//! certificate, a plaintext client, a cap), which is what an operator needs
//! when someone cannot connect; a flood is summed up in one line per
//! interval rather than one per connection. Accepted
//! connections carry the caller's [`Identity`], read once per connection.
//! Stops accepting when the cancellation token fires.
//!
//! A connection's identity is checked once, at the handshake, so no
//! connection may live forever: the gRPC server sends GOAWAY at
//! `max_connection_age` (tonic's timer), follow streams end themselves a
//! moment later with the [`berth_core::connection::RECONNECT`] trailer
//! ([`until_refresh`]) so berthctl reopens them on a new connection, and
//! [`TlsConn`] closes the connection outright once
//! `max_connection_age_grace` has passed too, or at the client
//! certificate's notAfter, whichever comes first.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::time::{Instant, Sleep};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

use crate::config::ConnectionsConfig;
use berth_core::identity::Identity;

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
    /// When streams that follow must end so that their caller reconnects
    /// (the connection's age, or its certificate's expiry), and why.
    pub refresh: Option<(Instant, &'static str)>,
}

/// How long after the server's GOAWAY (sent at `max_connection_age`) follow
/// streams end: by then the client knows to open new calls on a new
/// connection, so a stream it reopens at once does not land on this one.
const REFRESH_AFTER_GOAWAY: Duration = Duration::from_millis(500);

/// A TLS connection that tonic can serve, carrying [`PeerInfo`].
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
    /// When the handshake finished.
    opened: Instant,
    /// `max_connection_age`, for [`Connected::connect_info`].
    max_age: Duration,
    /// The client certificate's notAfter on this clock, if sooner than the
    /// connection's hard close.
    expires: Option<Instant>,
    /// The hard close: the age plus its grace, or the certificate's
    /// notAfter if sooner. Reads and writes fail from then on, which ends
    /// the connection whatever its calls are doing.
    closes: Pin<Box<Sleep>>,
    /// Why the connection ended, once the hard close fired.
    closed_by: Option<&'static str>,
    /// Held for as long as the connection lives.
    _slot: ConnSlot,
}

impl TlsConn {
    /// Fails I/O once the hard close is due.
    fn check_close(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.closed_by.is_none() && self.closes.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        let why = *self
            .closed_by
            .get_or_insert(if self.expires.is_some_and(|at| at <= Instant::now()) {
                "the client certificate expired"
            } else {
                "calls were still open at connections.max_connection_age plus its grace"
            });
        Err(io::Error::new(io::ErrorKind::TimedOut, why))
    }
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        let age = self.opened.elapsed();
        let peer = self.peer.remote_addr;
        if let Some(why) = self.closed_by {
            info!(peer = %peer, age_s = age.as_secs(), "Closed a connection: {why}.");
        } else if age >= self.max_age {
            info!(peer = %peer, age_s = age.as_secs(), "Closed a connection at connections.max_connection_age.");
        } else {
            debug!(peer = %peer, age_s = age.as_secs(), "A connection closed.");
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    /// Called once, when the gRPC server takes the connection and starts
    /// its `max_connection_age` timer.
    fn connect_info(&self) -> PeerInfo {
        let aged = Instant::now() + self.max_age + REFRESH_AFTER_GOAWAY;
        let refresh = match self.expires {
            Some(at) if at < aged => (at, berth_core::connection::CERT_EXPIRY),
            _ => (aged, berth_core::connection::MAX_AGE),
        };
        PeerInfo {
            refresh: Some(refresh),
            ..self.peer.clone()
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check_close(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check_close(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check_close(cx) {
            return Poll::Ready(Err(e));
        }
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
        if let Err(e) = self.check_close(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What the listener lets peers hold, from `[connections]`, with the
/// connection cap already fitted to the open-file limit ([`fit_to_fd_limit`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once, handshaking or established.
    pub max: usize,
    /// Connections at once from one source address.
    pub max_per_address: usize,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one source address.
    pub max_handshakes_per_address: usize,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// TCP keepalive idle time and probe interval.
    pub keepalive: Duration,
    /// How long a connection may live before GOAWAY.
    pub max_age: Duration,
    /// How long calls in progress at `max_age` get before the close.
    pub age_grace: Duration,
}

impl Limits {
    /// The limits `[connections]` asks for, not yet fitted to the fd limit.
    pub fn from_config(c: &ConnectionsConfig) -> Self {
        Limits {
            max: c.max as usize,
            max_per_address: c.max_per_address as usize,
            max_handshakes: c.max_handshakes as usize,
            max_handshakes_per_address: c.max_handshakes_per_address as usize,
            handshake_timeout: c.handshake_timeout.as_std(),
            keepalive: c.keepalive.as_std(),
            max_age: c.max_connection_age.as_std(),
            age_grace: c.max_connection_age_grace.as_std(),
        }
    }
}

/// File descriptors kept free of connections: the Docker socket and its
/// pool, health probes, env and state files, nginx, metrics.
const FD_RESERVE: u64 = 256;

/// Raises the soft open-file limit to the hard one (as Go and nginx do; it
/// fails harmlessly where setrlimit is filtered, as in the packaged unit,
/// which sets `LimitNOFILE` instead) and lowers `limits.max` so that
/// connections alone can never use the descriptors the agent needs for
/// itself. Returns the limits and the open-file limit in force.
pub fn fit_to_fd_limit(mut limits: Limits) -> (Limits, Option<u64>) {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return (limits, None);
    };
    let soft = if soft < hard {
        rlimit::increase_nofile_limit(hard).unwrap_or(soft)
    } else {
        soft
    };
    let room = usize::try_from(soft.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    if limits.max > room {
        warn!(
            configured = limits.max,
            used = room,
            nofile = soft,
            "connections.max is more than the open-file limit leaves room for; using {room}. Raise LimitNOFILE to allow more."
        );
        limits.max = room;
    }
    limits.max_per_address = limits.max_per_address.min(limits.max);
    limits.max_handshakes = limits.max_handshakes.min(limits.max);
    (limits, Some(soft))
}

/// Who holds how many connections and handshakes now.
#[derive(Debug, Default)]
struct Counts {
    connections: usize,
    handshakes: usize,
    per_address: HashMap<IpAddr, (usize, usize)>,
}

/// Admission of new connections against [`Limits`]; shared by the accept
/// loop and the guards that give slots back.
#[derive(Debug)]
struct Gate {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// Why a connection was turned away before any TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refusal {
    Connections,
    FromAddress,
    Handshakes,
    HandshakesFromAddress,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "the agent holds connections.max connections",
            Refusal::FromAddress => "this address holds connections.max_per_address connections",
            Refusal::Handshakes => "connections.max_handshakes handshakes are in progress",
            Refusal::HandshakesFromAddress => {
                "this address has connections.max_handshakes_per_address handshakes in progress"
            }
        }
    }
}

impl Gate {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while counting cannot leave the counts half-updated.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a connection slot and a handshake slot for `ip`, or says why not.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(ConnSlot, HandshakeSlot), Refusal> {
        let l = self.limits;
        let mut c = self.counts();
        let (conns, shakes) = c.per_address.get(&ip).copied().unwrap_or((0, 0));
        let refusal = if c.connections >= l.max {
            Some(Refusal::Connections)
        } else if conns >= l.max_per_address {
            Some(Refusal::FromAddress)
        } else if c.handshakes >= l.max_handshakes {
            Some(Refusal::Handshakes)
        } else if shakes >= l.max_handshakes_per_address {
            Some(Refusal::HandshakesFromAddress)
        } else {
            None
        };
        if let Some(r) = refusal {
            return Err(r);
        }
        c.connections += 1;
        c.handshakes += 1;
        let entry = c.per_address.entry(ip).or_default();
        entry.0 += 1;
        entry.1 += 1;
        Ok((
            ConnSlot { gate: self.clone(), ip },
            HandshakeSlot { gate: self.clone(), ip },
        ))
    }

    fn release(&self, ip: IpAddr, connection: bool) {
        let mut c = self.counts();
        if connection {
            c.connections = c.connections.saturating_sub(1);
        } else {
            c.handshakes = c.handshakes.saturating_sub(1);
        }
        if let Some(entry) = c.per_address.get_mut(&ip) {
            if connection {
                entry.0 = entry.0.saturating_sub(1);
            } else {
                entry.1 = entry.1.saturating_sub(1);
            }
            if *entry == (0, 0) {
                c.per_address.remove(&ip);
            }
        }
    }
}

/// A held connection; gives its slot back when dropped with the connection.
#[derive(Debug)]
struct ConnSlot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.gate.release(self.ip, true);
    }
}

/// A handshake in progress; gives its slot back when it ends either way.
#[derive(Debug)]
struct HandshakeSlot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.gate.release(self.ip, false);
    }
}

/// How often refusals beyond the first few are summed up in one line.
const REFUSAL_INTERVAL: Duration = Duration::from_secs(10);

/// Refusals logged one by one per interval; the rest are counted.
const REFUSALS_LOGGED: u32 = 5;

/// Rate-limited refusal logging: a flood of connections must not become a
/// flood of log lines. The first [`REFUSALS_LOGGED`] refusals of each
/// [`REFUSAL_INTERVAL`] are logged with peer and reason; the rest become
/// one line per interval with their count and the busiest peer.
#[derive(Debug, Default)]
struct RefusalLog {
    logged: u32,
    suppressed: u64,
    by_peer: HashMap<IpAddr, u64>,
}

impl RefusalLog {
    /// Whether this refusal should be logged on its own line.
    fn note(&mut self, ip: IpAddr) -> bool {
        if self.logged < REFUSALS_LOGGED {
            self.logged += 1;
            return true;
        }
        self.suppressed += 1;
        // Bounded: only a few thousand addresses are worth naming.
        if self.by_peer.len() < 4096 || self.by_peer.contains_key(&ip) {
            *self.by_peer.entry(ip).or_default() += 1;
        }
        false
    }

    /// Ends an interval: the summary line to write, if anything was held back.
    fn flush(&mut self) -> Option<(u64, IpAddr, u64)> {
        let out = (self.suppressed > 0).then(|| {
            let (ip, n) = self
                .by_peer
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(ip, n)| (*ip, *n))
                .unwrap_or((IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0));
            (self.suppressed, ip, n)
        });
        *self = RefusalLog::default();
        out
    }
}

/// The refusal log, shared by the accept loop and every handshake.
#[derive(Debug, Clone, Default)]
struct Refusals(Arc<Mutex<RefusalLog>>);

impl Refusals {
    fn refuse(&self, peer: SocketAddr, reason: &dyn std::fmt::Display) {
        let log = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .note(peer.ip());
        if log {
            warn!(peer = %peer, reason = %reason, "Refused a connection.");
        }
    }

    /// Logs the interval's summary; runs until `cancel`.
    async fn summarize(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(REFUSAL_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let summary = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).flush();
            if let Some((count, top, from_top)) = summary {
                warn!(
                    refused = count,
                    interval = ?REFUSAL_INTERVAL,
                    top_peer = %top,
                    from_top_peer = from_top,
                    "Refused {count} more connections in the last {}s (most from {top}: {from_top}); only the first {REFUSALS_LOGGED} of each interval are logged one by one.",
                    REFUSAL_INTERVAL.as_secs()
                );
            }
        }
    }
}

/// Accepts connections on `listener` and yields those whose mutual-TLS
/// handshake succeeded, within `limits`. Each handshake uses the newest
/// config on `config` (see [`crate::tlsreload`]), so a reissued certificate
/// serves new connections while open ones carry on. The accept loop runs
/// on `tracker` until `cancel`.
pub fn incoming(
    listener: TcpListener,
    config: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    limits: Limits,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let handshakes = tracker.clone();
    let gate = Arc::new(Gate {
        limits,
        counts: Mutex::new(Counts::default()),
    });
    let refusals = Refusals::default();
    tracker.spawn(refusals.clone().summarize(cancel.clone()));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(limits.keepalive)
        .with_interval(limits.keepalive);
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
            // Over a limit: closed at once, before any TLS work, so a flood
            // costs one descriptor for a moment per connection.
            let (conn_slot, handshake_slot) = match gate.admit(remote_addr.ip()) {
                Ok(slots) => slots,
                Err(refusal) => {
                    drop(tcp);
                    refusals.refuse(remote_addr, &refusal.as_str());
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            let cancel = cancel.clone();
            let refusals = refusals.clone();
            let timeout = limits.handshake_timeout;
            handshakes.spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp));
                let stream = tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = handshake => match result {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            refusals.refuse(remote_addr, &explain_refusal(&e));
                            return;
                        }
                        Err(_) => {
                            let why = format!(
                                "the TLS handshake took longer than {}s (connections.handshake_timeout)",
                                timeout.as_secs()
                            );
                            refusals.refuse(remote_addr, &why);
                            return;
                        }
                    },
                };
                drop(handshake_slot);
                let leaf = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first());
                let identity = leaf.and_then(|der| Identity::from_der(der).ok());
                let opened = Instant::now();
                let expires = leaf
                    .and_then(|der| berth_core::identity::not_after(der))
                    .map(|at| opened + at.duration_since(SystemTime::now()).unwrap_or_default());
                let aged = opened + limits.max_age + limits.age_grace;
                let closes = expires.map_or(aged, |at| at.min(aged));
                debug!(peer = %remote_addr, caller = ?identity, "Accepted a connection.");
                let conn = TlsConn {
                    stream,
                    peer: PeerInfo {
                        remote_addr,
                        identity,
                        refresh: None,
                    },
                    opened,
                    max_age: limits.max_age,
                    expires,
                    closes: Box::pin(tokio::time::sleep_until(closes)),
                    closed_by: None,
                    _slot: conn_slot,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Ends a follow stream when its connection is due to close (see
/// [`PeerInfo::refresh`]), with UNAVAILABLE and the
/// [`berth_core::connection::RECONNECT`] trailer so the caller reopens it
/// on a new connection instead of treating it as a failure. Streams that
/// end by themselves (a deploy's progress) are not wrapped: they get the
/// grace to finish.
pub fn until_refresh<S, T>(peer: Option<&PeerInfo>, stream: S) -> UntilRefresh<S>
where
    S: Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    let refresh = peer.and_then(|p| p.refresh);
    UntilRefresh {
        stream,
        due: refresh.map(|(at, why)| (Box::pin(tokio::time::sleep_until(at)), why)),
        done: false,
    }
}

/// The stream [`until_refresh`] returns.
pub struct UntilRefresh<S> {
    stream: S,
    due: Option<(Pin<Box<Sleep>>, &'static str)>,
    done: bool,
}

impl<S, T> Stream for UntilRefresh<S>
where
    S: Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    type Item = Result<T, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // What is ready goes first; the deadline only ends a wait.
        if let Poll::Ready(item) = Pin::new(&mut self.stream).poll_next(cx) {
            self.done = item.is_none();
            return Poll::Ready(item);
        }
        let Some((sleep, why)) = self.due.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let why = *why;
        self.done = true;
        Poll::Ready(Some(Err(refresh_status(why))))
    }
}

/// The status a follow stream ends with when its connection is due to
/// close.
fn refresh_status(why: &'static str) -> tonic::Status {
    let words = if why == berth_core::connection::CERT_EXPIRY {
        "the client certificate expires now; renew it and reconnect"
    } else {
        "this connection reached connections.max_connection_age; reconnect to carry on"
    };
    let mut status = tonic::Status::unavailable(words);
    status.metadata_mut().insert(
        berth_core::connection::RECONNECT,
        tonic::metadata::MetadataValue::from_static(why),
    );
    status
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_address: usize, handshakes: usize, handshakes_per_address: usize) -> Arc<Gate> {
        Arc::new(Gate {
            limits: Limits {
                max,
                max_per_address: per_address,
                max_handshakes: handshakes,
                max_handshakes_per_address: handshakes_per_address,
                handshake_timeout: Duration::from_secs(5),
                keepalive: Duration::from_secs(30),
                max_age: Duration::from_secs(3600),
                age_grace: Duration::from_secs(600),
            },
            counts: Mutex::new(Counts::default()),
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn caps_handshakes_and_connections_per_address_and_overall() {
        let g = gate(5, 3, 3, 2);
        let a1 = g.admit(ip(2)).expect("first");
        let a2 = g.admit(ip(2)).expect("second");
        assert_eq!(g.admit(ip(2)).err(), Some(Refusal::HandshakesFromAddress));
        // A finished handshake frees its slot; the connection stays counted.
        let (conn1, shake1) = a1;
        drop(shake1);
        let a3 = g.admit(ip(2)).expect("third");
        assert_eq!(g.admit(ip(2)).err(), Some(Refusal::FromAddress));
        // Another address still gets in, up to the overall caps.
        let b1 = g.admit(ip(3)).expect("another address");
        assert_eq!(g.admit(ip(4)).err(), Some(Refusal::Handshakes));
        drop(a2);
        let (d, d_shake) = g.admit(ip(4)).expect("a handshake slot came free");
        drop(d_shake);
        let e = g.admit(ip(5)).expect("fifth connection");
        assert_eq!(g.admit(ip(6)).err(), Some(Refusal::Connections));
        drop((conn1, a3, b1, d, e));
        let c = g.counts();
        assert_eq!((c.connections, c.handshakes), (0, 0));
        assert!(c.per_address.is_empty(), "nothing kept per address once all are gone");
    }

    #[test]
    fn refusals_beyond_the_first_few_are_counted_not_logged() {
        let mut log = RefusalLog::default();
        let logged = (0..1000)
            .filter(|i| log.note(ip(if i % 4 == 0 { 3 } else { 2 })))
            .count();
        assert_eq!(logged, REFUSALS_LOGGED as usize);
        let (count, top, from_top) = log.flush().expect("a summary");
        assert_eq!(count, 1000 - u64::from(REFUSALS_LOGGED));
        assert_eq!(top, ip(2));
        assert!(from_top > 700, "{from_top}");
        assert!(log.flush().is_none(), "a quiet interval says nothing");
        assert!(log.note(ip(2)), "a new interval logs again");
    }
}

//! The audit gate around every gRPC call: a tower layer that writes one
//! audit record per call to a mutating method (whatever its outcome) and
//! per call of any method that was refused or failed: a viewer's attempt
//! (`denied: ...`), an invalid request (`invalid: ...`), any other error
//! (`failed: CODE: ...`). Each names the caller from its verified
//! certificate (name, role, fingerprint, address) and the gRPC method;
//! handlers add the service concerned with [`target`].
//!
//! The outcome is read where gRPC puts it: the response headers for an
//! error raised before a response (trailers-only), else the trailers at the
//! end of the body, so a deploy stream is recorded when it ends. A stream
//! the caller abandons is recorded as `cancelled` for mutating methods
//! only (closing `logs -f` is not an event). Domain records (which revision,
//! which env keys) stay with the supervisor and the lock keeper.
//!
//! A record made before the response is sent is on disk before the caller
//! hears the answer; one made at a stream's end is written on the blocking
//! pool. No task of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Request, Status};
use tower::{Layer, Service};

use super::listener::PeerInfo;
use crate::audit::{Actor, Audit};

/// Methods that only read. Every other method, including ones added later,
/// counts as mutating and is recorded whatever its outcome.
const READ_ONLY: &[&str] = &[
    "/berth.v1.Host/GetInfo",
    "/berth.v1.Services/Get",
    "/berth.v1.Services/List",
    "/berth.v1.Services/History",
    "/berth.v1.Services/Logs",
    "/berth.v1.Services/WatchEvents",
    "/berth.v1.Env/GetEnv",
    "/berth.v1.Metrics/WatchMetrics",
    "/berth.v1.FleetLock/ListLocks",
    "/berth.v1.Rollouts/Plan",
    "/berth.v1.Rollouts/GetRollout",
    "/berth.v1.Rollouts/ListRollouts",
    "/berth.v1.Audit/ReadAudit",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The service a call concerns, set by its handler for the record.
#[derive(Clone, Default)]
pub struct CallNote(Arc<Mutex<String>>);

impl CallNote {
    /// Names the service (or lock) the call concerns.
    pub fn set(&self, target: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = target.to_owned();
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Names the service (or lock) `request` concerns in its audit record.
pub fn target<T>(request: &Request<T>, service: &str) {
    if let Some(note) = request.extensions().get::<CallNote>() {
        note.set(service);
    }
}

/// The note of `request`, for handlers that learn the target later (a spec
/// names its service only once parsed).
pub fn note<T>(request: &Request<T>) -> CallNote {
    request.extensions().get::<CallNote>().cloned().unwrap_or_default()
}

/// The layer; `Server::builder().layer(AuditLayer::new(audit))`.
#[derive(Clone)]
pub struct AuditLayer {
    audit: Audit,
}

impl AuditLayer {
    /// Records into `audit`.
    pub fn new(audit: Audit) -> Self {
        AuditLayer { audit }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Audited<S> {
        Audited {
            inner,
            audit: self.audit.clone(),
        }
    }
}

/// The service the layer wraps around the gRPC routes.
#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    audit: Audit,
}

/// One call on its way: what the record will say once the outcome is known.
struct Call {
    audit: Audit,
    actor: Actor,
    method: String,
    mutating: bool,
    note: CallNote,
}

impl Call {
    fn start<B>(req: &http::Request<B>, audit: &Audit) -> Call {
        let path = req.uri().path().to_owned();
        let peer = req.extensions().get::<PeerInfo>();
        let actor = match peer.and_then(|p| p.identity.as_ref().map(|id| (id, p))) {
            Some((id, p)) => Actor::caller(id, &p.remote_addr.to_string()),
            None => Actor {
                peer: peer.map(|p| p.remote_addr.to_string()).unwrap_or_default(),
                ..Actor::default()
            },
        };
        Call {
            audit: audit.clone(),
            actor,
            mutating: !READ_ONLY.contains(&path.as_str()),
            method: path
                .strip_prefix("/berth.v1.")
                .unwrap_or(&path)
                .trim_start_matches('/')
                .to_owned(),
            note: CallNote::default(),
        }
    }

    /// The record for an outcome, or None when there is nothing to record.
    fn record_of(self, code: Code, message: &str) -> Option<impl FnOnce() + Send + 'static> {
        if code == Code::Ok && !self.mutating {
            return None;
        }
        let outcome = match code {
            Code::Ok => "ok".to_owned(),
            Code::PermissionDenied | Code::Unauthenticated => format!("denied: {message}"),
            Code::InvalidArgument => format!("invalid: {message}"),
            Code::Cancelled => format!("cancelled: {message}"),
            other => format!("failed: {}: {message}", code_name(other)),
        };
        let target = self.note.get();
        Some(move || {
            self.audit.record(&self.actor, &self.method, &target, "", &outcome);
        })
    }

    /// Records now, on the blocking pool, and waits until it is on disk.
    async fn finish(self, code: Code, message: &str) {
        if let Some(write) = self.record_of(code, message) {
            let _ = tokio::task::spawn_blocking(write).await;
        }
    }

    /// Records without waiting (from a body being polled or dropped).
    fn finish_detached(self, code: Code, message: &str) {
        if let Some(write) = self.record_of(code, message) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(write);
                }
                Err(_) => write(),
            }
        }
    }
}

fn code_name(code: Code) -> String {
    // "Some requested entity was not found" → a stable, short name.
    format!("{code:?}").chars().fold(String::new(), |mut s, c| {
        if c.is_uppercase() && !s.is_empty() {
            s.push('_');
        }
        s.push(c.to_ascii_lowercase());
        s
    })
}

impl<S, B, RB> Service<http::Request<B>> for Audited<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Body + Unpin + Send + 'static,
{
    type Response = http::Response<AuditedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let call = Call::start(&req, &self.audit);
        req.extensions_mut().insert(call.note.clone());
        // The clone that was driven ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            let (parts, body) = response.into_parts();
            let call = match Status::from_header_map(&parts.headers) {
                // Trailers-only: the call ended before any message.
                Some(status) => {
                    call.finish(status.code(), status.message()).await;
                    None
                }
                None => Some(call),
            };
            Ok(http::Response::from_parts(parts, AuditedBody { inner: body, call }))
        })
    }
}

/// A response body that records its call when the trailers pass by.
pub struct AuditedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for AuditedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    match Status::from_header_map(trailers) {
                        Some(status) => call.finish_detached(status.code(), status.message()),
                        None => call.finish_detached(Code::Unknown, "the call ended without a status"),
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.finish_detached(Code::Internal, "the response stream failed");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.finish_detached(Code::Unknown, "the call ended without a status");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for AuditedBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && call.mutating
        {
            call.finish_detached(Code::Cancelled, "the caller went away before the call ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_as_words() {
        assert_eq!(code_name(Code::NotFound), "not_found");
        assert_eq!(code_name(Code::FailedPrecondition), "failed_precondition");
    }

    #[test]
    fn reads_are_recorded_only_when_refused_or_failed() {
        let dir = tempfile::tempdir().expect("tmp");
        let audit = Audit::open(dir.path(), &Default::default()).expect("audit");
        let call = |path: &str| {
            let req = http::Request::builder().uri(path).body(()).expect("request");
            Call::start(&req, &audit)
        };
        assert!(call("/berth.v1.Services/List").record_of(Code::Ok, "").is_none());
        assert!(call("/berth.v1.Services/List").record_of(Code::NotFound, "x").is_some());
        assert!(call("/berth.v1.Services/Deploy").record_of(Code::Ok, "").is_some());
        // A method this list does not know counts as mutating.
        assert!(call("/berth.v1.Maintenance/Set").record_of(Code::Ok, "").is_some());
        let c = call("/berth.v1.Env/SetEnv");
        c.note.set("web");
        (c.record_of(Code::PermissionDenied, "viewer").expect("record"))();
        let text = std::fs::read_to_string(dir.path().join("audit.log")).expect("read");
        assert!(
            text.contains("\"action\":\"Env/SetEnv\"")
                && text.contains("\"service\":\"web\"")
                && text.contains("\"outcome\":\"denied: viewer\""),
            "{text}"
        );
    }
}

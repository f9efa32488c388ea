//! The `berth.v1.Services` service: thin adapters over the [`Supervisor`]
//! handle.
//!
//! Owns proto↔domain conversions for services and the mapping of
//! [`SupervisorError`] to gRPC status codes. Mutating calls need an operator
//! certificate. Streaming calls feed a bounded channel from a task on the
//! agent's tracker; a deploy keeps going if the caller hangs up, since
//! stopping half-way would leave the host worse off. Every stream ends when
//! the agent shuts down: `WatchEvents` and `Logs -f` at once, a deploy's
//! once the deploy has settled (which shutdown makes prompt).

use std::pin::Pin;
use std::time::Duration;

use berth_proto::v1::services_server::Services;
use berth_proto::v1::{
    self as pb, ApplyRequest, DeployEvent, DeployRequest, GetRequest, HistoryRequest, HistoryResponse, ListRequest,
    ListResponse, LogLine, LogsRequest, RemoveRequest, RemoveResponse, RestartRequest, RollbackRequest, ServiceStatus,
    SetMaintenanceRequest, SetMaintenanceResponse, WatchEventsRequest, deploy_event,
};
use futures::{Stream, StreamExt as _};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::listener::{PeerInfo, until_refresh};
use crate::supervisor::deploy::{Outcome, Progress, ProgressTx};
use crate::supervisor::{ServiceView, Supervisor, SupervisorError};

/// Deploy events buffered for a slow caller; progress beyond it is dropped
/// (the final result is always delivered).
const DEPLOY_STREAM: usize = 64;

/// Events buffered per `WatchEvents` caller between the bus and the wire.
const EVENT_STREAM: usize = 64;

/// Once the agent shuts down, how long a stream waits for a caller that
/// does not read before it gives up on the rest.
const FLUSH_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// Maps supervisor errors to gRPC codes, in one place.
pub fn status(e: SupervisorError) -> Status {
    match e {
        SupervisorError::Invalid(m) => super::invalid_argument(m),
        SupervisorError::NotFound(m) => Status::not_found(super::bounded(m)),
        SupervisorError::Refused(m) => Status::failed_precondition(super::bounded(m)),
        SupervisorError::Unavailable(m) => Status::unavailable(super::bounded(m)),
        SupervisorError::Internal(m) => Status::internal(super::bounded(m)),
    }
}

/// The Services API.
pub struct ServicesApi {
    sup: Supervisor,
    streams: Streams,
}

impl ServicesApi {
    /// Serves `sup`; stream tasks run on `streams`.
    pub fn new(sup: Supervisor, streams: Streams) -> Self {
        ServicesApi { sup, streams }
    }
}

/// Where streaming calls run their forwarding tasks, and when they end.
#[derive(Clone)]
pub struct Streams {
    /// The agent's tracker.
    pub tracker: TaskTracker,
    /// Fires when the agent shuts down.
    pub cancel: CancellationToken,
}

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs a deploy-like call and streams its progress and result, from a
/// task on the tracker. Errors raised before anything changed end the
/// stream with that status instead of a result. The stream ends with the
/// result; on shutdown the call settles promptly, and a caller that stops
/// reading then loses what it has not read after [`FLUSH_ON_SHUTDOWN`].
pub fn deploy_stream<F, Fut>(streams: &Streams, run: F) -> BoxStream<DeployEvent>
where
    F: FnOnce(ProgressTx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Outcome, SupervisorError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<DeployEvent, Status>>(DEPLOY_STREAM);
    let (ptx, mut prx) = mpsc::channel::<Progress>(DEPLOY_STREAM);
    let cancel = streams.cancel.clone();
    streams.tracker.spawn(
        async move {
            let work = run(ProgressTx::new(Some(ptx)));
            tokio::pin!(work);
            let result = loop {
                tokio::select! {
                    // All progress first, then the result.
                    biased;
                    Some(p) = prx.recv() => { send(&tx, Ok(progress_event(p)), &cancel).await; }
                    result = &mut work => break result,
                }
            };
            while let Ok(p) = prx.try_recv() {
                send(&tx, Ok(progress_event(p)), &cancel).await;
            }
            let item = match result {
                Ok(outcome) => Ok(DeployEvent {
                    event: Some(deploy_event::Event::Result(result_of(outcome))),
                }),
                Err(e) => Err(status(e)),
            };
            send(&tx, item, &cancel).await;
        }
        .instrument(tracing::Span::current()),
    );
    Box::pin(ReceiverStream::new(rx))
}

/// Sends `item` to a stream's caller; after shutdown began, gives up on a
/// caller that does not read within [`FLUSH_ON_SHUTDOWN`]. False when the
/// item was not delivered.
async fn send<T>(tx: &mpsc::Sender<T>, item: T, cancel: &CancellationToken) -> bool {
    let gave_up = async {
        cancel.cancelled().await;
        tokio::time::sleep(FLUSH_ON_SHUTDOWN).await;
    };
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        () = gave_up => false,
    }
}

fn progress_event(p: Progress) -> DeployEvent {
    let event = match p {
        Progress::Step { phase, message } => deploy_event::Event::Step(pb::Step {
            phase: phase.to_owned(),
            message,
        }),
        Progress::Pull(p) => deploy_event::Event::Pull(pb::PullProgress {
            image: String::new(),
            layer: p.layer,
            status: p.status,
            current_bytes: p.current,
            total_bytes: p.total,
        }),
    };
    DeployEvent { event: Some(event) }
}

fn result_of(o: Outcome) -> pb::DeployResult {
    pb::DeployResult {
        success: o.success,
        service: o.service,
        revision: o.revision,
        attempted_revision: o.attempted_revision,
        error: o.error,
        rolled_back: o.rolled_back,
        health_output: o.health_output,
        exit_code: o.exit_code,
        log_tail: o.log_tail,
        changed: o.changed,
    }
}

/// Domain view → wire status.
pub fn status_of(v: ServiceView) -> ServiceStatus {
    let containers = v
        .containers
        .iter()
        .map(|c| pb::ContainerStatus {
            id: c.id.clone(),
            name: c.name.clone(),
            revision: c.revision.unwrap_or(0),
            state: c.state.clone(),
            health: if c.running && c.revision == Some(v.revision) {
                v.health.clone()
            } else {
                String::new()
            },
            started_at_ms: c.started_at_ms.unwrap_or(0),
            ports: c
                .host_ports
                .iter()
                .map(|p| format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.protocol))
                .collect(),
            exit_code: if c.running { None } else { c.exit_code },
        })
        .collect();
    ServiceStatus {
        name: v.name,
        revision: v.revision,
        image: v.spec.image.as_str().to_owned(),
        state: v.state,
        detail: v.detail,
        containers,
        restarts: v.restarts,
        oom_kills: v.oom_kills,
        spec_toml: v.spec.to_toml(),
        routes: v.routes,
        updated_at_ms: v.updated_at_ms,
        version: v.version,
        maintenance: v.maintenance,
        health_source: v.health_source,
    }
}

impl ServicesApi {
    /// The supervisor, if it runs; UNAVAILABLE with the reason otherwise.
    fn ready(&self) -> Result<Supervisor, Status> {
        self.sup.engine().map_err(status)?;
        Ok(self.sup.clone())
    }
}

#[tonic::async_trait]
impl Services for ServicesApi {
    type ApplyStream = BoxStream<DeployEvent>;
    type DeployStream = BoxStream<DeployEvent>;
    type RollbackStream = BoxStream<DeployEvent>;
    type RestartStream = BoxStream<DeployEvent>;
    type LogsStream = BoxStream<LogLine>;
    type WatchEventsStream = BoxStream<pb::Event>;

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<Self::ApplyStream>, Status> {
        let note = super::audited::note(&request);
        let who = super::operator(&request)?;
        let sup = self.ready()?;
        let spec = berth_core::spec::parse(&request.into_inner().spec_toml)
            .map_err(|e| super::invalid_argument(e.to_string()))?;
        note.set(spec.name.as_str());
        Ok(Response::new(deploy_stream(&self.streams, move |p| async move {
            sup.apply_spec(spec, &who, p).await
        })))
    }

    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<Self::DeployStream>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        Ok(Response::new(deploy_stream(&self.streams, move |p| async move {
            sup.deploy_image(&req.service, &req.image, &who, p).await
        })))
    }

    async fn rollback(&self, request: Request<RollbackRequest>) -> Result<Response<Self::RollbackStream>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        let to = (req.to_revision != 0).then_some(req.to_revision);
        Ok(Response::new(deploy_stream(&self.streams, move |p| async move {
            sup.rollback(&req.service, to, &who, p).await
        })))
    }

    async fn restart(&self, request: Request<RestartRequest>) -> Result<Response<Self::RestartStream>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        Ok(Response::new(deploy_stream(&self.streams, move |p| async move {
            sup.restart(&req.service, &who, p).await
        })))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let removed = self
            .ready()?
            .remove(&req.service, req.volumes, &who)
            .await
            .map_err(status)?;
        Ok(Response::new(RemoveResponse {
            containers_removed: removed.containers,
            volumes_removed: removed.volumes,
        }))
    }

    async fn set_maintenance(
        &self,
        request: Request<SetMaintenanceRequest>,
    ) -> Result<Response<SetMaintenanceResponse>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let changed = self
            .ready()?
            .set_maintenance(&req.service, req.on, &who)
            .await
            .map_err(status)?;
        Ok(Response::new(SetMaintenanceResponse { changed }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<ServiceStatus>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        super::caller(&request)?;
        let view = self.sup.view(&request.into_inner().service).await.map_err(status)?;
        Ok(Response::new(status_of(view)))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        super::caller(&request)?;
        let views = self.sup.views().await.map_err(status)?;
        Ok(Response::new(ListResponse {
            services: views.into_iter().map(status_of).collect(),
        }))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        super::caller(&request)?;
        let service = request.into_inner().service;
        let record = self.sup.record(&service).map_err(status)?;
        let revisions = record
            .revisions
            .iter()
            .rev()
            .map(|r| pb::Revision {
                number: r.number,
                created_at_ms: r.created_at_ms,
                image: r.spec.image.as_str().to_owned(),
                reason: r.reason.clone(),
                author: r.author.clone(),
                env_keys_changed: r.env_keys_changed.clone(),
                status: match &r.error {
                    Some(e) => format!("{}: {e}", r.status.as_str()),
                    None => r.status.as_str().to_owned(),
                },
                spec_toml: r.spec.to_toml(),
            })
            .collect();
        Ok(Response::new(HistoryResponse { revisions }))
    }

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        super::caller(&request)?;
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let req = request.into_inner();
        let view = self.sup.view(&req.service).await.map_err(status)?;
        // The running container of the active revision, else the newest.
        let mut containers = view.containers;
        containers.sort_by_key(|c| {
            (
                c.running && c.revision == Some(view.revision),
                c.started_at_ms.unwrap_or(0),
            )
        });
        let container = containers
            .pop()
            .ok_or_else(|| Status::not_found(format!("{} has no container to read logs from", req.service)))?;
        let name = container.name.clone();
        let engine = self.sup.engine().map_err(status)?;
        let stream = engine
            .logs(&container.id, req.follow, req.tail)
            .map(move |line| {
                line.map(|l| LogLine {
                    stream: l.stream,
                    line: l.line,
                    container: name.clone(),
                })
                .map_err(|e| Status::unavailable(e.to_string()))
            })
            // `logs -f` follows until the agent shuts down.
            .take_until(self.streams.cancel.clone().cancelled_owned());
        if req.follow {
            return Ok(Response::new(Box::pin(until_refresh(peer.as_ref(), Box::pin(stream)))));
        }
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        super::caller(&request)?;
        self.sup.engine().map_err(status)?;
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let req = request.into_inner();
        let filter = req.services;
        let wanted =
            move |ev: &crate::events::Event| filter.is_empty() || ev.service.is_empty() || filter.contains(&ev.service);
        let (past, mut rx) = self.sup.bus().watch(crate::events::Backlog {
            since_ms: req.since_ms,
            after_seq: req.after_seq,
        });
        let follow = !req.no_follow;
        let (tx, out) = mpsc::channel(EVENT_STREAM);
        let cancel = self.streams.cancel.clone();
        self.streams.tracker.spawn(async move {
            for ev in past.into_iter().filter(&wanted) {
                if !send(&tx, Ok(event_to_pb(ev)), &cancel).await {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                let next = tokio::select! {
                    // Shutdown ends the stream: the caller sees it close.
                    _ = cancel.cancelled() => break,
                    _ = tx.closed() => break,
                    next = rx.recv() => next,
                };
                let ev = match next {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => crate::events::Event {
                        seq: 0,
                        timestamp_ms: crate::clock::now_ms(),
                        kind: "dropped".to_owned(),
                        service: String::new(),
                        revision: 0,
                        message: format!("{n} events were dropped because this watcher read too slowly"),
                        severity: crate::events::Severity::Warning,
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if wanted(&ev) && !send(&tx, Ok(event_to_pb(ev)), &cancel).await {
                    break;
                }
            }
        });
        let out = ReceiverStream::new(out);
        if follow {
            return Ok(Response::new(Box::pin(until_refresh(peer.as_ref(), out))));
        }
        Ok(Response::new(Box::pin(out)))
    }
}

fn event_to_pb(ev: crate::events::Event) -> pb::Event {
    pb::Event {
        timestamp_ms: ev.timestamp_ms,
        kind: ev.kind,
        service: ev.service,
        revision: ev.revision,
        message: ev.message,
        severity: ev.severity.as_str().to_owned(),
        seq: ev.seq,
    }
}

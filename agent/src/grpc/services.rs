//! The `berth.v1.Services` service: thin adapters over the [`Supervisor`]
//! handle.
//!
//! Owns proto↔domain conversions for services and the mapping of
//! [`SupervisorError`] to gRPC status codes. Mutating calls need an operator
//! certificate. Streaming calls run their work on a spawned task feeding a
//! bounded channel; a deploy keeps going if the caller hangs up, since
//! stopping half-way would leave the host worse off.

use std::pin::Pin;

use berth_proto::v1::services_server::Services;
use berth_proto::v1::{
    self as pb, ApplyRequest, DeployEvent, DeployRequest, GetRequest, HistoryRequest, HistoryResponse, ListRequest,
    ListResponse, LogLine, LogsRequest, RemoveRequest, RemoveResponse, RestartRequest, RollbackRequest, ServiceStatus,
    WatchEventsRequest, deploy_event,
};
use futures::{Stream, StreamExt as _};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::supervisor::deploy::{Outcome, Progress, ProgressTx};
use crate::supervisor::{ServiceView, Supervisor, SupervisorError};

/// Deploy events buffered for a slow caller; progress beyond it is dropped
/// (the final result is always delivered).
const DEPLOY_STREAM: usize = 64;

/// Maps supervisor errors to gRPC codes, in one place.
pub fn status(e: SupervisorError) -> Status {
    match e {
        SupervisorError::Invalid(m) => Status::invalid_argument(m),
        SupervisorError::NotFound(m) => Status::not_found(m),
        SupervisorError::Refused(m) => Status::failed_precondition(m),
        SupervisorError::Unavailable(m) => Status::unavailable(m),
        SupervisorError::Internal(m) => Status::internal(m),
    }
}

/// The Services API.
pub struct ServicesApi {
    sup: Supervisor,
}

impl ServicesApi {
    /// Serves `sup`.
    pub fn new(sup: Supervisor) -> Self {
        ServicesApi { sup }
    }
}

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs a deploy-like call on its own task and streams its progress and
/// result. Errors raised before anything changed end the stream with that
/// status instead of a result.
pub fn deploy_stream<F, Fut>(run: F) -> BoxStream<DeployEvent>
where
    F: FnOnce(ProgressTx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Outcome, SupervisorError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<DeployEvent, Status>>(DEPLOY_STREAM);
    let (ptx, mut prx) = mpsc::channel::<Progress>(DEPLOY_STREAM);
    let forward_tx = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(p) = prx.recv().await {
            let _ = forward_tx.send(Ok(progress_event(p))).await;
        }
    });
    tokio::spawn(async move {
        let result = run(ProgressTx::new(Some(ptx))).await;
        // All progress first, then the result.
        let _ = forward.await;
        let item = match result {
            Ok(outcome) => Ok(DeployEvent {
                event: Some(deploy_event::Event::Result(result_of(outcome))),
            }),
            Err(e) => Err(status(e)),
        };
        let _ = tx.send(item).await;
    });
    Box::pin(ReceiverStream::new(rx))
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
        let who = super::require_operator(&request)?;
        let sup = self.ready()?;
        let spec = berth_core::spec::parse(&request.into_inner().spec_toml)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(deploy_stream(move |p| async move {
            sup.apply_spec(spec, &who.name, p).await
        })))
    }

    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<Self::DeployStream>, Status> {
        let who = super::require_operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        Ok(Response::new(deploy_stream(move |p| async move {
            sup.deploy_image(&req.service, &req.image, &who.name, p).await
        })))
    }

    async fn rollback(&self, request: Request<RollbackRequest>) -> Result<Response<Self::RollbackStream>, Status> {
        let who = super::require_operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        let to = (req.to_revision != 0).then_some(req.to_revision);
        Ok(Response::new(deploy_stream(move |p| async move {
            sup.rollback(&req.service, to, &who.name, p).await
        })))
    }

    async fn restart(&self, request: Request<RestartRequest>) -> Result<Response<Self::RestartStream>, Status> {
        let who = super::require_operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        Ok(Response::new(deploy_stream(move |p| async move {
            sup.restart(&req.service, &who.name, p).await
        })))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let who = super::require_operator(&request)?;
        let service = request.into_inner().service;
        let removed = self.ready()?.remove(&service, &who.name).await.map_err(status)?;
        Ok(Response::new(RemoveResponse {
            containers_removed: removed,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<ServiceStatus>, Status> {
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
        super::caller(&request)?;
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
        let stream = engine.logs(&container.id, req.follow, req.tail).map(move |line| {
            line.map(|l| LogLine {
                stream: l.stream,
                line: l.line,
                container: name.clone(),
            })
            .map_err(|e| Status::unavailable(e.to_string()))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        super::caller(&request)?;
        self.sup.engine().map_err(status)?;
        let filter = request.into_inner().services;
        let mut rx = self.sup.bus().subscribe();
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => crate::events::Event {
                        timestamp_ms: crate::clock::now_ms(),
                        kind: "dropped",
                        service: String::new(),
                        revision: 0,
                        message: format!("{n} events were dropped because this watcher read too slowly"),
                        severity: crate::events::Severity::Warning,
                    },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !filter.is_empty() && !ev.service.is_empty() && !filter.contains(&ev.service) {
                    continue;
                }
                let msg = pb::Event {
                    timestamp_ms: ev.timestamp_ms,
                    kind: ev.kind.to_owned(),
                    service: ev.service,
                    revision: ev.revision,
                    message: ev.message,
                    severity: ev.severity.as_str().to_owned(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

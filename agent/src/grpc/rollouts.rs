//! The `berth.v1.Rollouts` service: thin adapters over the supervisor's
//! plans ([`crate::supervisor::plan`]) and this agent's rollout records
//! ([`crate::fleet::rollouts`]).
//!
//! Owns the wire↔domain conversions and who may do what: `Plan`,
//! `GetRollout` and `ListRollouts` are open to viewers (a plan names env
//! keys, never values; a record's env values go back to operators only);
//! `PutRollout` and `SetRolloutControl` need an operator. Unary calls;
//! nothing to shut down.

use berth_proto::v1::rollouts_server::Rollouts as RolloutsService;
use berth_proto::v1::{
    self as pb, GetRolloutRequest, ListRolloutsRequest, ListRolloutsResponse, PlanRequest, PlanResponse,
    PutRolloutRequest, RolloutState, SetRolloutControlRequest, plan_request,
};
use tonic::{Request, Response, Status};

use super::services::status;
use crate::fleet::rollouts::{self as store, RolloutError, Rollouts, Stored};
use crate::supervisor::Supervisor;
use crate::supervisor::env::EnvEdit;
use crate::supervisor::plan::{Plan, PlanChange};
use berth_core::envfile::{self, Vars};
use berth_core::identity::Role;

/// The Rollouts API.
pub struct RolloutsApi {
    sup: Supervisor,
    records: Rollouts,
}

impl RolloutsApi {
    /// Plans with `sup`; keeps records in `records`.
    pub fn new(sup: Supervisor, records: Rollouts) -> Self {
        RolloutsApi { sup, records }
    }
}

fn record_status(e: RolloutError) -> Status {
    match e {
        RolloutError::Invalid(m) => super::invalid_argument(m),
        RolloutError::NotFound(_) => Status::not_found(e.to_string()),
        RolloutError::Disk(m) => Status::internal(m),
    }
}

/// The wire's change → the plan's.
fn change_of(change: Option<plan_request::Change>) -> Result<PlanChange, Status> {
    match change {
        Some(plan_request::Change::Image(image)) => Ok(PlanChange::Image(image)),
        Some(plan_request::Change::SpecToml(toml)) => berth_core::spec::parse(&toml)
            .map(|spec| PlanChange::Spec(Box::new(spec)))
            .map_err(|e| super::invalid_argument(e.to_string())),
        Some(plan_request::Change::Env(env)) => {
            let set: Vars = env.set.into_iter().collect();
            envfile::check_vars(&set).map_err(|e| super::invalid_argument(e.to_string()))?;
            let edit = if env.replace {
                EnvEdit::Replace(set)
            } else if !env.unset.is_empty() {
                if !set.is_empty() {
                    return Err(super::invalid_argument(
                        "an env change either sets or unsets keys, not both",
                    ));
                }
                EnvEdit::Unset(env.unset)
            } else {
                EnvEdit::Set(set)
            };
            Ok(PlanChange::Env(edit))
        }
        Some(plan_request::Change::Restart(true)) => Ok(PlanChange::Restart),
        Some(plan_request::Change::Restart(false)) | None => Err(super::invalid_argument(
            "a plan needs a change: an image, a spec, an env change or a restart",
        )),
    }
}

fn plan_of(p: Plan) -> PlanResponse {
    PlanResponse {
        service: p.service,
        exists: p.exists,
        revision: p.revision,
        would_change: p.would_change,
        image_from: p.image_from,
        image_to: p.image_to,
        spec_changes: p
            .spec_changes
            .into_iter()
            .map(|c| pb::SpecChange {
                key: c.key,
                from: c.from.unwrap_or_default(),
                to: c.to.unwrap_or_default(),
            })
            .collect(),
        env_added: p.env_added,
        env_changed: p.env_changed,
        env_removed: p.env_removed,
        site_diff: p.site_diff,
        strategy: p.strategy,
        expect_version: String::new(),
    }
}

/// A record from the wire.
fn record_from(r: pb::RolloutRecord) -> store::Rollout {
    store::Rollout {
        id: r.id,
        fleet: r.fleet,
        service: r.service,
        change: r.change,
        options: r.options.into_iter().collect(),
        created_at_ms: r.created_at_ms,
        created_by: r.created_by,
        batches: r
            .batches
            .into_iter()
            .map(|b| store::Batch {
                hosts: b.hosts,
                canary: b.canary,
            })
            .collect(),
        hosts: r
            .hosts
            .into_iter()
            .map(|h| store::HostProgress {
                host: h.host,
                address: h.address,
                batch: h.batch,
                state: h.state,
                revision_before: h.revision_before,
                revision_after: h.revision_after,
                error: h.error,
                started_at_ms: h.started_at_ms,
                finished_at_ms: h.finished_at_ms,
                version: h.version,
                phase: h.phase,
            })
            .collect(),
        status: r.status,
        detail: r.detail,
        updated_at_ms: r.updated_at_ms,
        lock: r.lock,
        image: r.image,
        spec_toml: r.spec_toml,
        env: r.env.map(|e| store::EnvChange {
            set: e.set.into_iter().collect(),
            unset: e.unset,
            replace: e.replace,
        }),
        restart: r.restart,
        batch: r.batch,
    }
}

/// What a caller sees of a stored rollout: env values only for operators,
/// host lists only when asked.
fn state_of(s: Stored, reveal: bool, with_hosts: bool) -> RolloutState {
    let r = s.record;
    let record = pb::RolloutRecord {
        id: r.id,
        fleet: r.fleet,
        service: r.service,
        change: r.change,
        options: r.options.into_iter().collect(),
        created_at_ms: r.created_at_ms,
        created_by: r.created_by,
        batches: if with_hosts {
            r.batches
                .into_iter()
                .map(|b| pb::RolloutBatch {
                    hosts: b.hosts,
                    canary: b.canary,
                })
                .collect()
        } else {
            Vec::new()
        },
        hosts: if with_hosts {
            r.hosts
                .into_iter()
                .map(|h| pb::HostProgress {
                    host: h.host,
                    address: h.address,
                    batch: h.batch,
                    state: h.state,
                    revision_before: h.revision_before,
                    revision_after: h.revision_after,
                    error: h.error,
                    started_at_ms: h.started_at_ms,
                    finished_at_ms: h.finished_at_ms,
                    version: h.version,
                    phase: h.phase,
                })
                .collect()
        } else {
            Vec::new()
        },
        status: r.status,
        detail: r.detail,
        updated_at_ms: r.updated_at_ms,
        lock: r.lock,
        image: r.image,
        spec_toml: r.spec_toml,
        env: r.env.map(|e| pb::EnvChange {
            set: e
                .set
                .into_iter()
                .map(|(k, v)| (k, if reveal { v } else { super::env::MASK.to_owned() }))
                .collect(),
            unset: e.unset,
            replace: e.replace,
        }),
        restart: r.restart,
        batch: r.batch,
    };
    RolloutState {
        record: Some(record),
        control: Some(pb::RolloutControl {
            action: s.control.action,
            by: s.control.by,
            at_ms: s.control.at_ms,
        }),
    }
}

#[tonic::async_trait]
impl RolloutsService for RolloutsApi {
    async fn plan(&self, request: Request<PlanRequest>) -> Result<Response<PlanResponse>, Status> {
        super::caller(&request)?;
        let req = request.into_inner();
        let change = change_of(req.change)?;
        let plan = self.sup.plan(&req.service, change).map_err(status)?;
        Ok(Response::new(plan_of(plan)))
    }

    async fn put_rollout(&self, request: Request<PutRolloutRequest>) -> Result<Response<RolloutState>, Status> {
        let who = super::operator(&request)?;
        let record = request
            .into_inner()
            .record
            .ok_or_else(|| super::invalid_argument("PutRollout needs a record"))?;
        let stored = self
            .records
            .put(record_from(record), &who)
            .await
            .map_err(record_status)?;
        Ok(Response::new(state_of(stored, true, true)))
    }

    async fn get_rollout(&self, request: Request<GetRolloutRequest>) -> Result<Response<RolloutState>, Status> {
        let who = super::caller(&request)?;
        let stored = self
            .records
            .get(&request.into_inner().id)
            .await
            .map_err(record_status)?;
        Ok(Response::new(state_of(stored, who.role == Role::Operator, true)))
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        super::caller(&request)?;
        let all = self.records.list().await.map_err(record_status)?;
        Ok(Response::new(ListRolloutsResponse {
            rollouts: all.into_iter().map(|s| state_of(s, false, false)).collect(),
        }))
    }

    async fn set_rollout_control(
        &self,
        request: Request<SetRolloutControlRequest>,
    ) -> Result<Response<RolloutState>, Status> {
        let who = super::operator(&request)?;
        let req = request.into_inner();
        let stored = self
            .records
            .control(&req.id, &req.action, &who)
            .await
            .map_err(record_status)?;
        Ok(Response::new(state_of(stored, true, true)))
    }
}

//! The `berth.v1.Env` service: thin adapters over the supervisor's env
//! changes ([`crate::supervisor::env`]).
//!
//! Owns the wire↔domain conversions for envs and who may see values:
//! changes need an operator; `GetEnv` is open to viewers, with every value
//! masked, and only an operator may ask to reveal them. Changes stream
//! their rollout like a deploy ([`deploy_stream`]). Values never reach a
//! log or an error message from here: errors name keys only.

use berth_proto::v1::env_server::Env;
use berth_proto::v1::{DeployEvent, EnvVar, GetEnvRequest, GetEnvResponse, SetEnvRequest, UnsetEnvRequest};
use tonic::{Request, Response, Status};

use super::services::{BoxStream, Streams, deploy_stream, status};
use crate::supervisor::Supervisor;
use crate::supervisor::env::EnvEdit;
use berth_core::envfile::{self, Vars};
use berth_core::identity::Role;

/// What a masked value looks like: the same for every value, so not even
/// its length shows.
pub const MASK: &str = "****";

/// The Env API.
pub struct EnvApi {
    sup: Supervisor,
    streams: Streams,
}

impl EnvApi {
    /// Serves `sup`; change streams run on `streams`.
    pub fn new(sup: Supervisor, streams: Streams) -> Self {
        EnvApi { sup, streams }
    }

    fn ready(&self) -> Result<Supervisor, Status> {
        self.sup.engine().map_err(status)?;
        Ok(self.sup.clone())
    }
}

/// `SetEnvRequest` → the domain edit, checking every key and value.
pub fn edit_of(req: &SetEnvRequest) -> Result<EnvEdit, Status> {
    let vars: Vars = req.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    envfile::check_vars(&vars).map_err(|e| super::invalid_argument(e.to_string()))?;
    Ok(if req.replace {
        EnvEdit::Replace(vars)
    } else {
        EnvEdit::Set(vars)
    })
}

/// The env as sent back: masked unless `reveal`.
pub fn vars_of(vars: &Vars, reveal: bool) -> Vec<EnvVar> {
    vars.iter()
        .map(|(k, v)| EnvVar {
            key: k.to_owned(),
            value: if reveal { v.to_owned() } else { MASK.to_owned() },
            masked: !reveal,
        })
        .collect()
}

#[tonic::async_trait]
impl Env for EnvApi {
    type SetEnvStream = BoxStream<DeployEvent>;
    type UnsetEnvStream = BoxStream<DeployEvent>;

    async fn set_env(&self, request: Request<SetEnvRequest>) -> Result<Response<Self::SetEnvStream>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        let edit = edit_of(&req)?;
        Ok(Response::new(deploy_stream(&self.streams, move |p| async move {
            sup.change_env(&req.service, edit, &who, p).await
        })))
    }

    async fn unset_env(&self, request: Request<UnsetEnvRequest>) -> Result<Response<Self::UnsetEnvStream>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::operator(&request)?;
        let sup = self.ready()?;
        let req = request.into_inner();
        for k in &req.keys {
            envfile::check_var(k, "").map_err(|e| super::invalid_argument(e.to_string()))?;
        }
        Ok(Response::new(deploy_stream(&self.streams, move |p| async move {
            sup.change_env(&req.service, EnvEdit::Unset(req.keys), &who, p).await
        })))
    }

    async fn get_env(&self, request: Request<GetEnvRequest>) -> Result<Response<GetEnvResponse>, Status> {
        super::audited::target(&request, &request.get_ref().service);
        let who = super::caller(&request)?;
        let actor = super::actor(&request)?;
        let req = request.into_inner();
        if req.reveal && who.role != Role::Operator {
            return Err(Status::permission_denied(format!(
                "{} has role {}; only operators may reveal env values. Without --reveal \
                 the keys are shown with their values masked.",
                who.name,
                who.role.as_str()
            )));
        }
        let view = self.sup.env_view(&req.service).map_err(status)?;
        if req.reveal {
            self.sup.audit().record(
                &actor,
                "env reveal",
                &req.service,
                &format!("revision {}", view.revision),
                "ok",
            );
        }
        Ok(Response::new(GetEnvResponse {
            vars: vars_of(&view.vars, req.reveal),
            revision: view.revision,
            path: view.path.display().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_unless_revealed() {
        let vars: Vars = [("A".to_owned(), "secret".to_owned())].into_iter().collect();
        let masked = vars_of(&vars, false);
        assert_eq!(masked[0].value, MASK);
        assert!(masked[0].masked);
        let shown = vars_of(&vars, true);
        assert_eq!(shown[0].value, "secret");
        assert!(!shown[0].masked);
    }

    #[test]
    fn requests_are_checked_without_echoing_values() {
        let req = SetEnvRequest {
            service: "web".into(),
            set: [("A".to_owned(), "multi\nline-secret".to_owned())]
                .into_iter()
                .collect(),
            replace: false,
        };
        let e = edit_of(&req).expect_err("newline").message().to_owned();
        assert!(e.contains('A') && !e.contains("line-secret"), "{e}");
        let req = SetEnvRequest {
            service: "web".into(),
            set: Default::default(),
            replace: true,
        };
        assert!(matches!(edit_of(&req), Ok(EnvEdit::Replace(v)) if v.is_empty()));
    }
}

//! The one change a rollout carries to every host, and the calls that make
//! it: a new image, a whole spec, an env change or a restart.
//!
//! Owns the mapping from a [`Change`] to the agent's RPCs: the `Plan` request
//! (what would change, computed by the agent), the deploy-shaped call that
//! makes it (Deploy, Apply, SetEnv/UnsetEnv, Restart: each the agent's own
//! health-gated deploy, streaming steps and a result), and the rollback of
//! a host it changed (Rollback to the revision it had, or Remove for a host
//! the rollout gave the service first). It also carries the change in and
//! out of a rollout record, so `rollout resume` on another machine
//! continues the same change.

use std::collections::BTreeMap;

use berth_proto::v1::env_client::EnvClient;
use berth_proto::v1::rollouts_client::RolloutsClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{
    ApplyRequest, DeployEvent, DeployRequest, DeployResult, EnvChange, PlanRequest, PlanResponse, RemoveRequest,
    RestartRequest, RollbackRequest, RolloutRecord, SetEnvRequest, UnsetEnvRequest, deploy_event, plan_request,
};
use tonic::Streaming;

use crate::client::{Agent, ConnectError};

/// What a rollout changes on every host.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `--image REF`: the service's current spec with a new image.
    Image(String),
    /// `-f SPEC.toml`: a whole spec; also a first deploy.
    Spec(String),
    /// `--env KEY=VALUE...`, `--env-file FILE`, `--unset KEY...`.
    Env {
        /// Keys to set.
        set: BTreeMap<String, String>,
        /// Keys to remove.
        unset: Vec<String>,
        /// The env becomes exactly `set` (`--env-file --replace`).
        replace: bool,
    },
    /// `--restart`: fresh containers of the same revision.
    Restart,
}

impl Change {
    /// For people: `image registry/api:1.4.3`, `spec web.toml`, `env set
    /// A, B`, `restart`. Never a value.
    pub fn describe(&self, spec_name: Option<&str>) -> String {
        match self {
            Change::Image(image) => format!("image {image}"),
            Change::Spec(_) => format!("spec {}", spec_name.unwrap_or("(file)")),
            Change::Env { set, unset, replace } => {
                let mut parts = Vec::new();
                if !set.is_empty() {
                    let keys: Vec<&str> = set.keys().map(String::as_str).collect();
                    parts.push(format!(
                        "env {} {}",
                        if *replace { "replace" } else { "set" },
                        keys.join(", ")
                    ));
                }
                if !unset.is_empty() {
                    parts.push(format!("env unset {}", unset.join(", ")));
                }
                parts.join("; ")
            }
            Change::Restart => "restart".into(),
        }
    }

    /// The change as a record carries it.
    pub fn write_into(&self, record: &mut RolloutRecord) {
        match self {
            Change::Image(image) => record.image = image.clone(),
            Change::Spec(toml) => record.spec_toml = toml.clone(),
            Change::Env { set, unset, replace } => {
                record.env = Some(EnvChange {
                    set: set.clone().into_iter().collect(),
                    unset: unset.clone(),
                    replace: *replace,
                })
            }
            Change::Restart => record.restart = true,
        }
    }

    /// The change a record carries.
    pub fn from_record(record: &RolloutRecord) -> Result<Change, String> {
        if !record.image.is_empty() {
            Ok(Change::Image(record.image.clone()))
        } else if !record.spec_toml.is_empty() {
            Ok(Change::Spec(record.spec_toml.clone()))
        } else if let Some(env) = &record.env {
            if env.set.values().any(|v| v == "****") {
                return Err(
                    "the record's env values are masked: resume an env rollout with an operator certificate".into(),
                );
            }
            Ok(Change::Env {
                set: env.set.clone().into_iter().collect(),
                unset: env.unset.clone(),
                replace: env.replace,
            })
        } else if record.restart {
            Ok(Change::Restart)
        } else {
            Err(format!("rollout {} records no change to carry on", record.id))
        }
    }

    fn plan_change(&self) -> plan_request::Change {
        match self {
            Change::Image(image) => plan_request::Change::Image(image.clone()),
            Change::Spec(toml) => plan_request::Change::SpecToml(toml.clone()),
            Change::Env { set, unset, replace } => plan_request::Change::Env(EnvChange {
                set: set.clone().into_iter().collect(),
                unset: unset.clone(),
                replace: *replace,
            }),
            Change::Restart => plan_request::Change::Restart(true),
        }
    }

    /// Asks `agent` what this change would do to `service` there.
    pub async fn plan(&self, agent: &Agent, service: &str) -> Result<PlanResponse, ConnectError> {
        let req = PlanRequest {
            service: service.to_owned(),
            change: Some(self.plan_change()),
        };
        agent
            .call(|ch| async move { RolloutsClient::new(ch).plan(req).await })
            .await
    }

    /// Makes the change on `agent`: starts its health-gated deploy and
    /// returns the stream of its steps and result.
    pub async fn start(&self, agent: &Agent, service: &str) -> Result<Streaming<DeployEvent>, ConnectError> {
        let service = service.to_owned();
        match self.clone() {
            Change::Image(image) => {
                agent
                    .call(|ch| async move { ServicesClient::new(ch).deploy(DeployRequest { service, image }).await })
                    .await
            }
            Change::Spec(spec_toml) => {
                agent
                    .call(|ch| async move { ServicesClient::new(ch).apply(ApplyRequest { spec_toml }).await })
                    .await
            }
            Change::Env { set, unset, replace } if unset.is_empty() || !set.is_empty() => {
                let req = SetEnvRequest {
                    service,
                    set: set.into_iter().collect(),
                    replace,
                };
                agent
                    .call(|ch| async move { EnvClient::new(ch).set_env(req).await })
                    .await
            }
            Change::Env { unset, .. } => {
                let req = UnsetEnvRequest { service, keys: unset };
                agent
                    .call(|ch| async move { EnvClient::new(ch).unset_env(req).await })
                    .await
            }
            Change::Restart => {
                agent
                    .call(|ch| async move { ServicesClient::new(ch).restart(RestartRequest { service }).await })
                    .await
            }
        }
    }
}

/// Rolls `service` on `agent` back to `revision` (0: the rollout created
/// it there, so it is removed). Returns the stream of a rollback, or
/// `None` for a removal (which answers at once).
pub async fn roll_back(
    agent: &Agent,
    service: &str,
    revision: u64,
) -> Result<Option<Streaming<DeployEvent>>, ConnectError> {
    let service = service.to_owned();
    if revision == 0 {
        agent
            .call(|ch| async move {
                ServicesClient::new(ch)
                    .remove(RemoveRequest {
                        service,
                        volumes: false,
                    })
                    .await
            })
            .await?;
        return Ok(None);
    }
    let req = RollbackRequest {
        service,
        to_revision: revision,
    };
    agent
        .call(|ch| async move { ServicesClient::new(ch).rollback(req).await })
        .await
        .map(Some)
}

/// Follows a deploy stream to its result, telling `phase` each step's
/// phase as it goes.
pub async fn follow(
    agent: &Agent,
    mut stream: Streaming<DeployEvent>,
    mut phase: impl FnMut(&str, &str),
) -> Result<DeployResult, ConnectError> {
    let mut result = None;
    while let Some(event) = agent.next(&mut stream).await? {
        match event.event {
            Some(deploy_event::Event::Step(step)) => phase(&step.phase, &step.message),
            Some(deploy_event::Event::Pull(_)) => phase("pull", "pulling"),
            Some(deploy_event::Event::Result(r)) => result = Some(r),
            None => {}
        }
    }
    result.ok_or_else(|| ConnectError::Unreachable {
        target: agent.target.to_string(),
        message: "the agent ended the deploy without a result (did it restart?)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_goes_into_a_record_and_comes_back() {
        let changes = [
            Change::Image("registry/api:1.4.3".into()),
            Change::Spec("name = \"web\"\n".into()),
            Change::Env {
                set: [("A".to_owned(), "1".to_owned())].into(),
                unset: Vec::new(),
                replace: false,
            },
            Change::Restart,
        ];
        for change in changes {
            let mut record = RolloutRecord {
                id: "r".into(),
                ..RolloutRecord::default()
            };
            change.write_into(&mut record);
            assert_eq!(Change::from_record(&record), Ok(change));
        }
    }

    #[test]
    fn masked_env_values_cannot_be_resumed_and_descriptions_hide_values() {
        let change = Change::Env {
            set: [("TOKEN".to_owned(), "hunter2".to_owned())].into(),
            unset: vec!["OLD".into()],
            replace: false,
        };
        let text = change.describe(None);
        assert_eq!(text, "env set TOKEN; env unset OLD");
        let mut record = RolloutRecord::default();
        change.write_into(&mut record);
        if let Some(env) = record.env.as_mut() {
            env.set.insert("TOKEN".into(), "****".into());
        }
        assert!(Change::from_record(&record).expect_err("masked").contains("operator"));
    }
}

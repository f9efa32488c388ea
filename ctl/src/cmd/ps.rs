//! `berthctl ps`: the host's services and their state.

use berth_proto::v1::ListRequest;
use berth_proto::v1::services_client::ServicesClient;
use serde_json::json;

use super::Global;
use crate::output::{self, Format, Sink};

/// List the services on a host: revision, image, state (running, starting,
/// unhealthy, restarting, crash-loop, stopped, missing, deploying),
/// restarts and OOM kills since the agent started, container and ports,
/// and for proxied services what nginx routes to.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `berthctl ps`.
pub async fn run(global: &Global, out: &Sink, _args: Args) -> anyhow::Result<()> {
    let agent = global.one_agent("ps").await?;
    let list = agent
        .call(|ch| async move { ServicesClient::new(ch).list(ListRequest {}).await })
        .await?;
    match global.output {
        Format::Json => {
            let services: Vec<_> = list
                .services
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "revision": s.revision,
                        "image": s.image,
                        "state": s.state,
                        "detail": s.detail,
                        "restarts": s.restarts,
                        "oom_kills": s.oom_kills,
                        "routes": s.routes,
                        "containers": s.containers.iter().map(|c| json!({
                            "id": c.id, "name": c.name, "revision": c.revision, "state": c.state,
                            "health": c.health, "ports": c.ports, "exit_code": c.exit_code,
                            "started_at_ms": c.started_at_ms,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            out.document(&json!({ "host": agent.target.to_string(), "services": services }))?;
        }
        Format::Table => {
            let mut rows = vec![
                ["NAME", "REV", "IMAGE", "STATE", "RESTARTS", "OOM", "CONTAINER", "PORTS"]
                    .map(String::from)
                    .to_vec(),
            ];
            for s in &list.services {
                let primary = s
                    .containers
                    .iter()
                    .find(|c| c.revision == s.revision && c.state == "running")
                    .or_else(|| s.containers.first());
                rows.push(vec![
                    s.name.clone(),
                    s.revision.to_string(),
                    s.image.clone(),
                    s.state.clone(),
                    s.restarts.to_string(),
                    s.oom_kills.to_string(),
                    primary.map(|c| c.name.clone()).unwrap_or_else(|| "-".into()),
                    primary
                        .map(|c| c.ports.join(","))
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            if list.services.is_empty() {
                out.out(&format!("no services on {}", agent.target))?;
            } else {
                out.text(&output::table(&rows))?;
                for s in list
                    .services
                    .iter()
                    .filter(|s| !matches!(s.state.as_str(), "running") && !s.detail.is_empty())
                {
                    out.out(&format!("{}: {}", s.name, s.detail))?;
                }
                for s in &list.services {
                    for r in &s.routes {
                        out.out(&format!("{}: nginx {r}", s.name))?;
                    }
                }
            }
        }
    }
    Ok(())
}

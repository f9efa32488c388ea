//! `berthctl ps`: the services of a host, or of every selected host.

use berth_proto::v1::host_client::HostClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{GetInfoRequest, HostInfo, ListRequest, ListResponse, ServiceStatus};
use serde_json::{Value, json};

use super::Global;
use super::fleetview::{self, View, cert_expiry};
use crate::output::{self, Format, Sink};

/// List the services on a host: revision, image, the version it reports
/// serving ([health.version]), state (running, starting, unhealthy,
/// degraded, restarting, crash-loop, stopped, missing, deploying),
/// restarts and OOM kills since the agent started, container and ports,
/// and for proxied services what nginx routes to.
///
/// Over a selection (--fleet, --hosts-from, several --host) it is one
/// table with a HOST column, then a summary; hosts that did not answer
/// within --timeout are named and the exit code is non-zero.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `berthctl ps`.
pub async fn run(global: &Global, out: &Sink, _args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    if !selection.many {
        let agent = &selection.hosts[0].agent;
        let list = agent
            .call(|ch| async move { ServicesClient::new(ch).list(ListRequest {}).await })
            .await?;
        return one_host(out, global.output, &agent.target.to_string(), &list);
    }
    let outcomes = selection
        .fan_out(|h| async move {
            let list = h
                .agent
                .call(|ch| async move { ServicesClient::new(ch).list(ListRequest {}).await })
                .await?;
            // For the certificate check; an older agent without it still lists.
            let info = h
                .agent
                .call(|ch| async move { HostClient::new(ch).get_info(GetInfoRequest {}).await })
                .await
                .ok();
            Ok((list, info))
        })
        .await;
    let now = output::now_ms();
    fleetview::print(
        out,
        global.output,
        &outcomes,
        &View {
            header: &HEADER,
            rows: &|(list, _): &(ListResponse, Option<HostInfo>)| list.services.iter().map(row).collect(),
            json: &|(list, info)| {
                json!({
                    "services": list.services.iter().map(service_json).collect::<Vec<_>>(),
                    "agent_cert_not_after_ms": info.as_ref().map(|i| i.agent_cert_not_after_ms),
                })
            },
            notes: &|(list, info)| {
                let mut notes = details(list);
                if let Some(warn) = info
                    .as_ref()
                    .and_then(|i| cert_expiry(i.agent_cert_not_after_ms, now).1)
                {
                    notes.push(warn);
                }
                notes
            },
            empty: "no services on any host",
        },
    )
}

/// The table's columns. VERSION is what the container last reported
/// serving (`[health.version]`), `-` when unknown.
const HEADER: [&str; 9] = [
    "NAME",
    "REV",
    "IMAGE",
    "VERSION",
    "STATE",
    "RESTARTS",
    "OOM",
    "CONTAINER",
    "PORTS",
];

/// One host, as berthctl ps has always printed it.
fn one_host(out: &Sink, format: Format, address: &str, list: &ListResponse) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let services: Vec<_> = list.services.iter().map(service_json).collect();
            out.document(&json!({ "host": address, "services": services }))?;
        }
        Format::Table => {
            let mut rows = vec![HEADER.map(String::from).to_vec()];
            rows.extend(list.services.iter().map(row));
            if list.services.is_empty() {
                out.out(&format!("no services on {address}"))?;
            } else {
                out.text(&output::table(&rows))?;
                for line in details(list) {
                    out.out(&line)?;
                }
            }
        }
    }
    Ok(())
}

fn service_json(s: &ServiceStatus) -> Value {
    json!({
        "name": s.name,
        "revision": s.revision,
        "image": s.image,
        "version": s.version,
        "maintenance": s.maintenance,
        "health_source": s.health_source,
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
}

fn row(s: &ServiceStatus) -> Vec<String> {
    let primary = s
        .containers
        .iter()
        .find(|c| c.revision == s.revision && c.state == "running")
        .or_else(|| s.containers.first());
    vec![
        s.name.clone(),
        s.revision.to_string(),
        s.image.clone(),
        if s.version.is_empty() {
            "-".into()
        } else {
            s.version.clone()
        },
        s.state.clone(),
        s.restarts.to_string(),
        s.oom_kills.to_string(),
        primary.map(|c| c.name.clone()).unwrap_or_else(|| "-".into()),
        primary
            .map(|c| c.ports.join(","))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "-".into()),
    ]
}

/// Why services that do not run are not running, and what nginx routes to.
fn details(list: &ListResponse) -> Vec<String> {
    let mut lines: Vec<String> = list
        .services
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "running") && !s.detail.is_empty())
        .map(|s| format!("{}: {}", s.name, s.detail))
        .collect();
    for s in list.services.iter().filter(|s| s.health_source == "image") {
        lines.push(format!("{}: health from the image's HEALTHCHECK", s.name));
    }
    for s in list.services.iter().filter(|s| s.maintenance) {
        lines.push(format!("{}: maintenance on: nginx answers 503", s.name));
    }
    for s in &list.services {
        for r in &s.routes {
            lines.push(format!("{}: nginx {r}", s.name));
        }
    }
    lines
}

//! `berthctl info`: what an agent and its host are, or every selected one.

use berth_proto::v1::host_client::HostClient;
use berth_proto::v1::{GetInfoRequest, HostInfo};
use serde_json::{Value, json};

use super::Global;
use super::fleetview::{self, View, cert_expiry};
use crate::output::{self, Format, Sink};

/// Show the agent's version, host facts, Docker status, capabilities and
/// when the agent's certificate expires.
///
/// Over a selection (--fleet, --hosts-from, several --host) one row per
/// host; certificates expiring within 30 days are flagged with "!" and a
/// warning.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `berthctl info`.
pub async fn run(global: &Global, out: &Sink, _args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    let now = output::now_ms();
    if !selection.many {
        let agent = &selection.hosts[0].agent;
        let info = agent
            .call(|ch| async move { HostClient::new(ch).get_info(GetInfoRequest {}).await })
            .await?;
        let address = agent.target.to_string();
        return match global.output {
            Format::Json => Ok(out.document(&to_json(&address, &info))?),
            Format::Table => {
                let (cert, warning) = cert_expiry(info.agent_cert_not_after_ms, now);
                let caller = info.caller.clone().unwrap_or_default();
                let rows = [
                    ["ADDRESS", &address],
                    ["HOSTNAME", &info.hostname],
                    ["AGENT", &format!("berth-agent {}", info.agent_version)],
                    ["OS", &format!("{} ({}, kernel {})", info.os, info.arch, info.kernel)],
                    ["CPUS", &info.cpus.to_string()],
                    ["MEMORY", &output::bytes(info.memory_bytes)],
                    ["UPTIME", &output::duration(info.uptime_seconds)],
                    ["DOCKER", &docker(&info)],
                    ["CAPABILITIES", &info.capabilities.join(", ")],
                    ["AGENT CERT", &format!("valid until {cert}")],
                    ["YOU", &format!("{} ({})", caller.name, caller.role)],
                ];
                let rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
                    .collect();
                out.text(&output::table(&rows))?;
                if let Some(w) = warning {
                    out.err(&format!("warning: {w}"))?;
                }
                Ok(())
            }
        };
    }
    let outcomes = selection
        .fan_out(|h| async move {
            let info = h
                .agent
                .call(|ch| async move { HostClient::new(ch).get_info(GetInfoRequest {}).await })
                .await?;
            Ok((h.target().to_string(), info))
        })
        .await;
    fleetview::print(
        out,
        global.output,
        &outcomes,
        &View {
            header: &[
                "HOSTNAME",
                "AGENT",
                "DOCKER",
                "CPUS",
                "MEMORY",
                "UPTIME",
                "AGENT CERT",
                "YOU",
            ],
            rows: &|(_, info): &(String, HostInfo)| {
                let caller = info.caller.clone().unwrap_or_default();
                vec![vec![
                    info.hostname.clone(),
                    info.agent_version.clone(),
                    docker(info),
                    info.cpus.to_string(),
                    output::bytes(info.memory_bytes),
                    output::duration(info.uptime_seconds),
                    cert_expiry(info.agent_cert_not_after_ms, now).0,
                    format!("{} ({})", caller.name, caller.role),
                ]]
            },
            json: &|(address, info)| to_json(address, info),
            notes: &|(_, info)| cert_expiry(info.agent_cert_not_after_ms, now).1.into_iter().collect(),
            empty: "",
        },
    )
}

fn docker(info: &HostInfo) -> String {
    if info.docker_error.is_empty() {
        format!("{} (API {})", info.docker_version, info.docker_api_version)
    } else {
        format!("unreachable: {}", info.docker_error)
    }
}

fn to_json(address: &str, info: &HostInfo) -> Value {
    let caller = info.caller.clone().unwrap_or_default();
    json!({
        "address": address,
        "agent_version": info.agent_version,
        "hostname": info.hostname,
        "os": info.os,
        "kernel": info.kernel,
        "arch": info.arch,
        "cpus": info.cpus,
        "memory_bytes": info.memory_bytes,
        "uptime_seconds": info.uptime_seconds,
        "docker": {
            "version": info.docker_version,
            "api_version": info.docker_api_version,
            "error": info.docker_error,
        },
        "capabilities": info.capabilities,
        "caller": { "name": caller.name, "role": caller.role },
        "agent_started_at_ms": info.agent_started_at_ms,
        "agent_cert_not_after_ms": info.agent_cert_not_after_ms,
        "agent_cert_expires_within_30_days": cert_expiry(info.agent_cert_not_after_ms, output::now_ms()).1.is_some(),
    })
}

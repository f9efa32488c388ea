//! `berthctl info`: what an agent and its host are.

use berth_proto::v1::GetInfoRequest;
use berth_proto::v1::host_client::HostClient;
use serde_json::json;

use super::Global;
use crate::output::{self, Format, Sink};

/// Show the agent's version, host facts, Docker status and capabilities.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `berthctl info`.
pub async fn run(global: &Global, out: &Sink, _args: Args) -> anyhow::Result<()> {
    let agent = global.one_agent("info").await?;
    let info = agent
        .call(|ch| async move { HostClient::new(ch).get_info(GetInfoRequest {}).await })
        .await?;
    let caller = info.caller.clone().unwrap_or_default();
    match global.output {
        Format::Json => {
            let doc = json!({
                "address": agent.target.to_string(),
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
            });
            out.document(&doc)?;
        }
        Format::Table => {
            let docker = if info.docker_error.is_empty() {
                format!("{} (API {})", info.docker_version, info.docker_api_version)
            } else {
                format!("unreachable: {}", info.docker_error)
            };
            let rows = [
                ["ADDRESS", &agent.target.to_string()],
                ["HOSTNAME", &info.hostname],
                ["AGENT", &format!("berth-agent {}", info.agent_version)],
                ["OS", &format!("{} ({}, kernel {})", info.os, info.arch, info.kernel)],
                ["CPUS", &info.cpus.to_string()],
                ["MEMORY", &output::bytes(info.memory_bytes)],
                ["UPTIME", &output::duration(info.uptime_seconds)],
                ["DOCKER", &docker],
                ["CAPABILITIES", &info.capabilities.join(", ")],
                ["YOU", &format!("{} ({})", caller.name, caller.role)],
            ];
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
                .collect();
            out.text(&output::table(&rows))?;
        }
    }
    Ok(())
}

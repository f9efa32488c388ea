//! `berthctl events [SERVICE...]`: what the agent does and sees, live.

use berth_proto::v1::WatchEventsRequest;
use berth_proto::v1::services_client::ServicesClient;
use serde_json::json;

use super::Global;
use crate::output::Format;

/// Follow the agent's events (deploys, restarts, crashes, OOM kills, drift
/// repairs) until interrupted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these services (default: all, plus host events).
    services: Vec<String>,
}

/// Runs `berthctl events`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let agent = global.agent()?;
    let req = WatchEventsRequest {
        services: args.services,
    };
    let mut stream = agent
        .call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
        .await?;
    while let Some(e) = agent.next(&mut stream).await? {
        match global.output {
            Format::Json => println!(
                "{}",
                json!({"timestamp_ms": e.timestamp_ms, "kind": e.kind, "service": e.service,
                       "revision": e.revision, "severity": e.severity, "message": e.message})
            ),
            Format::Table => {
                let secs = e.timestamp_ms / 1000;
                let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
                println!(
                    "{h:02}:{m:02}:{s:02}Z {:<7} {:<16} {:<12} {}",
                    e.severity, e.kind, e.service, e.message
                );
            }
        }
    }
    Ok(())
}

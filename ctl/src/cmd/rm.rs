//! `berthctl rm SERVICE`.

use berth_proto::v1::RemoveRequest;
use berth_proto::v1::services_client::ServicesClient;
use serde_json::json;

use super::Global;
use crate::output::{Format, Sink};

/// Stop and remove a service's containers and forget it on that host.
///
/// Its env file stays; the audit log keeps what happened. Named volumes
/// stay too, unless `--volumes` is given.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// Also remove the named volumes berth created for the service. Their
    /// data is lost.
    #[arg(long)]
    volumes: bool,
}

/// Runs `berthctl rm`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let req = RemoveRequest {
        service: args.service.clone(),
        volumes: args.volumes,
    };
    let resp = global
        .one_agent("rm")
        .await?
        .call(|ch| async move { ServicesClient::new(ch).remove(req).await })
        .await?;
    match global.output {
        Format::Json => out.record(&json!({
            "service": args.service,
            "containers_removed": resp.containers_removed,
            "volumes_removed": resp.volumes_removed,
        }))?,
        Format::Table => {
            out.out(&format!(
                "removed {} ({} containers)",
                args.service, resp.containers_removed
            ))?;
            if !resp.volumes_removed.is_empty() {
                out.out(&format!("removed volumes: {}", resp.volumes_removed.join(", ")))?;
            }
        }
    }
    Ok(())
}

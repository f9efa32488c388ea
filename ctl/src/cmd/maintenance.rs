//! `berthctl maintenance on|off SERVICE`.

use berth_proto::v1::SetMaintenanceRequest;
use berth_proto::v1::services_client::ServicesClient;
use serde_json::json;

use super::Global;
use crate::output::{Format, Sink};

/// Put a proxied service in maintenance mode, or take it out.
///
/// On: the service's nginx site answers 503 with a short page on every
/// path, its health paths too (so a load balancer drains the host), while
/// its containers keep running. Off: nginx sends traffic to it again. The
/// mode is kept across deploys and agent restarts, shown by `berthctl ps`,
/// and each change is an event and an audit record.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `on` or `off`.
    mode: Mode,
    /// The service.
    service: String,
}

/// Maintenance on or off.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// nginx answers 503.
    On,
    /// nginx proxies again.
    Off,
}

/// Runs `berthctl maintenance`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let on = matches!(args.mode, Mode::On);
    let req = SetMaintenanceRequest {
        service: args.service.clone(),
        on,
    };
    let resp = global
        .one_agent("maintenance")
        .await?
        .call(|ch| async move { ServicesClient::new(ch).set_maintenance(req).await })
        .await?;
    let word = if on { "on" } else { "off" };
    match global.output {
        Format::Json => out.record(&json!({"service": args.service, "maintenance": on, "changed": resp.changed}))?,
        Format::Table if !resp.changed => out.out(&format!("{}: maintenance was already {word}", args.service))?,
        Format::Table if on => out.out(&format!(
            "{}: maintenance on; nginx answers 503, the containers keep running",
            args.service
        ))?,
        Format::Table => out.out(&format!("{}: maintenance off; nginx sends traffic again", args.service))?,
    }
    Ok(())
}

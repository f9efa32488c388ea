//! `berthctl restart SERVICE`.

use berth_proto::v1::RestartRequest;
use berth_proto::v1::services_client::ServicesClient;

use super::{Global, progress};
use crate::output::Sink;

/// Replace a service's container with a fresh one of the same revision,
/// health-gated (the old one comes back if the new one fails).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
}

/// Runs `berthctl restart`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let req = RestartRequest { service: args.service };
    progress::run(
        &*global.one_agent("restart").await?,
        global.output,
        out,
        |ch| async move { ServicesClient::new(ch).restart(req).await },
    )
    .await
    .map(|_| ())
}

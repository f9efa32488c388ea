//! `berthctl rollback SERVICE [--to REV]`.

use berth_proto::v1::RollbackRequest;
use berth_proto::v1::services_client::ServicesClient;

use super::{Global, progress};
use crate::output::Sink;

/// Roll a service back to an earlier revision (image, spec and env).
///
/// Without --to, goes to the newest revision before the active one that
/// ran (failed attempts are skipped). The rollback is itself a new,
/// health-gated revision; `berthctl history SERVICE` lists them.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// Revision number to go back to.
    #[arg(long)]
    to: Option<u64>,
}

/// Runs `berthctl rollback`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let req = RollbackRequest {
        service: args.service,
        to_revision: args.to.unwrap_or(0),
    };
    progress::run(
        &*global.one_agent("rollback").await?,
        global.output,
        out,
        |ch| async move { ServicesClient::new(ch).rollback(req).await },
    )
    .await
    .map(|_| ())
}

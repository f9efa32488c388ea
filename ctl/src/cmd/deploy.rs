//! `berthctl deploy SERVICE --image REF`: roll a service to a new image.

use berth_proto::v1::DeployRequest;
use berth_proto::v1::services_client::ServicesClient;

use super::{Global, progress};
use crate::output::Sink;

/// Deploy a new image for a service, health-gated, with automatic rollback.
///
/// Makes a new revision from the service's current spec with the image
/// replaced. If the new container does not pass its health check within
/// deploy.health_deadline, the previous revision is started again and the
/// health output, exit code and last log lines are printed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// Image reference, e.g. registry.example.com/api:1.4.3.
    #[arg(long)]
    image: String,
}

/// Runs `berthctl deploy`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let req = DeployRequest {
        service: args.service,
        image: args.image,
    };
    progress::run(
        &*global.one_agent("deploy").await?,
        global.output,
        out,
        |ch| async move { ServicesClient::new(ch).deploy(req).await },
    )
    .await
    .map(|_| ())
}

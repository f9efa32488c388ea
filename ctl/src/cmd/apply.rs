//! `berthctl apply -f SPEC.toml`: create or update a service from its spec.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_proto::v1::ApplyRequest;
use berth_proto::v1::services_client::ServicesClient;

use super::{Global, progress};
use crate::output::Sink;

/// Create or update a service from a TOML spec, health-gated.
///
/// A changed spec becomes a new revision: the image is pulled, the old
/// container stopped, the new one started and health-checked; if it does not
/// become healthy in time the old one is started again and the reasons are
/// printed. An unchanged spec does nothing. The agent validates the spec and
/// names the key and line of any problem, before anything changes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service spec (TOML); "-" reads standard input.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
}

/// Runs `berthctl apply`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let spec_toml = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the spec from stdin")?
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    progress::run(
        &*global.one_agent("apply").await?,
        global.output,
        out,
        |ch| async move { ServicesClient::new(ch).apply(ApplyRequest { spec_toml }).await },
    )
    .await
    .map(|_| ())
}

//! `berthctl logs SERVICE [-f] [--tail N]`.

use std::io::Write as _;

use berth_proto::v1::LogsRequest;
use berth_proto::v1::services_client::ServicesClient;

use super::Global;

/// Print a service's container output (stdout to stdout, stderr to stderr).
///
/// Reads the running container of the active revision, or the newest one
/// if none runs (so a crashed service's last words are there).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// Keep following new output until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Start with the last N lines (0 = all).
    #[arg(long, default_value_t = 100)]
    tail: u32,
}

/// Runs `berthctl logs`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let agent = global.connect().await?;
    let mut stream = ServicesClient::new(agent.channel.clone())
        .logs(LogsRequest {
            service: args.service,
            follow: args.follow,
            tail: args.tail,
        })
        .await
        .map_err(|s| agent.explain(&s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(line) = stream.message().await.map_err(|s| agent.explain(&s))? {
        if line.stream == "stderr" {
            eprintln!("{}", line.line);
        } else {
            writeln!(out, "{}", line.line)?;
            if args.follow {
                out.flush()?;
            }
        }
    }
    Ok(())
}

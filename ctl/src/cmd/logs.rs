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
    let agent = global.agent()?;
    let req = LogsRequest {
        service: args.service,
        follow: args.follow,
        tail: args.tail,
    };
    let mut stream = agent
        .call(|ch| async move { ServicesClient::new(ch).logs(req).await })
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(line) = agent.next(&mut stream).await? {
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

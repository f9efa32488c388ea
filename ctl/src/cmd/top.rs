//! `berthctl top [SERVICE...]`: live host and per-service metrics,
//! refreshed in place at the agent's collection interval.

use super::Global;
use super::metrics::{open, report, to_json};
use crate::output::{Format, Sink};

/// Show live metrics, refreshed at the agent's collection interval
/// ([metrics] interval, 10s by default): a host line (CPU, memory, load),
/// then one row per service (CPU against its limit, throttling, memory
/// against its limit, network and block I/O, restarts, OOM kills, health).
///
/// On a terminal the screen is redrawn in place; otherwise each snapshot is
/// printed after the previous one. With --output json, one JSON object per
/// line. Stops on Ctrl-C, or after --count snapshots.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these services (default: all).
    services: Vec<String>,

    /// Stop after this many snapshots (default: run until interrupted).
    #[arg(long, short = 'n')]
    count: Option<u64>,
}

/// Runs `berthctl top`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let agent = global.one_agent("top").await?;
    let mut stream = open(&agent, args.services).await?;
    let mut shown = 0u64;
    while let Some(s) = agent.next(&mut stream).await? {
        match global.output {
            Format::Json => out.record(&to_json(&agent, &s))?,
            Format::Table => {
                let mut frame = report(&agent, &s, false);
                if s.dropped > 0 {
                    frame.push_str(&format!(
                        "({} snapshots skipped: this terminal read too slowly)\n",
                        s.dropped
                    ));
                }
                // On a terminal the frame replaces the last one.
                out.frame(&frame)?;
            }
        }
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            break;
        }
    }
    Ok(())
}

//! `berthctl top [SERVICE...]`: live host and per-service metrics,
//! refreshed in place at the agent's collection interval.

use std::io::{IsTerminal as _, Write as _};

use super::Global;
use super::metrics::{open, report, to_json};
use crate::output::Format;

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
pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let agent = global.agent()?;
    let mut stream = open(&agent, args.services).await?;
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    while let Some(s) = agent.next(&mut stream).await? {
        let mut out = std::io::stdout().lock();
        match global.output {
            Format::Json => writeln!(out, "{}", to_json(&agent, &s))?,
            Format::Table => {
                if tty {
                    // Home the cursor and clear, so the report replaces the last.
                    write!(out, "\x1b[H\x1b[2J")?;
                } else if shown > 0 {
                    writeln!(out)?;
                }
                write!(out, "{}", report(&agent, &s, false))?;
                if s.dropped > 0 {
                    writeln!(out, "({} snapshots skipped: this terminal read too slowly)", s.dropped)?;
                }
            }
        }
        out.flush()?;
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            break;
        }
    }
    Ok(())
}

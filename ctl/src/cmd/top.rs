//! `berthctl top [SERVICE...]`: live host and per-service metrics,
//! refreshed in place; over a selection, one live view of the fleet.

use std::ops::ControlFlow;
use std::time::Duration;

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{ListRequest, ListResponse, MetricsSnapshot};

use super::Global;
use super::metrics::{FLEET_HEADER, first_snapshot, fleet_rows, open, report, to_json, to_json_of};
use super::multiplex::{self, Happening};
use crate::client::Agent;
use crate::fleet::{Outcome, Summary};
use crate::output::{self, Format, Sink, WriteError};

/// Show live metrics, refreshed at the agent's collection interval
/// ([metrics] interval, 10s by default): a host line (CPU, memory, load),
/// then one row per service (CPU against its limit, throttling, memory
/// against its limit, network and block I/O, restarts, OOM kills, health).
///
/// On a terminal the screen is redrawn in place; otherwise each snapshot is
/// printed after the previous one. With --output json, one JSON object per
/// line. Stops on Ctrl-C, or after --count snapshots.
///
/// Over a selection (--fleet, --hosts-from, several --host) one view of
/// the fleet, asked again every --every: a fleet summary (CPU and memory
/// totals, unhealthy and crash-looping services, OOM kills, hosts down),
/// then a line per host and rows per service, ordered by --sort.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these services (default: all).
    services: Vec<String>,

    /// Stop after this many snapshots (default: run until interrupted).
    #[arg(long, short = 'n')]
    count: Option<u64>,

    /// Over a selection: order hosts (and their services) by this, largest
    /// first (name: alphabetical).
    #[arg(long, value_enum, default_value_t = SortKey::Name)]
    sort: SortKey,

    /// Over a selection: how often to ask every host again.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    every: berth_core::units::Duration,
}

/// What the fleet view is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Host name, then service name.
    Name,
    /// CPU use.
    Cpu,
    /// Memory use.
    Mem,
    /// Restarts.
    Restarts,
    /// OOM kills.
    Oom,
}

/// Runs `berthctl top`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    if selection.many {
        return fleet(global, out, &selection, args).await;
    }
    let agent = selection.hosts[0].agent.clone();
    let mut shown = 0u64;
    let services = &args.services;
    // A snapshot is whole: a stream opened again loses nothing.
    multiplex::follow_one(
        &agent,
        |_| open(&agent, services.clone()),
        |happening| {
            let Happening::Message(s) = happening else {
                return Ok(ControlFlow::Continue(()));
            };
            show_snapshot(global.output, out, &agent, &s)?;
            shown += 1;
            Ok(if args.count.is_some_and(|n| shown >= n) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        },
    )
    .await
}

/// One snapshot of one host: a JSON record, or a frame that replaces the
/// last one on a terminal.
fn show_snapshot(format: Format, out: &Sink, agent: &Agent, s: &MetricsSnapshot) -> Result<(), WriteError> {
    match format {
        Format::Json => out.record(&to_json(agent, s)),
        Format::Table => {
            let mut frame = report(agent, s, false);
            if s.dropped > 0 {
                frame.push_str(&format!(
                    "({} snapshots skipped: this terminal read too slowly)\n",
                    s.dropped
                ));
            }
            // On a terminal the frame replaces the last one.
            out.frame(&frame)
        }
    }
}

/// One host's part of a fleet frame.
type HostView = (MetricsSnapshot, ListResponse);

async fn fleet(global: &Global, out: &Sink, selection: &crate::fleet::Selection, args: Args) -> anyhow::Result<()> {
    let services = &args.services;
    let mut shown = 0u64;
    loop {
        let outcomes = selection
            .fan_out(|h| async move {
                let snapshot = first_snapshot(&h.agent, services.clone()).await?;
                let list = h
                    .agent
                    .call(|ch| async move { ServicesClient::new(ch).list(ListRequest {}).await })
                    .await?;
                Ok((snapshot, list))
            })
            .await;
        match global.output {
            Format::Json => {
                for o in &outcomes {
                    let doc = match &o.result {
                        Ok((s, _)) => serde_json::json!({ "host": o.host.name, "metrics": to_json_of(s) }),
                        Err(e) => serde_json::json!({ "host": o.host.name, "error": e.message }),
                    };
                    out.record(&doc)?;
                }
            }
            Format::Table => out.frame(&frame(&outcomes, args.sort))?,
        }
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            let summary = Summary::of(&outcomes);
            if !summary.all_ok() {
                anyhow::bail!("{summary}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from(args.every)).await;
    }
}

/// The fleet frame: the summary line, then the hosts' rows, then the hosts
/// that did not answer.
pub fn frame(outcomes: &[Outcome<HostView>], sort: SortKey) -> String {
    let ok: Vec<(&str, &HostView)> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(|v| (o.host.name.as_str(), v)))
        .collect();
    let (mut cpu, mut cpus, mut used, mut total) = (0.0, 0u32, 0u64, 0u64);
    let (mut services, mut unhealthy, mut looping, mut ooms) = (0usize, 0usize, 0usize, 0u64);
    for (_, (s, list)) in &ok {
        let h = s.host.clone().unwrap_or_default();
        cpu += h.cpu_percent / 100.0 * f64::from(h.cpus);
        cpus += h.cpus;
        used += h.memory_total_bytes.saturating_sub(h.memory_available_bytes);
        total += h.memory_total_bytes;
        services += list.services.len();
        unhealthy += list.services.iter().filter(|s| s.state == "unhealthy").count();
        looping += list.services.iter().filter(|s| s.state == "crash-loop").count();
        ooms += list.services.iter().map(|s| u64::from(s.oom_kills)).sum::<u64>();
    }
    let down = outcomes.len() - ok.len();
    let mut text = format!(
        "fleet: {} hosts ({} down)  cpu {:.2} of {} CPUs busy  mem {} used of {}  services {} ({} unhealthy, {} crash-looping)  OOM kills {}\n\n",
        outcomes.len(),
        down,
        // A host's CPU is a percent of all its CPUs; the total is in CPUs.
        cpu,
        cpus,
        output::bytes(used),
        output::bytes(total),
        services,
        unhealthy,
        looping,
        ooms,
    );
    let mut hosts = ok;
    let key = |s: &MetricsSnapshot| -> f64 {
        let h = s.host.clone().unwrap_or_default();
        match sort {
            SortKey::Name => 0.0,
            SortKey::Cpu => h.cpu_percent,
            SortKey::Mem => h.memory_total_bytes.saturating_sub(h.memory_available_bytes) as f64,
            SortKey::Restarts => s.containers.iter().map(|c| f64::from(c.restarts)).sum(),
            SortKey::Oom => s.containers.iter().map(|c| c.oom_kills as f64).sum(),
        }
    };
    if sort != SortKey::Name {
        hosts.sort_by(|a, b| key(&b.1.0).total_cmp(&key(&a.1.0)));
    }
    let mut rows = vec![
        std::iter::once("HOST")
            .chain(FLEET_HEADER)
            .map(String::from)
            .collect::<Vec<_>>(),
    ];
    for (name, (s, _)) in hosts {
        let mut s = s.clone();
        match sort {
            SortKey::Name => s.containers.sort_by(|a, b| a.service.cmp(&b.service)),
            SortKey::Cpu => s.containers.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent)),
            SortKey::Mem => s.containers.sort_by_key(|c| std::cmp::Reverse(c.memory_bytes)),
            SortKey::Restarts => s.containers.sort_by_key(|c| std::cmp::Reverse(c.restarts)),
            SortKey::Oom => s.containers.sort_by_key(|c| std::cmp::Reverse(c.oom_kills)),
        }
        for row in fleet_rows(&s) {
            rows.push(std::iter::once(name.to_owned()).chain(row).collect());
        }
    }
    text.push_str(&output::table(&rows));
    for o in outcomes {
        if let Err(e) = &o.result {
            text.push_str(&format!("{}: down: {e}\n", o.host.name));
        }
    }
    text
}

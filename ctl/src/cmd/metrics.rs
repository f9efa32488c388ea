//! `berthctl metrics [SERVICE...]`: one metrics snapshot of a host, as a
//! report for people or JSON for scripts. Also holds the rendering that
//! `berthctl top` refreshes in place.

use berth_proto::v1::metrics_client::MetricsClient;
use berth_proto::v1::{MetricsSnapshot, WatchMetricsRequest};
use serde_json::{Value, json};

use super::{Global, fleetview};
use crate::client::{Agent, ConnectError};
use crate::output::{self, Format, Sink};

/// Print one snapshot of host and per-service metrics: CPU (percent of one
/// CPU, so 200% = two CPUs) against the limit, memory against the limit,
/// network and block I/O since the container started, restarts and OOM
/// kills since the agent started, health. The host part has CPU, memory,
/// load, disk space per mount and traffic per interface.
///
/// CPU is a rate over the agent's collection interval ([metrics] interval),
/// so right after the agent starts it reads 0 until the second pass.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these services (default: all).
    services: Vec<String>,
}

/// Runs `berthctl metrics`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    if selection.many {
        let services = &args.services;
        let outcomes = selection
            .fan_out(|h| async move { Ok(first_snapshot(&h.agent, services.clone()).await?) })
            .await;
        return fleetview::print(
            out,
            global.output,
            &outcomes,
            &fleetview::View {
                header: &FLEET_HEADER,
                rows: &fleet_rows,
                json: &to_json_of,
                notes: &|_| Vec::new(),
                empty: "",
            },
        );
    }
    let agent = selection.hosts[0].agent.clone();
    let mut stream = open(&agent, args.services).await?;
    let snapshot = agent.next(&mut stream).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the agent ended the metrics stream before sending a snapshot",
            agent.target
        )
    })?;
    match global.output {
        Format::Json => out.document(&to_json(&agent, &snapshot))?,
        Format::Table => out.text(&report(&agent, &snapshot, true))?,
    }
    Ok(())
}

/// Opens a `WatchMetrics` stream.
pub async fn open(agent: &Agent, services: Vec<String>) -> Result<tonic::Streaming<MetricsSnapshot>, ConnectError> {
    let req = WatchMetricsRequest { services };
    agent
        .call(|ch| async move { MetricsClient::new(ch).watch_metrics(req).await })
        .await
}

/// The newest snapshot of `agent`: the first message of a `WatchMetrics`.
pub async fn first_snapshot(agent: &Agent, services: Vec<String>) -> Result<MetricsSnapshot, ConnectError> {
    let mut stream = open(agent, services).await?;
    agent.next(&mut stream).await?.ok_or_else(|| ConnectError::Agent {
        target: agent.target.to_string(),
        message: "the agent ended the metrics stream before sending a snapshot".into(),
    })
}

/// Columns of the fleet views (`metrics`, `top` over a selection), after HOST.
pub const FLEET_HEADER: [&str; 9] = [
    "SERVICE",
    "REV",
    "CPU",
    "CPU LIMIT",
    "MEM",
    "MEM LIMIT",
    "RESTARTS",
    "OOM",
    "HEALTH",
];

/// A host's rows in the fleet views: the machine (`(host)`), then one per
/// service.
pub fn fleet_rows(s: &MetricsSnapshot) -> Vec<Vec<String>> {
    let h = s.host.clone().unwrap_or_default();
    let used = h.memory_total_bytes.saturating_sub(h.memory_available_bytes);
    let mut rows = vec![vec![
        "(host)".into(),
        "-".into(),
        format!("{:.1}%", h.cpu_percent),
        format!("{} CPUs", h.cpus),
        output::bytes(used),
        output::bytes(h.memory_total_bytes),
        "-".into(),
        "-".into(),
        format!("load {:.2}", h.load1),
    ]];
    for c in &s.containers {
        let [
            service,
            rev,
            cpu,
            cpu_limit,
            _,
            mem,
            mem_limit,
            _,
            _,
            restarts,
            oom,
            health,
        ] = cells(c);
        rows.push(vec![
            service, rev, cpu, cpu_limit, mem, mem_limit, restarts, oom, health,
        ]);
    }
    rows
}

/// A snapshot as JSON, with the host it came from.
pub fn to_json(agent: &Agent, s: &MetricsSnapshot) -> Value {
    let mut doc = to_json_of(s);
    if let Some(o) = doc.as_object_mut() {
        o.insert("host".into(), json!(agent.target.to_string()));
    }
    doc
}

/// A snapshot as JSON, without saying whose.
pub fn to_json_of(s: &MetricsSnapshot) -> Value {
    let host = s.host.clone().unwrap_or_default();
    json!({
        "timestamp_ms": s.timestamp_ms,
        "source": s.source,
        "dropped": s.dropped,
        "machine": {
            "cpu_percent": host.cpu_percent,
            "cpus": host.cpus,
            "memory_total_bytes": host.memory_total_bytes,
            "memory_available_bytes": host.memory_available_bytes,
            "load": [host.load1, host.load5, host.load15],
            "disks": host.disks.iter().map(|d| json!({
                "mount": d.mount, "total_bytes": d.total_bytes, "available_bytes": d.available_bytes,
            })).collect::<Vec<_>>(),
            "networks": host.networks.iter().map(|n| json!({
                "interface": n.interface, "rx_bytes": n.rx_bytes, "tx_bytes": n.tx_bytes,
            })).collect::<Vec<_>>(),
        },
        "services": s.containers.iter().map(|c| json!({
            "service": c.service,
            "container_id": c.container_id,
            "revision": c.revision,
            "cpu_percent": c.cpu_percent,
            "cpu_limit": c.cpu_limit,
            "cpu_throttled_periods": c.cpu_throttled_periods,
            "cpu_throttled_ns": c.cpu_throttled_ns,
            "memory_bytes": c.memory_bytes,
            "memory_limit_bytes": c.memory_limit_bytes,
            "oom_kills": c.oom_kills,
            "net_rx_bytes": c.net_rx_bytes,
            "net_tx_bytes": c.net_tx_bytes,
            "blkio_read_bytes": c.blkio_read_bytes,
            "blkio_write_bytes": c.blkio_write_bytes,
            "restarts": c.restarts,
            "health": c.health,
        })).collect::<Vec<_>>(),
    })
}

/// The host line, e.g. `host 127.0.0.1:7443  cpu 12.5% of 2  mem 1.2 GiB
/// used of 23.5 GiB (22.3 GiB available)  load 0.52 0.40 0.33`.
pub fn host_line(agent: &Agent, s: &MetricsSnapshot) -> String {
    let h = s.host.clone().unwrap_or_default();
    let used = h.memory_total_bytes.saturating_sub(h.memory_available_bytes);
    format!(
        "host {}  cpu {:.1}% of {}  mem {} used of {} ({} available)  load {:.2} {:.2} {:.2}  [{}]",
        agent.target,
        h.cpu_percent,
        h.cpus,
        output::bytes(used),
        output::bytes(h.memory_total_bytes),
        output::bytes(h.memory_available_bytes),
        h.load1,
        h.load5,
        h.load15,
        s.source
    )
}

/// One row per service.
pub fn service_table(s: &MetricsSnapshot) -> String {
    let mut rows = vec![
        [
            "SERVICE",
            "REV",
            "CPU",
            "CPU LIMIT",
            "THROTTLED",
            "MEM",
            "MEM LIMIT",
            "NET RX/TX",
            "BLOCK R/W",
            "RESTARTS",
            "OOM",
            "HEALTH",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(s.containers.iter().map(|c| cells(c).to_vec()));
    output::table(&rows)
}

/// A container's cells, in the order of [`service_table`]'s columns.
fn cells(c: &berth_proto::v1::ContainerMetrics) -> [String; 12] {
    let running = !c.container_id.is_empty();
    let or_dash = |v: String| if running { v } else { "-".into() };
    [
        c.service.clone(),
        c.revision.to_string(),
        or_dash(format!("{:.1}%", c.cpu_percent)),
        if c.cpu_limit > 0.0 {
            format!("{}", c.cpu_limit)
        } else {
            "-".into()
        },
        or_dash(c.cpu_throttled_periods.to_string()),
        or_dash(output::bytes(c.memory_bytes)),
        if c.memory_limit_bytes > 0 {
            output::bytes(c.memory_limit_bytes)
        } else {
            "-".into()
        },
        or_dash(format!(
            "{}/{}",
            output::bytes(c.net_rx_bytes),
            output::bytes(c.net_tx_bytes)
        )),
        or_dash(format!(
            "{}/{}",
            output::bytes(c.blkio_read_bytes),
            output::bytes(c.blkio_write_bytes)
        )),
        c.restarts.to_string(),
        c.oom_kills.to_string(),
        if running || c.health == "held" {
            if c.health.is_empty() {
                "-".into()
            } else {
                c.health.clone()
            }
        } else {
            "not running".into()
        },
    ]
}

/// The whole human report: host line, disks and interfaces (when `detail`),
/// then the service table.
pub fn report(agent: &Agent, s: &MetricsSnapshot, detail: bool) -> String {
    let mut out = host_line(agent, s);
    out.push('\n');
    if detail {
        let h = s.host.clone().unwrap_or_default();
        for d in &h.disks {
            out.push_str(&format!(
                "  disk {}  {} available of {}\n",
                d.mount,
                output::bytes(d.available_bytes),
                output::bytes(d.total_bytes)
            ));
        }
        for n in &h.networks {
            out.push_str(&format!(
                "  net  {}  rx {}  tx {}\n",
                n.interface,
                output::bytes(n.rx_bytes),
                output::bytes(n.tx_bytes)
            ));
        }
    }
    out.push('\n');
    if s.containers.is_empty() {
        out.push_str("no services\n");
    } else {
        out.push_str(&service_table(s));
    }
    out
}

//! What an idle agent holds: resident memory (VmRSS, and of it the
//! anonymous part, RssAnon: the agent's own memory, not pages of its
//! binary), threads, and the binary sizes; next to Debian's
//! `prometheus-node-exporter` started and left idle in the same run.
//!
//! Run with `bench/run.sh idle` (release binaries). Both processes settle
//! for a few seconds after start, then are read once a second; each figure
//! is the median of those readings.

use std::path::Path;
use std::time::Duration;

use berth_tests::benchjson::{Goal, Report, Row, quick};
use berth_tests::{Agent, Pki, Proc, agent_config, bin, free_port, median, status_field, wait_until};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
/// The binary-size goal of issue 15, in MB (10^6 bytes).
const BINARY_GOAL_MB: f64 = 8.0;
/// The idle-VmRSS goal, in MiB.
const RSS_GOAL_MIB: f64 = 8.0;

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} is missing: scripts/test-env.sh installs prometheus-node-exporter"
    );
    let (settle, readings) = if quick() { (3, 3) } else { (10, 10) };
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let node_port = free_port();
    let node = Proc::start(
        NODE_EXPORTER,
        &[format!("--web.listen-address=127.0.0.1:{node_port}")],
        pki.path("node-exporter.log"),
    );
    wait_until(Duration::from_secs(30), "node_exporter to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", node_port)).is_ok()
    });
    // Neither is scraped: both are read idle, as after start on a host
    // nobody watches yet.
    std::thread::sleep(Duration::from_secs(settle));

    let fields = ["VmRSS", "RssAnon", "RssFile", "Threads"];
    let mut berth: Vec<Vec<u64>> = vec![Vec::new(); fields.len()];
    let mut peer: Vec<Vec<u64>> = vec![Vec::new(); fields.len()];
    for _ in 0..readings {
        for (i, f) in fields.iter().enumerate() {
            berth[i].push(status_field(agent.pid(), f));
            peer[i].push(status_field(node.pid(), f));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let b: Vec<u64> = berth.iter().map(|v| median(v)).collect();
    let p: Vec<u64> = peer.iter().map(|v| median(v)).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;

    println!("idle processes, {settle}s after start (medians of {readings} readings, 1s apart)");
    println!("{:<22} {:>12} {:>16}", "", "berth-agent", "node_exporter");
    for (i, f) in fields.iter().enumerate() {
        if *f == "Threads" {
            println!("{:<22} {:>12} {:>16}", "threads", b[i], p[i]);
        } else {
            println!(
                "{:<22} {:>12} {:>16}",
                f.to_string(),
                format!("{:.1} MiB", mib(b[i])),
                format!("{:.1} MiB", mib(p[i]))
            );
        }
    }
    let sizes: Vec<(&str, f64)> = ["berth-agent", "berthctl"]
        .into_iter()
        .map(|name| (name, std::fs::metadata(bin(name)).map_or(0, |m| m.len()) as f64 / 1e6))
        .collect();
    let node_size = std::fs::metadata(NODE_EXPORTER).map_or(0, |m| m.len()) as f64 / 1e6;
    for (name, mb) in &sizes {
        println!("{:<22} {:>12}", format!("{name} binary"), format!("{mb:.1} MB"));
    }
    println!(
        "{:<22} {:>12} {:>16}",
        "node_exporter binary",
        "",
        format!("{node_size:.1} MB")
    );

    let mut report = Report::new("idle");
    report
        .row(
            Row::new("idle agent VmRSS", mib(b[0]), "MiB", readings)
                .peer("node_exporter", mib(p[0]))
                .goal(Goal::AtMost(RSS_GOAL_MIB)),
        )
        .row(Row::new("idle agent RssAnon", mib(b[1]), "MiB", readings).peer("node_exporter", mib(p[1])))
        .row(Row::new("idle agent threads", b[3] as f64, "threads", readings).peer("node_exporter", p[3] as f64))
        .row(
            Row::new("berth-agent binary size", sizes[0].1, "MB", 1)
                .peer("node_exporter", node_size)
                .goal(Goal::AtMost(BINARY_GOAL_MB)),
        );
    report.write()?;
    Ok(())
}

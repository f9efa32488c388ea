//! GetInfo latency over mutual TLS on loopback, agent RSS and binary sizes.
//!
//! Run with `bench/run.sh getinfo [--quick]` (release binaries). Starts a real
//! release `berth-agent` with fresh certificates and calls it through the
//! same client code berthctl uses; prints a table of medians and tails.

use std::time::{Duration, Instant};

use berth_proto::v1::GetInfoRequest;
use berth_proto::v1::host_client::HostClient;
use berth_tests::benchjson::{Report, Row, quick};
use berth_tests::{Agent, Pki, agent_config, bin, rss_kib};
use berthctl::client::{self, TlsFiles};

const WARMUP: usize = 200;

fn main() -> anyhow::Result<()> {
    // Calls on one connection, and fresh connections (`--quick`: fewer).
    let (calls_n, handshakes_n) = if quick() { (1_000, 60) } else { (5_000, 300) };
    let pki = Pki::new();
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    std::thread::sleep(Duration::from_millis(300));
    let rss_start = rss_kib(agent.pid());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let target: client::Target = agent.addr.parse().map_err(anyhow::Error::msg)?;
    let files = TlsFiles::resolve(&pki.tls_dir(), None)?;

    let (calls, handshakes) = rt.block_on(async {
        let channel = client::connect(&target, &files).await?;
        let mut host = HostClient::new(channel);
        for _ in 0..WARMUP {
            host.get_info(GetInfoRequest {}).await?;
        }
        let mut calls = Vec::with_capacity(calls_n);
        for _ in 0..calls_n {
            let t = Instant::now();
            host.get_info(GetInfoRequest {}).await?;
            calls.push(t.elapsed());
        }
        // A fresh connection per call: TCP + mutual TLS handshake + GetInfo,
        // what one `berthctl info` pays besides process start.
        let mut handshakes = Vec::with_capacity(handshakes_n);
        for _ in 0..handshakes_n {
            let t = Instant::now();
            let channel = client::connect(&target, &files).await?;
            HostClient::new(channel).get_info(GetInfoRequest {}).await?;
            handshakes.push(t.elapsed());
        }
        anyhow::Ok((calls, handshakes))
    })?;
    let rss_end = rss_kib(agent.pid());

    println!(
        "berth GetInfo over mutual TLS, loopback ({} calls on one connection, {} fresh connections)",
        calls_n, handshakes_n
    );
    println!("{:<44} {:>10} {:>10} {:>10}", "measure", "p50", "p99", "max");
    row("GetInfo, warm connection", &calls);
    row("connect (TCP+mTLS) + GetInfo", &handshakes);
    println!();
    println!(
        "{:<44} {:>10}",
        "agent RSS right after start",
        format!("{} KiB", rss_start)
    );
    println!("{:<44} {:>10}", "agent RSS after the run", format!("{} KiB", rss_end));
    for name in ["berth-agent", "berthctl"] {
        let size = std::fs::metadata(bin(name)).map(|m| m.len()).unwrap_or(0);
        println!(
            "{:<44} {:>10}",
            format!("{name} binary size"),
            format!("{:.1} MiB", size as f64 / 1048576.0)
        );
    }
    let mut report = Report::new("getinfo");
    for (figure, samples) in [
        ("GetInfo over mTLS, warm connection", &calls),
        ("TCP + mTLS connect + GetInfo", &handshakes),
    ] {
        for (q, name) in [(0.50, "p50"), (0.99, "p99")] {
            let v = quantile(samples, q).as_secs_f64() * 1e6;
            report.row(Row::new(format!("{figure}, {name}"), v, "µs", samples.len()));
        }
    }
    report.write()?;
    Ok(())
}

/// The `q` quantile of `samples` (the sample at that rank).
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() as f64 * q) as usize).min(s.len() - 1)]
}

fn row(label: &str, samples: &[Duration]) {
    let max = samples.iter().max().copied().unwrap_or_default();
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        label,
        fmt(quantile(samples, 0.50)),
        fmt(quantile(samples, 0.99)),
        fmt(max)
    );
}

fn fmt(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

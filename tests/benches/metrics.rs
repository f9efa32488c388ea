//! What metrics cost: agent RSS and CPU% while idle with 0 and 20
//! containers, collecting every 1s and every 10s, side by side in the same
//! run with Debian's `prometheus-node-exporter` scraped at the same
//! interval; and the cost of one collection pass per container.
//!
//! Run with `bench/run.sh metrics` (builds release binaries first). Both
//! the agent's Prometheus endpoint and node_exporter's are scraped at the
//! collection interval, as a Prometheus server would. CPU% is the process's
//! user+system time over wall time per window (one window = several
//! intervals), reported as the median over the windows; RSS is the median
//! of one reading per window. The per-container pass cost is the agent's own
//! `berth_metrics_pass_seconds{part="containers"}` divided by the containers
//! read, median over the windows.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::benchjson::{Goal, Report, Row as JsonRow, quick};
use berth_tests::{
    Agent, Pki, Proc, Spec, agent_config_with_prometheus, apply, find_service, free_port, http_get, median, ps,
    rss_kib, wait_until,
};

const CONTAINERS: usize = 20;
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Windows per configuration and their length, per interval.
fn windows(interval: u64) -> (usize, Duration) {
    if quick() {
        if interval == 1 {
            (3, Duration::from_secs(3))
        } else {
            (2, Duration::from_secs(20))
        }
    } else if interval == 1 {
        (6, Duration::from_secs(5))
    } else {
        (4, Duration::from_secs(20))
    }
}

struct Row {
    interval: u64,
    containers: usize,
    berth_cpu: f64,
    berth_rss_kib: u64,
    node_cpu: f64,
    node_rss_kib: u64,
    pass_us_per_container: Option<f64>,
    pass_us_host: f64,
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} is missing: scripts/test-env.sh installs prometheus-node-exporter"
    );
    let mut rows = Vec::new();
    // Empty host first, then one set of 20 containers adopted by an agent
    // per interval (same state dir and instance), so each is applied once.
    let empty = Pki::new();
    for interval in [1, 10] {
        rows.push(measure(&empty, interval, 0)?);
    }
    let busy = Pki::new();
    for interval in [1, 10] {
        rows.push(measure(&busy, interval, CONTAINERS)?);
    }

    println!();
    println!(
        "metrics cost, idle host (medians; CPU% of one core; {} cores here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<9} {:>10} | {:>10} {:>10} | {:>10} {:>10} | {:>14} {:>10}",
        "interval", "containers", "berth CPU", "berth RSS", "node_exp", "node_exp", "pass µs per", "pass µs"
    );
    println!(
        "{:<9} {:>10} | {:>10} {:>10} | {:>10} {:>10} | {:>14} {:>10}",
        "", "", "%", "MiB", "CPU %", "RSS MiB", "container", "host part"
    );
    for r in &rows {
        println!(
            "{:<9} {:>10} | {:>10.2} {:>10.1} | {:>10.2} {:>10.1} | {:>14} {:>10.0}",
            format!("{}s", r.interval),
            r.containers,
            r.berth_cpu,
            r.berth_rss_kib as f64 / 1024.0,
            r.node_cpu,
            r.node_rss_kib as f64 / 1024.0,
            r.pass_us_per_container
                .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
            r.pass_us_host,
        );
    }
    println!();
    println!("berth: agent with its Prometheus endpoint scraped every interval (host + containers, cgroup files).");
    println!("node_exp: {NODE_EXPORTER} (default collectors, host only) scraped every interval.");
    let mut report = Report::new("metrics");
    for r in &rows {
        let runs = windows(r.interval).0;
        let at = format!("{}s, {} containers", r.interval, r.containers);
        report.row(
            JsonRow::new(format!("agent CPU % at {at}"), r.berth_cpu, "%", runs)
                .peer("node_exporter (host only)", r.node_cpu)
                .goal(Goal::RatioAtMost(0.25)),
        );
        if let Some(us) = r.pass_us_per_container {
            report.row(
                JsonRow::new(format!("metrics pass per container at {at}"), us, "µs", runs).goal(Goal::AtMost(20.0)),
            );
        }
    }
    report.write()?;
    Ok(())
}

fn measure(pki: &Pki, interval: u64, containers: usize) -> anyhow::Result<Row> {
    let berth_port = free_port();
    let config = agent_config_with_prometheus(pki, berth_port, &format!("interval = \"{interval}s\"\n"));
    let agent = Agent::start_ready(pki, &config);
    for i in 0..containers {
        let name = format!("bench{i:02}");
        if find_service(&ps(pki, &agent.addr), &name).is_some() {
            continue; // adopted from the previous agent
        }
        let out = apply(pki, &agent.addr, &Spec::new(&name, "v1").key("stop_timeout", "1s"));
        anyhow::ensure!(
            out.status.success(),
            "apply {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every service running and read by the collector before measuring.
    wait_until(
        Duration::from_secs(120),
        "the collector to read every container",
        || scrape_value(berth_port, "berth_metrics_containers_read").is_some_and(|v| v as usize == containers),
    );

    let node_port = free_port();
    let node = Proc::start(
        NODE_EXPORTER,
        &[format!("--web.listen-address=127.0.0.1:{node_port}")],
        pki.path("node-exporter.log"),
    );
    wait_until(Duration::from_secs(30), "node_exporter to serve /metrics", || {
        http_get(node_port, "/metrics").is_some()
    });

    // Scrapers: both endpoints at the collection interval, on one thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http_get(berth_port, "/metrics");
                let _ = http_get(node_port, "/metrics");
                sleep_unless(&stop, Duration::from_secs(interval));
            }
        })
    };
    // Let start-up costs (first scrapes, first passes) settle.
    std::thread::sleep(Duration::from_secs(2 * interval.max(2)));

    let (count, length) = windows(interval);
    let (mut berth_cpu, mut node_cpu, mut berth_rss, mut node_rss, mut per_container, mut host_us) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let agent_pid = agent.pid();
    let node_pid = node.pid();
    for _ in 0..count {
        let (b0, n0, t0) = (cpu_ticks(agent_pid), cpu_ticks(node_pid), Instant::now());
        std::thread::sleep(length);
        let wall = t0.elapsed().as_secs_f64();
        berth_cpu.push(percent(b0, cpu_ticks(agent_pid), wall));
        node_cpu.push(percent(n0, cpu_ticks(node_pid), wall));
        berth_rss.push(rss_kib(agent_pid));
        node_rss.push(rss_kib(node_pid));
        if let Some(body) = http_get(berth_port, "/metrics") {
            let containers_s = value(&body, "berth_metrics_pass_seconds{part=\"containers\"}");
            let host_s = value(&body, "berth_metrics_pass_seconds{part=\"host\"}");
            let read = value(&body, "berth_metrics_containers_read");
            if let (Some(c), Some(n)) = (containers_s, read)
                && n > 0.0
            {
                per_container.push(c * 1e6 / n);
            }
            if let Some(h) = host_s {
                host_us.push(h * 1e6);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = scraper.join();
    drop(node);
    let row = Row {
        interval,
        containers,
        berth_cpu: median(&berth_cpu),
        berth_rss_kib: median(&berth_rss),
        node_cpu: median(&node_cpu),
        node_rss_kib: median(&node_rss),
        pass_us_per_container: (!per_container.is_empty()).then(|| median(&per_container)),
        pass_us_host: median(&host_us),
    };
    eprintln!(
        "measured interval {interval}s, {containers} containers: berth {:.2}% {} KiB, node_exporter {:.2}% {} KiB",
        row.berth_cpu, row.berth_rss_kib, row.node_cpu, row.node_rss_kib
    );
    // Containers stay for the next agent on this Pki; the Pki removes them.
    drop(agent);
    Ok(row)
}

fn sleep_unless(stop: &std::sync::atomic::AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape_value(port: u16, name: &str) -> Option<f64> {
    value(&http_get(port, "/metrics")?, name)
}

fn value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn percent(before: u64, after: u64, wall_secs: f64) -> f64 {
    // Linux's USER_HZ is 100 on every architecture berth targets.
    after.saturating_sub(before) as f64 / 100.0 / wall_secs * 100.0
}

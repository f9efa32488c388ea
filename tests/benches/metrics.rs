//! What metrics cost: agent CPU% and RSS while idle with 0, 20 and 50
//! containers, collecting every 1s and every 10s, side by side in the same
//! run with Debian's `prometheus-node-exporter` (host only) and Debian's
//! `netdata` (host and containers) at the same interval; and the cost of
//! one collection pass per container.
//!
//! Run with `bench/run.sh metrics` (builds release binaries first;
//! `BERTH_BENCH_QUICK=1` or `--quick` for short windows). Every endpoint
//! (the agent's, node_exporter's, netdata's Prometheus export) is scraped at
//! the collection interval, as a Prometheus server would.
//!
//! CPU: each measured process (netdata with its plugins) is moved into a
//! cgroup of its own and its CPU time read from the cgroup's counter in
//! nanoseconds, which also counts threads and child processes that come and
//! go; without a writable cgroup hierarchy it falls back to the process's
//! clock ticks (10 ms each). CPU% is CPU time over wall time per window,
//! reported as the median over the windows; RSS is the median of one
//! reading per window (netdata: summed over its processes). The
//! per-container pass cost is the agent's own
//! `berth_metrics_pass_seconds{part="containers"}` over the containers
//! read, median over every pass seen while measuring: its CPU time on
//! the sampler thread (`berth_metrics_pass_cpu_seconds`), what the pass
//! costs, and its wall time, which also counts the time the thread waited
//! for a core while other work ran.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_tests::benchjson::{Goal, Report, Row as JsonRow, quick};
use berth_tests::{
    Agent, Pki, Proc, Spec, agent_config_with_prometheus, apply, find_service, free_port, http_get, median, ps,
    rss_kib, wait_until,
};

const CONTAINERS: [usize; 3] = [0, 20, 50];
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const NETDATA: &str = "/usr/sbin/netdata";

/// Windows per configuration and their length, per interval. A 10 s row
/// needs long windows: a pass and a scrape every 10 s are a few ms of CPU.
fn windows(interval: u64) -> (usize, Duration) {
    match (quick(), interval) {
        (true, 1) => (3, Duration::from_secs(5)),
        (true, _) => (3, Duration::from_secs(20)),
        (false, 1) => (5, Duration::from_secs(12)),
        (false, _) => (5, Duration::from_secs(40)),
    }
}

struct Row {
    interval: u64,
    containers: usize,
    berth: Usage,
    node: Usage,
    netdata: Option<Usage>,
    pass_us_per_container: Option<f64>,
    pass_wall_us_per_container: Option<f64>,
    pass_us_host: f64,
    passes: usize,
}

#[derive(Clone, Copy)]
struct Usage {
    cpu: f64,
    rss_kib: u64,
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} is missing: scripts/test-env.sh installs prometheus-node-exporter"
    );
    // netdata is measured where Debian's package is installed (apt-get
    // install netdata); its absence is said in the table, not hidden.
    let netdata = Path::new(NETDATA).exists();
    let mut rows = Vec::new();
    // An empty host first, then one set of containers that grows from 20
    // to 50, adopted by an agent per interval (same state dir and
    // instance), so each is applied once.
    let empty = Pki::new();
    for interval in [1, 10] {
        rows.push(measure(&empty, interval, 0, netdata)?);
    }
    let busy = Pki::new();
    for containers in CONTAINERS.into_iter().filter(|&n| n > 0) {
        for interval in [1, 10] {
            rows.push(measure(&busy, interval, containers, netdata)?);
        }
    }

    let (count1, len1) = windows(1);
    let (count10, len10) = windows(10);
    println!();
    println!(
        "metrics cost, idle host (CPU % of one core, {} cores here; medians of {count1} windows of {}s at 1s, \
         {count10} of {}s at 10s; CPU from {}); goal: berth ≤ 0.25× node_exporter",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        len1.as_secs(),
        len10.as_secs(),
        if CpuMeter::cgroups_available() {
            "cgroup CPU counters"
        } else {
            "clock ticks"
        },
    );
    println!(
        "{:<8} {:>5} | {:>7} {:>6} | {:>7} {:>6} {:>6} | {:>7} {:>6} {:>6} | {:>9} {:>6} {:>6} {:>6}",
        "interval",
        "ctrs",
        "berth",
        "berth",
        "node_ex",
        "node",
        "ratio",
        "netdata",
        "netd",
        "ratio",
        "pass µs",
        "wall",
        "host",
        "passes"
    );
    println!(
        "{:<8} {:>5} | {:>7} {:>6} | {:>7} {:>6} {:>6} | {:>7} {:>6} {:>6} | {:>9} {:>6} {:>6} {:>6}",
        "", "", "CPU %", "MiB", "CPU %", "MiB", "", "CPU %", "MiB", "", "CPU/ctr", "/ctr", "µs", ""
    );
    for r in &rows {
        let (nd_cpu, nd_rss, nd_ratio) = match r.netdata {
            Some(n) => (
                format!("{:.3}", n.cpu),
                format!("{:.1}", n.rss_kib as f64 / 1024.0),
                ratio(r.berth.cpu, n.cpu),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<8} {:>5} | {:>7.3} {:>6.1} | {:>7.3} {:>6.1} {:>6} | {:>7} {:>6} {:>6} | {:>9} {:>6} {:>6.0} {:>6}",
            format!("{}s", r.interval),
            r.containers,
            r.berth.cpu,
            r.berth.rss_kib as f64 / 1024.0,
            r.node.cpu,
            r.node.rss_kib as f64 / 1024.0,
            ratio(r.berth.cpu, r.node.cpu),
            nd_cpu,
            nd_rss,
            nd_ratio,
            r.pass_us_per_container
                .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            r.pass_wall_us_per_container
                .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            r.pass_us_host,
            r.passes,
        );
    }
    println!();
    println!("berth: agent with its Prometheus endpoint scraped every interval (host + containers, cgroup files).");
    println!("node_ex: {NODE_EXPORTER} (default collectors, host only) scraped every interval.");
    if netdata {
        println!(
            "netdata: {NETDATA} -D with `update every` = the interval, its plugins included (host + containers), \
             /api/v1/allmetrics?format=prometheus scraped every interval."
        );
    } else {
        println!("netdata: not measured, {NETDATA} is not installed (apt-get install netdata).");
    }
    println!("ratio: berth CPU / the peer's CPU in the same window set.");
    println!(
        "pass µs: one collection pass per container, CPU time on the agent's sampler thread, and wall clock \
         (which also counts waiting for a core); host µs: the host part's CPU time."
    );
    let mut report = Report::new("metrics");
    for r in &rows {
        let runs = windows(r.interval).0;
        let at = format!("{}s, {} containers", r.interval, r.containers);
        report.row(
            JsonRow::new(format!("agent CPU % at {at}"), r.berth.cpu, "%", runs)
                .peer("node_exporter (host only)", r.node.cpu)
                .goal(Goal::RatioAtMost(0.25)),
        );
        if let Some(n) = r.netdata {
            report.row(
                JsonRow::new(format!("agent CPU % at {at}, vs netdata"), r.berth.cpu, "%", runs)
                    .peer("netdata (host + containers)", n.cpu),
            );
        }
        if let Some(us) = r.pass_us_per_container {
            report.row(
                JsonRow::new(
                    format!("metrics pass per container at {at} (CPU time)"),
                    us,
                    "µs",
                    r.passes,
                )
                .goal(Goal::AtMost(20.0)),
            );
        }
        if let Some(us) = r.pass_wall_us_per_container {
            report.row(JsonRow::new(
                format!("metrics pass per container at {at} (wall clock)"),
                us,
                "µs",
                r.passes,
            ));
        }
    }
    report.write()?;
    Ok(())
}

fn ratio(berth: f64, peer: f64) -> String {
    if peer > 0.0 {
        format!("{:.2}×", berth / peer)
    } else {
        "-".into()
    }
}

fn measure(pki: &Pki, interval: u64, containers: usize, with_netdata: bool) -> anyhow::Result<Row> {
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
        Duration::from_secs(180),
        "the collector to read every container",
        || scrape_value(berth_port, "berth_metrics_containers_read").is_some_and(|v| v as usize == containers),
    );

    let node_port = free_port();
    let node = Proc::start(
        NODE_EXPORTER,
        &[format!("--web.listen-address=127.0.0.1:{node_port}")],
        pki.path("node-exporter.log"),
    );
    let netdata_port = free_port();
    let netdata = with_netdata.then(|| {
        Proc::start(
            NETDATA,
            &[
                "-D".into(),
                "-p".into(),
                netdata_port.to_string(),
                "-W".into(),
                "set".into(),
                "global".into(),
                "update every".into(),
                interval.to_string(),
                "-W".into(),
                "set".into(),
                "global".into(),
                "memory mode".into(),
                "ram".into(),
            ],
            pki.path("netdata.log"),
        )
    });
    // Into their cgroups at once, so children started from here on count.
    let berth_meter = CpuMeter::new("berth", agent.pid());
    let node_meter = CpuMeter::new("node", node.pid());
    let netdata_meter = netdata.as_ref().map(|n| CpuMeter::new("netdata", n.pid()));
    wait_until(Duration::from_secs(30), "node_exporter to serve /metrics", || {
        http_get(node_port, "/metrics").is_some()
    });
    if netdata.is_some() {
        wait_until(
            Duration::from_secs(60),
            "netdata to serve its Prometheus export",
            || http_get(netdata_port, NETDATA_EXPORT).is_some_and(|b| b.contains("netdata_")),
        );
    }

    // Scrapers: every endpoint at the collection interval, on one thread;
    // the agent's pass timings recorded at each new pass.
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (stop, recording) = (stop.clone(), recording.clone());
        let with_netdata = netdata.is_some();
        std::thread::spawn(move || {
            let mut passes = Vec::new();
            let mut last_seq = None;
            while !stop.load(Ordering::Relaxed) {
                if let Some(body) = http_get(berth_port, "/metrics") {
                    let seq = value(&body, "berth_metrics_passes_total");
                    if recording.load(Ordering::Relaxed) && seq != last_seq {
                        passes.push(PassCost::from_scrape(&body));
                    }
                    last_seq = seq;
                }
                let _ = http_get(node_port, "/metrics");
                if with_netdata {
                    let _ = http_get(netdata_port, NETDATA_EXPORT);
                }
                sleep_unless(&stop, Duration::from_secs(interval));
            }
            passes
        })
    };
    // Let start-up costs (first scrapes, first passes, netdata's plugins
    // finding their charts) settle, then catch processes forked meanwhile.
    std::thread::sleep(Duration::from_secs(2 * interval.max(5)));
    for m in [Some(&berth_meter), Some(&node_meter), netdata_meter.as_ref()]
        .into_iter()
        .flatten()
    {
        m.adopt_descendants();
    }
    recording.store(true, Ordering::Relaxed);

    let (count, length) = windows(interval);
    let mut samples: Vec<[Option<Usage>; 3]> = Vec::new();
    for _ in 0..count {
        let meters = [Some(&berth_meter), Some(&node_meter), netdata_meter.as_ref()];
        let before: Vec<Option<u64>> = meters.iter().map(|m| m.map(CpuMeter::cpu_ns)).collect();
        let t0 = Instant::now();
        std::thread::sleep(length);
        let wall = t0.elapsed().as_secs_f64();
        let mut row = [None; 3];
        for (slot, (m, b)) in row.iter_mut().zip(meters.iter().zip(before)) {
            if let (Some(m), Some(b)) = (m, b) {
                *slot = Some(Usage {
                    cpu: (m.cpu_ns().saturating_sub(b)) as f64 / 1e9 / wall * 100.0,
                    rss_kib: m.rss_kib(),
                });
            }
        }
        samples.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    let passes = scraper.join().unwrap_or_default();
    drop(netdata);
    drop(node);
    let usage = |i: usize| -> Option<Usage> {
        let cpu: Vec<f64> = samples.iter().filter_map(|s| s[i].map(|u| u.cpu)).collect();
        let rss: Vec<u64> = samples.iter().filter_map(|s| s[i].map(|u| u.rss_kib)).collect();
        (!cpu.is_empty()).then(|| Usage {
            cpu: median(&cpu),
            rss_kib: median(&rss),
        })
    };
    let per_container: Vec<f64> = passes.iter().filter_map(|p| p.per_container_us).collect();
    let per_container_wall: Vec<f64> = passes.iter().filter_map(|p| p.per_container_wall_us).collect();
    let host: Vec<f64> = passes.iter().map(|p| p.host_us).collect();
    let zero = Usage { cpu: 0.0, rss_kib: 0 };
    let row = Row {
        interval,
        containers,
        berth: usage(0).unwrap_or(zero),
        node: usage(1).unwrap_or(zero),
        netdata: usage(2),
        pass_us_per_container: (!per_container.is_empty()).then(|| median(&per_container)),
        pass_wall_us_per_container: (!per_container_wall.is_empty()).then(|| median(&per_container_wall)),
        pass_us_host: median(&host),
        passes: passes.len(),
    };
    eprintln!(
        "measured interval {interval}s, {containers} containers: berth {:.3}% {} KiB, node_exporter {:.3}% {} KiB, \
         netdata {}, {} passes",
        row.berth.cpu,
        row.berth.rss_kib,
        row.node.cpu,
        row.node.rss_kib,
        row.netdata
            .map_or_else(|| "-".into(), |n| format!("{:.3}% {} KiB", n.cpu, n.rss_kib)),
        row.passes,
    );
    // Containers stay for the next agent on this Pki; the Pki removes them.
    drop(agent);
    drop((berth_meter, node_meter, netdata_meter));
    Ok(row)
}

const NETDATA_EXPORT: &str = "/api/v1/allmetrics?format=prometheus";

/// One pass's cost as the agent reported it.
struct PassCost {
    /// CPU time on the sampler thread.
    per_container_us: Option<f64>,
    per_container_wall_us: Option<f64>,
    /// CPU time on the sampler thread.
    host_us: f64,
}

impl PassCost {
    fn from_scrape(body: &str) -> PassCost {
        let read = value(body, "berth_metrics_containers_read");
        let per_container = |gauge: &str| match (value(body, gauge), read) {
            (Some(c), Some(n)) if n > 0.0 => Some(c * 1e6 / n),
            _ => None,
        };
        PassCost {
            per_container_us: per_container("berth_metrics_pass_cpu_seconds{part=\"containers\"}"),
            per_container_wall_us: per_container("berth_metrics_pass_seconds{part=\"containers\"}"),
            host_us: value(body, "berth_metrics_pass_cpu_seconds{part=\"host\"}").unwrap_or(0.0) * 1e6,
        }
    }
}

/// The CPU time of one process and what it starts, from a cgroup of its
/// own (v1 `cpuacct` or v2 `cpu.stat`), or from its clock ticks when no
/// cgroup can be made. The cgroup is removed on drop once it is empty.
struct CpuMeter {
    pid: u32,
    cgroup: Option<PathBuf>,
}

impl CpuMeter {
    fn hierarchy() -> Option<(PathBuf, bool)> {
        let v1 = Path::new("/sys/fs/cgroup/cpuacct");
        let v2 = Path::new("/sys/fs/cgroup");
        if v1.join("cpuacct.usage").exists() {
            Some((v1.to_owned(), true))
        } else if v2.join("cgroup.controllers").exists() {
            Some((v2.to_owned(), false))
        } else {
            None
        }
    }

    fn cgroups_available() -> bool {
        Self::hierarchy().is_some_and(|(root, _)| {
            let probe = root.join(format!("berth-bench-probe-{}", std::process::id()));
            let ok = std::fs::create_dir(&probe).is_ok();
            let _ = std::fs::remove_dir(&probe);
            ok
        })
    }

    fn new(name: &str, pid: u32) -> CpuMeter {
        let cgroup = Self::hierarchy().and_then(|(root, _)| {
            let dir = root.join(format!("berth-bench-{}-{name}-{pid}", std::process::id()));
            std::fs::create_dir(&dir).ok()?;
            if std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_err() {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
            Some(dir)
        });
        CpuMeter { pid, cgroup }
    }

    /// Moves processes started by the measured one (before it was moved,
    /// or by a helper that re-parented them) into its cgroup.
    fn adopt_descendants(&self) {
        let Some(cgroup) = &self.cgroup else { return };
        for pid in descendants(self.pid) {
            let _ = std::fs::write(cgroup.join("cgroup.procs"), pid.to_string());
        }
    }

    fn pids(&self) -> Vec<u32> {
        match &self.cgroup {
            Some(c) => std::fs::read_to_string(c.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            None => vec![self.pid],
        }
    }

    fn cpu_ns(&self) -> u64 {
        let Some(cgroup) = &self.cgroup else {
            // Linux's USER_HZ is 100 on every architecture berth targets.
            return cpu_ticks(self.pid) * 10_000_000;
        };
        if let Ok(usage) = std::fs::read_to_string(cgroup.join("cpuacct.usage")) {
            return usage.trim().parse().unwrap_or(0);
        }
        std::fs::read_to_string(cgroup.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1000
    }

    fn rss_kib(&self) -> u64 {
        self.pids().into_iter().map(rss_kib).sum()
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        let Some(cgroup) = &self.cgroup else { return };
        // Whatever the measured process left behind (netdata's plugins
        // outlive a killed netdata until their next write) ends here.
        for pid in self.pids() {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(cgroup).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every process whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
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

//! A connection flood against a real agent: 2,000 idle TCP connections and
//! 200 stalled TLS handshakes (see `berth_tests::flood`), with the agent at
//! systemd's default open-file limit (1024) and one health-checked service.
//!
//! Prints what the issue asks for: connections the agent held, `berthctl
//! ps` latency before and during the flood, log lines written, and whether
//! the container survived. `bench/run.sh flood` (needs the test registry);
//! `bench/run.sh flood --quick` holds the flood for one handshake timeout instead of three.

use std::time::{Duration, Instant};

use berth_tests::flood::{Flood, open_sockets};
use berth_tests::{Agent, Pki, Spec, agent_config, apply, berthctl, median, ok, only_container, ps, service};

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("BERTH_BENCH_QUICK").is_some() || std::env::args().any(|a| a == "--quick");
    let hold = if quick {
        Duration::from_secs(6)
    } else {
        Duration::from_secs(16)
    };
    let pki = Pki::new();
    let agent = Agent::start_ready_nofile(&pki, &agent_config(&pki, ""), 1024);
    ok(&apply(&pki, &agent.addr, &Spec::checked("flood", "v1")));
    let container = only_container(&pki.instance, "flood");
    let timed_ps = || {
        let t = Instant::now();
        let out = berthctl(&pki, &agent.addr, &["ps", "-o", "json"]);
        (t.elapsed(), out.status.success())
    };
    let quiet: Vec<Duration> = (0..5).map(|_| timed_ps().0).collect();
    let sockets_before = open_sockets(agent.pid());
    let lines_before = agent.logs().lines().count();

    let opened = Instant::now();
    let flood = Flood::open(agent.addr.parse().map_err(anyhow::Error::msg)?, 2_000, 200);
    let open_time = opened.elapsed();
    let mut during = Vec::new();
    let mut failed_ps = 0;
    let mut held = 0;
    while opened.elapsed() < hold {
        let (t, ok) = timed_ps();
        during.push(t);
        failed_ps += usize::from(!ok);
        held = held.max(open_sockets(agent.pid()));
        std::thread::sleep(Duration::from_millis(250));
    }
    let flood_len = flood.len();
    drop(flood);
    let lines = agent.logs().lines().count() - lines_before;
    let refusal_lines = agent
        .logs()
        .lines()
        .skip(lines_before)
        .filter(|l| l.contains("Refused"))
        .count();
    let replaced = only_container(&pki.instance, "flood") != container;
    let restarts = service(&ps(&pki, &agent.addr), "flood")["restarts"].clone();

    println!(
        "berth connection flood: {flood_len} connections opened in {} ms (2,000 idle from 127.0.0.2, 200 stalled TLS from 127.0.0.3), held {} s; agent nofile 1024",
        open_time.as_millis(),
        hold.as_secs()
    );
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12}", "agent sockets before the flood", sockets_before);
    println!("{:<44} {:>12}", "agent sockets during the flood (max)", held);
    println!(
        "{:<44} {:>12}",
        "berthctl ps p50 before (ms)",
        median(&quiet).as_millis()
    );
    println!(
        "{:<44} {:>12}",
        "berthctl ps p50 during (ms)",
        median(&during).as_millis()
    );
    println!(
        "{:<44} {:>12}",
        "berthctl ps max during (ms)",
        during.iter().max().copied().unwrap_or_default().as_millis()
    );
    println!(
        "{:<44} {:>12}",
        "berthctl ps calls during / failed",
        format!("{} / {failed_ps}", during.len())
    );
    println!(
        "{:<44} {:>12}",
        "agent log lines written (refusals)",
        format!("{lines} ({refusal_lines})")
    );
    println!(
        "{:<44} {:>12}",
        "container replaced / restarts",
        format!("{replaced} / {restarts}")
    );
    Ok(())
}

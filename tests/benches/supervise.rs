//! Supervision benchmarks, berth next to its peers in the same run:
//!
//! 1. Crash to healthy: the container's main process is SIGKILLed from the
//!    host (a crash, not a `docker stop`), timed until `/health` answers
//!    `ok` again on its host port. berth's reconciler vs Docker's own
//!    `--restart always`, twice: each container alone on its own bridge
//!    network (one service on a host), and both on Docker's default bridge
//!    with other containers.
//! 2. Deploy time of one service, v1→v2→v1..., until the new version answers
//!    `/health`: `berthctl deploy` (health gate included) vs the shell
//!    runbook people run today (`docker pull; docker stop; docker rm;
//!    docker run; curl` until healthy).
//!
//! Each round measures berth and its peer one right after the other, so
//! both see the same machine; the medians are over all rounds. Both peers
//! publish a pinned host port and are polled with plain HTTP every 2 ms,
//! so the measurement itself puts no load on dockerd (a `docker inspect`
//! per poll would).
//!
//! Run with `bench/run.sh supervise` (release binaries, registry up);
//! `BERTH_BENCH_QUICK=1` for fewer rounds.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::benchjson::{Goal, Report, Row, quick};
use berth_tests::{
    Agent, Pki, Runbook, Spec, agent_config, apply, berthctl, docker, free_port, image, inspect, ok, running,
};

/// Crash rounds (one crash of each peer per round) and deploy rounds (one
/// deploy of each per round): enough for a median that moves by a few
/// percent between runs.
const KILLS: usize = 15;
const DEPLOYS: usize = 30;

/// How long each crashed container runs before the next crash: past the
/// 10 s after which berth and Docker both forget earlier crashes, so every
/// sample is a first crash, restarted without backoff by both.
const STABLE: Duration = Duration::from_secs(11);

fn main() {
    // `--quick`: fewer samples of the same figures.
    let (kills, deploys) = if quick() { (3, 6) } else { (KILLS, DEPLOYS) };
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    for tag in ["v1", "v2"] {
        docker(&["pull", "-q", &image(tag)]);
    }
    let berth_port = free_port();
    let spec = Spec::new("bench", "v1")
        .key("ports", [format!("127.0.0.1:{berth_port}:8000").as_str()])
        .health_http("/health")
        .set("health", "interval", "1s");
    ok(&apply(&pki, &agent.addr, &spec));

    // ---- 1. crash → healthy, berth and Docker's policy in turn, on the
    // default bridge they share and each alone on a bridge of its own
    let peer_port = free_port();
    let peer = format!("berth-bench-restart-{}", std::process::id());
    run_peer(&peer, peer_port, None);
    let alone_port = free_port();
    let alone_network = format!("berth-bench-alone-{}", std::process::id());
    let docker_alone_network = format!("{alone_network}-docker");
    let alone = Spec::new("alone", "v1")
        .key("ports", [format!("127.0.0.1:{alone_port}:8000").as_str()])
        .key("network", format!("{alone_network}-berth").as_str())
        .health_http("/health")
        .set("health", "interval", "1s");
    ok(&apply(&pki, &agent.addr, &alone));
    let peer_alone_port = free_port();
    let peer_alone = format!("{peer}-alone");
    docker(&[
        "network",
        "create",
        "--label",
        "berth.bench=true",
        &docker_alone_network,
    ]);
    run_peer(&peer_alone, peer_alone_port, Some(&docker_alone_network));
    for port in [berth_port, peer_port, alone_port, peer_alone_port] {
        wait_healthy(port, Duration::from_secs(20));
    }
    std::thread::sleep(STABLE);
    let mut heal = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..kills {
        // Alternate who goes first, so neither always follows the other's
        // restart.
        let berth_first = round % 2 == 0;
        for berth in [berth_first, !berth_first] {
            if berth {
                for (i, (service, port)) in [("bench", berth_port), ("alone", alone_port)].into_iter().enumerate() {
                    let id = running(&pki.instance, service)
                        .into_iter()
                        .next()
                        .expect("a running container");
                    heal[i * 2].push(crash_and_time(&id, port));
                }
            } else {
                heal[1].push(crash_and_time(&peer, peer_port));
                heal[3].push(crash_and_time(&peer_alone, peer_alone_port));
            }
        }
        std::thread::sleep(STABLE);
    }
    let _ = Command::new("docker").args(["rm", "-f", &peer, &peer_alone]).output();
    let _ = Command::new("docker")
        .args(["network", "rm", &docker_alone_network])
        .output();
    let [berth_heal, docker_heal, berth_alone_heal, docker_alone_heal] = heal;

    // ---- 2. deploy → healthy, berthctl and the runbook in turn
    let runbook_port = free_port();
    let runbook = Runbook::new(runbook_port, "/health");
    runbook.deploy(&image("v1"));
    let mut berth_deploy = Vec::new();
    let mut shell_deploy = Vec::new();
    for i in 0..deploys {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        let t = Instant::now();
        ok(&berthctl(
            &pki,
            &agent.addr,
            &["deploy", "bench", "--image", &image(tag)],
        ));
        berth_deploy.push(t.elapsed());
        let t = Instant::now();
        runbook.deploy(&image(tag));
        shell_deploy.push(t.elapsed());
    }
    drop(runbook);

    println!("berth supervision benchmarks (medians; {kills} crashes and {deploys} deploys of each, interleaved)");
    println!("{:<58} {:>10} {:>10} {:>8}", "measure", "median", "p90", "ratio");
    let a = row(
        "crash → healthy, alone on its bridge: berth-agent",
        &berth_alone_heal,
        None,
    );
    let ad = row(
        "crash → healthy, alone on its bridge: docker --restart always",
        &docker_alone_heal,
        Some(a),
    );
    let b = row("crash → healthy, shared bridge: berth-agent", &berth_heal, None);
    let d = row(
        "crash → healthy, shared bridge: docker --restart always",
        &docker_heal,
        Some(b),
    );
    let b2 = row("deploy → healthy: berthctl deploy (health-gated)", &berth_deploy, None);
    let r = row(
        "deploy → healthy: shell runbook (pull/stop/rm/run/curl)",
        &shell_deploy,
        Some(b2),
    );
    println!("\nratio = berth median / peer median (below 1: berth is faster)");
    phase_medians(&agent.logs());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut report = Report::new("supervise");
    report
        .row(
            Row::new("crash → healthy, alone on its bridge (SIGKILL)", ms(a), "ms", kills)
                .peer("docker --restart always", ms(ad))
                .goal(Goal::RatioBelow(1.0)),
        )
        .row(
            Row::new(
                "crash → healthy, bridge shared with others (SIGKILL)",
                ms(b),
                "ms",
                kills,
            )
            .peer("docker --restart always", ms(d))
            .goal(Goal::RatioBelow(1.0)),
        )
        .row(
            Row::new("deploy → healthy, one service", ms(b2), "ms", deploys)
                .peer("shell runbook", ms(r))
                .goal(Goal::RatioAtMost(0.8)),
        );
    if let Err(e) = report.write() {
        eprintln!("bench: {e:#}");
    }
}

/// Where berth's deploys spent their time: the median of each step of the
/// agent's "Rollout timings." lines (logged at debug level; bench/run.sh
/// asks for them with BERTH_TEST_AGENT_LOG).
fn phase_medians(log: &str) {
    let mut phases: Vec<(String, Vec<u64>)> = Vec::new();
    for line in log.lines().filter(|l| l.contains("Rollout timings.")) {
        let Some((_, list)) = line.split_once("phases=") else {
            continue;
        };
        for step in list.trim_matches('"').split_whitespace() {
            let Some((name, took)) = step.split_once('=') else {
                continue;
            };
            let Some(ms) = took.split("ms").next().and_then(|n| n.parse().ok()) else {
                continue;
            };
            match phases.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(ms),
                None => phases.push((name.to_owned(), vec![ms])),
            }
        }
    }
    if phases.is_empty() {
        return;
    }
    let shown: Vec<String> = phases
        .iter_mut()
        .map(|(name, v)| {
            v.sort();
            format!("{name} {}ms", v[v.len() / 2])
        })
        .collect();
    println!(
        "berth deploy steps (medians over {} rollouts): {}",
        phases[0].1.len(),
        shown.join(", ")
    );
}

/// Runs Docker's own `--restart always` peer on `port`, on `network` or
/// the default bridge.
fn run_peer(name: &str, port: u16, network: Option<&str>) {
    let published = format!("127.0.0.1:{port}:8000");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "berth.bench=true",
        "--restart",
        "always",
        "-p",
        &published,
    ];
    if let Some(network) = network {
        args.extend(["--network", network]);
    }
    let image = image("v1");
    args.push(&image);
    docker(&args);
}

/// SIGKILLs the container's main process from the host and times until
/// `/health` answers `ok` on `port` again.
fn crash_and_time(id: &str, port: u16) -> Duration {
    let pid = inspect(id, "{{.State.Pid}}");
    let t = Instant::now();
    let status = Command::new("kill").args(["-9", &pid]).status().expect("kill");
    assert!(status.success(), "kill -9 {pid}");
    // The old process is really gone before the first probe, so only the
    // restarted one can answer.
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    loop {
        if healthy(port) {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "did not come back within 60s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn healthy(port: u16) -> bool {
    berth_tests::http_get(port, "/health").is_some_and(|b| b == "ok")
}

fn wait_healthy(port: u16, within: Duration) {
    let t = Instant::now();
    while !healthy(port) {
        assert!(t.elapsed() < within, "port {port} not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prints one row: median, p90, and the ratio of this median to `base`'s.
fn row(label: &str, samples: &[Duration], base: Option<Duration>) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let median = s[s.len() / 2];
    let p90 = s[(s.len() * 9 / 10).min(s.len() - 1)];
    let ratio = base.map_or_else(
        || "1.00".to_owned(),
        |b| format!("{:.2}", b.as_secs_f64() / median.as_secs_f64()),
    );
    println!(
        "{label:<58} {:>8.0}ms {:>8.0}ms {ratio:>8}",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
    median
}

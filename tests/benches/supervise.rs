//! Supervision benchmarks, berth next to its peers in the same run:
//!
//! 1. Death to healthy: the container's main process is SIGKILLed from the
//!    host (a crash, not a `docker stop`), timed until `/health` answers 200
//!    again. berth's reconciler vs Docker's own `--restart always`.
//! 2. Deploy time of one service, v1→v2→v1..., until the new version answers
//!    `/health`: `berthctl deploy` vs the shell runbook people run today
//!    (`docker pull; docker stop; docker rm; docker run; curl` until healthy).
//!
//! Run with `bench/run.sh supervise [--quick]` (release binaries, registry up).

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::benchjson::{Goal, Report, Row, quick};
use berth_tests::{
    Agent, Pki, Runbook, Spec, agent_config, apply, berthctl, docker, free_port, image, inspect, ok, running,
};

const KILLS: usize = 8;
const DEPLOYS: usize = 10;

fn main() {
    // `--quick`: fewer samples of the same figures.
    let (kills, deploys) = if quick() { (3, 6) } else { (KILLS, DEPLOYS) };
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    for tag in ["v1", "v2"] {
        docker(&["pull", "-q", &image(tag)]);
    }
    let spec = Spec::new("bench", "v1")
        .key("ports", ["8000"])
        .health_http("/health")
        .set("health", "interval", "1s");
    ok(&apply(&pki, &agent.addr, &spec));

    // ---- 1. death → healthy
    let mut berth_heal = Vec::new();
    for _ in 0..kills {
        let id = running_of(&pki.instance, "bench");
        berth_heal.push(crash_and_time(&id, || running_of_opt(&pki.instance, "bench")));
        // Past the crash-count reset (10s running, as Docker's policy), so
        // every sample is a first crash for both.
        std::thread::sleep(Duration::from_secs(11));
    }
    let peer = format!("berth-bench-restart-{}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--name",
        &peer,
        "--label",
        "berth.bench=true",
        "--restart",
        "always",
        "-p",
        "127.0.0.1::8000",
        &image("v1"),
    ]);
    wait_healthy(&peer, Duration::from_secs(20));
    let mut docker_heal = Vec::new();
    for _ in 0..kills {
        docker_heal.push(crash_and_time(&peer, || Some(peer.clone())));
        std::thread::sleep(Duration::from_secs(11));
    }
    let _ = Command::new("docker").args(["rm", "-f", &peer]).output();

    // ---- 2. deploy time
    let mut berth_deploy = Vec::new();
    for i in 0..deploys {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        let t = Instant::now();
        ok(&berthctl(
            &pki,
            &agent.addr,
            &["deploy", "bench", "--image", &image(tag)],
        ));
        berth_deploy.push(t.elapsed());
    }
    let runbook = Runbook::new(free_port(), "/health");
    let mut shell_deploy = Vec::new();
    for i in 0..deploys {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        let t = Instant::now();
        runbook.deploy(&image(tag));
        shell_deploy.push(t.elapsed());
    }
    drop(runbook);

    println!("berth supervision benchmarks (medians; {kills} crashes, {deploys} deploys each)");
    println!("{:<58} {:>10} {:>10} {:>8}", "measure", "median", "p90", "ratio");
    let b = row(
        "death → healthy: berth-agent (SIGKILL of the main process)",
        &berth_heal,
        None,
    );
    let d = row(
        "death → healthy: docker --restart always (same crash)",
        &docker_heal,
        Some(b),
    );
    let b2 = row("deploy → healthy: berthctl deploy (health-gated)", &berth_deploy, None);
    let r = row(
        "deploy → healthy: shell runbook (pull/stop/rm/run/curl)",
        &shell_deploy,
        Some(b2),
    );
    println!("\nratio = peer median / berth median (above 1: berth is faster)");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut report = Report::new("supervise");
    report
        .row(
            Row::new("crash → healthy (SIGKILL of the main process)", ms(b), "ms", kills)
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

fn running_of_opt(instance: &str, service: &str) -> Option<String> {
    running(instance, service).into_iter().next()
}

fn running_of(instance: &str, service: &str) -> String {
    running_of_opt(instance, service).expect("a running container")
}

/// SIGKILLs the container's main process from the host and times until a
/// container found by `find` answers /health with 200.
fn crash_and_time(id: &str, find: impl Fn() -> Option<String>) -> Duration {
    let pid = inspect(id, "{{.State.Pid}}");
    let t = Instant::now();
    let status = Command::new("kill").args(["-9", &pid]).status().expect("kill");
    assert!(status.success(), "kill -9 {pid}");
    // Wait until the old process is really gone before probing.
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    loop {
        if let Some(c) = find()
            && healthy(&c)
        {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "did not come back within 60s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn healthy(id: &str) -> bool {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{(index (index .NetworkSettings.Ports \"8000/tcp\") 0).HostPort}}",
            id,
        ])
        .output();
    let Ok(out) = out else { return false };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    if parts.next() != Some("true") {
        return false;
    }
    let Some(port) = parts.next().and_then(|p| p.parse::<u16>().ok()) else {
        return false;
    };
    berth_tests::http_get(port, "/health").is_some_and(|b| b == "ok")
}

fn wait_healthy(id: &str, within: Duration) {
    let t = Instant::now();
    while !healthy(id) {
        assert!(t.elapsed() < within, "{id} not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row(label: &str, samples: &[Duration], base: Option<Duration>) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let median = s[s.len() / 2];
    let p90 = s[(s.len() * 9 / 10).min(s.len() - 1)];
    let ratio = base.map_or_else(
        || "1.00".to_owned(),
        |b| format!("{:.2}", median.as_secs_f64() / b.as_secs_f64()),
    );
    println!(
        "{label:<58} {:>8.0}ms {:>8.0}ms {ratio:>8}",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
    median
}

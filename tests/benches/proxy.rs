//! Requests behind nginx during deploys, side by side under the same load:
//! a berth blue-green deploy vs the runbook way (`docker stop; docker rm;
//! docker run` behind the same nginx, with a site pointing at a fixed host
//! port). Failed requests and latency percentiles of the requests sent while
//! each deploy ran, and the same load's latency in a window with no deploy
//! (the steady state the deploys' p99 is compared with).
//!
//! Run with `bench/run.sh proxy [--quick]` (release binaries, registry and nginx).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::benchjson::{Goal, Report, Row, quick};
use berth_tests::nginx::{Nginx, get};
use berth_tests::{Agent, Pki, Runbook, Spec, agent_config, apply, berthctl, docker, free_port, image, ok};

/// Deploys of each method: enough requests in the windows (over 10,000 each)
/// for a p99 that holds between runs.
const DEPLOYS: usize = 10;
const THREADS: usize = 4;
/// The window of load with no deploy, before the deploys.
const STEADY: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    failed: usize,
}

/// Load on `port` with `host` until the returned flag is set; samples only
/// while `window` is true.
fn load(
    port: u16,
    host: &'static str,
    window: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Samples>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..THREADS)
        .map(|_| {
            let (window, stop, out) = (window.clone(), stop.clone(), out.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = get(port, host, "/");
                    let took = t.elapsed();
                    if !window.load(Ordering::Relaxed) {
                        continue;
                    }
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok((200, _)) => o.latencies.push(took),
                        _ => o.failed += 1,
                    }
                }
            })
        })
        .collect()
}

fn main() {
    let deploys = if quick() { 2 } else { DEPLOYS };
    let pki = Pki::new();
    let nginx = Nginx::start(pki.dir.path());
    let agent = Agent::start_ready(&pki, &agent_config(&pki, &nginx.agent_config()));
    for tag in ["v1", "v2"] {
        docker(&["pull", "-q", &image(tag)]);
    }

    // ---- berth: blue-green behind nginx
    let berth_port = free_port();
    let spec = Spec::new("bench-proxy", "v1")
        .key("ports", ["8000"])
        .health_http("/__lbheartbeat__")
        .set("deploy", "drain", "1s")
        .proxy("berth.bench", berth_port);
    ok(&apply(&pki, &agent.addr, &spec));
    let (steady, berth) = measure(berth_port, "berth.bench", deploys, |tag| {
        ok(&berthctl(
            &pki,
            &agent.addr,
            &["deploy", "bench-proxy", "--image", &image(tag)],
        ));
    });

    // ---- runbook: a fixed host port behind a hand-written site in the same nginx
    let runbook_port = free_port();
    let app_port = free_port();
    std::fs::write(
        nginx.sites.join("runbook.conf"),
        format!(
            "server {{\n    listen {runbook_port};\n    server_name runbook.bench;\n    location / {{ proxy_pass http://127.0.0.1:{app_port}; }}\n}}\n"
        ),
    )
    .expect("site");
    let reload = Command::new("nginx")
        .args([
            "-p",
            &nginx.dir.display().to_string(),
            "-c",
            &nginx.dir.join("nginx.conf").display().to_string(),
            "-s",
            "reload",
        ])
        .status();
    assert!(reload.is_ok_and(|s| s.success()), "nginx reload");
    let runbook = Runbook::new(app_port, "/__lbheartbeat__");
    let run = |tag: &str| runbook.deploy(&image(tag));
    run("v1");
    std::thread::sleep(Duration::from_secs(1));
    let (_, shell) = measure(runbook_port, "runbook.bench", deploys, |tag| run(tag));
    drop(runbook);

    println!(
        "requests through nginx during {deploys} deploys (v1↔v2), {THREADS} client threads, new connection per request"
    );
    println!(
        "{:<40} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "deploy method", "requests", "failed", "failed%", "p50", "p99", "max"
    );
    report("berth blue-green (health-gated, drain)", &berth);
    report("runbook: docker stop; rm; run; curl", &shell);
    report("berth site, steady state (no deploy)", &steady);
    let ms = |s: &Samples| quantile(s, 0.99).as_secs_f64() * 1e3;
    let mut json = Report::new("proxy");
    json.row(
        Row::new(
            format!(
                "requests failed behind nginx during deploys (of {})",
                berth.latencies.len() + berth.failed
            ),
            berth.failed as f64,
            "requests",
            deploys,
        )
        .peer(
            format!("docker stop; run (of {})", shell.latencies.len() + shell.failed),
            shell.failed as f64,
        )
        .goal(Goal::AtMost(0.0)),
    )
    .row(
        Row::new("p99 latency behind nginx during deploys", ms(&berth), "ms", deploys)
            .peer("steady state, no deploy", ms(&steady)),
    );
    if let Err(e) = json.write() {
        eprintln!("bench: {e:#}");
    }
}

/// The `q` quantile of the successful requests' latencies.
fn quantile(s: &Samples, q: f64) -> Duration {
    let mut l = s.latencies.clone();
    l.sort();
    l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The load's samples in a steady window with no deploy, then during `deploys` deploys.
fn measure(port: u16, host: &'static str, deploys: usize, deploy: impl Fn(&str)) -> (Samples, Samples) {
    let window = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Samples::default()));
    let threads = load(port, host, window.clone(), stop.clone(), out.clone());
    std::thread::sleep(Duration::from_millis(500));
    window.store(true, Ordering::Relaxed);
    std::thread::sleep(STEADY);
    window.store(false, Ordering::Relaxed);
    let steady = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    for i in 0..deploys {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        window.store(true, Ordering::Relaxed);
        deploy(tag);
        window.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let during = Arc::try_unwrap(out)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    (steady, during)
}

fn report(label: &str, s: &Samples) {
    let mut l = s.latencies.clone();
    l.sort();
    let total = l.len() + s.failed;
    let pick = |q: f64| {
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1e3);
    println!(
        "{label:<40} {total:>9} {:>8} {:>7.2}% {:>9} {:>9} {:>9}",
        s.failed,
        100.0 * s.failed as f64 / total.max(1) as f64,
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(l.last().copied().unwrap_or_default())
    );
}

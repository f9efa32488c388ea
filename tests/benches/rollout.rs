//! `berthctl rollout --batch 5` over 20 real agents (10 with
//! `BERTH_BENCH_QUICK=1`), next to (a) what a perfect orchestrator would
//! take with the same hosts: the sum over batches of the slowest host's own
//! deploy time, taken from the same run's record, and (b) the same change
//! made by a shell loop of `berthctl --host H deploy`, five hosts at a time
//! with a `wait` after each five. Each run changes the image (v1 ↔ v2), so
//! every figure is a real health-gated deploy. Medians of RUNS runs.
//!
//! Run with `bench/run.sh rollout [--quick]` (release binaries, the test
//! registry).

use std::process::Command;
use std::time::Instant;

use berth_tests::benchjson::{Goal, Report, Row};
use berth_tests::fleet::OPERATOR;
use berth_tests::{Fleet, Spec, bin, image, json, median, ok};

const RUNS: usize = 3;
const BATCH: usize = 5;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("BERTH_BENCH_QUICK").is_some_and(|v| !v.is_empty());
    let n = if quick { 10 } else { 20 };
    let fleet = Fleet::many(n);
    std::thread::scope(|s| {
        for m in fleet.members() {
            let fleet = &fleet;
            s.spawn(move || ok(&fleet.apply(&m.name, &Spec::checked("api", "v1"))));
        }
    });
    let inventory = fleet.write_inventory(&fleet.inventory("bench"));
    let tls = fleet.pki().tls_dir();
    let ctl = bin("berthctl");
    let (mut walls, mut ideals, mut loops) = (Vec::new(), Vec::new(), Vec::new());
    let mut tag = "v1";
    for _ in 0..RUNS {
        tag = if tag == "v1" { "v2" } else { "v1" };
        let t = Instant::now();
        let out = Command::new(&ctl)
            .arg("--tls-dir")
            .arg(&tls)
            .args(["--cert", OPERATOR, "--inventory"])
            .arg(&inventory)
            .args([
                "--fleet",
                "bench",
                "rollout",
                "--service",
                "api",
                "--image",
                &image(tag),
            ])
            .args(["--batch", &BATCH.to_string(), "--yes", "-o", "json"])
            .output()?;
        let wall = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "rollout failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "result")
            .ok_or_else(|| anyhow::anyhow!("no result record"))?;
        // The slowest host of each batch, from the hosts' own times.
        let mut slowest = vec![0u64; n.div_ceil(BATCH)];
        for h in result["hosts"].as_array().into_iter().flatten() {
            let b = h["batch"].as_u64().unwrap_or(0) as usize;
            let took = h["finished_at_ms"].as_u64().unwrap_or(0) - h["started_at_ms"].as_u64().unwrap_or(0);
            if let Some(s) = slowest.get_mut(b) {
                *s = (*s).max(took);
            }
        }
        walls.push(wall);
        ideals.push(slowest.iter().sum::<u64>() as f64 / 1000.0);

        tag = if tag == "v1" { "v2" } else { "v1" };
        let addrs: Vec<String> = fleet.members().iter().map(|m| m.addr().to_owned()).collect();
        let mut script = String::from("set -e\n");
        for chunk in addrs.chunks(BATCH) {
            for a in chunk {
                script.push_str(&format!(
                    "\"$CTL\" --tls-dir \"$TLS\" --cert {OPERATOR} --host {a} deploy api --image {} >/dev/null 2>&1 &\n",
                    image(tag)
                ));
            }
            script.push_str("wait\n");
        }
        let t = Instant::now();
        let status = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("CTL", &ctl)
            .env("TLS", &tls)
            .status()?;
        anyhow::ensure!(status.success(), "the shell loop failed");
        loops.push(t.elapsed().as_secs_f64());
    }
    let ps = json(&fleet.berthctl("host-1", &["ps", "-o", "json"]));
    anyhow::ensure!(
        ps.to_string().contains(&image(tag)),
        "the last change did not land: {ps}"
    );
    let (wall, ideal, shell) = (median(&walls), median(&ideals), median(&loops));
    println!("rollout of {n} real agents, --batch {BATCH} (medians of {RUNS} runs)");
    println!("{:>28} | {:>10} | {:>12} | {:>10}", "", "seconds", "vs ideal", "goal");
    println!(
        "{:>28} | {:>10.2} | {:>12} | {:>10}",
        "ideal (slowest per batch)", ideal, "1.00x", ""
    );
    println!(
        "{:>28} | {:>10.2} | {:>+11.0}ms | {:>10}",
        "berthctl rollout",
        wall,
        (wall - ideal) * 1000.0,
        format!("<={:.0}ms", ideal * 10.0 + 100.0)
    );
    println!(
        "{:>28} | {:>10.2} | {:>11.2}x | {:>10}",
        "shell loop of deploys",
        shell,
        shell / ideal.max(0.001),
        ""
    );
    let mut report = Report::new("rollout");
    report.row(
        Row::new(
            format!("rollout overhead over the ideal ({n} agents, --batch {BATCH})"),
            (wall - ideal) * 1000.0,
            "ms",
            RUNS,
        )
        .peer("shell loop of deploys", (shell - ideal) * 1000.0)
        .goal(Goal::AtMost(ideal * 10.0 + 100.0)),
    );
    report.write()?;
    Ok(())
}

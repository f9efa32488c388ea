//! `berthctl audit --verify` over a long audit log: 100,000 hash-chained
//! records (10,000 with `BERTH_BENCH_QUICK=1`) written in the agent's own
//! format into a fresh state_dir, a real agent started on it, and the
//! verification (the agent streams every file over mTLS, berthctl checks
//! each record's hash and link) timed end to end. Medians of RUNS runs.
//!
//! Run with `bench/run.sh audit [--quick]`.

use std::io::Write as _;
use std::time::Instant;

use berth_core::audit::{Entry, GENESIS, seal};
use berth_tests::{Agent, Pki, agent_config, berthctl, median};

const RUNS: usize = 3;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("BERTH_BENCH_QUICK").is_some_and(|v| !v.is_empty());
    let n: u64 = if quick { 10_000 } else { 100_000 };
    let pki = Pki::new();
    let state = pki.dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let path = state.join("audit.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut prev = GENESIS.to_owned();
    for seq in 1..=n {
        let entry = Entry {
            ts_ms: 1_780_000_000_000 + seq * 1000,
            who: "alice".into(),
            role: "operator".into(),
            cert: "ab".repeat(32),
            peer: "10.0.0.7:51234".into(),
            action: "deploy".into(),
            service: format!("web-{}", seq % 20),
            detail: format!("revision {seq} image registry.example.com/app:1.4.{seq}"),
            outcome: "ok".into(),
        };
        let (line, hash) = seal(entry, seq, &prev);
        writeln!(file, "{line}")?;
        prev = hash;
    }
    file.flush()?;
    drop(file);
    let bytes = std::fs::metadata(&path)?.len();

    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = berthctl(&pki, &agent.addr, &["audit", "--verify"]);
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            out.status.success(),
            "audit --verify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = median(&times);
    println!("berthctl audit --verify over a real agent (median of {RUNS} runs)");
    println!(
        "{:>10} | {:>10} | {:>10} | {:>14}",
        "records", "log size", "seconds", "records / s"
    );
    println!(
        "{n:>10} | {:>7.1} MB | {t:>10.2} | {:>14.0}",
        bytes as f64 / 1e6,
        n as f64 / t
    );
    Ok(())
}

//! `berthctl ps` over 50, 100 and 200 real agents (fresh mutual-TLS
//! connections every run), next to a shell loop of one `berthctl --host`
//! per host run 5 at a time (`xargs -P5`, the Ansible-forks way), in one
//! run; wall time, CPU time (user + system) and peak memory, each also per
//! host.
//!
//! Run with `bench/run.sh fleet` (release binaries); `BERTH_BENCH_QUICK=1`
//! (`bench/run.sh fleet --quick`) measures 20 and 50 agents only. Each
//! figure is the median of RUNS runs, measured by GNU time (`/usr/bin/time`).

use std::path::Path;
use std::process::Command;

use berth_tests::benchjson::{Goal, Report, Row};
use berth_tests::fleet::OPERATOR;
use berth_tests::{Fleet, bin, median};

const RUNS: usize = 3;

/// What GNU time said about one run.
#[derive(Clone, Copy, Default, PartialEq, PartialOrd)]
struct Measure {
    wall_s: f64,
    cpu_s: f64,
    peak_kib: f64,
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        Path::new("/usr/bin/time").exists(),
        "/usr/bin/time is missing: apt-get install time"
    );
    let quick = std::env::var_os("BERTH_BENCH_QUICK").is_some_and(|v| !v.is_empty());
    let sizes: &[usize] = if quick { &[20, 50] } else { &[50, 100, 200] };
    println!("berthctl ps over N real agents on this machine (medians of {RUNS} runs; CPU = user + system)");
    println!(
        "{:>7} | {:>10} {:>10} {:>12} {:>10} {:>12} | {:>10} {:>10} {:>12} {:>10}",
        "agents",
        "fleet wall",
        "fleet CPU",
        "CPU / host",
        "peak RSS",
        "RSS / host",
        "loop wall",
        "loop CPU",
        "CPU / host",
        "peak RSS"
    );
    let mut last = None;
    for &n in sizes {
        let fleet = Fleet::many(n);
        let inventory = fleet.write_inventory(&fleet.inventory("bench"));
        let hosts = fleet.write_hosts();
        let tls = fleet.pki().tls_dir();
        let ctl = bin("berthctl");
        let fan: Vec<Measure> = (0..RUNS)
            .map(|i| {
                let out = fleet.pki().path(&format!("time-fleet-{n}-{i}"));
                let mut cmd = timed(&out);
                cmd.arg(&ctl)
                    .arg("--tls-dir")
                    .arg(&tls)
                    .args(["--cert", OPERATOR, "--inventory"])
                    .arg(&inventory)
                    .args(["ps", "--fleet", "bench", "-o", "json"]);
                run(cmd, &out)
            })
            .collect::<anyhow::Result<_>>()?;
        let script = format!(
            "xargs -P5 -n1 sh -c 'exec {} --tls-dir {} --cert {OPERATOR} --host \"$0\" ps -o json' < {}",
            ctl.display(),
            tls.display(),
            hosts.display()
        );
        let shell: Vec<Measure> = (0..RUNS)
            .map(|i| {
                let out = fleet.pki().path(&format!("time-loop-{n}-{i}"));
                let mut cmd = timed(&out);
                cmd.args(["sh", "-c", &script]);
                run(cmd, &out)
            })
            .collect::<anyhow::Result<_>>()?;
        let pick = |v: &[Measure], f: fn(&Measure) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let (fw, fc, fm) = (
            pick(&fan, |m| m.wall_s),
            pick(&fan, |m| m.cpu_s),
            pick(&fan, |m| m.peak_kib),
        );
        let (lw, lc, lm) = (
            pick(&shell, |m| m.wall_s),
            pick(&shell, |m| m.cpu_s),
            pick(&shell, |m| m.peak_kib),
        );
        println!(
            "{:>7} | {:>10} {:>10} {:>12} {:>10} {:>12} | {:>10} {:>10} {:>12} {:>10}",
            n,
            format!("{fw:.2} s"),
            format!("{fc:.2} s"),
            format!("{:.2} ms", fc * 1000.0 / n as f64),
            format!("{:.1} MiB", fm / 1024.0),
            format!("{:.0} KiB", fm / n as f64),
            format!("{lw:.2} s"),
            format!("{lc:.2} s"),
            format!("{:.2} ms", lc * 1000.0 / n as f64),
            format!("{:.1} MiB", lm / 1024.0),
        );
        last = Some((n, fw, fc, lw, lc));
    }
    if let Some((n, fw, fc, lw, lc)) = last {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        let mut report = Report::new("fleet");
        report
            .row(Row::new(format!("fleet ps over {n} agents, wall"), fw, "s", RUNS).peer("shell loop, 5 at a time", lw))
            .row(
                Row::new(
                    format!("fleet ps CPU per host ({n} agents)"),
                    fc * 1000.0 / n as f64,
                    "ms",
                    RUNS,
                )
                .peer("shell loop, 5 at a time", lc * 1000.0 / n as f64),
            )
            // The issue-11 goal is 1,000 remote agents within 1 s: berthctl's
            // own CPU per host spread over this machine's cores.
            .row(
                Row::new(
                    format!("fleet ps over 1,000 agents, predicted (CPU per host × 1,000 / {cores} cores)"),
                    fc / n as f64 * 1000.0 / cores,
                    "s",
                    RUNS,
                )
                .goal(Goal::AtMost(1.0)),
            );
        report.write()?;
    }
    Ok(())
}

/// `/usr/bin/time -f "%e %U %S %M" -o OUT`, ready for the command.
fn timed(out: &Path) -> Command {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%e %U %S %M", "-o"]).arg(out);
    cmd
}

/// Runs a timed command (its output discarded), checks it succeeded and
/// reads what time measured.
fn run(mut cmd: Command, out: &Path) -> anyhow::Result<Measure> {
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    anyhow::ensure!(
        status.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(out)?;
    let f: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not what GNU time writes ({e}): {text}", out.display()))?;
    anyhow::ensure!(f.len() == 4, "{}: expected 4 numbers: {text}", out.display());
    Ok(Measure {
        wall_s: f[0],
        cpu_s: f[1] + f[2],
        peak_kib: f[3],
    })
}

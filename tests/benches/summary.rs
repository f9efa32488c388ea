//! The one summary table of `bench/run.sh`: every row the benches recorded
//! in `target/bench/<bench>.json` (see `berth_tests::benchjson`), printed
//! as one Markdown table (figure, berth, peer, ratio, goal, runs) and
//! written to `target/bench/summary.json`.
//!
//! Run with `bench/run.sh summary` (after any benches; `bench/run.sh` runs
//! it last). Reports from other runs than the latest say when they were
//! written, below the table.

use berth_tests::benchjson::{self, number};
use serde_json::{Value, json};

/// Benches in the table's order; others follow by name.
const ORDER: &[&str] = &["idle", "getinfo", "metrics", "supervise", "proxy", "fleet", "rollout"];

fn main() -> anyhow::Result<()> {
    let dir = benchjson::dir();
    let reports = benchjson::read_all(&dir, ORDER)?;
    anyhow::ensure!(
        !reports.is_empty(),
        "no bench reports in {}: run bench/run.sh first",
        dir.display()
    );
    let mut rows = Vec::new();
    for r in &reports {
        for row in r["rows"].as_array().into_iter().flatten() {
            let mut row = row.clone();
            row["bench"] = r["bench"].clone();
            rows.push(row);
        }
    }

    let header = ["figure", "berth", "peer (same run)", "ratio", "goal", "met", "runs"];
    let cells: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |c: &[String]| {
        let padded: Vec<String> = c
            .iter()
            .zip(widths)
            .map(|(v, w)| format!("{v}{}", " ".repeat(w - v.chars().count())))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    println!();
    println!("berth next to its peers (ratio = berth / peer; runs = samples each median is over)");
    println!();
    line(&header.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for c in &cells {
        line(c);
    }
    // Which reports the rows come from, and whether any was a quick run.
    let times: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{} {}{}",
                r["bench"].as_str().unwrap_or("?"),
                r["written_at"].as_str().unwrap_or("?"),
                if r["quick"].as_bool() == Some(true) {
                    " (quick)"
                } else {
                    ""
                }
            )
        })
        .collect();
    println!();
    println!("reports: {}", times.join(", "));

    let path = dir.join("summary.json");
    benchjson::write_json(
        &path,
        &json!({ "written_at": benchjson::now(), "reports": reports.iter().map(|r| json!({
            "bench": r["bench"], "written_at": r["written_at"], "quick": r["quick"],
        })).collect::<Vec<_>>(), "rows": rows }),
    )?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// One row's cells: figure, berth, peer, ratio, goal, met, runs.
fn cells(row: &Value) -> [String; 7] {
    let unit = row["unit"].as_str().unwrap_or("");
    let value = |v: &Value| v.as_f64().map_or_else(|| "–".to_owned(), |v| with_unit(v, unit));
    let peer = match (row["peer"].as_str(), row["peer_value"].as_f64()) {
        (Some(name), Some(_)) => format!("{name} {}", value(&row["peer_value"])),
        (Some(name), None) => format!("{name}: –"),
        _ => "–".to_owned(),
    };
    let ratio = row["ratio"]
        .as_f64()
        .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
    let goal = row["goal"].as_str().filter(|g| !g.is_empty()).unwrap_or("–").to_owned();
    let met = match row["met"].as_bool() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "–",
    };
    [
        row["figure"].as_str().unwrap_or("?").to_owned(),
        value(&row["berth"]),
        peer,
        ratio,
        goal,
        met.to_owned(),
        row["runs"].as_u64().map_or_else(|| "–".to_owned(), |n| n.to_string()),
    ]
}

fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "" => number(v),
        "%" => format!("{}%", number(v)),
        _ => format!("{} {unit}", number(v)),
    }
}

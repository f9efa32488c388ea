//! Benchmark figures as JSON, for the one summary table of `bench/run.sh`.
//!
//! Each bench keeps printing its own table and also records its headline
//! figures here: a [`Report`] of [`Row`]s (the figure, berth's value, the
//! peer measured in the same run and its value, the unit, the goal, how
//! many runs the median is over), written to `target/bench/<bench>.json`.
//! The `summary` bench reads them all back ([`read_all`]), prints one table
//! and writes `target/bench/summary.json`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Whether this is a short run (`bench/run.sh --quick`, or
/// `BERTH_BENCH_QUICK=1`): fewer samples, same figures.
pub fn quick() -> bool {
    std::env::var_os("BERTH_BENCH_QUICK").is_some_and(|v| !v.is_empty())
}

/// `target/bench/`, next to the profile directory the running bench binary
/// was built into (`target/release/deps/NAME-HASH`).
pub fn dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("a bench binary lives in target/<profile>/deps")
        .to_path_buf();
    target.join("bench")
}

/// What a figure should be, checked against the row's values.
#[derive(Clone, Debug)]
pub enum Goal {
    /// No goal set; the row is for comparison.
    None,
    /// berth's value at most this (in the row's unit).
    AtMost(f64),
    /// berth's value divided by the peer's at most this.
    RatioAtMost(f64),
    /// berth's value divided by the peer's below this.
    RatioBelow(f64),
}

impl Goal {
    fn text(&self, unit: &str) -> String {
        match self {
            Goal::None => String::new(),
            // Whole goals read as such: "8", not "8.00".
            Goal::AtMost(v) if v.fract() == 0.0 => format!("≤ {v} {unit}"),
            Goal::AtMost(v) => format!("≤ {} {unit}", number(*v)),
            Goal::RatioAtMost(r) => format!("≤ {r}×"),
            Goal::RatioBelow(r) => format!("< {r}×"),
        }
    }

    fn met(&self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match (self, ratio) {
            (Goal::None, _) => None,
            (Goal::AtMost(v), _) => Some(value <= *v),
            (Goal::RatioAtMost(r), Some(x)) => Some(x <= *r),
            (Goal::RatioBelow(r), Some(x)) => Some(x < *r),
            // A ratio goal without a peer value cannot be judged.
            (_, None) => None,
        }
    }
}

/// One figure of a bench.
#[derive(Clone, Debug)]
pub struct Row {
    figure: String,
    value: f64,
    unit: String,
    peer: Option<(String, f64)>,
    goal: Goal,
    runs: usize,
}

impl Row {
    /// berth's `value` of `figure`, in `unit`, the median of `runs` runs
    /// (or samples; say which in the figure when it is not obvious).
    pub fn new(figure: impl Into<String>, value: f64, unit: &str, runs: usize) -> Row {
        Row {
            figure: figure.into(),
            value,
            unit: unit.to_owned(),
            peer: None,
            goal: Goal::None,
            runs,
        }
    }

    /// The peer measured in the same run, and its value in the same unit.
    pub fn peer(mut self, name: impl Into<String>, value: f64) -> Row {
        self.peer = Some((name.into(), value));
        self
    }

    /// The goal the figure is held to.
    pub fn goal(mut self, goal: Goal) -> Row {
        self.goal = goal;
        self
    }

    fn to_json(&self) -> Value {
        let ratio = self.peer.as_ref().and_then(|(_, p)| (*p > 0.0).then(|| self.value / p));
        json!({
            "figure": self.figure,
            "berth": self.value,
            "unit": self.unit,
            "peer": self.peer.as_ref().map(|(n, _)| n.clone()),
            "peer_value": self.peer.as_ref().map(|(_, v)| *v),
            "ratio": ratio,
            "goal": self.goal.text(&self.unit),
            "met": self.goal.met(self.value, ratio),
            "runs": self.runs,
        })
    }
}

/// The rows one bench recorded; [`Report::write`] puts them in
/// `target/bench/<bench>.json`.
pub struct Report {
    bench: String,
    rows: Vec<Row>,
}

impl Report {
    /// An empty report of `bench` (the bench's name, as in `bench/run.sh NAME`).
    pub fn new(bench: &str) -> Report {
        Report {
            bench: bench.to_owned(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, row: Row) -> &mut Report {
        self.rows.push(row);
        self
    }

    /// Writes `target/bench/<bench>.json`; says where on stderr.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let dir = dir();
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.bench));
        let doc = json!({
            "bench": self.bench,
            "written_at": now(),
            "quick": quick(),
            "rows": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        write_json(&path, &doc)?;
        eprintln!("bench: wrote {}", path.display());
        Ok(path)
    }
}

/// Every bench's report in `dir` (not `summary.json`), in `order` first,
/// then any others by name.
pub fn read_all(dir: &Path, order: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e} (run a bench first)", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .filter(|n| n != "summary")
        .collect();
    names.sort_by_key(|n| (order.iter().position(|o| o == n).unwrap_or(order.len()), n.clone()));
    names
        .iter()
        .map(|n| {
            let path = dir.join(format!("{n}.json"));
            let text =
                std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a bench report: {e}", path.display()))
        })
        .collect()
}

/// Writes `doc` to `path`, pretty-printed.
pub fn write_json(path: &Path, doc: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Now, RFC 3339 in UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A value with as many digits as it needs to read: 3 significant ones,
/// no trailing zeros past the point for large values, and counts (a whole
/// number of threads) as whole numbers.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

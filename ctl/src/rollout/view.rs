//! How a rollout looks while it runs and when it ends.
//!
//! Owns the rendering only: the plan (batches, and per host what would
//! change, as the agents computed it), progress (on a terminal a live line
//! per host of the running batch; otherwise one timestamped line per step;
//! NDJSON records under `--output json`), and the result (a table per
//! host: revision before → after, outcome and why, time; counts; wall
//! time). Prints to a [`Sink`]; never decides anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_proto::v1::{HostProgress, PlanResponse, RolloutRecord};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::record::{self, host};
use crate::output::{Format, Sink, WriteError, table};

/// A live line per host on a terminal.
const HOST_LINE: &str = "{spinner} {prefix:<16} {wide_msg}";

/// Renders one rollout.
pub struct View {
    out: Sink,
    format: Format,
    started: Instant,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl View {
    /// A view on `out` in `format`.
    pub fn new(out: Sink, format: Format) -> View {
        View {
            out,
            format,
            started: Instant::now(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// The time since the view was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A rollout-level line: a batch starts, the canary bakes, a pause.
    pub fn note(&self, event: &str, message: &str) {
        let _ = self.emit(None, event, message);
    }

    /// A host's deploy moved on to `phase`.
    pub fn phase(&self, host: &str, phase: &str, message: &str) {
        let bar = if self.format == Format::Table {
            self.bar(host)
        } else {
            None
        };
        if let Some(bar) = bar {
            bar.set_message(format!("{phase:<8} {message}"));
            return;
        }
        let _ = self.emit(Some(host), phase, message);
    }

    /// A host finished (or its rollback did).
    pub fn done(&self, p: &HostProgress) {
        let line = host_line(p);
        if self.format == Format::Table {
            let bar = self.bars.lock().ok().and_then(|mut b| b.remove(&p.host));
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
        if self.format == Format::Json {
            let _ = self.out.record(&json!({
                "ts_ms": now_ms(),
                "event": "host",
                "host": p.host,
                "state": p.state,
                "revision_before": p.revision_before,
                "revision_after": p.revision_after,
                "error": p.error,
            }));
        } else {
            let _ = self.emit(Some(&p.host), &p.state, &line);
        }
    }

    fn bar(&self, host: &str) -> Option<ProgressBar> {
        let mut bars = self.bars.lock().ok()?;
        if let Some(b) = bars.get(host) {
            return Some(b.clone());
        }
        let bar = self.out.progress_bar(HOST_LINE)?;
        bar.set_prefix(host.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bars.insert(host.to_owned(), bar.clone());
        Some(bar)
    }

    fn emit(&self, host: Option<&str>, event: &str, message: &str) -> Result<(), WriteError> {
        match self.format {
            Format::Json => self.out.record(&json!({
                "ts_ms": now_ms(),
                "event": event,
                "host": host,
                "message": message,
            })),
            Format::Table => {
                let who = host.unwrap_or("rollout");
                self.out
                    .err(&format!("{}  {who:<16} {event:<10} {message}", clock(now_ms())))
            }
        }
    }

    /// The plan: batches, then what changes per host.
    pub fn plan(
        &self,
        record: &RolloutRecord,
        plans: &[(String, PlanResponse)],
        budget: usize,
    ) -> Result<(), WriteError> {
        if self.format == Format::Json {
            return self.out.document(&plan_json(record, plans, budget));
        }
        let mut text = format!(
            "Rollout {} of {} ({}) to {} hosts:\n",
            record.id,
            record.service,
            record.change,
            record.hosts.len()
        );
        for (i, b) in record.batches.iter().enumerate() {
            let kind = if b.canary { " (canary)" } else { "" };
            text.push_str(&format!("  batch {}{kind}: {}\n", i + 1, b.hosts.join(", ")));
        }
        text.push('\n');
        let mut rows = vec![vec!["HOST".into(), "REVISION".into(), "CHANGE".into()]];
        for (host, p) in plans {
            rows.push(vec![
                host.clone(),
                if p.exists { p.revision.to_string() } else { "-".into() },
                summary(p),
            ]);
        }
        text.push_str(&table(&rows));
        let mut shown_site = std::collections::BTreeSet::new();
        for (host, p) in plans {
            if !p.site_diff.is_empty() && shown_site.insert(p.site_diff.clone()) {
                text.push_str(&format!("\nnginx site on {host}:\n{}", p.site_diff));
            }
        }
        text.push_str(&format!(
            "\nFailure budget: {budget} host{} (one more stops the rollout).\n",
            if budget == 1 { "" } else { "s" }
        ));
        self.out.text(&text)
    }

    /// The end: a table per host, counts and wall time.
    pub fn result(&self, record: &RolloutRecord) -> Result<(), WriteError> {
        let wall = self.elapsed();
        if self.format == Format::Json {
            return self.out.record(&json!({
                "event": "result",
                "id": record.id,
                "status": record.status,
                "detail": record.detail,
                "wall_seconds": wall.as_secs_f64(),
                "hosts": record.hosts.iter().map(host_json).collect::<Vec<_>>(),
            }));
        }
        let mut text = String::from("\n");
        text.push_str(&hosts_table(record));
        text.push_str(&format!(
            "\nRollout {} {}: {} ({}) in {:.1}s.\n",
            record.id,
            record.status,
            record::counts_line(record),
            if record.detail.is_empty() {
                "no detail"
            } else {
                &record.detail
            },
            wall.as_secs_f64()
        ));
        self.out.text(&text)
    }
}

/// The per-host table of a record.
pub fn hosts_table(record: &RolloutRecord) -> String {
    let mut rows = vec![vec![
        "HOST".into(),
        "BATCH".into(),
        "REVISION".into(),
        "OUTCOME".into(),
        "TIME".into(),
        "VERSION".into(),
        "WHY".into(),
    ]];
    for h in &record.hosts {
        let took = if h.finished_at_ms > h.started_at_ms && h.started_at_ms > 0 {
            format!("{:.1}s", (h.finished_at_ms - h.started_at_ms) as f64 / 1000.0)
        } else {
            "-".into()
        };
        rows.push(vec![
            h.host.clone(),
            (h.batch + 1).to_string(),
            revisions(h),
            h.state.clone(),
            took,
            // What the host reported serving after its deploy.
            if h.version.is_empty() {
                "-".into()
            } else {
                h.version.clone()
            },
            h.error.clone(),
        ]);
    }
    table(&rows)
}

fn revisions(h: &HostProgress) -> String {
    let r = |n: u64| if n == 0 { "-".to_owned() } else { n.to_string() };
    if h.revision_after == 0 || h.revision_after == h.revision_before {
        r(h.revision_before)
    } else {
        format!("{} -> {}", r(h.revision_before), r(h.revision_after))
    }
}

fn host_line(p: &HostProgress) -> String {
    let rev = revisions(p);
    match p.state.as_str() {
        host::FAILED | host::ROLLBACK_FAILED => format!("revision {rev}: {}", p.error),
        _ if !p.version.is_empty() => format!("revision {rev}, serving {}", p.version),
        _ => format!("revision {rev}"),
    }
}

/// What a plan changes, in one cell.
pub fn summary(p: &PlanResponse) -> String {
    if !p.would_change {
        return "no change (skipped)".into();
    }
    let mut parts = Vec::new();
    if !p.exists {
        parts.push(format!("new service ({})", p.image_to));
    } else if p.image_from != p.image_to {
        parts.push(format!("image {} -> {}", p.image_from, p.image_to));
    }
    let keys: Vec<String> = p
        .spec_changes
        .iter()
        .filter(|c| c.key != "image")
        .map(|c| format!("{}: {} -> {}", c.key, or_unset(&c.from), or_unset(&c.to)))
        .collect();
    if !keys.is_empty() {
        parts.push(keys.join(", "));
    }
    let mut env = Vec::new();
    env.extend(p.env_added.iter().map(|k| format!("+{k}")));
    env.extend(p.env_changed.iter().map(|k| format!("~{k}")));
    env.extend(p.env_removed.iter().map(|k| format!("-{k}")));
    if !env.is_empty() {
        parts.push(format!("env {}", env.join(" ")));
    }
    if !p.site_diff.is_empty() {
        parts.push("nginx site changes".into());
    }
    if p.strategy == "restart" {
        parts.push("restart".into());
    }
    if parts.is_empty() {
        parts.push("new revision".into());
    }
    format!("{} [{}]", parts.join("; "), p.strategy)
}

fn or_unset(v: &str) -> &str {
    if v.is_empty() { "(unset)" } else { v }
}

fn plan_json(record: &RolloutRecord, plans: &[(String, PlanResponse)], budget: usize) -> Value {
    json!({
        "id": record.id,
        "service": record.service,
        "change": record.change,
        "budget": budget,
        "would_change": plans.iter().any(|(_, p)| p.would_change),
        "batches": record.batches.iter().map(|b| json!({"hosts": b.hosts, "canary": b.canary})).collect::<Vec<_>>(),
        "hosts": plans.iter().map(|(h, p)| json!({
            "host": h,
            "exists": p.exists,
            "revision": p.revision,
            "would_change": p.would_change,
            "image_from": p.image_from,
            "image_to": p.image_to,
            "spec_changes": p.spec_changes.iter().map(|c| json!({"key": c.key, "from": c.from, "to": c.to})).collect::<Vec<_>>(),
            "env_added": p.env_added,
            "env_changed": p.env_changed,
            "env_removed": p.env_removed,
            "site_diff": p.site_diff,
            "strategy": p.strategy,
        })).collect::<Vec<_>>(),
    })
}

/// A host's progress as JSON.
pub fn host_json(h: &HostProgress) -> Value {
    json!({
        "host": h.host,
        "address": h.address,
        "batch": h.batch,
        "state": h.state,
        "revision_before": h.revision_before,
        "revision_after": h.revision_after,
        "error": h.error,
        "version": h.version,
        "started_at_ms": h.started_at_ms,
        "finished_at_ms": h.finished_at_ms,
    })
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `HH:MM:SS` (UTC) of `ms`.
pub fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::SpecChange;

    #[test]
    fn a_plan_cell_names_image_keys_and_env_keys() {
        let p = PlanResponse {
            exists: true,
            revision: 3,
            would_change: true,
            image_from: "app:v1".into(),
            image_to: "app:v2".into(),
            spec_changes: vec![
                SpecChange {
                    key: "image".into(),
                    from: "app:v1".into(),
                    to: "app:v2".into(),
                },
                SpecChange {
                    key: "resources.memory".into(),
                    from: "8g".into(),
                    to: "16g".into(),
                },
            ],
            env_added: vec!["C".into()],
            strategy: "blue-green".into(),
            ..PlanResponse::default()
        };
        assert_eq!(
            summary(&p),
            "image app:v1 -> app:v2; resources.memory: 8g -> 16g; env +C [blue-green]"
        );
        assert_eq!(summary(&PlanResponse::default()), "no change (skipped)");
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}

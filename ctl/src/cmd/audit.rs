//! `berthctl audit [--since DURATION|TIME] [--verify]`: the agent's audit
//! log, read back and checked here (the agent does not vouch for itself).

use berth_core::audit::{self as chain, Broken, Place, Verified, Verifier};
use berth_proto::v1::ReadAuditRequest;
use berth_proto::v1::audit_client::AuditClient;
use serde_json::json;

use super::Global;
use crate::client::{Agent, ConnectError};
use crate::fleet::{Failure, Summary};
use crate::output::{self, Format, Sink};

/// Show the agent's audit log: every mutating call, every refused or
/// failed call and every change, with who made it (certificate name, role
/// and SHA-256 fingerprint) and how it ended. Operators only.
///
/// Records are hash-chained: each carries its own SHA-256 and that of the
/// record before it, across rotated files. --verify reads the whole log
/// and checks the chain here, naming the first record that was altered,
/// removed or inserted (exit 1 then). With --verify alone only the verdict
/// is printed; add --since to see records too.
///
/// Over a selection (--fleet, --hosts-from, several --host) every host's
/// records in one table merged by time, with a HOST column (NDJSON with a
/// "host" field under --output json). --verify checks each host's chain
/// on its own and prints one line per host: its records and "ok", "broken
/// at record N (why)" or "unreachable"; the exit is non-zero when any
/// host's chain is broken or a host could not be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only records from this long ago (e.g. 30m, 24h) or since this time
    /// (RFC 3339, e.g. 2026-12-01T10:00:00Z).
    #[arg(long, value_name = "DURATION|TIME")]
    since: Option<String>,
    /// Check the hash chain of the whole log.
    #[arg(long)]
    verify: bool,
}

/// One agent's audit log as read back: its lines, and the chain's verdict
/// when asked to verify.
struct HostAudit {
    /// The lines to show (those since `--since`, or all).
    entries: Vec<Entry>,
    /// The files read, oldest first.
    files: Vec<String>,
    /// With `--verify`: the chain intact, or where it broke.
    verdict: Option<Result<Verified, Broken>>,
}

/// One line of an audit file.
struct Entry {
    file: String,
    line: u64,
    /// The record, or `None` for a line that is not one.
    record: Option<chain::Record>,
    text: String,
}

/// Runs `berthctl audit`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let since_ms = match &args.since {
        Some(s) => Some(parse_since(s, now_ms())?),
        None => None,
    };
    let show = !args.verify || since_ms.is_some();
    let selection = global.selection().await?;
    if !selection.many {
        let agent = &selection.hosts[0].agent;
        let audit = read(agent, args.verify, since_ms, show).await?;
        match global.output {
            Format::Json => {
                for e in &audit.entries {
                    out.record(&entry_json(e))?;
                }
            }
            Format::Table if show => {
                let mut rows = vec![HEADER.map(String::from).to_vec()];
                rows.extend(audit.entries.iter().map(row));
                out.text(&output::table(&rows))?;
            }
            Format::Table => {}
        }
        return match audit.verdict {
            None => Ok(()),
            Some(Err(e)) => anyhow::bail!("the audit chain is broken at {}", broken_words(&e)),
            Some(Ok(v)) => match global.output {
                Format::Json => Ok(out.record(&verified_json(&v, &audit.files))?),
                Format::Table => Ok(out.err(&format!("audit chain intact: {}", verified_words(&v, &audit.files)))?),
            },
        };
    }
    let outcomes = selection
        .fan_out(|h| async move { Ok(read(&h.agent, args.verify, since_ms, show).await?) })
        .await;
    let names = selection.names();
    let sinks = out.per_host_of(&names);
    if show {
        // Every host's records in one timeline; a line that is no record
        // stays after the one before it.
        let mut merged: Vec<(u64, usize, &Entry)> = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            let Ok(audit) = &o.result else { continue };
            let mut ts = 0;
            for e in &audit.entries {
                ts = e.record.as_ref().map_or(ts, |r| r.ts_ms);
                merged.push((ts, i, e));
            }
        }
        merged.sort_by_key(|(ts, _, _)| *ts);
        match global.output {
            Format::Json => {
                for (_, i, e) in &merged {
                    sinks[*i].record(&entry_json(e))?;
                }
            }
            Format::Table => {
                let mut rows = vec![
                    std::iter::once("HOST")
                        .chain(HEADER)
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ];
                rows.extend(
                    merged
                        .iter()
                        .map(|(_, i, e)| std::iter::once(names[*i].clone()).chain(row(e)).collect()),
                );
                out.text(&output::table(&rows))?;
            }
        }
    }
    let summary = Summary::of(&outcomes);
    if !args.verify {
        for (o, sink) in outcomes.iter().zip(&sinks) {
            if let Err(e) = &o.result {
                sink.err(&e.message)?;
            }
        }
        anyhow::ensure!(summary.all_ok(), "{summary}");
        out.err(&summary.to_string())?;
        return Ok(());
    }
    // --verify: each host's chain on its own.
    let mut broken = Vec::new();
    let mut rows = vec![["HOST", "RECORDS", "CHAIN"].map(String::from).to_vec()];
    for (o, sink) in outcomes.iter().zip(&sinks) {
        let name = o.host.name.clone();
        let (records, chain, doc) = match &o.result {
            Err(e) => {
                let word = if e.kind == Failure::Unreachable {
                    "unreachable"
                } else {
                    "failed"
                };
                (
                    "-".to_owned(),
                    format!("{word}: {}", e.message),
                    json!({"verified": false, "error": e.message, "unreachable": e.kind == Failure::Unreachable}),
                )
            }
            Ok(audit) => match &audit.verdict {
                Some(Ok(v)) => (
                    v.records.to_string(),
                    format!("ok ({})", verified_words(v, &audit.files)),
                    verified_json(v, &audit.files),
                ),
                Some(Err(e)) => {
                    broken.push(name.clone());
                    (
                        "-".to_owned(),
                        format!("broken at {}", broken_words(e)),
                        json!({"verified": false, "broken_at": e.seq, "file": e.place.file,
                               "line": e.place.line, "why": e.what}),
                    )
                }
                None => ("-".to_owned(), "-".to_owned(), json!({})),
            },
        };
        match global.output {
            Format::Json => sink.record(&doc)?,
            Format::Table => rows.push(vec![name, records, chain]),
        }
    }
    if global.output == Format::Table {
        out.text(&output::table(&rows))?;
    }
    if broken.is_empty() && summary.all_ok() {
        out.err(&format!("{summary}; every audit chain intact"))?;
        return Ok(());
    }
    let mut words = summary.to_string();
    if !broken.is_empty() {
        words.push_str(&format!(
            "; the audit chain is broken on {}: {}",
            broken.len(),
            broken.join(", ")
        ));
    }
    anyhow::bail!("{words}")
}

/// The table's columns (after HOST over a fleet).
const HEADER: [&str; 7] = ["SEQ", "TIME", "WHO", "ROLE", "ACTION", "SERVICE", "OUTCOME"];

/// Reads one agent's whole audit log (everything when verifying, else from
/// `since_ms`), checking the chain here when `verify`, and keeping the
/// lines to show when `show`.
async fn read(agent: &Agent, verify: bool, since_ms: Option<u64>, show: bool) -> Result<HostAudit, ConnectError> {
    // Verifying needs every record; the filter is then applied here.
    let req = ReadAuditRequest {
        since_ms: if verify { 0 } else { since_ms.unwrap_or(0) },
    };
    let mut stream = agent
        .call(|ch| async move { AuditClient::new(ch).read_audit(req).await })
        .await?;
    let mut verifier = Verifier::new();
    let mut broken = None;
    let mut audit = HostAudit {
        entries: Vec::new(),
        files: Vec::new(),
        verdict: None,
    };
    while let Some(batch) = agent.next(&mut stream).await? {
        for line in batch.lines {
            if audit.files.last() != Some(&line.file) {
                audit.files.push(line.file.clone());
            }
            if verify && broken.is_none() {
                let place = Place {
                    file: line.file.clone(),
                    line: line.line,
                };
                if let Err(e) = verifier.push(place, &line.text) {
                    broken = Some(e);
                }
            }
            if !show {
                continue;
            }
            let record = chain::open(&line.text).ok().map(|s| s.record);
            if let (Some(since), Some(r)) = (since_ms, &record)
                && r.ts_ms < since
            {
                continue;
            }
            audit.entries.push(Entry {
                file: line.file,
                line: line.line,
                record,
                text: line.text,
            });
        }
    }
    if verify {
        audit.verdict = Some(match broken {
            Some(e) => Err(e),
            None => Ok(verifier.finish()),
        });
    }
    Ok(audit)
}

/// One line under `--output json`.
fn entry_json(e: &Entry) -> serde_json::Value {
    match &e.record {
        Some(r) => json!({
            "seq": r.seq, "ts_ms": r.ts_ms, "who": r.who, "role": r.role, "cert": r.cert,
            "peer": r.peer, "action": r.action, "service": r.service, "detail": r.detail,
            "outcome": r.outcome, "file": e.file, "line": e.line,
        }),
        None => json!({ "unreadable": e.text, "file": e.file, "line": e.line }),
    }
}

/// One line as a table row.
fn row(e: &Entry) -> Vec<String> {
    let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
    match &e.record {
        Some(r) => vec![
            r.seq.to_string(),
            format_utc(r.ts_ms),
            r.who.clone(),
            dash(&r.role),
            r.action.clone(),
            dash(&r.service),
            if r.detail.is_empty() {
                r.outcome.clone()
            } else {
                format!("{} ({})", r.outcome, r.detail)
            },
        ],
        None => vec![
            "?".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("(not a record: {}:{})", e.file, e.line),
            "-".into(),
            "-".into(),
        ],
    }
}

/// `record 17 (audit.log:17): ...`.
fn broken_words(e: &Broken) -> String {
    let seq = e.seq.map(|s| format!("record {s}")).unwrap_or_else(|| "a line".into());
    format!("{seq} ({}): {}", e.place, e.what)
}

/// `120 records (seq 1..120) in 1 file(s), from the first record`.
fn verified_words(v: &Verified, files: &[String]) -> String {
    let start = if v.records == 0 {
        "the log is empty".to_owned()
    } else if v.from_genesis {
        "from the first record".to_owned()
    } else if v.legacy > 0 {
        format!("after {} older lines without a hash", v.legacy)
    } else {
        format!("from record {} (older files were rotated away)", v.first_seq)
    };
    format!(
        "{} records (seq {}..{}) in {} file(s), {start}",
        v.records,
        v.first_seq,
        v.last_seq,
        files.len()
    )
}

fn verified_json(v: &Verified, files: &[String]) -> serde_json::Value {
    json!({
        "verified": true, "records": v.records, "first_seq": v.first_seq, "last_seq": v.last_seq,
        "from_genesis": v.from_genesis, "legacy_lines": v.legacy, "files": files,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `--since`: a duration back from `now_ms`, or an RFC 3339 time.
fn parse_since(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    if let Ok(d) = s.parse::<berth_core::units::Duration>() {
        return Ok(now_ms.saturating_sub(d.as_millis()));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
        anyhow::anyhow!("--since {s:?}: expected a duration like 30m or 24h, or a time like 2026-12-01T10:00:00Z")
    })?;
    Ok(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

fn format_utc(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let t = t.replace_millisecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(
            parse_since("30m", 10_000_000).expect("duration"),
            10_000_000 - 1_800_000
        );
        assert_eq!(parse_since("2026-12-01T10:00:00Z", 0).expect("time"), 1_796_119_200_000);
        let e = parse_since("yesterday", 0).expect_err("words").to_string();
        assert!(e.contains("30m") && e.contains("2026-12-01T10:00:00Z"), "{e}");
        assert_eq!(format_utc(1_796_119_200_123), "2026-12-01T10:00:00Z");
    }
}

//! `berthctl audit [--since DURATION|TIME] [--verify]`: the agent's audit
//! log, read back and checked here (the agent does not vouch for itself).

use berth_core::audit::{self as chain, Place, Verifier};
use berth_proto::v1::ReadAuditRequest;
use berth_proto::v1::audit_client::AuditClient;
use serde_json::json;

use super::Global;
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

/// Runs `berthctl audit`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let since_ms = match &args.since {
        Some(s) => Some(parse_since(s, now_ms())?),
        None => None,
    };
    let agent = global.one_agent("audit").await?;
    // Verifying needs every record; the filter is then applied here.
    let req = ReadAuditRequest {
        since_ms: if args.verify { 0 } else { since_ms.unwrap_or(0) },
    };
    let mut stream = agent
        .call(|ch| async move { AuditClient::new(ch).read_audit(req).await })
        .await?;
    let show = !args.verify || since_ms.is_some();
    let mut verifier = Verifier::new();
    let mut broken = None;
    let mut rows = vec![
        ["SEQ", "TIME", "WHO", "ROLE", "ACTION", "SERVICE", "OUTCOME"]
            .map(String::from)
            .to_vec(),
    ];
    let mut files = Vec::<String>::new();
    while let Some(batch) = agent.next(&mut stream).await? {
        for line in batch.lines {
            if files.last() != Some(&line.file) {
                files.push(line.file.clone());
            }
            if args.verify && broken.is_none() {
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
            match (global.output, record) {
                (Format::Json, Some(r)) => out.record(&json!({
                    "seq": r.seq, "ts_ms": r.ts_ms, "who": r.who, "role": r.role, "cert": r.cert,
                    "peer": r.peer, "action": r.action, "service": r.service, "detail": r.detail,
                    "outcome": r.outcome, "file": line.file, "line": line.line,
                }))?,
                (Format::Json, None) => out.record(&json!({
                    "unreadable": line.text, "file": line.file, "line": line.line,
                }))?,
                (Format::Table, Some(r)) => rows.push(vec![
                    r.seq.to_string(),
                    format_utc(r.ts_ms),
                    r.who,
                    if r.role.is_empty() { "-".into() } else { r.role },
                    r.action,
                    if r.service.is_empty() { "-".into() } else { r.service },
                    if r.detail.is_empty() {
                        r.outcome
                    } else {
                        format!("{} ({})", r.outcome, r.detail)
                    },
                ]),
                (Format::Table, None) => rows.push(vec![
                    "?".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("(not a record: {}:{})", line.file, line.line),
                    "-".into(),
                    "-".into(),
                ]),
            }
        }
    }
    if show && global.output == Format::Table {
        out.text(&output::table(&rows))?;
    }
    if !args.verify {
        return Ok(());
    }
    if let Some(e) = broken {
        let seq = e.seq.map(|s| format!("record {s}")).unwrap_or_else(|| "a line".into());
        anyhow::bail!("the audit chain is broken at {seq} ({}): {}", e.place, e.what);
    }
    let v = verifier.finish();
    let start = if v.records == 0 {
        "the log is empty".to_owned()
    } else if v.from_genesis {
        "from the first record".to_owned()
    } else if v.legacy > 0 {
        format!("after {} older lines without a hash", v.legacy)
    } else {
        format!("from record {} (older files were rotated away)", v.first_seq)
    };
    match global.output {
        Format::Json => out.record(&json!({
            "verified": true, "records": v.records, "first_seq": v.first_seq, "last_seq": v.last_seq,
            "from_genesis": v.from_genesis, "legacy_lines": v.legacy, "files": files,
        }))?,
        Format::Table => out.err(&format!(
            "audit chain intact: {} records (seq {}..{}) in {} file(s), {start}",
            v.records,
            v.first_seq,
            v.last_seq,
            files.len()
        ))?,
    }
    Ok(())
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

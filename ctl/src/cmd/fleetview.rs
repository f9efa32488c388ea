//! Printing a read done on many hosts ([`crate::fleet::fan_out`]): one
//! table with a HOST column, or one JSON document with a result or an
//! error per host; then the summary line. Also the agent-certificate check
//! every fleet view makes (expiring within [`CERT_WARN_DAYS`]).
//!
//! Output: the table on stdout, notes and the summary on stderr. When any
//! host failed the summary is the command's error, so berthctl exits
//! non-zero with it as its last line.

use serde_json::{Value, json};

use crate::fleet::{Outcome, Summary};
use crate::output::{self, Format, Sink};

/// Fleet views flag agent certificates that expire within this many days.
pub const CERT_WARN_DAYS: u64 = 30;

/// How one command's per-host result is shown.
pub struct View<'a, T> {
    /// Column names after HOST.
    pub header: &'a [&'a str],
    /// A host's rows (without the HOST cell).
    pub rows: &'a dyn Fn(&T) -> Vec<Vec<String>>,
    /// A host's result under `--output json`.
    pub json: &'a dyn Fn(&T) -> Value,
    /// Lines about a host printed under the table (without its name).
    pub notes: &'a dyn Fn(&T) -> Vec<String>,
    /// Printed instead of the table when no host has a row.
    pub empty: &'a str,
}

/// Prints `outcomes` as `format`; an error carrying the summary when any
/// host failed.
pub fn print<T>(out: &Sink, format: Format, outcomes: &[Outcome<T>], view: &View<'_, T>) -> anyhow::Result<()> {
    let summary = Summary::of(outcomes);
    match format {
        Format::Json => {
            let hosts: Vec<Value> = outcomes
                .iter()
                .map(|o| match &o.result {
                    Ok(t) => json!({
                        "host": o.host.name,
                        "address": o.host.target().to_string(),
                        "result": (view.json)(t),
                    }),
                    Err(e) => json!({
                        "host": o.host.name,
                        "address": o.host.target().to_string(),
                        "error": e.message,
                        "unreachable": e.kind == crate::fleet::Failure::Unreachable,
                    }),
                })
                .collect();
            out.document(&json!({ "hosts": hosts, "summary": summary.to_json() }))?;
        }
        Format::Table => {
            let mut rows = vec![
                std::iter::once("HOST")
                    .chain(view.header.iter().copied())
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            let mut notes = Vec::new();
            for o in outcomes {
                let Ok(t) = &o.result else { continue };
                for row in (view.rows)(t) {
                    rows.push(std::iter::once(o.host.name.clone()).chain(row).collect());
                }
                notes.extend((view.notes)(t).into_iter().map(|n| format!("{}: {n}", o.host.name)));
            }
            if rows.len() > 1 {
                out.text(&output::table(&rows))?;
            } else if summary.ok > 0 {
                out.out(view.empty)?;
            }
            for n in notes {
                out.err(&n)?;
            }
        }
    }
    if summary.all_ok() {
        out.err(&summary.to_string())?;
        Ok(())
    } else {
        Err(anyhow::anyhow!("{summary}"))
    }
}

/// The CERT cell for an agent certificate valid until `not_after_ms`
/// (`2029-03-05 (825d)`, `!` when it expires within [`CERT_WARN_DAYS`]),
/// and a warning when it does. `-` when the agent did not say.
pub fn cert_expiry(not_after_ms: u64, now_ms: u64) -> (String, Option<String>) {
    if not_after_ms == 0 {
        return ("-".into(), None);
    }
    let date = output::utc(not_after_ms);
    let day = 86_400_000;
    if not_after_ms <= now_ms {
        return (
            format!("{date} (EXPIRED)"),
            Some(format!(
                "the agent certificate expired on {date}; reissue it with `berthctl certs issue agent`"
            )),
        );
    }
    let days = (not_after_ms - now_ms) / day;
    let cell = format!("{} ({days}d)", &date[..10]);
    if days < CERT_WARN_DAYS {
        (
            format!("{cell} !"),
            Some(format!(
                "the agent certificate expires in {days} days ({date}); reissue it with `berthctl certs issue agent`"
            )),
        )
    } else {
        (cell, None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::client::{Agent, TlsFiles};
    use crate::fleet::{HostError, SelectedHost};
    use crate::output::console::capture::console;

    fn host(name: &str) -> SelectedHost {
        let dir = PathBuf::from("/tls");
        SelectedHost {
            name: name.into(),
            labels: BTreeMap::new(),
            agent: Arc::new(Agent::new(
                "10.0.0.1:7443".parse().expect("target"),
                TlsFiles {
                    ca: dir.join("ca.pem"),
                    cert: dir.join("a.pem"),
                    key: dir.join("a-key.pem"),
                },
            )),
        }
    }

    fn outcomes() -> Vec<Outcome<Vec<&'static str>>> {
        vec![
            Outcome {
                host: host("web-1"),
                result: Ok(vec!["api", "worker"]),
            },
            Outcome {
                host: host("web-2"),
                result: Err(HostError::timed_out(std::time::Duration::from_secs(5))),
            },
        ]
    }

    fn view() -> View<'static, Vec<&'static str>> {
        View {
            header: &["NAME"],
            rows: &|v| v.iter().map(|s| vec![(*s).to_owned()]).collect(),
            json: &|v| json!(v),
            notes: &|v| vec![format!("{} services", v.len())],
            empty: "no services",
        }
    }

    #[test]
    fn a_table_with_a_host_column_then_the_summary_as_the_error() {
        let (c, out, err) = console(false);
        let e = print(&Sink::new(c), Format::Table, &outcomes(), &view()).expect_err("web-2 failed");
        assert_eq!(out.written(), "HOST   NAME\nweb-1  api\nweb-1  worker\n");
        assert_eq!(err.written(), "web-1: 2 services\n");
        assert_eq!(e.to_string(), "1 host ok, 1 unreachable: web-2 (timed out after 5s)");
    }

    #[test]
    fn one_json_document_with_a_result_or_an_error_per_host() {
        let (c, out, _) = console(false);
        print(&Sink::new(c), Format::Json, &outcomes(), &view()).expect_err("web-2 failed");
        let doc: Value = serde_json::from_str(&out.written()).expect("one document");
        assert_eq!(doc["hosts"][0]["result"], json!(["api", "worker"]));
        assert_eq!(doc["hosts"][1]["error"], "timed out after 5s");
        assert_eq!(doc["hosts"][1]["unreachable"], true);
        assert_eq!(doc["summary"], json!({"ok": 1, "unreachable": 1, "failed": 0}));
    }

    #[test]
    fn certificates_expiring_within_30_days_are_flagged() {
        let day = 86_400_000;
        let now = 1_796_123_456_000;
        assert_eq!(cert_expiry(0, now), ("-".into(), None));
        let (cell, warn) = cert_expiry(now + 400 * day, now);
        assert_eq!((cell.as_str(), warn), ("2028-01-05 (400d)", None));
        let (cell, warn) = cert_expiry(now + 12 * day + 5, now);
        assert_eq!(cell, "2026-12-13 (12d) !");
        assert!(warn.expect("warned").contains("expires in 12 days"));
        let (cell, warn) = cert_expiry(now - 1, now);
        assert!(cell.ends_with("(EXPIRED)") && warn.is_some(), "{cell}");
    }
}

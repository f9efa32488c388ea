//! Host lists that come from outside the inventory: a fleet's discovery
//! command (`discover = ["aws", "ec2", ...]`) and `--hosts-from FILE|-`.
//!
//! Both give hosts in one of two forms: one host per line (`ADDRESS`,
//! optionally followed by `name=NAME` and `KEY=VALUE` labels, `#` comments
//! and blank lines ignored), or JSON: an array of objects with `address` and
//! optional `name` and `labels` (an object of strings), or an object with
//! such an array under `hosts`. [`parse`] is pure; [`discover`] runs the
//! command (no shell, a deadline, its stderr in the error).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::inventory::{Host, check_labels, parse_address};

/// Parses a host list; `origin` names where it came from in messages
/// (`discover command of fleet staging`, `hosts.txt`).
pub fn parse(text: &str, origin: &str, default_port: Option<u16>) -> Result<Vec<Host>, String> {
    let trimmed = text.trim_start();
    let entries = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        parse_json(trimmed).map_err(|e| format!("{origin}: not a JSON host list: {e}"))?
    } else {
        parse_lines(text).map_err(|(line, e)| format!("{origin}:{line}: {e}"))?
    };
    let mut hosts = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let n = i + 1;
        let target = parse_address(&entry.address, default_port).map_err(|e| format!("{origin}: host {n}: {e}"))?;
        check_labels(&entry.labels).map_err(|e| format!("{origin}: host {n}: {e}"))?;
        if hosts.iter().any(|h: &Host| h.target == target) {
            continue;
        }
        hosts.push(Host {
            name: entry.name.unwrap_or_else(|| target.to_string()),
            target,
            labels: entry.labels,
            tls_dir: None,
            cert: None,
        });
    }
    Ok(hosts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonList {
    Bare(Vec<Entry>),
    Wrapped { hosts: Vec<Entry> },
}

fn parse_json(text: &str) -> Result<Vec<Entry>, serde_json::Error> {
    Ok(match serde_json::from_str::<JsonList>(text)? {
        JsonList::Bare(v) | JsonList::Wrapped { hosts: v } => v,
    })
}

fn parse_lines(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(address) = words.next() else { continue };
        let mut entry = Entry {
            address: address.to_owned(),
            name: None,
            labels: BTreeMap::new(),
        };
        for word in words {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| (i + 1, format!("expected KEY=VALUE after the address, got {word:?}")))?;
            if k == "name" {
                entry.name = Some(v.to_owned());
            } else {
                entry.labels.insert(k.to_owned(), v.to_owned());
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// Runs a discovery command and parses what it prints. `fleet` names it in
/// messages.
pub async fn discover(
    fleet: &str,
    command: &[String],
    timeout: Duration,
    default_port: Option<u16>,
) -> Result<Vec<Host>, String> {
    let shown = command.join(" ");
    let Some((program, args)) = command.split_first() else {
        return Err(format!("fleet {fleet}: its discover command is empty"));
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| {
            format!(
                "fleet {fleet}: the discover command `{shown}` did not finish within {}s",
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("fleet {fleet}: cannot run the discover command `{shown}`: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fleet {fleet}: the discover command `{shown}` failed ({}){}",
            out.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.join(" | "))
            }
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let hosts = parse(&text, &format!("fleet {fleet}: output of `{shown}`"), default_port)?;
    if hosts.is_empty() {
        return Err(format!(
            "fleet {fleet}: the discover command `{shown}` printed no hosts"
        ));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_a_name_and_labels() {
        let hosts = parse(
            "# comment\n10.0.0.5\n10.0.0.6:9000 name=web-2 role=web\n\n10.0.0.5\n",
            "t",
            None,
        )
        .expect("ok");
        assert_eq!(hosts.len(), 2, "duplicates dropped");
        assert_eq!(hosts[0].name, "10.0.0.5:7443");
        assert_eq!(hosts[1].name, "web-2");
        assert_eq!(hosts[1].target.port, 9000);
        assert_eq!(hosts[1].labels.get("role").map(String::as_str), Some("web"));
        let e = parse("h1 role\n", "t", None).expect_err("bad");
        assert!(e.starts_with("t:1:"), "{e}");
    }

    #[test]
    fn json_lists_bare_or_wrapped() {
        let bare = parse(
            r#"[{"address": "h1", "labels": {"role": "web"}}, {"address": "h2", "name": "b"}]"#,
            "t",
            Some(9),
        )
        .expect("bare");
        assert_eq!(bare[0].target.port, 9);
        assert_eq!(bare[1].name, "b");
        let wrapped = parse(r#"{"hosts": [{"address": "h3:1"}]}"#, "t", None).expect("wrapped");
        assert_eq!(wrapped[0].target.port, 1);
        assert!(
            parse(r#"[{"adress": "x"}]"#, "t", None)
                .expect_err("unknown")
                .contains("not a JSON host list")
        );
        assert!(parse(r#"[{"address": "x", "labels": {"name": "y"}}]"#, "t", None).is_err());
    }

    #[tokio::test]
    async fn discovery_runs_the_command_and_reports_failures() {
        let ok = discover(
            "f",
            &["sh".into(), "-c".into(), "echo h1; echo h2 role=db".into()],
            Duration::from_secs(10),
            None,
        )
        .await
        .expect("ok");
        assert_eq!(ok.len(), 2);
        let e = discover(
            "f",
            &["sh".into(), "-c".into(), "echo boom >&2; exit 3".into()],
            Duration::from_secs(10),
            None,
        )
        .await
        .expect_err("fails");
        assert!(e.contains("failed") && e.contains("boom"), "{e}");
        let e = discover("f", &["sleep".into(), "5".into()], Duration::from_millis(200), None)
            .await
            .expect_err("slow");
        assert!(e.contains("did not finish"), "{e}");
        let e = discover("f", &["true".into()], Duration::from_secs(10), None)
            .await
            .expect_err("none");
        assert!(e.contains("printed no hosts"), "{e}");
    }
}

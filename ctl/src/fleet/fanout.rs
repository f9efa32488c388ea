//! Doing one thing on many hosts at once.
//!
//! Owns [`fan_out`]: an async closure run once per host, at most `parallel`
//! at a time, each under its own deadline (dial included), so a dead, slow
//! or refusing host never stalls the others. Results come back in the
//! hosts' order as [`Outcome`]s, each error a [`HostError`] in berthctl's
//! usual words and sorted into unreachable (never reached, or a deadline
//! passed) or failed (the agent answered with an error). [`Summary`] is
//! the line a fleet command ends with (`7 hosts ok, 1 unreachable: web-4
//! (timed out after 5s)`).
//!
//! Runs on the caller's task (no spawning), so it works on berthctl's
//! current-thread runtime; a host whose deadline passes has its call
//! dropped, which closes its connection.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::stream::{self, StreamExt as _};

use super::selection::{SelectedHost, Selection};
use crate::client::ConnectError;

/// Whether a host was reached at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Never answered: nothing listens, no answer before the deadline, or
    /// a TLS refusal.
    Unreachable,
    /// Answered with an error (not found, permission denied, refused...).
    Failed,
}

/// Why one host's part failed, without the host's name in front (views
/// name the host themselves).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    /// Unreachable or failed.
    pub kind: Failure,
    /// What happened and what to do, e.g. `timed out after 5s`.
    pub message: String,
}

impl HostError {
    /// The agent answered, with this error.
    pub fn failed(message: impl Into<String>) -> Self {
        HostError {
            kind: Failure::Failed,
            message: message.into(),
        }
    }

    /// The agent could not be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        HostError {
            kind: Failure::Unreachable,
            message: message.into(),
        }
    }

    /// The per-host deadline passed.
    pub fn timed_out(after: Duration) -> Self {
        HostError::unreachable(format!("timed out after {}", show_duration(after)))
    }
}

impl From<ConnectError> for HostError {
    fn from(e: ConnectError) -> Self {
        HostError {
            kind: if e.is_unreachable() {
                Failure::Unreachable
            } else {
                Failure::Failed
            },
            message: e.message().to_owned(),
        }
    }
}

/// One host's result.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The host.
    pub host: SelectedHost,
    /// What its part gave, or why it failed.
    pub result: Result<T, HostError>,
}

/// Runs `work` for every host, at most `parallel` at once, each bounded by
/// `deadline` (None: no deadline, for work that takes as long as it
/// takes, such as a health-gated deploy). `work` gets a clone of the host
/// (its `agent` shares the connection); a [`ConnectError`] converts with
/// `?`. Outcomes are in the order of `hosts`.
pub async fn fan_out<T, F, Fut>(
    hosts: &[SelectedHost],
    parallel: usize,
    deadline: Option<Duration>,
    work: F,
) -> Vec<Outcome<T>>
where
    F: Fn(SelectedHost) -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    let work = &work;
    let mut done: Vec<(usize, Outcome<T>)> = stream::iter(hosts.iter().cloned().enumerate())
        .map(|(i, host)| async move {
            let fut = work(host.clone());
            let result = match deadline {
                Some(d) => tokio::time::timeout(d, fut)
                    .await
                    .unwrap_or_else(|_| Err(HostError::timed_out(d))),
                None => fut.await,
            };
            (i, Outcome { host, result })
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, o)| o).collect()
}

impl Selection {
    /// [`fan_out`] over this selection's hosts with its `--parallel` and
    /// `--timeout`.
    pub async fn fan_out<T, F, Fut>(&self, work: F) -> Vec<Outcome<T>>
    where
        F: Fn(SelectedHost) -> Fut,
        Fut: Future<Output = Result<T, HostError>>,
    {
        fan_out(&self.hosts, self.parallel, Some(self.timeout), work).await
    }
}

/// How a fan-out went, for the line that ends a fleet command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Hosts that answered.
    pub ok: usize,
    /// Hosts never reached, with why.
    pub unreachable: Vec<(String, String)>,
    /// Hosts that answered with an error, with it.
    pub failed: Vec<(String, String)>,
}

/// Most hosts named per kind in a summary line; the rest are counted.
const NAMED: usize = 10;

impl Summary {
    /// Counts `outcomes`.
    pub fn of<T>(outcomes: &[Outcome<T>]) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            match &o.result {
                Ok(_) => s.ok += 1,
                Err(e) => {
                    let entry = (o.host.name.clone(), e.message.clone());
                    match e.kind {
                        Failure::Unreachable => s.unreachable.push(entry),
                        Failure::Failed => s.failed.push(entry),
                    }
                }
            }
        }
        s
    }

    /// True when every host answered.
    pub fn all_ok(&self) -> bool {
        self.unreachable.is_empty() && self.failed.is_empty()
    }

    /// As JSON: `{"ok": 7, "unreachable": 1, "failed": 0}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok,
            "unreachable": self.unreachable.len(),
            "failed": self.failed.len(),
        })
    }
}

impl fmt::Display for Summary {
    /// `7 hosts ok, 1 unreachable: web-4 (timed out after 5s)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} host{} ok", self.ok, if self.ok == 1 { "" } else { "s" })?;
        for (word, hosts) in [("unreachable", &self.unreachable), ("failed", &self.failed)] {
            if hosts.is_empty() {
                continue;
            }
            let named: Vec<String> = hosts
                .iter()
                .take(NAMED)
                .map(|(host, why)| format!("{host} ({why})"))
                .collect();
            write!(f, ", {} {word}: {}", hosts.len(), named.join(", "))?;
            if hosts.len() > NAMED {
                write!(f, " and {} more", hosts.len() - NAMED)?;
            }
        }
        Ok(())
    }
}

/// `5s`, `1m30s`, `500ms`.
pub fn show_duration(d: Duration) -> String {
    berth_core::units::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::client::{Agent, TlsFiles};

    fn hosts(n: usize) -> Vec<SelectedHost> {
        let dir = PathBuf::from("/nonexistent-tls");
        (0..n)
            .map(|i| SelectedHost {
                name: format!("h{i}"),
                labels: BTreeMap::new(),
                agent: Arc::new(Agent::new(
                    format!("10.0.0.{i}:7443").parse().expect("target"),
                    TlsFiles {
                        ca: dir.join("ca.pem"),
                        cert: dir.join("me.pem"),
                        key: dir.join("me-key.pem"),
                    },
                )),
            })
            .collect()
    }

    #[tokio::test]
    async fn results_keep_host_order_and_a_slow_host_is_cut_off_at_its_deadline() {
        let hs = hosts(5);
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let out = fan_out(&hs, 2, Some(Duration::from_millis(500)), |h| {
            let (running, most) = (&running, &most);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // h1 hangs; the others answer at different speeds.
                let wait = if h.name == "h1" {
                    3_600_000
                } else {
                    50 - 10 * h.name[1..].parse::<u64>().unwrap_or(0)
                };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if h.name == "h3" {
                    return Err(HostError::failed("not found: no service \"api\""));
                }
                Ok(h.name.clone())
            }
        })
        .await;
        let names: Vec<&str> = out.iter().map(|o| o.host.name.as_str()).collect();
        assert_eq!(names, ["h0", "h1", "h2", "h3", "h4"]);
        assert_eq!(out[0].result, Ok("h0".to_owned()));
        assert_eq!(out[1].result, Err(HostError::timed_out(Duration::from_millis(500))));
        assert!(most.load(Ordering::SeqCst) <= 2, "at most --parallel at once");
        let summary = Summary::of(&out);
        assert!(!summary.all_ok());
        assert_eq!(
            summary.to_string(),
            "3 hosts ok, 1 unreachable: h1 (timed out after 500ms), 1 failed: h3 (not found: no service \"api\")"
        );
        assert_eq!(
            summary.to_json(),
            serde_json::json!({"ok": 3, "unreachable": 1, "failed": 1})
        );
    }

    #[tokio::test]
    async fn a_dial_failure_is_a_failed_host_in_words() {
        let hs = hosts(1);
        let out = fan_out(&hs, 64, Some(Duration::from_secs(5)), |h| async move {
            h.agent
                .call(|ch| async move {
                    berth_proto::v1::host_client::HostClient::new(ch)
                        .get_info(berth_proto::v1::GetInfoRequest {})
                        .await
                })
                .await?;
            Ok(())
        })
        .await;
        let e = out[0].result.clone().expect_err("no TLS files");
        assert_eq!(e.kind, Failure::Failed);
        assert!(e.message.contains("cannot read /nonexistent-tls/ca.pem"), "{e}");
        assert_eq!(Summary::of(&out).to_string(), format!("0 hosts ok, 1 failed: h0 ({e})"));
    }

    #[test]
    fn long_lists_name_the_first_hosts_and_count_the_rest() {
        let s = Summary {
            ok: 1,
            unreachable: (0..12).map(|i| (format!("w{i}"), "down".to_owned())).collect(),
            failed: Vec::new(),
        };
        let text = s.to_string();
        assert!(text.starts_with("1 host ok, 12 unreachable: w0 (down), "), "{text}");
        assert!(text.ends_with("w9 (down) and 2 more"), "{text}");
    }
}

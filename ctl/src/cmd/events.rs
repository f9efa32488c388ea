//! `berthctl events [SERVICE...]`: what the agent does and sees, from its
//! recorded history (`--since`) and live.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::ControlFlow;

use berth_core::units;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{Event, WatchEventsRequest};
use serde_json::json;

use super::Global;
use super::multiplex::{self, Happening};
use crate::fleet::fanout::{Summary, show_duration};
use crate::output::{self, Format, Sink, WriteError};

/// Follow the agent's events (deploys, restarts, crashes, OOM kills, drift
/// repairs) until interrupted.
///
/// With --since, first the events the agent recorded in that time (it keeps
/// the last 10,000, across restarts), then the live ones; --no-follow stops
/// after the recorded ones (all of them when --since is not given).
///
/// Over a selection (--fleet, --hosts-from, several --host) every host's
/// events in one stream, each line prefixed with its host (NDJSON with a
/// "host" field under --output json). A host that drops out is reported,
/// tried again (1s, doubling to 30s) and rejoins, replaying what it recorded
/// while it was away. With --no-follow, the hosts' recorded events merged in
/// time order, then a summary; the exit is non-zero when a host failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these services (default: all, plus host events).
    services: Vec<String>,
    /// First show the recorded events of this long ago until now, e.g. 30m,
    /// 1h, 24h (measured by this machine's clock).
    #[arg(long, value_name = "DURATION")]
    since: Option<units::Duration>,
    /// Stop after the recorded events instead of following.
    #[arg(long)]
    no_follow: bool,
}

impl Args {
    /// The request's first form; `after_seq` is for a rejoin.
    fn request(&self, now_ms: u64, after_seq: u64) -> WatchEventsRequest {
        let since_ms = match self.since {
            Some(d) => now_ms.saturating_sub(d.as_millis()).max(1),
            // Everything recorded, when only the record is wanted.
            None if self.no_follow => 1,
            None => 0,
        };
        WatchEventsRequest {
            services: self.services.clone(),
            // A rejoin asks for what came after the last event it saw.
            since_ms: if after_seq > 0 { 0 } else { since_ms },
            after_seq,
            no_follow: self.no_follow,
        }
    }

    /// The request that opens the stream again: after the last event seen,
    /// or when none was, everything since it was first opened at
    /// `opened_ms`, so the gap is neither lost nor repeated.
    fn again(&self, after_seq: u64, opened_ms: u64) -> WatchEventsRequest {
        if after_seq > 0 {
            return self.request(opened_ms, after_seq);
        }
        WatchEventsRequest {
            since_ms: opened_ms.max(1),
            ..self.request(opened_ms, 0)
        }
    }
}

/// Runs `berthctl events`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    let now = output::now_ms();
    if !selection.many {
        let agent = &selection.hosts[0].agent;
        let last = std::cell::Cell::new(0u64);
        let args = &args;
        return multiplex::follow_one(
            agent,
            |attempt| {
                let req = if attempt == 0 {
                    args.request(now, 0)
                } else {
                    args.again(last.get(), now)
                };
                agent.call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
            },
            |happening| match happening {
                Happening::Message(e) => {
                    if e.seq > 0 {
                        last.set(e.seq);
                    }
                    show(out, global.output, &e)?;
                    Ok(ControlFlow::Continue(()))
                }
                Happening::Reopened | Happening::Rejoined | Happening::Down { .. } => Ok(ControlFlow::Continue(())),
            },
        )
        .await;
    }
    let names = selection.names();
    let sinks = out.per_host_of(&names);
    if args.no_follow {
        let args = &args;
        let outcomes = selection
            .fan_out(|h| async move {
                let req = args.request(now, 0);
                let mut stream = h
                    .agent
                    .call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
                    .await?;
                let mut events = Vec::new();
                while let Some(e) = h.agent.next(&mut stream).await? {
                    events.push(e);
                }
                Ok(events)
            })
            .await;
        let mut merged: Vec<(usize, &Event)> = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            match &o.result {
                Ok(events) => merged.extend(events.iter().map(|e| (i, e))),
                Err(e) => sinks[i].err(&e.message)?,
            }
        }
        merged.sort_by_key(|(_, e)| e.timestamp_ms);
        for (i, e) in merged {
            show(&sinks[i], global.output, e)?;
        }
        let summary = Summary::of(&outcomes);
        anyhow::ensure!(summary.all_ok(), "{summary}");
        out.err(&summary.to_string())?;
        return Ok(());
    }
    // The last event seen from each host, so a rejoin replays the gap.
    let last: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    let (args, last) = (&args, &last);
    multiplex::follow(
        &selection.hosts,
        selection.timeout,
        |h, attempt| {
            let req = if attempt == 0 {
                args.request(now, 0)
            } else {
                args.again(last.borrow().get(&h.name).copied().unwrap_or(0), now)
            };
            async move {
                Ok(h.agent
                    .call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
                    .await?)
            }
        },
        |i, happening| match happening {
            Happening::Message(e) => {
                if e.seq > 0 {
                    last.borrow_mut().insert(names[i].clone(), e.seq);
                }
                show(&sinks[i], global.output, &e)
            }
            Happening::Down { why, retry } => {
                sinks[i].err(&format!("dropped out: {why}; trying again in {}", show_duration(retry)))
            }
            Happening::Rejoined => sinks[i].err("rejoined (with the events it recorded while it was away)"),
            Happening::Reopened => Ok(()),
        },
    )
    .await?;
    Ok(())
}

/// Prints one event: a line (UTC time of day, severity, kind, service,
/// message) or one JSON record.
pub fn show(out: &Sink, format: Format, e: &Event) -> Result<(), WriteError> {
    match format {
        Format::Json => out.record(
            &json!({"timestamp_ms": e.timestamp_ms, "kind": e.kind, "service": e.service,
                       "revision": e.revision, "severity": e.severity, "message": e.message}),
        ),
        Format::Table => {
            let secs = e.timestamp_ms / 1000;
            let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
            out.out(&format!(
                "{h:02}:{m:02}:{s:02}Z {:<7} {:<16} {:<12} {}",
                e.severity, e.kind, e.service, e.message
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::console::capture::console;

    fn event() -> Event {
        Event {
            timestamp_ms: 3_723_000,
            kind: "deployed".into(),
            service: "web".into(),
            revision: 4,
            message: "revision 4 is healthy".into(),
            severity: "info".into(),
            seq: 9,
        }
    }

    fn args(since: Option<&str>, no_follow: bool) -> Args {
        Args {
            services: vec!["web".into()],
            since: since.map(|s| s.parse().expect("duration")),
            no_follow,
        }
    }

    #[test]
    fn since_asks_for_the_record_and_a_rejoin_for_the_gap() {
        let now = 10_000_000;
        let req = args(Some("1h"), false).request(now, 0);
        assert_eq!(
            (req.since_ms, req.after_seq, req.no_follow),
            (now - 3_600_000, 0, false)
        );
        let req = args(Some("1h"), false).request(now, 42);
        assert_eq!((req.since_ms, req.after_seq), (0, 42));
        let req = args(Some("1h"), false).again(42, now);
        assert_eq!((req.since_ms, req.after_seq), (0, 42));
        let req = args(None, false).again(0, now);
        assert_eq!(
            (req.since_ms, req.after_seq),
            (now, 0),
            "nothing seen: all since it opened"
        );
        assert_eq!(args(None, false).request(now, 0).since_ms, 0, "live only");
        let req = args(None, true).request(now, 0);
        assert_eq!((req.since_ms, req.no_follow), (1, true), "the whole record");
    }

    #[test]
    fn an_event_is_a_line_or_a_record() {
        let (c, out, _) = console(false);
        show(&Sink::new(c.clone()), Format::Table, &event()).expect("line");
        assert_eq!(
            out.written(),
            "01:02:03Z info    deployed         web          revision 4 is healthy\n"
        );
        let (c, out, _) = console(false);
        show(&Sink::new(c), Format::Json, &event()).expect("record");
        let doc: serde_json::Value = serde_json::from_str(out.written().trim_end()).expect("json");
        assert_eq!(
            (doc["kind"].as_str(), doc["revision"].as_u64()),
            (Some("deployed"), Some(4))
        );
    }

    #[test]
    fn many_hosts_events_are_told_apart() {
        let (c, out, _) = console(false);
        let sinks = Sink::per_host(&c, &["web-1", "db"]);
        show(&sinks[1], Format::Table, &event()).expect("line");
        show(&sinks[0], Format::Json, &event()).expect("record");
        let text = out.written();
        let (line, record) = text.split_once('\n').expect("two lines");
        assert!(line.starts_with("db    | 01:02:03Z info    deployed"), "{line}");
        let doc: serde_json::Value = serde_json::from_str(record.trim_end()).expect("json");
        assert_eq!(doc["host"], "web-1");
    }
}

//! `berthctl events [SERVICE...]`: what the agent does and sees, live.

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{Event, WatchEventsRequest};
use serde_json::json;

use super::Global;
use super::multiplex::{self, Happening};
use crate::fleet::fanout::show_duration;
use crate::output::{Format, Sink, WriteError};

/// Follow the agent's events (deploys, restarts, crashes, OOM kills, drift
/// repairs) until interrupted.
///
/// Over a selection (--fleet, --hosts-from, several --host) every host's
/// events in one stream, each line prefixed with its host (NDJSON with a
/// "host" field under --output json). A host that drops out is reported,
/// tried again (1s, doubling to 30s) and rejoins.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these services (default: all, plus host events).
    services: Vec<String>,
}

/// Runs `berthctl events`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    if !selection.many {
        let agent = &selection.hosts[0].agent;
        let req = WatchEventsRequest {
            services: args.services,
        };
        let mut stream = agent
            .call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
            .await?;
        while let Some(e) = agent.next(&mut stream).await? {
            show(out, global.output, &e)?;
        }
        return Ok(());
    }
    let sinks = out.per_host_of(&selection.names());
    let services = &args.services;
    multiplex::follow(
        &selection.hosts,
        selection.timeout,
        |h, _attempt| {
            let req = WatchEventsRequest {
                services: services.clone(),
            };
            async move {
                Ok(h.agent
                    .call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
                    .await?)
            }
        },
        |i, happening| match happening {
            Happening::Message(e) => show(&sinks[i], global.output, &e),
            Happening::Down { why, retry } => {
                sinks[i].err(&format!("dropped out: {why}; trying again in {}", show_duration(retry)))
            }
            Happening::Rejoined => sinks[i].err("rejoined (events from while it was away are not replayed)"),
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
        }
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

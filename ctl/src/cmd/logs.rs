//! `berthctl logs SERVICE [-f] [--tail N]`.

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{LogLine, LogsRequest};

use std::ops::ControlFlow;
use std::sync::Mutex;

use super::Global;
use super::multiplex::{self, Happening};
use crate::fleet::{self, HostError, SelectedHost, Summary, fan_out};
use crate::output::{Format, Sink, Stream, WriteError};

/// Print a service's container output (stdout to stdout, stderr to stderr).
///
/// Reads the running container of the active revision, or the newest one
/// if none runs (so a crashed service's last words are there).
///
/// Over a selection (--fleet, --hosts-from, several --host) every line is
/// prefixed with its host. With -f a host that drops out is reported,
/// tried again (1s, doubling to 30s) and rejoins where it left off. With
/// --output json each line is a JSON record with its host.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// Keep following new output until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Start with the last N lines (0 = all).
    #[arg(long, default_value_t = 100)]
    tail: u32,
}

/// Lines asked for again when a host rejoins, to find where we left off.
const REJOIN_TAIL: u32 = 1000;

/// Said on stderr when a rejoin could not find where the log left off.
const GAP: &str = "more lines came while reconnecting than berthctl asks for again; some may be missing here";

/// Runs `berthctl logs`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    if !selection.many {
        let agent = &selection.hosts[0].agent;
        let resume = std::cell::RefCell::new(Resume::default());
        let args = &args;
        return multiplex::follow_one(
            agent,
            |attempt| {
                let req = LogsRequest {
                    service: args.service.clone(),
                    follow: args.follow,
                    tail: if attempt > 0 { REJOIN_TAIL } else { args.tail },
                };
                agent.call(|ch| async move { ServicesClient::new(ch).logs(req).await })
            },
            |happening| match happening {
                Happening::Message(line) => {
                    let mut r = resume.borrow_mut();
                    for line in r.take(line) {
                        show(out, &line)?;
                    }
                    if r.take_gap() {
                        out.err(GAP)?;
                    }
                    Ok(ControlFlow::Continue(()))
                }
                Happening::Reopened | Happening::Rejoined => {
                    resume.borrow_mut().rejoined();
                    Ok(ControlFlow::Continue(()))
                }
                Happening::Down { .. } => Ok(ControlFlow::Continue(())),
            },
        )
        .await;
    }
    let sinks = out.per_host_of(&selection.names());
    let service = &args.service;
    if !args.follow {
        // Each host's lines together, hosts in order.
        let deadline = selection.timeout;
        let outcomes = fan_out(&selection.hosts, selection.parallel, None, |h| async move {
            let req = LogsRequest {
                service: service.clone(),
                follow: false,
                tail: args.tail,
            };
            let mut stream = tokio::time::timeout(
                deadline,
                h.agent
                    .call(|ch| async move { ServicesClient::new(ch).logs(req).await }),
            )
            .await
            .map_err(|_| HostError::timed_out(deadline))??;
            let mut lines = Vec::new();
            while let Some(line) = h.agent.next(&mut stream).await? {
                lines.push(line);
            }
            Ok(lines)
        })
        .await;
        for (o, sink) in outcomes.iter().zip(&sinks) {
            for line in o.result.iter().flatten() {
                show_in(sink, global.output, line)?;
            }
        }
        let summary = Summary::of(&outcomes);
        if !summary.all_ok() {
            anyhow::bail!("{summary}");
        }
        return Ok(());
    }
    let resume: Mutex<Vec<Resume>> = Mutex::new((0..selection.hosts.len()).map(|_| Resume::default()).collect());
    let resume = &resume;
    let names = selection.names();
    let index = |h: &SelectedHost| names.iter().position(|n| *n == h.name).unwrap_or(0);
    multiplex::follow(
        &selection.hosts,
        selection.timeout,
        |h, attempt| {
            let i = index(&h);
            let tail = if attempt > 0 && lock(resume)[i].last.is_some() {
                REJOIN_TAIL
            } else {
                args.tail
            };
            let req = LogsRequest {
                service: service.clone(),
                follow: true,
                tail,
            };
            async move {
                Ok(h.agent
                    .call(|ch| async move { ServicesClient::new(ch).logs(req).await })
                    .await?)
            }
        },
        |i, happening| {
            let sink = &sinks[i];
            match happening {
                Happening::Message(line) => {
                    let mut r = lock(resume);
                    for line in r[i].take(line) {
                        show_in(sink, global.output, &line)?;
                    }
                    if r[i].take_gap() {
                        sink.err(GAP)?;
                    }
                    Ok(())
                }
                Happening::Down { why, retry } => sink.err(&format!(
                    "dropped out: {why}; trying again in {}",
                    fleet::fanout::show_duration(retry)
                )),
                Happening::Rejoined => {
                    lock(resume)[i].rejoined();
                    sink.err("rejoined")
                }
                Happening::Reopened => {
                    lock(resume)[i].rejoined();
                    Ok(())
                }
            }
        },
    )
    .await?;
    Ok(())
}

fn lock(m: &Mutex<Vec<Resume>>) -> std::sync::MutexGuard<'_, Vec<Resume>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a host's log left off, so a rejoin neither repeats nor loses
/// lines: after a rejoin the agent sends the last [`REJOIN_TAIL`] lines
/// again; those up to the last one already shown are skipped.
#[derive(Default)]
struct Resume {
    /// The container and text of the last line shown.
    last: Option<(String, String)>,
    /// After a rejoin, until the last line shown comes by again.
    skipping: bool,
    /// Lines held while skipping.
    held: Vec<LogLine>,
    /// The last rejoin did not find where it left off: lines may be lost.
    gap: bool,
}

impl Resume {
    fn rejoined(&mut self) {
        self.skipping = self.last.is_some();
        self.held.clear();
    }

    /// Whether lines may have been lost since the last call.
    fn take_gap(&mut self) -> bool {
        std::mem::take(&mut self.gap)
    }

    /// The lines to show now, given the next line that arrived.
    fn take(&mut self, line: LogLine) -> Vec<LogLine> {
        let out = if !self.skipping {
            vec![line]
        } else if self
            .last
            .as_ref()
            .is_some_and(|(c, l)| *c == line.container && *l == line.line)
        {
            // Everything before it was shown already.
            self.skipping = false;
            self.held.clear();
            Vec::new()
        } else if self.last.as_ref().is_some_and(|(c, _)| *c != line.container)
            || self.held.len() + 1 >= REJOIN_TAIL as usize
        {
            // Another container, or more new lines than we asked for: all
            // new, and in the second case some before them may be lost.
            self.gap = self.last.as_ref().is_some_and(|(c, _)| *c == line.container);
            self.skipping = false;
            self.held.push(line);
            std::mem::take(&mut self.held)
        } else {
            self.held.push(line);
            Vec::new()
        };
        if let Some(l) = out.last() {
            self.last = Some((l.container.clone(), l.line.clone()));
        }
        out
    }
}

/// One line of a host of a selection: as [`show`], or under `--output
/// json` one NDJSON record (`host`, `container`, `stream`, `line`).
fn show_in(out: &Sink, format: Format, line: &LogLine) -> Result<(), WriteError> {
    match format {
        Format::Table => show(out, line),
        Format::Json => out.record(&serde_json::json!({
            "container": line.container, "stream": line.stream, "line": line.line,
        })),
    }
}

/// Prints one line of a container's output on the stream it came from.
pub fn show(out: &Sink, line: &LogLine) -> Result<(), WriteError> {
    let stream = if line.stream == "stderr" {
        Stream::Err
    } else {
        Stream::Out
    };
    out.line(stream, &line.line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::console::capture::console;

    fn line(stream: &str, text: &str) -> LogLine {
        LogLine {
            stream: stream.into(),
            line: text.into(),
            container: "web-3".into(),
        }
    }

    #[test]
    fn a_rejoin_skips_what_was_shown_and_keeps_what_is_new() {
        let mut r = Resume::default();
        let l = |t: &str| LogLine {
            stream: "stdout".into(),
            line: t.into(),
            container: "web-3".into(),
        };
        let texts = |v: Vec<LogLine>| v.into_iter().map(|l| l.line).collect::<Vec<_>>();
        assert_eq!(texts(r.take(l("a"))), ["a"]);
        assert_eq!(texts(r.take(l("b"))), ["b"]);
        r.rejoined();
        // The backlog again: a, b; then what came while away: c.
        assert!(r.take(l("a")).is_empty());
        assert!(r.take(l("b")).is_empty());
        assert_eq!(texts(r.take(l("c"))), ["c"]);
        r.rejoined();
        // A new container: nothing of it was shown.
        let other = LogLine {
            container: "web-4".into(),
            ..l("x")
        };
        assert_eq!(texts(r.take(other)), ["x"]);
    }

    #[test]
    fn stdout_and_stderr_lines_keep_their_stream() {
        let (c, out, err) = console(false);
        let s = Sink::new(c);
        show(&s, &line("stdout", "GET / 200")).expect("out");
        show(&s, &line("stderr", "warning: slow")).expect("err");
        show(&s, &line("stdout", "")).expect("empty");
        assert_eq!(
            (out.written(), err.written()),
            ("GET / 200\n\n".into(), "warning: slow\n".into())
        );
    }
}

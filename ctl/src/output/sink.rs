//! Where a renderer's output goes: one host as berthctl has always printed
//! it, or many hosts side by side.
//!
//! Owns [`Sink`], the only way renderers print. A sink made with
//! [`Sink::new`] prints exactly what it is given. The sinks made with
//! [`Sink::per_host`] (one per host, sharing one [`Console`]) put each
//! line behind its host's name, padded to the longest name and coloured on
//! a terminal (`web-1  | ...`), and give every JSON record a `host` field,
//! one record per line (NDJSON), so streams from many hosts can be read
//! apart and parsed.
//!
//! Input: lines (ended as `println!` ends them), blocks of whole lines
//! (tables, reports, as `print!` prints them), JSON values, frames of a
//! live view. Output: whole lines written to the
//! console's stdout or stderr, each call in one write, so two hosts never
//! split each other's lines. Errors are the console's [`WriteError`].
//! Nothing to shut down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::console::{Console, Stream, WriteError};

/// Homes the cursor and clears the screen, so a frame replaces the last.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Colours of host names, in the order hosts are given (ANSI SGR codes:
/// cyan, yellow, green, magenta, blue, then their bright forms; no red,
/// which reads as an error).
const PALETTE: [u8; 10] = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94];

/// A renderer's output for one host (or for berthctl itself). Clones share
/// the console and the frame count.
#[derive(Clone)]
pub struct Sink {
    console: Arc<Console>,
    label: Option<Arc<Label>>,
    frames: Arc<AtomicU64>,
}

/// A host's name as it starts each of its lines.
struct Label {
    name: String,
    /// `web-1  | `, padded to the longest host name.
    plain: String,
    /// The same, coloured.
    coloured: String,
}

impl Sink {
    /// Output for one host, or for berthctl itself: exactly what it is given.
    pub fn new(console: Arc<Console>) -> Sink {
        Sink {
            console,
            label: None,
            frames: Arc::default(),
        }
    }

    /// One sink per host, in the order given: each line is prefixed with
    /// the host's name (aligned, coloured on a terminal) and each JSON
    /// record carries a `host` field.
    pub fn per_host<S: AsRef<str>>(console: &Arc<Console>, hosts: &[S]) -> Vec<Sink> {
        let width = hosts.iter().map(|h| h.as_ref().chars().count()).max().unwrap_or(0);
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = h.as_ref();
                let colour = PALETTE[i % PALETTE.len()];
                Sink {
                    console: console.clone(),
                    label: Some(Arc::new(Label {
                        name: name.to_owned(),
                        plain: format!("{name:<width$} | "),
                        coloured: format!("\x1b[{colour}m{name:<width$} |\x1b[0m "),
                    })),
                    frames: Arc::default(),
                }
            })
            .collect()
    }

    /// [`Sink::per_host`] on this sink's console: one sink per host.
    pub fn per_host_of<S: AsRef<str>>(&self, hosts: &[S]) -> Vec<Sink> {
        Sink::per_host(&self.console, hosts)
    }

    /// Whether `stream` is a terminal.
    pub fn is_tty(&self, stream: Stream) -> bool {
        self.console.is_tty(stream)
    }

    /// The host this sink prefixes, if any.
    pub fn host(&self) -> Option<&str> {
        self.label.as_deref().map(|l| l.name.as_str())
    }

    /// Prints `line` and a newline on stdout, as `println!` does.
    pub fn out(&self, line: &str) -> Result<(), WriteError> {
        self.line(Stream::Out, line)
    }

    /// Prints `line` and a newline on stderr, as `eprintln!` does.
    pub fn err(&self, line: &str) -> Result<(), WriteError> {
        self.line(Stream::Err, line)
    }

    /// Prints `line` and a newline on `stream`. Per host, every line of
    /// that (a `line` holding newlines prints several) is prefixed.
    pub fn line(&self, stream: Stream, line: &str) -> Result<(), WriteError> {
        self.write(stream, line, true)
    }

    /// Prints a block of whole lines (a table, a report) on stdout, as
    /// `print!` does. Per host, each line is prefixed, and a last line
    /// without its newline gets one.
    pub fn text(&self, text: &str) -> Result<(), WriteError> {
        self.write(Stream::Out, text, false)
    }

    /// Writes `text` (and a newline when `newline`) in one piece, each
    /// line behind this sink's host name.
    fn write(&self, stream: Stream, text: &str, newline: bool) -> Result<(), WriteError> {
        let prefix = match &self.label {
            None => {
                let bytes = if newline { format!("{text}\n") } else { text.to_owned() };
                return self.console.write(stream, bytes.as_bytes());
            }
            Some(l) if self.console.colours(stream) => &l.coloured,
            Some(l) => &l.plain,
        };
        // The lines as print! or println! would end them.
        let body = if newline {
            text
        } else {
            text.strip_suffix('\n').unwrap_or(text)
        };
        if body.is_empty() && !newline {
            return Ok(());
        }
        let mut buf = String::with_capacity(body.len() + 1 + prefix.len() * (1 + body.matches('\n').count()));
        for line in body.split('\n') {
            buf.push_str(prefix);
            buf.push_str(line);
            buf.push('\n');
        }
        self.console.write(stream, buf.as_bytes())
    }

    /// One JSON record on one stdout line (NDJSON), for streams and short
    /// answers. Per host, an object gets a `host` field (replacing one it
    /// had) and anything else becomes `{"host": ..., "result": ...}`.
    pub fn record(&self, doc: &Value) -> Result<(), WriteError> {
        let line = match &self.label {
            None => doc.to_string(),
            Some(l) => with_host(doc, &l.name).to_string(),
        };
        self.console.write(Stream::Out, format!("{line}\n").as_bytes())
    }

    /// A whole JSON document on stdout, indented for one host; per host, a
    /// [`record`](Sink::record), so many hosts' documents stay one per line.
    pub fn document(&self, doc: &Value) -> Result<(), WriteError> {
        if self.label.is_some() {
            return self.record(doc);
        }
        self.out(&serde_json::to_string_pretty(doc).unwrap_or_default())
    }

    /// One frame of a live view (`top`). For one host on a terminal, the
    /// frame replaces the last; otherwise frames follow each other, a blank
    /// line apart. Host sinks never clear the screen, which the others share.
    pub fn frame(&self, text: &str) -> Result<(), WriteError> {
        let shown = self.frames.fetch_add(1, Ordering::Relaxed);
        let lead = if self.label.is_none() && self.console.is_tty(Stream::Out) {
            CLEAR
        } else if shown > 0 {
            "\n"
        } else {
            ""
        };
        if self.label.is_none() {
            return self.text(&format!("{lead}{text}"));
        }
        if !lead.is_empty() {
            self.out("")?;
        }
        self.text(text)
    }

    /// A progress bar on stderr drawn with indicatif's `template`, behind
    /// this sink's host name; `None` unless stderr is a terminal.
    pub fn progress_bar(&self, template: &str) -> Option<ProgressBar> {
        let bar = self.console.progress_bar()?;
        let style = match &self.label {
            None => ProgressStyle::with_template(template),
            Some(l) => {
                bar.set_prefix(if self.console.colours(Stream::Err) {
                    l.coloured.clone()
                } else {
                    l.plain.clone()
                });
                ProgressStyle::with_template(&format!("{{prefix}}{template}"))
            }
        };
        bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
        Some(bar)
    }
}

/// `doc` with a `host` field.
fn with_host(doc: &Value, host: &str) -> Value {
    match doc {
        Value::Object(fields) => {
            let mut fields = fields.clone();
            fields.insert("host".into(), Value::from(host));
            Value::Object(fields)
        }
        other => serde_json::json!({ "host": host, "result": other }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::console::capture::console;
    use super::*;

    #[test]
    fn one_host_prints_exactly_what_it_is_given() {
        let (c, out, err) = console(false);
        let s = Sink::new(c);
        s.text("a  b\nc  d\n").expect("table");
        s.out("no services on 10.0.0.5:7443").expect("line");
        s.out("").expect("empty line");
        s.err("  pull     done").expect("step");
        s.record(&json!({"kind": "deploy"})).expect("record");
        s.document(&json!({"a": 1})).expect("document");
        assert_eq!(
            out.written(),
            "a  b\nc  d\nno services on 10.0.0.5:7443\n\n{\"kind\":\"deploy\"}\n{\n  \"a\": 1\n}\n"
        );
        assert_eq!(err.written(), "  pull     done\n");
        assert_eq!(s.host(), None);
    }

    #[test]
    fn many_hosts_prefix_every_line_with_the_aligned_name() {
        let (c, out, err) = console(false);
        let sinks = Sink::per_host(&c, &["web-1", "worker-10"]);
        sinks[0].text("NAME  REV\nweb   3\n").expect("table");
        sinks[0].out("started\nlistening on :8080").expect("two lines");
        sinks[1].err("oops").expect("worker");
        sinks[1].out("").expect("empty");
        sinks[1].text("").expect("nothing");
        sinks[1].text("no newline").expect("partial");
        assert_eq!(
            out.written(),
            "web-1     | NAME  REV\nweb-1     | web   3\nweb-1     | started\nweb-1     | listening on :8080\n\
             worker-10 | \nworker-10 | no newline\n"
        );
        assert_eq!(err.written(), "worker-10 | oops\n");
        assert_eq!(sinks[1].host(), Some("worker-10"));
    }

    #[test]
    fn on_a_terminal_host_names_are_coloured_each_its_own() {
        let (c, out, _) = console(true);
        let sinks = Sink::per_host(&c, &["a", "bb"]);
        sinks[0].out("x").expect("a");
        sinks[1].out("y").expect("bb");
        assert_eq!(out.written(), "\x1b[36ma  |\x1b[0m x\n\x1b[33mbb |\x1b[0m y\n");
    }

    #[test]
    fn json_per_host_is_one_record_per_line_with_a_host_field() {
        let (c, out, _) = console(false);
        let sinks = Sink::per_host(&c, &["web-1", "web-2"]);
        sinks[0]
            .record(&json!({"kind": "oom", "host": "10.0.0.5:7443"}))
            .expect("r");
        sinks[1].document(&json!({"services": [], "n": 2})).expect("d");
        sinks[1].record(&json!([1, 2])).expect("array");
        let lines: Vec<Value> = out
            .written()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
            .collect();
        assert_eq!(
            lines,
            vec![
                json!({"host": "web-1", "kind": "oom"}),
                json!({"host": "web-2", "services": [], "n": 2}),
                json!({"host": "web-2", "result": [1, 2]}),
            ]
        );
    }

    #[test]
    fn frames_replace_each_other_on_a_terminal_and_follow_in_a_pipe() {
        let (c, out, _) = console(true);
        let s = Sink::new(c);
        s.frame("one\n").expect("1");
        s.frame("two\n").expect("2");
        assert_eq!(out.written(), format!("{CLEAR}one\n{CLEAR}two\n"));

        let (c, out, _) = console(false);
        let s = Sink::new(c.clone());
        s.frame("one\n").expect("1");
        s.frame("two\n").expect("2");
        assert_eq!(out.written(), "one\n\ntwo\n");

        let (c, out, _) = console(false);
        let h = Sink::per_host(&c, &["h"]).remove(0);
        h.frame("one").expect("1");
        h.frame("two").expect("2");
        assert_eq!(out.written(), "h | one\nh | \nh | two\n");
    }

    #[test]
    fn a_closed_reader_is_reported_as_closed_by_every_kind_of_output() {
        use super::super::console::capture::ClosedPipe;

        let c = Arc::new(Console::new(
            Box::new(ClosedPipe),
            Box::new(ClosedPipe),
            false,
            false,
            false,
        ));
        let one = Sink::new(c.clone());
        let many = Sink::per_host(&c, &["web-1"]).remove(0);
        for s in [one, many] {
            let results = [
                s.out("line"),
                s.err("note"),
                s.text("a\nb\n"),
                s.record(&json!({"k": 1})),
                s.document(&json!({"k": 1})),
                s.frame("frame\n"),
            ];
            for r in results {
                assert!(matches!(r, Err(WriteError::Closed(_))), "{r:?}");
            }
        }
    }

    #[test]
    fn no_progress_bar_without_a_terminal() {
        let (c, _, _) = console(false);
        assert!(Sink::new(c.clone()).progress_bar("{msg}").is_none());
        assert!(Sink::per_host(&c, &["h"])[0].progress_bar("{msg}").is_none());
    }

    #[test]
    fn lines_from_many_hosts_stay_whole_when_written_at_once() {
        let (c, out, _) = console(false);
        let sinks = Sink::per_host(&c, &["a", "b"]);
        std::thread::scope(|scope| {
            for s in &sinks {
                scope.spawn(move || {
                    for _ in 0..200 {
                        s.out("0123456789\n0123456789").expect("write");
                    }
                });
            }
        });
        let text = out.written();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 800);
        // Each call's two lines are next to each other.
        for pair in lines.chunks(2) {
            assert!(
                pair == ["a | 0123456789"; 2] || pair == ["b | 0123456789"; 2],
                "{pair:?}"
            );
        }
    }
}

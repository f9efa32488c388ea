//! `berthctl logs SERVICE [-f] [--tail N]`.

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{LogLine, LogsRequest};

use super::Global;
use crate::output::{Sink, Stream, WriteError};

/// Print a service's container output (stdout to stdout, stderr to stderr).
///
/// Reads the running container of the active revision, or the newest one
/// if none runs (so a crashed service's last words are there).
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

/// Runs `berthctl logs`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let agent = global.one_agent("logs").await?;
    let req = LogsRequest {
        service: args.service,
        follow: args.follow,
        tail: args.tail,
    };
    let mut stream = agent
        .call(|ch| async move { ServicesClient::new(ch).logs(req).await })
        .await?;
    while let Some(line) = agent.next(&mut stream).await? {
        show(out, &line)?;
    }
    Ok(())
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

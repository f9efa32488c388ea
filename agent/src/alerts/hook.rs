//! Running one alert hook: the rule's `hook` program with the event as JSON
//! on stdin, killed after `hook_timeout`. Its exit status, stdout and
//! stderr are logged; a hook that cannot start, fails or times out is a
//! warning in the log, never an error of the agent.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Bytes of a hook's stdout or stderr kept for the log.
const OUTPUT_LOGGED: usize = 4096;

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited 0.
    Succeeded,
    /// It exited otherwise, or was killed by a signal.
    Failed(String),
    /// It could not be started or fed its input.
    NotStarted(String),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The agent is stopping; the hook was killed.
    Cancelled,
}

fn shown(bytes: &[u8]) -> String {
    let end = bytes.len().min(OUTPUT_LOGGED);
    let text = String::from_utf8_lossy(&bytes[..end]);
    let text = text.trim_end();
    if bytes.len() > OUTPUT_LOGGED {
        format!("{text}... ({} bytes)", bytes.len())
    } else {
        text.to_owned()
    }
}

/// Runs `argv` with `input` on stdin; logs and returns how it ended.
pub async fn run(alert: &str, argv: &[String], input: &str, timeout: Duration, cancel: &CancellationToken) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::NotStarted("no program".into());
    };
    let outcome = tokio::select! {
        _ = cancel.cancelled() => Outcome::Cancelled,
        r = tokio::time::timeout(timeout, run_to_end(alert, program, args, input)) => match r {
            Ok(outcome) => outcome,
            Err(_) => Outcome::TimedOut,
        },
    };
    match &outcome {
        Outcome::Succeeded | Outcome::Failed(_) => {}
        Outcome::NotStarted(why) => warn!(alert, program, error = %why, "Cannot run the alert hook."),
        Outcome::TimedOut => warn!(
            alert,
            program,
            timeout_s = timeout.as_secs(),
            "The alert hook ran past its hook_timeout and was killed."
        ),
        Outcome::Cancelled => warn!(alert, program, "The agent is stopping; the alert hook was killed."),
    }
    outcome
}

/// Spawns, feeds and waits for the hook; dropping this future kills it.
async fn run_to_end(alert: &str, program: &str, args: &[String], input: &str) -> Outcome {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::NotStarted(e.to_string()),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input may close stdin early; that
        // is its business, so a broken pipe is not a failure.
        if let Err(e) = stdin.write_all(input.as_bytes()).await
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Outcome::NotStarted(format!("cannot write its stdin: {e}"));
        }
    }
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => return Outcome::NotStarted(e.to_string()),
    };
    let (stdout, stderr) = (shown(&out.stdout), shown(&out.stderr));
    if out.status.success() {
        info!(alert, program, stdout, stderr, "Alert hook ran.");
        Outcome::Succeeded
    } else {
        warn!(alert, program, status = %out.status, stdout, stderr, "Alert hook failed.");
        Outcome::Failed(out.status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn the_hook_reads_its_input_and_its_status_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("got");
        let script = format!("cat > {}", out.display());
        let cancel = CancellationToken::new();
        let t = Duration::from_secs(10);
        assert_eq!(
            run("a", &sh(&script), "{\"x\":1}", t, &cancel).await,
            Outcome::Succeeded
        );
        assert_eq!(std::fs::read_to_string(&out).expect("written"), "{\"x\":1}");
        assert!(matches!(run("a", &sh("exit 3"), "", t, &cancel).await, Outcome::Failed(s) if s.contains('3')));
        let missing = vec!["/nonexistent/hook".to_owned()];
        assert!(matches!(
            run("a", &missing, "", t, &cancel).await,
            Outcome::NotStarted(_)
        ));
    }

    #[tokio::test]
    async fn a_slow_hook_is_killed_at_its_timeout() {
        let cancel = CancellationToken::new();
        let outcome = run("a", &sh("sleep 30"), "", Duration::from_millis(200), &cancel).await;
        assert_eq!(outcome, Outcome::TimedOut);
    }
}

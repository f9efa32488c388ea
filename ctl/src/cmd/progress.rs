//! Rendering a deploy's event stream (Apply, Deploy, Rollback, Restart, env
//! changes): steps as lines, image pulls as a progress bar when stderr is a
//! terminal, and the result as a verdict with the reasons of a failure.
//!
//! Input: the agent's `DeployEvent` stream. Output: lines on a [`Sink`]
//! (steps on stderr, the verdict on stdout; with `--output json` only the
//! result, as one document) and the `DeployResult`. The rendering state is
//! a [`Progress`] per stream, so deploys on several hosts can each be shown
//! on their own host's sink. A bar still drawn is cleared when its
//! `Progress` is dropped.

use std::fmt::Write as _;
use std::future::Future;

use berth_proto::v1::{DeployEvent, DeployResult, deploy_event};
use futures::{Stream, StreamExt as _};
use indicatif::ProgressBar;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

use crate::client::Agent;
use crate::output::{Format, Sink, WriteError};

/// How an image pull is drawn on a terminal.
const PULL_BAR: &str = "  pull     {wide_msg} {bytes}/{total_bytes}";

/// Calls `rpc` on `agent` (a deploy-shaped call: Apply, Deploy, Rollback,
/// Restart, SetEnv, UnsetEnv) and [`follow`]s its stream to the result.
pub async fn run<F, Fut>(agent: &Agent, format: Format, out: &Sink, rpc: F) -> anyhow::Result<DeployResult>
where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<DeployEvent>>, Status>>,
{
    let stream = agent.call(rpc).await?;
    follow(agent, stream, format, out).await
}

/// Follows the stream to its result, printing as it goes. Returns an error
/// (so berthctl exits non-zero) when the deploy failed.
///
/// A closed output (`berthctl deploy ... | head -1`) does not stop the
/// following: the deploy's outcome, not whether anyone still reads, decides
/// how berthctl exits.
pub async fn follow<S>(agent: &Agent, mut stream: S, format: Format, out: &Sink) -> anyhow::Result<DeployResult>
where
    S: Stream<Item = Result<DeployEvent, Status>> + Unpin,
{
    let mut view = Progress::new(out.clone(), format);
    let mut result = None;
    while let Some(event) = stream.next().await {
        let event = event.map_err(|status| agent.explain(&status))?;
        match view.show(event) {
            Ok(Some(r)) => result = Some(r),
            Ok(None) | Err(WriteError::Closed(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let result =
        result.ok_or_else(|| anyhow::anyhow!("{}: the agent ended the call without a result", agent.target))?;
    match view.report(&result) {
        Ok(()) | Err(WriteError::Closed(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if result.success {
        Ok(result)
    } else {
        Err(anyhow::anyhow!(
            "{}: {} revision {} failed: {}",
            agent.target,
            result.service,
            result.attempted_revision,
            result.error
        ))
    }
}

/// What one deploy's rendering has drawn so far.
pub struct Progress {
    out: Sink,
    format: Format,
    /// The pull in progress, drawn while pull events come.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Renders onto `out` in `format`.
    pub fn new(out: Sink, format: Format) -> Self {
        Progress { out, format, bar: None }
    }

    /// Shows one event; returns the result when the event is the result.
    pub fn show(&mut self, event: DeployEvent) -> Result<Option<DeployResult>, WriteError> {
        match event.event {
            Some(deploy_event::Event::Step(step)) => {
                self.clear_bar();
                if self.format == Format::Table {
                    self.out.err(&format!("  {:<8} {}", step.phase, step.message))?;
                }
            }
            Some(deploy_event::Event::Pull(p)) if self.format == Format::Table => {
                if self.bar.is_none() {
                    self.bar = self.out.progress_bar(PULL_BAR);
                }
                if let Some(b) = &self.bar {
                    if p.total_bytes > 0 {
                        b.set_length(p.total_bytes);
                        b.set_position(p.current_bytes);
                    }
                    b.set_message(format!("{} {}", p.layer, p.status));
                }
            }
            Some(deploy_event::Event::Pull(_)) | None => {}
            Some(deploy_event::Event::Result(r)) => return Ok(Some(r)),
        }
        Ok(None)
    }

    /// Prints the verdict: a sentence, and for a failure its reasons.
    pub fn report(&mut self, r: &DeployResult) -> Result<(), WriteError> {
        self.clear_bar();
        if self.format == Format::Json {
            return self.out.document(&json!({
                "success": r.success,
                "service": r.service,
                "revision": r.revision,
                "attempted_revision": r.attempted_revision,
                "changed": r.changed,
                "error": r.error,
                "rolled_back": r.rolled_back,
                "health_output": r.health_output,
                "exit_code": r.exit_code,
                "log_tail": r.log_tail,
            }));
        }
        self.out.text(&verdict(r))
    }

    fn clear_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear_bar();
    }
}

/// The verdict for people: one or more lines, each ended.
fn verdict(r: &DeployResult) -> String {
    if r.success && !r.changed {
        return format!("{} is unchanged at revision {}\n", r.service, r.revision);
    }
    if r.success && r.attempted_revision == 0 {
        // An env change for a service not applied yet: only its file changed.
        return format!("{}: env saved; the service's first apply uses it\n", r.service);
    }
    if r.success && r.attempted_revision != r.revision {
        // env_change = "none": the change is kept, the container left alone.
        return format!(
            "{} recorded revision {}; revision {} keeps running until the next deploy or restart (env_change = \"none\")\n",
            r.service, r.attempted_revision, r.revision
        );
    }
    if r.success {
        return format!("{} revision {} is running and healthy\n", r.service, r.revision);
    }
    let mut s = format!("{} revision {} FAILED: {}\n", r.service, r.attempted_revision, r.error);
    if !r.health_output.is_empty() {
        let _ = writeln!(s, "  last health check: {}", r.health_output);
    }
    if let Some(code) = r.exit_code {
        let _ = writeln!(s, "  exit code: {code}");
    }
    if !r.log_tail.is_empty() {
        s.push_str("  last log lines:\n");
        for l in &r.log_tail {
            let _ = writeln!(s, "    {l}");
        }
    }
    if r.rolled_back {
        let _ = writeln!(s, "  rolled back: revision {} is running again", r.revision);
    } else if r.revision == 0 {
        s.push_str("  nothing was running before; nothing changed\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use berth_proto::v1::{PullProgress, Step};

    use super::*;
    use crate::client::TlsFiles;
    use crate::output::console::capture::console;

    fn agent() -> Agent {
        let files = TlsFiles {
            ca: "ca.pem".into(),
            cert: "me.pem".into(),
            key: "me-key.pem".into(),
        };
        Agent::new("10.0.0.5:7443".parse().expect("target"), files)
    }

    fn step(phase: &str, message: &str) -> Result<DeployEvent, Status> {
        Ok(DeployEvent {
            event: Some(deploy_event::Event::Step(Step {
                phase: phase.into(),
                message: message.into(),
            })),
        })
    }

    fn pull() -> Result<DeployEvent, Status> {
        Ok(DeployEvent {
            event: Some(deploy_event::Event::Pull(PullProgress {
                layer: "a1b2".into(),
                status: "Downloading".into(),
                current_bytes: 5,
                total_bytes: 10,
                ..Default::default()
            })),
        })
    }

    fn result(r: DeployResult) -> Result<DeployEvent, Status> {
        Ok(DeployEvent {
            event: Some(deploy_event::Event::Result(r)),
        })
    }

    #[tokio::test]
    async fn steps_go_to_stderr_and_the_verdict_to_stdout() {
        let (c, out, err) = console(false);
        let events = vec![
            step("pull", "pulling web:2"),
            pull(),
            step("health", "healthy after 1 probe"),
            result(DeployResult {
                success: true,
                service: "web".into(),
                revision: 2,
                attempted_revision: 2,
                changed: true,
                ..Default::default()
            }),
        ];
        let r = follow(&agent(), futures::stream::iter(events), Format::Table, &Sink::new(c))
            .await
            .expect("success");
        assert_eq!(r.revision, 2);
        assert_eq!(
            err.written(),
            "  pull     pulling web:2\n  health   healthy after 1 probe\n"
        );
        assert_eq!(out.written(), "web revision 2 is running and healthy\n");
    }

    #[tokio::test]
    async fn a_failure_prints_its_reasons_and_is_an_error() {
        let (c, out, _) = console(false);
        let events = vec![result(DeployResult {
            success: false,
            service: "web".into(),
            revision: 1,
            attempted_revision: 2,
            changed: true,
            error: "not healthy within 30s".into(),
            rolled_back: true,
            health_output: "HTTP 503".into(),
            exit_code: Some(3),
            log_tail: vec!["boom".into()],
        })];
        let err = follow(&agent(), futures::stream::iter(events), Format::Table, &Sink::new(c))
            .await
            .expect_err("failed deploy");
        assert_eq!(
            err.to_string(),
            "10.0.0.5:7443: web revision 2 failed: not healthy within 30s"
        );
        assert_eq!(
            out.written(),
            "web revision 2 FAILED: not healthy within 30s\n  last health check: HTTP 503\n  exit code: 3\n  \
             last log lines:\n    boom\n  rolled back: revision 1 is running again\n"
        );
    }

    #[tokio::test]
    async fn json_prints_only_the_result_and_a_broken_stream_is_explained() {
        let (c, out, err) = console(false);
        let ok = DeployResult {
            success: true,
            service: "web".into(),
            revision: 3,
            attempted_revision: 3,
            ..Default::default()
        };
        follow(
            &agent(),
            futures::stream::iter(vec![step("pull", "x"), result(ok)]),
            Format::Json,
            &Sink::new(c.clone()),
        )
        .await
        .expect("success");
        let doc: serde_json::Value = serde_json::from_str(&out.written()).expect("one document");
        assert_eq!(
            (doc["service"].as_str(), doc["revision"].as_u64()),
            (Some("web"), Some(3))
        );
        assert_eq!(err.written(), "");

        let broken = vec![step("pull", "x"), Err(Status::aborted("the agent is shutting down"))];
        let e = follow(&agent(), futures::stream::iter(broken), Format::Json, &Sink::new(c))
            .await
            .expect_err("broken");
        assert_eq!(e.to_string(), "10.0.0.5:7443: aborted: the agent is shutting down");
    }

    #[tokio::test]
    async fn a_closed_output_leaves_the_outcome_to_the_deploy() {
        use crate::output::Console;
        use crate::output::console::capture::ClosedPipe;

        let outcome = |success: bool| {
            let closed = Console::new(Box::new(ClosedPipe), Box::new(ClosedPipe), false, false, false);
            let events = vec![
                step("start", "container up"),
                result(DeployResult {
                    success,
                    service: "web".into(),
                    revision: 1,
                    attempted_revision: 1,
                    changed: true,
                    error: if success { String::new() } else { "exited".into() },
                    ..Default::default()
                }),
            ];
            async move {
                follow(
                    &agent(),
                    futures::stream::iter(events),
                    Format::Table,
                    &Sink::new(closed.into()),
                )
                .await
            }
        };
        assert_eq!(outcome(true).await.expect("succeeded").revision, 1);
        let err = outcome(false).await.expect_err("failed");
        assert!(!WriteError::is_closed(&err));
        assert_eq!(err.to_string(), "10.0.0.5:7443: web revision 1 failed: exited");
    }

    #[tokio::test]
    async fn each_host_of_many_renders_behind_its_name() {
        let (c, _, err) = console(false);
        let sinks = Sink::per_host(&c, &["web-1", "web-2"]);
        let mut views: Vec<Progress> = sinks.into_iter().map(|s| Progress::new(s, Format::Table)).collect();
        for (i, v) in views.iter_mut().enumerate() {
            v.show(step("start", &format!("container {i}")).expect("event"))
                .expect("shown");
        }
        assert_eq!(
            err.written(),
            "web-1 |   start    container 0\nweb-2 |   start    container 1\n"
        );
    }
}

//! Rendering a deploy's event stream (Apply, Deploy, Rollback, Restart, env
//! changes): steps as lines, image pulls as a progress bar when stderr is a
//! terminal, and the result as a verdict with the reasons of a failure.

use std::future::Future;
use std::io::IsTerminal as _;

use berth_proto::v1::{DeployEvent, DeployResult, deploy_event};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};

use crate::client::Agent;
use crate::output::Format;

/// Calls `rpc` on `agent` (a deploy-shaped call: Apply, Deploy, Rollback,
/// Restart, SetEnv, UnsetEnv) and [`follow`]s its stream to the result.
pub async fn run<F, Fut>(agent: &Agent, format: Format, rpc: F) -> anyhow::Result<DeployResult>
where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<DeployEvent>>, Status>>,
{
    let stream = agent.call(rpc).await?;
    follow(agent, stream, format).await
}

/// Follows the stream to its result, printing as it goes. Returns an error
/// (so berthctl exits non-zero) when the deploy failed.
pub async fn follow(agent: &Agent, mut stream: Streaming<DeployEvent>, format: Format) -> anyhow::Result<DeployResult> {
    let tty = std::io::stderr().is_terminal() && format == Format::Table;
    let mut bar: Option<ProgressBar> = None;
    let mut result = None;
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(status) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                return Err(agent.explain(&status).into());
            }
        };
        match event.event {
            Some(deploy_event::Event::Step(step)) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if format == Format::Table {
                    eprintln!("  {:<8} {}", step.phase, step.message);
                }
            }
            Some(deploy_event::Event::Pull(p)) if tty => {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::new(0);
                    b.set_style(
                        ProgressStyle::with_template("  pull     {wide_msg} {bytes}/{total_bytes}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b
                });
                if p.total_bytes > 0 {
                    b.set_length(p.total_bytes);
                    b.set_position(p.current_bytes);
                }
                b.set_message(format!("{} {}", p.layer, p.status));
            }
            Some(deploy_event::Event::Pull(_)) => {}
            Some(deploy_event::Event::Result(r)) => result = Some(r),
            None => {}
        }
    }
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let result =
        result.ok_or_else(|| anyhow::anyhow!("{}: the agent ended the call without a result", agent.target))?;
    report(&result, format);
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

fn report(r: &DeployResult, format: Format) {
    if format == Format::Json {
        let doc = json!({
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
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    if r.success && !r.changed {
        println!("{} is unchanged at revision {}", r.service, r.revision);
    } else if r.success && r.attempted_revision == 0 {
        // An env change for a service not applied yet: only its file changed.
        println!("{}: env saved; the service's first apply uses it", r.service);
    } else if r.success && r.attempted_revision != r.revision {
        // env_change = "none": the change is kept, the container left alone.
        println!(
            "{} recorded revision {}; revision {} keeps running until the next deploy or restart (env_change = \"none\")",
            r.service, r.attempted_revision, r.revision
        );
    } else if r.success {
        println!("{} revision {} is running and healthy", r.service, r.revision);
    } else {
        println!("{} revision {} FAILED: {}", r.service, r.attempted_revision, r.error);
        if !r.health_output.is_empty() {
            println!("  last health check: {}", r.health_output);
        }
        if let Some(code) = r.exit_code {
            println!("  exit code: {code}");
        }
        if !r.log_tail.is_empty() {
            println!("  last log lines:");
            for l in &r.log_tail {
                println!("    {l}");
            }
        }
        if r.rolled_back {
            println!("  rolled back: revision {} is running again", r.revision);
        } else if r.revision == 0 {
            println!("  nothing was running before; nothing changed");
        }
    }
}

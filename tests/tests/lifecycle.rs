//! A change's life against the real Docker Engine, as the supervisor's
//! single owner of desired state promises it:
//!
//! - two changes of one service queue: the second waits for the first
//!   ("waiting for another change to X to finish") and then builds on its
//!   result instead of undoing it;
//! - SIGTERM while a deploy waits in its health gate lets the deploy settle
//!   (the previous revision runs again, in exactly one container, and the
//!   next start agrees);
//! - an open `berthctl events` stream ends when the agent stops.
//!
//! Where the agent is stopped it must exit 0, which it only does when
//! everything finished inside its 20 s grace period (past it, it exits 1
//! with "Tasks did not finish in time").

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use berth_tests::{
    Agent, Pki, Spec, agent_config, apply, berthctl_command, containers, docker, history, image, inspect, ok, ps,
    service, try_inspect, wait_until,
};

const T: Duration = Duration::from_secs(60);

/// Longer than the agent's grace period, so an agent that overruns it is
/// seen exiting 1 rather than being killed by the test.
const PAST_GRACE: Duration = Duration::from_secs(40);

/// A berthctl process running beside the test, one of its outputs piped
/// (the harness's `Proc` keeps output in a file and has no exit status);
/// killed if the test ends first.
struct Client(Child);

impl Client {
    /// Starts `berthctl ARGS` against `agent`, with stdout (or stderr) piped.
    fn start(pki: &Pki, agent: &Agent, args: &[&str], pipe_stderr: bool) -> Client {
        let (out, err) = if pipe_stderr {
            (Stdio::null(), Stdio::piped())
        } else {
            (Stdio::piped(), Stdio::null())
        };
        let child = berthctl_command(pki, &agent.addr)
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn berthctl");
        Client(child)
    }

    /// The piped output's lines, as they come.
    fn lines(&mut self) -> mpsc::Receiver<String> {
        let pipe: Box<dyn Read + Send> = match (self.0.stdout.take(), self.0.stderr.take()) {
            (Some(out), _) => Box::new(out),
            (None, Some(err)) => Box::new(err),
            (None, None) => panic!("nothing piped"),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a line containing `want`; returns it.
fn wait_for_line(lines: &mpsc::Receiver<String>, want: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(T)
            .unwrap_or_else(|e| panic!("no line with {want:?} ({e})"));
        if line.contains(want) {
            return line;
        }
    }
}

/// The running container of `revision` of `name`, if there is one.
fn running_of(pki: &Pki, name: &str, revision: &str) -> Option<String> {
    containers(&pki.instance, Some(name)).into_iter().find(|id| {
        // A container listed may be gone by the time it is inspected.
        try_inspect(id, "{{index .Config.Labels \"berth.revision\"}}").as_deref() == Some(revision)
            && try_inspect(id, "{{.State.Running}}").as_deref() == Some("true")
    })
}

/// `berthctl history NAME`, as "REV REASON STATUS" lines, newest first.
fn revisions(pki: &Pki, agent: &Agent, name: &str) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    history(pki, &agent.addr, name)
        .iter()
        .map(|r| [r["revision"].to_string(), text(&r["reason"]), text(&r["status"])].join(" "))
        .collect()
}

/// The usual checked spec, with a gate that can be held open: the `bad`
/// image answers /health with 404, and with this many retries and this
/// deadline its gate fails only after a minute.
fn slow_gate(name: &str, tag: &str) -> Spec {
    Spec::checked(name, tag)
        .set("health", "retries", 1000)
        .set("deploy", "health_deadline", "60s")
}

fn assert_clean_exit(agent: &mut Agent) {
    let status = agent
        .signal_and_wait(15, PAST_GRACE)
        .unwrap_or_else(|| panic!("the agent did not exit after SIGTERM:\n{}", agent.logs()));
    let logs = agent.logs();
    assert!(
        status.success(),
        "the agent should exit 0 inside its grace period, got {status}:\n{logs}"
    );
    assert!(!logs.contains("did not finish in time"), "{logs}");
    assert!(logs.contains("Stopped."), "{logs}");
}

#[test]
fn a_deploy_queued_behind_an_apply_keeps_what_the_apply_changed() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    ok(&apply(&pki, &agent.addr, &Spec::checked("queued", "v1")));

    // Revision 2 adds a memory limit, and a health check that passes only
    // once the test creates /tmp/go in the container: its gate stays open
    // until then.
    let held = Spec::new("queued", "v1")
        .key("ports", ["8000"])
        .set("resources", "memory", "64m")
        .health_exec(&["test", "-f", "/tmp/go"])
        .set("health", "retries", 1000)
        .set("deploy", "health_deadline", "60s");
    let path = held.write_in(pki.dir.path()).to_string_lossy().into_owned();
    let mut applying = Client::start(&pki, &agent, &["apply", "-f", &path], true);
    wait_until(T, "revision 2 to be in its health gate", || {
        running_of(&pki, "queued", "2").is_some()
    });
    let mut deploy = Client::start(&pki, &agent, &["deploy", "queued", "--image", &image("v2")], true);
    wait_for_line(&deploy.lines(), "waiting for another change to queued to finish");

    // Let revision 2 through; then revision 3's gate, which it inherits.
    let two = running_of(&pki, "queued", "2").expect("revision 2 runs");
    docker(&["exec", &two, "touch", "/tmp/go"]);
    assert!(applying.0.wait().expect("berthctl apply").success());
    wait_until(T, "revision 3 to be in its health gate", || {
        running_of(&pki, "queued", "3").is_some()
    });
    let three = running_of(&pki, "queued", "3").expect("revision 3 runs");
    docker(&["exec", &three, "touch", "/tmp/go"]);
    assert!(deploy.0.wait().expect("berthctl deploy").success());

    // Revision 3 is revision 2's spec with the new image, not revision 1's.
    assert_eq!(inspect(&three, "{{.Config.Image}}"), image("v2"));
    assert_eq!(
        inspect(&three, "{{.HostConfig.Memory}}"),
        (64 * 1024 * 1024).to_string(),
        "the deploy kept the apply's memory limit"
    );
    assert_eq!(
        revisions(&pki, &agent, "queued"),
        ["3 deploy active", "2 apply superseded", "1 create superseded"]
    );
}

#[test]
fn sigterm_during_a_health_gate_settles_the_deploy_and_the_next_start_agrees() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &slow_gate("settle", "v1")));
    let all = containers(&pki.instance, Some("settle"));
    assert_eq!(all.len(), 1, "{all:?}");
    let v1 = all[0].clone();

    let mut deploy = Client::start(&pki, &agent, &["deploy", "settle", "--image", &image("bad")], false);
    wait_until(T, "revision 2 to be in its health gate", || {
        running_of(&pki, "settle", "2").is_some()
    });

    assert_clean_exit(&mut agent);
    let stdout: Vec<String> = deploy.lines().into_iter().collect();
    let stdout = stdout.join("\n");
    let status = deploy.0.wait().expect("berthctl deploy");
    assert!(!status.success(), "the deploy did not take over: {stdout}");
    assert!(stdout.contains("settle revision 2 FAILED"), "{stdout}");
    assert!(stdout.contains("shutting down"), "{stdout}");
    assert!(stdout.contains("rolled back: revision 1 is running again"), "{stdout}");
    // Settled before the agent exited: only revision 1's own container is
    // left, running again, with no agent around.
    let left = containers(&pki.instance, Some("settle"));
    assert_eq!(left, std::slice::from_ref(&v1), "exactly one container, revision 1's");
    assert_eq!(inspect(&v1, "{{.State.Running}}"), "true");

    let agent = Agent::start_ready(&pki, &config);
    wait_until(T, "ps to show revision 1 running and healthy", || {
        let ps = ps(&pki, &agent.addr);
        let s = service(&ps, "settle");
        s["revision"] == 1 && s["state"] == "running" && s["containers"][0]["health"] == "healthy"
    });
    let ps = ps(&pki, &agent.addr);
    let s = service(&ps, "settle");
    let listed = s["containers"].as_array().expect("containers");
    assert_eq!(listed.len(), 1, "{s}");
    assert_eq!(listed[0]["id"], v1.as_str(), "{s}");
    assert_eq!(listed[0]["revision"], 1, "{s}");
    assert_eq!(
        containers(&pki.instance, Some("settle")),
        [v1],
        "no duplicate after the restart"
    );
    let revisions = revisions(&pki, &agent, "settle");
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert!(revisions[0].starts_with("2 deploy interrupted"), "{revisions:?}");
    assert_eq!(revisions[1], "1 create active", "{revisions:?}");
}

#[test]
fn an_open_events_stream_ends_when_the_agent_shuts_down() {
    let pki = Pki::new();
    let mut agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let mut events = Client::start(&pki, &agent, &["events"], false);
    let lines = events.lines();
    // The stream is open once it carries an event.
    ok(&apply(&pki, &agent.addr, &Spec::checked("watched", "v1")));
    let deployed = wait_for_line(&lines, "deployed");
    assert!(deployed.contains("watched"), "{deployed}");

    assert_clean_exit(&mut agent);
    let mut ended = None;
    wait_until(T, "berthctl events to end with the agent", || {
        ended = events.0.try_wait().ok().flatten();
        ended.is_some()
    });
    let status = ended.expect("exited");
    assert!(status.success(), "the stream ended cleanly, not cut: {status}");
}

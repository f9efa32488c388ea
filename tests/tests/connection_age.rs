//! The agent's maximum connection age against a real agent over real TLS,
//! with a 2 s age: `berthctl logs -f` and `berthctl events` keep delivering
//! across several ages with nothing lost or repeated and nothing said on
//! stderr, while the agent's log shows the old connections closed; and a
//! call in progress when its connection reaches the age (a deploy waiting
//! on its health gate) still completes within the grace, while one still
//! open after the grace has its connection closed.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_tests::{Agent, Events, Pki, Running, Spec, agent_config, apply, berthctl_command, ok, wait_until};

/// A 2 s age and a grace long enough for the deploy below.
const SHORT_AGE: &str = "[connections]\nmax_connection_age = \"2s\"\nmax_connection_age_grace = \"30s\"\n";

/// How the agent logs a connection it closed at its age.
const CLOSED_AT_AGE: &str = "Closed a connection at connections.max_connection_age";

#[test]
fn follow_streams_carry_on_across_connection_ages_without_loss_or_repeats() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, SHORT_AGE));
    let counter = "i=0; while true; do echo \"n $i\"; i=$((i+1)); sleep 0.1; done";
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::new("counter", "v1").key("command", ["sh", "-c", counter]),
    ));

    let err_log = pki.path("logs-stderr.txt");
    let mut logs = Running(
        berthctl_command(&pki, &agent.addr)
            .args(["logs", "counter", "-f", "--tail", "1"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err_log).expect("stderr file"))
            .spawn()
            .expect("spawn logs -f"),
    );
    let (tx, lines) = mpsc::channel();
    let out = logs.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let events = Events::watch_with(&pki, &agent.addr, &["churn"]);

    // Several ages go by while a revision of `churn` is applied now and then.
    let started = Instant::now();
    let mut applied = 0;
    while started.elapsed() < Duration::from_secs(9) || applied < 4 {
        applied += 1;
        let spec = Spec::new("churn", "v1").key("command", ["sh", "-c", &format!("echo {applied}; sleep 3600")]);
        ok(&apply(&pki, &agent.addr, &spec));
        std::thread::sleep(Duration::from_millis(1500));
    }
    let closed = agent.logs().matches(CLOSED_AT_AGE).count();
    assert!(
        closed >= 3,
        "{closed} connections closed at their age; agent log:\n{}",
        agent.logs()
    );

    // Every revision's "deployed" event came exactly once.
    wait_until(Duration::from_secs(20), "the last revision's event", || {
        events
            .events()
            .iter()
            .any(|e| e["kind"] == "deployed" && e["revision"] == applied)
    });
    let got = events.events();
    for rev in 1..=applied {
        let n = got
            .iter()
            .filter(|e| e["kind"] == "deployed" && e["revision"] == rev)
            .count();
        assert_eq!(n, 1, "revision {rev} deployed {n} times in:\n{}", events.text());
    }

    // The log lines count up by one: none lost, none repeated.
    let mut seen: Vec<u64> = Vec::new();
    while let Ok(line) = lines.try_recv() {
        let n = line
            .strip_prefix("n ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a counter line: {line:?}"));
        seen.push(n);
    }
    assert!(seen.len() > 50, "only {} lines in 9s", seen.len());
    for pair in seen.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap or a repeat in {seen:?}");
    }
    assert!(logs.0.try_wait().expect("status").is_none(), "logs -f ended");
    let said = std::fs::read_to_string(&err_log).unwrap_or_default();
    assert!(said.is_empty(), "logs -f said on stderr: {said}");
}

/// Starts `berthctl apply` of a service whose health gate stays shut until
/// the test creates /tmp/ready in its container; returns the apply and
/// the container once it waits on the gate.
fn gated_apply(pki: &Pki, agent: &Agent) -> (Child, String) {
    let spec = Spec::new("gated", "v1")
        .key("command", ["sh", "-c", "sleep 3600"])
        .health_exec(&["test", "-e", "/tmp/ready"])
        .set("health", "retries", 100)
        .set("deploy", "health_deadline", "60s");
    let path = spec.write_in(pki.dir.path());
    let deploy = berthctl_command(pki, &agent.addr)
        .args(["apply", "-f", &path.to_string_lossy()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apply");
    let mut id = String::new();
    wait_until(Duration::from_secs(30), "the new container waits on its gate", || {
        id = berth_tests::running(&pki.instance, "gated").pop().unwrap_or_default();
        !id.is_empty()
    });
    (deploy, id)
}

#[test]
fn a_call_in_progress_when_its_connection_reaches_its_age_completes() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, SHORT_AGE));
    let (deploy, id) = gated_apply(&pki, &agent);
    // Well past the connection's age; the call is still in progress.
    std::thread::sleep(Duration::from_secs(4));
    let _ = std::process::Command::new("docker")
        .args(["exec", &id, "touch", "/tmp/ready"])
        .output();
    let out = deploy.wait_with_output().expect("apply ends");
    assert!(
        out.status.success(),
        "apply failed across the connection age:\n{}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.logs()
    );
    wait_until(Duration::from_secs(10), "the deploy's connection closed", || {
        agent.logs().contains(CLOSED_AT_AGE)
    });
}

#[test]
fn a_call_still_open_after_the_grace_has_its_connection_closed() {
    let pki = Pki::new();
    let config = "[connections]\nmax_connection_age = \"2s\"\nmax_connection_age_grace = \"1s\"\n";
    let agent = Agent::start_ready(&pki, &agent_config(&pki, config));
    let (deploy, _id) = gated_apply(&pki, &agent);
    agent.wait_for(Duration::from_secs(30), "the connection closed after its grace", || {
        agent
            .logs()
            .contains("calls were still open at connections.max_connection_age plus its grace")
    });
    let out = deploy.wait_with_output().expect("apply ends");
    assert!(!out.status.success(), "the apply's connection was closed under it");
}

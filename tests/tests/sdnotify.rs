//! systemd readiness (`Type=notify` in the packaged unit): the real agent,
//! started with `NOTIFY_SOCKET` pointing at a datagram socket this test owns,
//! must say `READY=1` only once it listens and supervises, and `STOPPING=1`
//! when SIGTERM starts its shutdown.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use berth_tests::{Agent, Pki, agent_config, berthctl, ok};

/// Reads notify datagrams until one has a line equal to `want`; returns
/// everything read. A generous socket timeout only bounds a hang.
fn wait_for(sock: &UnixDatagram, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {want} from the agent (got {seen:?}): {e}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = msg.lines().any(|l| l == want);
        seen.push(msg);
        if done {
            return seen;
        }
    }
}

#[test]
fn notifies_ready_when_serving_and_stopping_on_sigterm() {
    let pki = Pki::new();
    let config = pki.path("agent.toml");
    std::fs::write(&config, agent_config(&pki, "")).expect("write config");
    let sock_path = pki.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("socket timeout");

    let mut child = Agent::command(&config, &pki.path("agent.log"))
        .env("NOTIFY_SOCKET", &sock_path)
        .spawn()
        .expect("spawn berth-agent");

    let seen = wait_for(&sock, "READY=1");
    // Ready means both halves work: it accepts mTLS calls and the supervisor
    // answers (ps fails, naming what it waits for, before it runs).
    let addr = std::fs::read_to_string(pki.path("agent.addr")).expect("listen address written before READY=1");
    ok(&berthctl(&pki, addr.trim(), &["ps"]));
    assert!(
        seen.iter().any(|m| m.contains("STATUS=Listening")),
        "a status line comes with READY: {seen:?}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    wait_for(&sock, "STOPPING=1");
    let status = child.wait().expect("wait for the agent");
    let logs = std::fs::read_to_string(pki.path("agent.log")).unwrap_or_default();
    assert!(status.success(), "agent exit {status}:\n{logs}");
}

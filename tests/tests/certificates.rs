//! Certificate rotation and revocation against a real agent over real TLS:
//! the agent's certificate reissued while a `logs -f` stream runs (the
//! stream carries on, new connections get the new certificate), a client
//! certificate revoked through `[tls] crl` refused at the handshake, a reload
//! on SIGHUP, and the
//! warnings about a private key others may read.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use berth_tests::{
    Agent, Pki, Running, Spec, agent_config, apply, berthctl, berthctl_command, check_config, fails, ok,
};
use berthctl::certs::{self, Role, Validity};

#[test]
fn a_reissued_agent_certificate_serves_new_connections_while_streams_carry_on() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let spec = Spec::new("ticker", "v1").key("command", ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]);
    ok(&apply(&pki, &agent.addr, &spec));

    let mut logs = Running(
        berthctl_command(&pki, &agent.addr)
            .args(["logs", "ticker", "-f", "--tail", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
    lines.recv_timeout(Duration::from_secs(20)).expect("a first line");

    // A new CA issues the agent's new certificate, so which certificate a
    // connection gets shows in which CA berthctl must trust.
    let new_ca = pki.path("new-ca");
    certs::init_ca(&new_ca, Validity::days(1), false).expect("new ca");
    certs::issue_agent(
        &new_ca,
        "agent",
        &["127.0.0.1".into(), "localhost".into()],
        Validity::days(1),
        false,
    )
    .expect("new agent cert");
    let tls = pki.tls_dir();
    let reloads = || agent.logs().matches("Reloaded the TLS certificate").count();
    let before = reloads();
    std::fs::copy(new_ca.join("agent-key.pem"), tls.join("agent-key.pem")).expect("key");
    std::fs::copy(new_ca.join("agent.pem"), tls.join("agent.pem")).expect("cert");
    // berthctl trusting the new CA, with alice's client certificate.
    let trusting_new = pki.path("trusting-new");
    std::fs::create_dir_all(&trusting_new).expect("dir");
    std::fs::copy(new_ca.join("ca.pem"), trusting_new.join("ca.pem")).expect("ca");
    for f in ["alice.pem", "alice-key.pem"] {
        std::fs::copy(tls.join(f), trusting_new.join(f)).expect("alice");
    }

    agent.wait_for(Duration::from_secs(20), "the TLS reload", || reloads() > before);
    let old = berthctl(&pki, &agent.addr, &["info"]);
    assert!(
        !old.status.success(),
        "the old certificate is still served:\n{}",
        agent.logs()
    );
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(err.contains("berthctl refused the agent's certificate"), "{err}");
    let info = std::process::Command::new(berth_tests::bin("berthctl"))
        .args([
            "--tls-dir",
            &trusting_new.to_string_lossy(),
            "--host",
            &agent.addr,
            "info",
        ])
        .env_remove("BERTH_HOST")
        .env_remove("BERTH_TLS_DIR")
        .env_remove("BERTH_CERT")
        .output()
        .expect("berthctl");
    assert!(ok(&info).contains("alice (operator)"));

    // The stream opened before the reload is still delivering.
    while lines.try_recv().is_ok() {}
    let next = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("lines after the reload");
    assert_eq!(next, "tick");
    assert!(logs.0.try_wait().expect("status").is_none(), "logs -f ended");
}

#[test]
fn a_revoked_client_certificate_is_refused() {
    let pki = Pki::new();
    pki.issue_client("bob", Role::Operator);
    pki.issue_client("old", Role::Viewer);
    let tls = pki.tls_dir();
    let crl = tls.join("crl.pem");
    let revoke = |name: &str| {
        ok(&berthctl(
            &pki,
            "127.0.0.1:1",
            &["certs", "revoke", "--dir", &tls.to_string_lossy(), "--name", name],
        ))
    };
    assert!(revoke("old").contains("1 revoked"));
    let config = agent_config(&pki, "").replacen("[docker]", &format!("crl = \"{}\"\n[docker]", crl.display()), 1);
    let agent = Agent::start(&pki, &config);
    let info = |cert: &str| berthctl(&pki, &agent.addr, &["--cert", cert, "info"]);
    ok(&info("bob"));
    fails(&info("old"));

    // Revoked while the agent runs: it reloads the list and refuses bob.
    assert!(revoke("bob").contains("2 revoked"));
    agent.wait_for(Duration::from_secs(20), "the CRL reload", || {
        agent.logs().contains("Reloaded the TLS certificate")
    });
    let err = fails(&info("bob"));
    assert!(
        err.contains("refused your client certificate") && err.contains("revoked"),
        "{err}"
    );
    agent.wait_for(Duration::from_secs(10), "the refusal logged", || {
        agent.logs().contains("has been revoked")
    });
    ok(&info("alice"));
}

#[test]
fn a_key_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let pki = Pki::new();
    let key = pki.tls_dir().join("agent-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = check_config(&pki, &agent_config(&pki, ""));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("group or others may read") && said.contains("chmod 600"),
        "{said}"
    );
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    agent.wait_for(Duration::from_secs(10), "the warning", || {
        agent.logs().contains("group or others may read")
    });
}

#[test]
fn loose_private_dirs_are_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let pki = Pki::new();
    for dir in ["state", "env"] {
        std::fs::create_dir_all(pki.path(dir)).expect("mkdir");
        std::fs::set_permissions(pki.path(dir), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let _agent = Agent::start(&pki, &agent_config(&pki, ""));
    for dir in ["state", "env"] {
        let mode = std::fs::metadata(pki.path(dir)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{dir}");
    }
}

#[test]
fn sighup_reloads_the_tls_material() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let by_sighup = || {
        agent
            .logs()
            .lines()
            .any(|l| l.contains("Reloaded the TLS certificate") && l.contains("SIGHUP"))
    };
    assert!(!by_sighup(), "no reload before the signal");
    agent.signal(1);
    agent.wait_for(Duration::from_secs(20), "a reload on SIGHUP", by_sighup);
    ok(&berthctl(&pki, &agent.addr, &["info"]));
}

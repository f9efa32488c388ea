//! Hardening: what anyone who reaches the agent's port, or an unlucky
//! operator, can do to it. Connection floods, and the agent's shutdown with
//! clients that stopped reading. Real agents, real TLS, real Docker.

use std::time::Duration;

use berth_tests::flood::{Flood, IdleClient, open_sockets};
use berth_tests::nginx::Nginx;
use berth_tests::{Agent, Pki, Spec, agent_config, apply, berthctl_command, fails, ok, only_container, ps, service};

/// systemd's open-file limit for a unit without `LimitNOFILE`, the limit
/// the flood exhausted.
const SYSTEMD_NOFILE: u64 = 1024;

#[test]
fn a_connection_flood_neither_starves_callers_nor_replaces_containers() {
    let pki = Pki::new();
    let agent = Agent::start_ready_nofile(&pki, &agent_config(&pki, ""), SYSTEMD_NOFILE);
    ok(&apply(&pki, &agent.addr, &Spec::checked("flood", "v1")));
    let before = only_container(&pki.instance, "flood");

    // 2,000 idle TCP connections and 200 stalled TLS handshakes, more
    // than the agent's 1,024 descriptors, held past the handshake timeout
    // while the health probes (every 500ms, 3 retries) keep running.
    let flood = Flood::open(agent.addr.parse().expect("agent address"), 2_000, 200);
    assert!(flood.len() >= 2_000, "the flood got {} connections in", flood.len());
    let mut held = 0;
    for _ in 0..4 {
        let s = ps(&pki, &agent.addr);
        let svc = service(&s, "flood");
        assert_eq!(svc["containers"][0]["health"], "healthy", "{svc}");
        held = held.max(open_sockets(agent.pid()));
        std::thread::sleep(Duration::from_secs(2));
    }
    // connections.max_per_address (64) from each of the two flood
    // addresses, at most; plus the listener, Docker's pool, ps's own.
    assert!(held < 2 * 64 + 40, "the agent held {held} sockets during the flood");
    drop(flood);

    assert_eq!(
        only_container(&pki.instance, "flood"),
        before,
        "no container was replaced"
    );
    let s = ps(&pki, &agent.addr);
    assert_eq!(service(&s, "flood")["restarts"], 0, "{s}");
    // One line per refusal would be thousands: a few per interval, then a
    // count, written when the agent's 10 s interval ends.
    agent.wait_for(Duration::from_secs(30), "the refusal summary", || {
        agent.logs().contains("more connections in the last")
    });
    let logs = agent.logs();
    assert!(!logs.contains("unhealthy"), "{logs}");
    let refusals = logs.lines().filter(|l| l.contains("Refused")).count();
    assert!(refusals <= 20, "{refusals} refusal lines:\n{logs}");
}

#[test]
fn nginx_config_injection_through_any_proxy_field_is_refused_naming_the_key() {
    let pki = Pki::new();
    let nginx = Nginx::start(pki.dir.path());
    let agent = Agent::start_ready(&pki, &agent_config(&pki, &nginx.agent_config()));
    // The attack: it passed `nginx -t` and served the host's /etc.
    let attack = "/x { } location /x/ { alias /etc/; autoindex on; } location = /y";
    let base = || Spec::checked("inject", "v1").proxy("_", 18080);
    let attempts = [
        (base().set("proxy", "health_paths", [attack]), "proxy.health_paths"),
        (
            base().set("proxy", "health_paths", ["/ok", "/a;b"]),
            "proxy.health_paths",
        ),
        (
            base()
                .set("proxy", "tls_cert", "/etc/ssl/a.pem; include /etc/passwd")
                .set("proxy", "tls_key", "/etc/ssl/a.key"),
            "proxy.tls_cert",
        ),
        (
            base()
                .set("proxy", "tls_cert", "/etc/ssl/a.pem")
                .set("proxy", "tls_key", "/etc/ssl/$ssl_server_name.key"),
            "proxy.tls_key",
        ),
        (
            base().set("proxy", "server_names", ["a.example.com; location / { return 200; }"]),
            "proxy.server_names",
        ),
    ];
    for (spec, key) in attempts {
        let err = fails(&apply(&pki, &agent.addr, &spec));
        assert!(err.contains(key), "{key} not named: {err}");
    }
    assert!(
        std::fs::read_dir(&nginx.sites).expect("sites dir").next().is_none(),
        "no site was written"
    );
    assert!(service_absent(&pki, &agent.addr, "inject"));
}

fn service_absent(pki: &Pki, addr: &str, name: &str) -> bool {
    berth_tests::find_service(&ps(pki, addr), name).is_none()
}

#[test]
fn a_client_that_stopped_reading_does_not_hold_the_agents_shutdown() {
    let pki = Pki::new();
    let mut agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let chatty = Spec::new("chatty", "v1").key(
        "command",
        [
            "sh",
            "-c",
            "while :; do echo 'a line of log output that keeps coming'; done",
        ],
    );
    ok(&apply(&pki, &agent.addr, &chatty));
    // `berthctl logs -f`, then suspended (Ctrl-Z): it stops reading, the
    // stream's buffers fill, and it never answers the agent's GOAWAY.
    let mut follower = berthctl_command(&pki, &agent.addr)
        .args(["logs", "chatty", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("berthctl logs -f");
    // So is a client that finished TLS and then said nothing.
    let idle = IdleClient::connect(&pki.tls_dir(), agent.addr.parse().expect("agent address"));
    std::thread::sleep(Duration::from_secs(2));
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &follower.id().to_string()])
        .status()
        .expect("kill -STOP");
    assert!(stopped.success());
    std::thread::sleep(Duration::from_secs(3));

    let status = agent.signal_and_wait(15, Duration::from_secs(40));
    drop(idle);
    let _ = follower.kill();
    let _ = follower.wait();
    let status = status.expect("the agent exited");
    assert!(status.success(), "exit {status}; the grace ran out:\n{}", agent.logs());
    assert!(!agent.logs().contains("did not finish in time"), "{}", agent.logs());
}

#[test]
fn oversized_specs_are_refused_and_ps_keeps_answering() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    ok(&apply(&pki, &agent.addr, &Spec::checked("small", "v1")));

    // Megabytes of labels, as in the issue: refused before anything is kept.
    let blob = "x".repeat(1000);
    let mut huge = Spec::checked("huge", "v1");
    for i in 0..1500 {
        huge = huge.set("labels", &format!("l{i}"), blob.as_str());
    }
    let err = fails(&apply(&pki, &agent.addr, &huge));
    assert!(err.contains("a spec may be at most 64 KiB"), "{err}");
    assert!(err.len() < 2_000, "the refusal is short: {} bytes", err.len());

    // Under the spec limit but past the label limits.
    let mut wide = Spec::checked("wide", "v1");
    for i in 0..65 {
        wide = wide.set("labels", &format!("l{i}"), "v");
    }
    let err = fails(&apply(&pki, &agent.addr, &wide));
    assert!(err.contains("at most 64 are allowed"), "{err}");

    // A spec that is one huge syntax error gets a bounded message, not a
    // broken call.
    let garbage = format!("name = \"g\"\nimage = \"{}", "y".repeat(60_000));
    let path = pki.dir.path().join("garbage.toml");
    std::fs::write(&path, garbage).expect("write");
    let out = berthctl_command(&pki, &agent.addr)
        .args(["apply", "-f"])
        .arg(&path)
        .output()
        .expect("berthctl");
    let err = fails(&out);
    assert!(err.len() < 4_000, "bounded: {} bytes", err.len());

    let s = ps(&pki, &agent.addr);
    assert!(berth_tests::find_service(&s, "huge").is_none(), "{s}");
    assert!(berth_tests::find_service(&s, "wide").is_none(), "{s}");
    assert_eq!(service(&s, "small")["containers"][0]["health"], "healthy", "{s}");
}

//! Foundation: agent and berthctl over mutual TLS, refusals with their
//! messages, check-config, shutdown on SIGTERM, and berthctl ending quietly
//! when its reader goes away (`| head -1`), and the standard gRPC health
//! service next to berth's own. Real processes, real TLS.

use std::time::Duration;

use berth_tests::{Agent, Pki, agent_config, berthctl, bin, check_config, fails, free_port, ok, wait_until};
use berthctl::certs::{self, Role, Validity};

#[test]
fn info_round_trip_over_mutual_tls() {
    let pki = Pki::new();
    let agent = Agent::start(&pki, &agent_config(&pki, ""));

    let table = ok(&berthctl(&pki, &agent.addr, &["info"]));
    assert!(table.contains("alice (operator)"), "{table}");
    assert!(table.contains("berth-agent 0.1.0"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&berthctl(&pki, &agent.addr, &["info", "--output", "json"]))).expect("json");
    assert_eq!(json["caller"]["name"], "alice");
    assert_eq!(json["caller"]["role"], "operator");
    assert!(json["cpus"].as_u64().unwrap_or(0) >= 1, "{json}");
    assert!(json["memory_bytes"].as_u64().unwrap_or(0) > 0, "{json}");
    assert!(!json["hostname"].as_str().unwrap_or("").is_empty(), "{json}");
    // The machine's Docker Engine is a real component of the suite.
    assert_eq!(json["docker"]["error"], "", "{json}");
    assert!(
        json["docker"]["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{json}"
    );
    assert!(json["capabilities"].as_array().is_some_and(|c| !c.is_empty()), "{json}");
}

#[test]
fn viewer_role_travels_in_the_certificate() {
    let pki = Pki::new();
    pki.issue_client("victor", Role::Viewer);
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    let out = ok(&berthctl(
        &pki,
        &agent.addr,
        &["--cert", "victor", "info", "-o", "json"],
    ));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["caller"]["name"], "victor");
    assert_eq!(json["caller"]["role"], "viewer");

    // Two client certs now: berthctl must ask which one.
    let err = fails(&berthctl(&pki, &agent.addr, &["info"]));
    assert!(
        err.contains("several client certificates") && err.contains("--cert"),
        "{err}"
    );
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    // A rogue CA issues "mallory"; mallory trusts the real agent CA so only
    // the agent's check can refuse.
    let rogue = pki.path("rogue");
    certs::init_ca(&rogue, Validity::days(1), false).expect("rogue ca");
    certs::issue_client(&rogue, "mallory", Role::Operator, Validity::days(1), false).expect("rogue client");
    std::fs::copy(pki.tls_dir().join("ca.pem"), rogue.join("ca.pem")).expect("trust agent ca");

    let out = std::process::Command::new(bin("berthctl"))
        .args(["--host", &agent.addr, "--tls-dir"])
        .arg(&rogue)
        .arg("info")
        .output()
        .expect("berthctl");
    let err = fails(&out);
    assert!(err.contains("the agent refused your client certificate"), "{err}");
    assert!(err.contains("not signed by the CA the agent trusts"), "{err}");
    wait_until(Duration::from_secs(10), "the agent to log why it refused", || {
        agent.logs().contains("not signed by this agent's CA")
    });
}

#[test]
fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let now = time::OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    certs::issue_client(&pki.tls_dir(), "old", Role::Operator, expired, false).expect("expired cert");
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    let err = fails(&berthctl(&pki, &agent.addr, &["--cert", "old", "info"]));
    assert!(err.contains("the agent refused your client certificate"), "{err}");
    assert!(err.contains("expired"), "{err}");
    wait_until(
        Duration::from_secs(10),
        "the agent to log the expired certificate",
        || agent.logs().contains("client certificate has expired"),
    );
}

#[test]
fn plaintext_client_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    let err = fails(&berthctl(&pki, &format!("http://{}", agent.addr), &["info"]));
    assert!(err.contains("refused a plaintext connection"), "{err}");
    assert!(err.contains("mutual TLS only"), "{err}");
    wait_until(Duration::from_secs(10), "the agent to log the plaintext client", || {
        agent.logs().contains("did not speak TLS")
    });
}

#[test]
fn agent_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    certs::issue_agent(
        &pki.tls_dir(),
        "agent",
        &["agent.example".into()],
        Validity::days(1),
        true,
    )
    .expect("agent cert for another name");
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    let err = fails(&berthctl(&pki, &agent.addr, &["info"]));
    assert!(err.contains("berthctl refused the agent's certificate"), "{err}");
    assert!(
        err.contains("agent.example") && err.contains("not for 127.0.0.1"),
        "{err}"
    );
}

#[test]
fn unreachable_agent_says_nothing_listens() {
    let pki = Pki::new();
    let port = free_port();
    let err = fails(&berthctl(&pki, &format!("127.0.0.1:{port}"), &["info"]));
    assert!(
        err.contains("connection refused") && err.contains("is berth-agent running"),
        "{err}"
    );
}

#[test]
fn check_config_names_unknown_keys_and_bad_values() {
    let pki = Pki::new();
    let check = |text: &str| check_config(&pki, text);
    let good = agent_config(&pki, "");
    assert!(ok(&check(&good)).contains("OK"));

    let err = fails(&check(
        &good.replace("[docker]\n", "[docker]\nsokcet = \"/run/docker.sock\"\n"),
    ));
    assert!(err.contains("sokcet"), "{err}");
    assert!(err.contains("line"), "{err}");

    let err = fails(&check(
        &good.replace("listen = \"127.0.0.1:0\"", "listen = \"everywhere\""),
    ));
    assert!(err.contains("listen") && err.contains("line 1"), "{err}");

    let err = fails(&check(&format!("{good}\n[log]\nformat = \"xml\"\n")));
    assert!(err.contains("xml") && err.contains("format"), "{err}");

    let missing = good.replace("tls/agent.pem", "tls/nope.pem");
    let err = fails(&check(&missing));
    assert!(err.contains("tls.cert") && err.contains("nope.pem"), "{err}");

    // The same check guards the daemon itself: a bad config exits 64.
    let path = pki.path("bad.toml");
    std::fs::write(&path, "bogus = 1\n").expect("write");
    let status = std::process::Command::new(bin("berth-agent"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run agent");
    assert_eq!(
        status.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn agent_exits_cleanly_on_sigterm() {
    let pki = Pki::new();
    let mut agent = Agent::start(&pki, &agent_config(&pki, ""));
    ok(&berthctl(&pki, &agent.addr, &["info"]));
    let status = agent
        .signal_and_wait(15, Duration::from_secs(20))
        .expect("agent should exit after SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", agent.logs());
    let logs = agent.logs();
    assert!(logs.contains("SIGTERM") && logs.contains("Stopped."), "{logs}");
}

#[test]
fn a_reader_that_goes_away_ends_berthctl_quietly() {
    use std::io::{BufRead as _, BufReader};
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    // Far more output than a pipe holds, so berthctl is still writing
    // when its reader goes (`berthctl logs chatty | head -1`).
    let spec = berth_tests::Spec::new("chatty", "v1").key("command", ["sh", "-c", "seq 1 50000; sleep 3600"]);
    ok(&berth_tests::apply(&pki, &agent.addr, &spec));
    wait_until(Duration::from_secs(30), "all the lines written", || {
        let out = berthctl(&pki, &agent.addr, &["logs", "chatty", "--tail", "1"]);
        String::from_utf8_lossy(&out.stdout).trim() == "50000"
    });
    let mut child = berth_tests::berthctl_command(&pki, &agent.addr)
        .args(["logs", "chatty", "--tail", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berthctl");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("a first line");
    assert_eq!(first.trim(), "1");
    // The reader is dropped here, like `head -1` exiting.
    let out = child.wait_with_output().expect("berthctl ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.is_empty(), "said on stderr: {err}");
}

#[test]
fn standard_health_service_answers_and_an_unknown_service_is_unimplemented() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let target: berthctl::client::Target = agent.addr.parse().expect("target");
    let files = berthctl::client::TlsFiles::resolve(&pki.tls_dir(), None).expect("tls files");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = berthctl::client::connect(&target, &files).await.expect("connect");
        let mut health = HealthClient::new(channel.clone());
        for service in ["", "berth.v1.Services", "berth.v1.Host"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health check")
                .into_inner()
                .status;
            // SERVING
            assert_eq!(status, 1, "{service:?}");
        }
        // The health client's codec on a path no service of the agent owns.
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::from_static("/berth.v1.NoSuchService/Check");
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, tonic_health::pb::HealthCheckResponse>::default();
        let err = grpc
            .unary(tonic::Request::new(HealthCheckRequest::default()), path, codec)
            .await
            .expect_err("unknown service");
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");
    });
}

//! Health that knows what is serving, against the real Docker Engine and
//! real agents:
//!
//! - `[health.version]`: a deploy of an image that answers healthy but
//!   reports another version fails with both versions named, and the old
//!   revision keeps serving; the right one passes and `ps` shows what it
//!   serves;
//! - checks with roles: a failing `[health.deps]` check marks the service
//!   degraded (an event, no restart) and it recovers; a failing live check
//!   replaces the container;
//! - a rollout records the version each host serves after its deploy;
//! - the image's HEALTHCHECK: without `[health]`, Docker's health status
//!   gates a deploy (an unhealthy one fails it) and replaces a container
//!   that turns unhealthy; `ps` says the verdict comes from the image;
//! - probe output never shows the service's env: an exec check echoing a
//!   secret shows `[redacted]` in `ps`, in events and in the agent log;
//! - maintenance mode, through a real nginx: on, nginx answers 503 on `/`
//!   and on the health paths while the container keeps running; it stays
//!   on across an agent restart; off, 200 again.

use std::time::Duration;

use berth_tests::nginx::{Nginx, get};
use berth_tests::{
    Agent, Events, Fleet, Host, Pki, Spec, agent_config, apply, berthctl, docker, fails, free_port, image, json, ok,
    one_running, ps, service, wait_until,
};

const T: Duration = Duration::from_secs(60);

/// The contextgraph shape: ready on `/__lbheartbeat__`, deps on
/// `/__heartbeat__`, the version asserted on `/__version__` (the test
/// images answer `{"version":"TAG"}`).
fn contextgraph(name: &str, tag: &str) -> Spec {
    Spec::checked(name, tag)
        .set("health", "http", "/__lbheartbeat__")
        .set("health", "success_threshold", 2)
        .set("health.deps", "http", "/__heartbeat__")
        .set("health.deps", "interval", "500ms")
        .set("health.deps", "timeout", "500ms")
        .set("health.deps", "retries", 2)
        .set("health.version", "path", "/__version__")
}

/// The first event of `kind` about `service` seen so far; panics without.
fn event(events: &Events, kind: &str, service: &str) -> serde_json::Value {
    events
        .events()
        .into_iter()
        .find(|e| e["kind"] == kind && e["service"] == service)
        .unwrap_or_else(|| panic!("no {kind} event for {service}: {}", events.text()))
}

/// A fresh agent. Bind it as `let (pki, agent) = setup();`: locals drop
/// in reverse order, so the agent stops before the Pki's drop removes the
/// instance's containers; the other way round, an agent still running
/// recreates a removed container (restart "always") and it outlives the
/// test.
fn setup() -> (Pki, Agent) {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    (pki, agent)
}

#[test]
fn a_healthy_container_serving_another_version_fails_its_deploy() {
    let (pki, agent) = setup();
    ok(&apply(&pki, &agent.addr, &contextgraph("versioned", "v1")));
    let before = one_running(&pki.instance, "versioned");
    wait_until(T, "ps showing version v1", || {
        service(&ps(&pki, &agent.addr), "versioned")["version"] == "v1"
    });

    // `wrongver` answers every health path, but says it serves v1.
    let out = berthctl(
        &pki,
        &agent.addr,
        &["deploy", "versioned", "--image", &image("wrongver")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = fails(&out);
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("serving v1, expected wrongver"), "{said}");
    let svc = service(&ps(&pki, &agent.addr), "versioned").clone();
    assert_eq!(svc["revision"], 1, "the old revision is active: {svc}");
    // The old container was stopped and started again: its version shows
    // once the monitor's first probes of the new run pass.
    wait_until(T, "ps showing version v1 again", || {
        service(&ps(&pki, &agent.addr), "versioned")["version"] == "v1"
    });
    assert_eq!(
        one_running(&pki.instance, "versioned"),
        before,
        "the old container kept serving"
    );

    // The right version passes, and ps shows it.
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["deploy", "versioned", "--image", &image("v2")],
    ));
    let svc = service(&ps(&pki, &agent.addr), "versioned").clone();
    assert_eq!(svc["version"], "v2", "{svc}");
    let table = ok(&berthctl(&pki, &agent.addr, &["ps"]));
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains(" VERSION "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("versioned ") && l.contains(" v2 ")),
        "{table}"
    );
}

#[test]
fn a_failing_deps_check_degrades_without_a_restart_and_a_failing_live_check_replaces() {
    let (pki, agent) = setup();
    let events = Events::watch(&pki, &agent.addr);
    // `depsdown` answers /__lbheartbeat__ but not /__heartbeat__: the deploy
    // passes (deps never gate), then the service turns degraded.
    let spec = contextgraph("deps", "depsdown").set("health.live", "http", "/health");
    let spec = ["interval", "timeout"]
        .iter()
        .fold(spec, |s, k| s.set("health.live", k, "500ms"))
        .set("health.live", "retries", 2);
    ok(&apply(&pki, &agent.addr, &spec));
    let first = one_running(&pki.instance, "deps");
    wait_until(T, "the service degraded", || {
        service(&ps(&pki, &agent.addr), "deps")["state"] == "degraded"
    });
    let degraded = event(&events, "degraded", "deps");
    assert!(
        degraded["message"].as_str().unwrap_or("").contains("/__heartbeat__"),
        "{degraded}"
    );
    // Several more deps probes fail; the container stays.
    std::thread::sleep(Duration::from_secs(3));
    let svc = service(&ps(&pki, &agent.addr), "deps").clone();
    assert_eq!(
        (svc["state"].as_str(), svc["restarts"].as_u64()),
        (Some("degraded"), Some(0)),
        "{svc}"
    );
    assert!(svc["detail"].as_str().unwrap_or("").contains("dependency"), "{svc}");
    assert_eq!(
        one_running(&pki.instance, "deps"),
        first,
        "a dependency never restarts it"
    );

    // The dependency comes back: the service recovers.
    docker(&["exec", &first, "sh", "-c", "printf ok > /www/__heartbeat__"]);
    wait_until(T, "the service running again", || {
        service(&ps(&pki, &agent.addr), "deps")["state"] == "running"
    });
    wait_until(T, "a recovered event", || {
        events
            .events()
            .iter()
            .any(|e| e["kind"] == "recovered" && e["service"] == "deps")
    });
    assert_eq!(one_running(&pki.instance, "deps"), first);

    // The live check fails: the container is replaced.
    docker(&["exec", &first, "rm", "/www/health"]);
    wait_until(T, "the container replaced", || {
        berth_tests::running(&pki.instance, "deps")
            .first()
            .is_some_and(|id| *id != first)
    });
    assert!(
        events
            .events()
            .iter()
            .any(|e| e["kind"] == "unhealthy" && e["service"] == "deps"),
        "{}",
        events.text()
    );
}

const HOST: &str = "maint.berth.test";

/// The status nginx answers for `path`; 0 when it does not answer.
fn status(port: u16, path: &str) -> u16 {
    get(port, HOST, path).map(|(code, _)| code).unwrap_or(0)
}

#[test]
fn maintenance_mode_answers_503_everywhere_and_survives_an_agent_restart() {
    let pki = Pki::new();
    let nginx = Nginx::start(pki.dir.path());
    let config = agent_config(&pki, &nginx.agent_config());
    let mut agent = Agent::start_ready(&pki, &config);
    let events = Events::watch(&pki, &agent.addr);
    let port = free_port();
    let spec = Spec::checked("maint", "v1")
        .set("health", "http", "/__lbheartbeat__")
        .proxy(HOST, port);
    ok(&apply(&pki, &agent.addr, &spec));
    let container = one_running(&pki.instance, "maint");
    let paths = ["/", "/__lbheartbeat__", "/__heartbeat__", "/__version__"];
    wait_until(T, "nginx proxying to maint", || status(port, "/") == 200);

    let said = ok(&berthctl(&pki, &agent.addr, &["maintenance", "on", "maint"]));
    assert!(said.contains("maintenance on"), "{said}");
    // nginx's reload is graceful: old workers may answer a moment longer.
    for path in paths {
        wait_until(T, &format!("503 on {path}"), || status(port, path) == 503);
    }
    let (_, page) = get(port, HOST, "/").expect("GET /");
    assert!(page.contains("maint is down for maintenance"), "{page}");
    assert_eq!(
        one_running(&pki.instance, "maint"),
        container,
        "the container keeps running"
    );
    let svc = service(&ps(&pki, &agent.addr), "maint").clone();
    assert_eq!(
        (svc["maintenance"].as_bool(), svc["state"].as_str()),
        (Some(true), Some("running")),
        "{svc}"
    );
    let table = ok(&berthctl(&pki, &agent.addr, &["ps"]));
    assert!(table.contains("maint: maintenance on"), "{table}");
    wait_until(T, "a maintenance-on event", || {
        events
            .events()
            .iter()
            .any(|e| e["kind"] == "maintenance-on" && e["service"] == "maint")
    });
    let audit = std::fs::read_to_string(pki.path("state/audit.log")).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"maintenance on\"") && l.contains("\"maint\"")),
        "{audit}"
    );

    // The agent restarts: the site stays in maintenance, even after the
    // reconciler has looked at it.
    agent
        .signal_and_wait(15, Duration::from_secs(40))
        .expect("agent stopped");
    let agent = Agent::start_ready(&pki, &config);
    wait_until(T, "ps after the restart", || {
        service(&ps(&pki, &agent.addr), "maint")["maintenance"] == true
    });
    std::thread::sleep(Duration::from_secs(2));
    for path in paths {
        assert_eq!(status(port, path), 503, "{path} in maintenance after an agent restart");
    }

    ok(&berthctl(&pki, &agent.addr, &["maintenance", "off", "maint"]));
    for path in paths {
        wait_until(T, &format!("200 on {path} again"), || status(port, path) == 200);
    }
    assert_eq!(service(&ps(&pki, &agent.addr), "maint")["maintenance"], false);
    // A service without [proxy] cannot be put in maintenance.
    ok(&apply(&pki, &agent.addr, &Spec::checked("plain", "v1")));
    let err = fails(&berthctl(&pki, &agent.addr, &["maintenance", "on", "plain"]));
    assert!(err.contains("plain has no [proxy]"), "{err}");
}

#[test]
fn an_image_healthcheck_gates_a_deploy_and_replaces_an_unhealthy_container() {
    let (pki, agent) = setup();
    let events = Events::watch(&pki, &agent.addr);
    // `dockerhc` has a HEALTHCHECK on /health (every 1s, 2 retries); the
    // spec has no [health].
    let spec = Spec::new("imagehc", "dockerhc")
        .key("ports", ["8000"])
        .set("deploy", "health_deadline", "30s");
    ok(&apply(&pki, &agent.addr, &spec));
    let first = one_running(&pki.instance, "imagehc");
    let svc = service(&ps(&pki, &agent.addr), "imagehc").clone();
    assert_eq!(svc["health_source"], "image", "{svc}");
    assert_eq!(
        svc["containers"][0]["health"], "healthy",
        "the gate waited for Docker's verdict: {svc}"
    );
    let table = ok(&berthctl(&pki, &agent.addr, &["ps"]));
    assert!(
        table.contains("imagehc: health from the image's HEALTHCHECK"),
        "{table}"
    );

    // A revision whose /health is gone: Docker reports it unhealthy, and
    // the deploy fails with the old container still serving.
    let broken = spec
        .clone()
        .key("command", ["sh", "-c", "rm /www/health; exec /bin/sh /app/serve.sh"]);
    let out = berthctl(
        &pki,
        &agent.addr,
        &["apply", "-f", &broken.write_in(pki.dir.path()).to_string_lossy()],
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), fails(&out));
    assert!(said.contains("the image's HEALTHCHECK reports unhealthy"), "{said}");
    assert_eq!(
        one_running(&pki.instance, "imagehc"),
        first,
        "the old container kept serving"
    );

    // The running container turns unhealthy: it is replaced.
    docker(&["exec", &first, "rm", "/www/health"]);
    wait_until(T, "the unhealthy container replaced", || {
        berth_tests::running(&pki.instance, "imagehc")
            .first()
            .is_some_and(|id| *id != first)
    });
    let replaced = event(&events, "unhealthy", "imagehc");
    assert!(
        replaced["message"].as_str().unwrap_or("").contains("HEALTHCHECK"),
        "{replaced}"
    );
}

#[test]
fn a_probe_echoing_a_secret_never_shows_it_in_ps_events_or_the_agent_log() {
    let (pki, agent) = setup();
    let events = Events::watch(&pki, &agent.addr);
    let secret = format!("tok-{}", pki.instance);
    let env = pki.path("env/leaky.env");
    std::fs::create_dir_all(pki.path("env")).expect("env dir");
    std::fs::write(&env, format!("API_TOKEN={secret}\n")).expect("env file");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    // A careless exec check: it prints the token, then checks /health.
    let spec = Spec::new("leaky", "v1")
        .key("ports", ["8000"])
        .health_exec(&[
            "sh",
            "-c",
            "echo token=$API_TOKEN; wget -q -O- http://127.0.0.1:8000/health",
        ])
        .set("deploy", "health_deadline", "20s");
    ok(&apply(&pki, &agent.addr, &spec));
    let container = one_running(&pki.instance, "leaky");
    // Failing now: the unhealthy event carries the probe's output.
    docker(&["exec", &container, "rm", "/www/health"]);
    wait_until(T, "an unhealthy event for leaky", || {
        events
            .events()
            .iter()
            .any(|e| e["kind"] == "unhealthy" && e["service"] == "leaky")
    });
    let unhealthy = event(&events, "unhealthy", "leaky");
    assert!(
        unhealthy["message"].as_str().unwrap_or("").contains("token=[redacted]"),
        "{unhealthy}"
    );
    wait_until(T, "the replacement running", || {
        berth_tests::running(&pki.instance, "leaky")
            .first()
            .is_some_and(|id| *id != container)
    });
    let listing = ps(&pki, &agent.addr).to_string();
    let table = ok(&berthctl(&pki, &agent.addr, &["ps"]));
    for (what, text) in [
        ("events", events.text()),
        ("ps -o json", listing),
        ("ps", table),
        ("the agent log", agent.logs()),
    ] {
        assert!(!text.contains(&secret), "{what} shows the secret:\n{text}");
    }
}

#[test]
fn a_rollout_shows_the_version_each_host_serves() {
    let fleet = Fleet::start_with(Host::tiers(&[("web", 2)]), "");
    for m in fleet.members() {
        ok(&fleet.apply(&m.name, &contextgraph("api", "v1")));
    }
    let inv = fleet.write_inventory(&fleet.inventory("prod"));
    let inv = inv.to_string_lossy();
    let run = |args: &[&str]| {
        fleet
            .ctl(&["--inventory", &inv, "--fleet", "prod", "rollout"])
            .args(args)
            .output()
            .expect("run berthctl rollout")
    };
    let out = ok(&run(&["--service", "api", "--image", &image("v2"), "--yes"]));
    // The summary table's VERSION column.
    let serving = out
        .lines()
        .filter(|l| l.starts_with("web-") && l.contains(" succeeded ") && l.trim_end().ends_with(" v2"))
        .count();
    assert_eq!(serving, 2, "{out}");
    let ls = json(&run(&["ls", "-o", "json"]));
    let id = ls[0]["id"].as_str().unwrap_or_default().to_owned();
    let status = json(&run(&["status", &id, "-o", "json"]));
    let hosts = status["hosts"].as_array().cloned().unwrap_or_default();
    assert_eq!(hosts.len(), 2, "{status}");
    for h in hosts {
        assert_eq!(h["version"], "v2", "{h}");
    }
}

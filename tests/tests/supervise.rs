//! Supervision against the real Docker Engine and the local registry:
//! health-gated deploys with automatic rollback, self-healing, adoption
//! after an agent restart, SIGKILL mid-deploy, state rebuilt from labels,
//! specs refused before anything changes, and probes that do not wait for
//! the interval: the gate's first one, and those of a restarted container.

use std::process::Command;
use std::time::Duration;

use berth_tests::{
    Agent, Events, Pki, Spec, agent_config, apply, apply_in_background, berthctl, containers, docker, fails, free_port,
    history, host_port, http_get, image, inspect, ok, only_container, ps, running, service, try_inspect, wait_until,
};
use berthctl::certs::Role;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

#[test]
fn deploy_v1_v2_bad_then_rollback() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));

    ok(&apply(&pki, &agent.addr, &Spec::checked("life", "v1")));
    let v1 = only_container(&pki.instance, "life");
    assert_eq!(http_get(host_port(&v1), "/").as_deref(), Some("v1"));
    assert_eq!(inspect(&v1, "{{index .Config.Labels \"berth.revision\"}}"), "1");
    let s = ps(&pki, &agent.addr);
    assert_eq!(service(&s, "life")["revision"], 1);

    // Applying the same spec again changes nothing.
    let same = ok(&apply(&pki, &agent.addr, &Spec::checked("life", "v1")));
    assert!(same.contains("unchanged"), "{same}");
    assert_eq!(only_container(&pki.instance, "life"), v1);

    let out = ok(&berthctl(
        &pki,
        &agent.addr,
        &["deploy", "life", "--image", &image("v2")],
    ));
    assert!(out.contains("revision 2 is running and healthy"), "{out}");
    let v2 = only_container(&pki.instance, "life");
    assert_ne!(v1, v2, "v1's container is gone");
    assert_eq!(http_get(host_port(&v2), "/").as_deref(), Some("v2"));

    let out = berthctl(&pki, &agent.addr, &["deploy", "life", "--image", &image("bad")]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = fails(&out);
    assert!(stdout.contains("revision 3 FAILED"), "{stdout}");
    assert!(stdout.contains("404"), "health output shown: {stdout}");
    assert!(stdout.contains("bad: starting"), "log tail shown: {stdout}");
    assert!(stdout.contains("rolled back: revision 2 is running again"), "{stdout}");
    assert!(stderr.contains("failed"), "{stderr}");
    let restored = only_container(&pki.instance, "life");
    assert_eq!(restored, v2, "v2's own container was started again");
    assert_eq!(http_get(host_port(&restored), "/").as_deref(), Some("v2"));
    assert_eq!(service(&ps(&pki, &agent.addr), "life")["revision"], 2);

    let out = ok(&berthctl(&pki, &agent.addr, &["rollback", "life", "--to", "1"]));
    assert!(out.contains("revision 4 is running and healthy"), "{out}");
    let back = only_container(&pki.instance, "life");
    assert_eq!(http_get(host_port(&back), "/").as_deref(), Some("v1"));

    let statuses: Vec<String> = history(&pki, &agent.addr, "life")
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["revision"],
                r["reason"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses[0].starts_with("4 rollback to 1 active"), "{statuses:?}");
    assert!(statuses[1].starts_with("3 deploy failed"), "{statuses:?}");
    assert!(statuses[2].starts_with("2 deploy superseded"), "{statuses:?}");
}

#[test]
fn crashed_removed_and_drifted_containers_are_repaired() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let heal = Spec::checked("heal", "v1")
        .set("resources", "memory", "64m")
        .set("resources", "cpus", 0.5);
    ok(&apply(&pki, &agent.addr, &heal));
    let id = only_container(&pki.instance, "heal");
    assert_eq!(inspect(&id, "{{.HostConfig.Memory}}"), (64 * 1024 * 1024).to_string());
    assert_eq!(inspect(&id, "{{.HostConfig.NanoCpus}}"), "500000000");

    docker(&["kill", &id]);
    wait_until(T, "the killed container to run again", || {
        running(&pki.instance, "heal").len() == 1
    });
    assert_eq!(service(&ps(&pki, &agent.addr), "heal")["restarts"], 1);

    docker(&["rm", "-f", &id]);
    wait_until(T, "a new container after docker rm -f", || {
        let r = running(&pki.instance, "heal");
        r.len() == 1 && r[0] != id
    });
    let id = only_container(&pki.instance, "heal");
    assert_eq!(http_get(host_port(&id), "/").as_deref(), Some("v1"));

    docker(&["update", "--memory", "32m", "--memory-swap", "32m", &id]);
    wait_until(T, "the memory limit to be set back to 64m", || {
        inspect(&id, "{{.HostConfig.Memory}}") == (64 * 1024 * 1024).to_string()
    });
    assert_eq!(
        only_container(&pki.instance, "heal"),
        id,
        "repaired in place, not recreated"
    );
    assert!(agent.logs().contains("drift-repaired"), "{}", agent.logs());
}

#[test]
fn crash_loop_backs_off_and_shows_in_ps() {
    let pki = Pki::new();
    // crashy stays up 3s (past the 2s gate of a service without a health
    // check), then exits 3, again and again.
    std::fs::create_dir_all(pki.path("env")).expect("env dir");
    std::fs::write(pki.path("env/loop.env"), "CRASHY_DELAY=3\n").expect("env file");
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::new("loop", "crashy").key("stop_timeout", "1s"),
    ));
    wait_until(T, "ps to show crash-loop", || {
        service(&ps(&pki, &agent.addr), "loop")["state"] == "crash-loop"
    });
    let s = ps(&pki, &agent.addr);
    let detail = service(&s, "loop")["detail"].as_str().unwrap_or("").to_owned();
    assert!(detail.contains("exit 3"), "{detail}");
    assert!(service(&s, "loop")["restarts"].as_u64().unwrap_or(0) >= 3, "{s}");
    let logs = ok(&berthctl(&pki, &agent.addr, &["logs", "loop", "--tail", "5"]));
    assert!(logs.contains("crashy: exiting with 3"), "{logs}");
    // Backoff, not a hot loop: a handful of restarts in this time, not hundreds.
    assert!(service(&s, "loop")["restarts"].as_u64().unwrap_or(0) < 20, "{s}");
}

#[test]
fn agent_restart_adopts_containers_without_restarting_them() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &Spec::checked("adopt", "v1")));
    let id = only_container(&pki.instance, "adopt");
    let started = inspect(&id, "{{.State.StartedAt}}");
    agent.signal_and_wait(9, Duration::from_secs(10)).expect("SIGKILL");

    let agent = Agent::start_ready(&pki, &config);
    // Let it run a few reconcile passes and health probes.
    wait_until(T, "ps to show the adopted service healthy", || {
        service(&ps(&pki, &agent.addr), "adopt")["state"] == "running"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        only_container(&pki.instance, "adopt"),
        id,
        "same container, no duplicate"
    );
    assert_eq!(inspect(&id, "{{.State.StartedAt}}"), started, "not restarted");
}

#[test]
fn sigkill_mid_deploy_converges_to_one_container() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &Spec::checked("kill9", "v1")));
    let v1 = only_container(&pki.instance, "kill9");

    // A deploy whose gate waits a long time: bad never passes, with many retries.
    let slow = Spec::checked("kill9", "bad").set("health", "retries", 1000);
    let mut deploy = apply_in_background(&pki, &agent.addr, &slow);
    wait_until(T, "the new revision's container to run", || {
        running_revision(&pki, "kill9", 2).is_some()
    });
    agent
        .signal_and_wait(9, Duration::from_secs(10))
        .expect("SIGKILL mid-deploy");
    let _ = deploy.wait();

    let agent = Agent::start_ready(&pki, &config);
    wait_until(T, "exactly one running container of revision 1", || {
        let all = containers(&pki.instance, Some("kill9"));
        all.len() == 1 && try_inspect(&all[0], "{{.State.Running}}").as_deref() == Some("true")
    });
    assert_eq!(
        only_container(&pki.instance, "kill9"),
        v1,
        "the stopped v1 container was started again"
    );
    let history = ok(&berthctl(&pki, &agent.addr, &["history", "kill9"]));
    assert!(history.contains("interrupted"), "{history}");
    // And the host accepts deploys again.
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["deploy", "kill9", "--image", &image("v2")],
    ));
    assert_eq!(
        http_get(host_port(&only_container(&pki.instance, "kill9")), "/").as_deref(),
        Some("v2")
    );
}

#[test]
fn corrupt_state_is_rebuilt_from_labels() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &Spec::checked("phoenix", "v2")));
    let id = only_container(&pki.instance, "phoenix");
    agent.signal_and_wait(15, Duration::from_secs(20)).expect("stop");
    std::fs::write(pki.path("state/state.json"), b"{\"services\": [garbage").expect("corrupt");

    let agent = Agent::start_ready(&pki, &config);
    wait_until(T, "the rebuilt service in ps", || {
        // UNAVAILABLE until the supervisor has rebuilt the state: retry.
        let out = berthctl(&pki, &agent.addr, &["ps", "-o", "json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| {
                v["services"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["name"] == "phoenix"))
            })
    });
    let s = ps(&pki, &agent.addr);
    assert_eq!(service(&s, "phoenix")["revision"], 1);
    assert_eq!(service(&s, "phoenix")["image"], image("v2"));
    assert_eq!(only_container(&pki.instance, "phoenix"), id);
    assert!(agent.logs().contains("rebuilt it from the labels"), "{}", agent.logs());
}

#[test]
fn bad_specs_are_refused_and_nothing_changes() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    ok(&apply(&pki, &agent.addr, &Spec::checked("keep", "v1")));
    let before = containers(&pki.instance, None);

    let cases = [
        (
            Spec::checked("mem", "v1").set("resources", "memory", "16x"),
            "resources.memory \"16x\": expected a size like 512m or 16g",
        ),
        (Spec::checked("unk", "v1").key("colour", "blue"), "colour"),
        (Spec::checked("img", "v1").key("image", "Not A/Valid:Image"), "image"),
        (
            Spec::checked("cpu", "v1").set("resources", "cpus", 512),
            "the host has only",
        ),
        (Spec::checked("nope", "does-not-exist"), "cannot pull"),
    ];
    for (spec, expected) in cases {
        let err = fails(&apply(&pki, &agent.addr, &spec));
        let name = spec.name();
        assert!(err.contains(expected), "{name}: expected {expected:?} in {err}");
    }

    // A fixed host port already used by another service.
    let port = free_port();
    let pinned = [format!("{port}:8000")];
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("fixed", "v1").key("ports", pinned.clone()),
    ));
    let err = fails(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("clash", "v1").key("ports", pinned),
    ));
    assert!(
        err.contains(&format!("host port {port} is already used by service \"fixed\"")),
        "{err}"
    );

    let names: Vec<String> = ps(&pki, &agent.addr)["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["fixed", "keep"]);
    let after: Vec<String> = containers(&pki.instance, None);
    // Its container and its network holder (holders.rs).
    assert_eq!(after.len(), before.len() + 2, "only the fixed service was added");
    assert!(
        before.iter().all(|id| after.contains(id)),
        "no existing container was touched"
    );
}

#[test]
fn viewers_can_look_but_not_change() {
    let pki = Pki::new();
    pki.issue_client("vic", Role::Viewer);
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let path = Spec::checked("peek", "v1").write_in(pki.dir.path());
    let err = fails(&berthctl(
        &pki,
        &agent.addr,
        &["--cert", "vic", "apply", "-f", path.to_str().expect("utf8")],
    ));
    assert!(err.contains("permission denied") && err.contains("operator"), "{err}");
    ok(&berthctl(&pki, &agent.addr, &["--cert", "vic", "ps"]));
    assert!(containers(&pki.instance, None).is_empty());
}

#[test]
fn the_agent_reconnects_when_dockerd_comes_back() {
    let pki = Pki::new();
    let proxy = berth_tests::dockerproxy::DockerProxy::start(pki.dir.path());
    let config = agent_config(&pki, "").replace(
        "[docker]\n",
        &format!("[docker]\nsocket = {:?}\n", proxy.socket.display().to_string()),
    );
    let agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &Spec::checked("lazarus", "v1")));

    proxy.cut();
    wait_until(T, "the agent to notice Docker is gone", || {
        agent.logs().contains("Docker event stream")
    });
    let err = fails(&berthctl(&pki, &agent.addr, &["ps"]));
    assert!(err.contains("docker") || err.contains("Docker"), "{err}");
    proxy.restore();
    wait_until(T, "the agent to reconnect", || {
        agent.logs().contains("Reconnected to the Docker Engine")
    });

    // Events flow again: a killed container is restarted.
    let id = only_container(&pki.instance, "lazarus");
    docker(&["kill", &id]);
    wait_until(T, "the killed container to run again after the reconnect", || {
        running(&pki.instance, "lazarus").len() == 1
    });
    wait_until(T, "ps to show it running", || {
        service(&ps(&pki, &agent.addr), "lazarus")["state"] == "running"
    });
    assert!(
        service(&ps(&pki, &agent.addr), "lazarus")["restarts"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn a_container_that_stays_unhealthy_is_replaced() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    // An exec check the test can break from outside: healthy until /tmp/sick exists.
    let sickly = Spec::new("sickly", "v1")
        .key("stop_timeout", "1s")
        .health_exec(&["sh", "-c", "test ! -f /tmp/sick"])
        .set("health", "retries", 2);
    ok(&apply(&pki, &agent.addr, &sickly));
    let id = only_container(&pki.instance, "sickly");
    docker(&["exec", &id, "touch", "/tmp/sick"]);
    wait_until(T, "a fresh container replacing the unhealthy one", || {
        let r = running(&pki.instance, "sickly");
        r.len() == 1 && r[0] != id
    });
    wait_until(T, "ps to show it running", || {
        service(&ps(&pki, &agent.addr), "sickly")["state"] == "running"
    });
    assert!(
        agent.logs().contains("Health check failed 2 times in a row"),
        "{}",
        agent.logs()
    );
    assert_eq!(
        containers(&pki.instance, Some("sickly")).len(),
        1,
        "the unhealthy container is gone"
    );
}

/// The running container of `service`'s `revision`, if there is one.
fn running_revision(pki: &Pki, service: &str, revision: u64) -> Option<String> {
    containers(&pki.instance, Some(service)).into_iter().find(|id| {
        try_inspect(id, "{{index .Config.Labels \"berth.revision\"}}") == Some(revision.to_string())
            && try_inspect(id, "{{.State.Running}}").as_deref() == Some("true")
    })
}

/// When Docker said `action` about container `id` since `since` (RFC 3339
/// or a Unix time), in nanoseconds: every such event, oldest first.
fn docker_events(id: &str, action: &str, since: &str) -> Vec<u128> {
    let until = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            + 1
    );
    docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        &format!("container={id}"),
        "--filter",
        &format!("event={action}"),
        "--format",
        "{{.TimeNano}}",
    ])
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

#[test]
fn after_a_crash_mid_deploy_the_desired_container_starts_before_the_stale_one_stops() {
    let pki = Pki::new();
    // Containers with networks of their own: two that share a network
    // holder could clash on a port inside it, so there the stale one stops
    // first (the reconciler's plan tests cover that).
    let config = agent_config(&pki, "").replace("[docker]\n", "[docker]\nnetwork_holders = false\n");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .to_string();
    let mut agent = Agent::start_ready(&pki, &config);
    // No proxy: a deploy stops the old container before it starts the new.
    let v1 = Spec::new("crash", "v1").key("command", ["sh", "-c", "sleep 3600"]);
    ok(&apply(&pki, &agent.addr, &v1));
    let old = only_container(&pki.instance, "crash");

    // Revision 2 waits on a gate the test never opens, and its shell
    // ignores SIGTERM, so stopping it takes its whole stop timeout.
    let v2 = Spec::new("crash", "v2")
        .key("command", ["sh", "-c", "sleep 3600"])
        .key("stop_timeout", "8s")
        .health_exec(&["test", "-e", "/tmp/ready"])
        .set("health", "retries", 1000)
        .set("deploy", "health_deadline", "300s");
    let mut deploy = apply_in_background(&pki, &agent.addr, &v2);
    let mut stale = String::new();
    wait_until(T, "revision 2 waits on its gate with revision 1 stopped", || {
        stale = running_revision(&pki, "crash", 2).unwrap_or_default();
        !stale.is_empty() && try_inspect(&old, "{{.State.Running}}").as_deref() == Some("false")
    });
    agent
        .signal_and_wait(9, Duration::from_secs(10))
        .expect("SIGKILL mid-deploy");
    let _ = deploy.kill();
    let _ = deploy.wait();

    let _agent = Agent::start_ready(&pki, &config);
    wait_until(T, "revision 1 running alone again", || {
        try_inspect(&old, "{{.State.Running}}").as_deref() == Some("true") && try_inspect(&stale, "{{.Id}}").is_none()
    });
    let started = docker_events(&old, "start", &since);
    let stopping = docker_events(&stale, "kill", &since);
    let (Some(started), Some(stopping)) = (started.last(), stopping.first()) else {
        panic!("no start of {old} ({started:?}) or kill of {stale} ({stopping:?}) in docker events");
    };
    assert!(
        started < stopping,
        "the stale container's stop began {} ms before the desired one started",
        (started - stopping) / 1_000_000
    );
}

/// A check the test opens: healthy only once /tmp/ready exists, and /tmp
/// is a tmpfs, so a restarted container starts closed again. Probed every
/// 30s: anything that happens much sooner than that did not wait for the
/// interval. The live check replaces the container at its first failure
/// that counts.
fn gated_slow(name: &str) -> Spec {
    Spec::new(name, "v1")
        .key("ports", ["8000"])
        .key("tmpfs", ["/tmp"])
        .health_exec(&["sh", "-c", "test -e /tmp/ready"])
        .set("health", "interval", "30s")
        .set("health", "retries", 2)
        .set("health.live", "exec", ["sh", "-c", "test -e /tmp/ready"])
        .set("health.live", "interval", "30s")
        .set("health.live", "retries", 1)
        .set("deploy", "health_deadline", "60s")
}

/// Ms since the epoch of Docker's `State.StartedAt` of `id`.
fn started_at_ms(id: &str) -> i64 {
    let out = Command::new("date")
        .args(["-d", &inspect(id, "{{.State.StartedAt}}"), "+%s%3N"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a time")
}

#[test]
fn the_gate_probes_at_once_not_after_the_interval() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let events = Events::watch(&pki, &agent.addr);
    let spec = Spec::new("prompt", "v1")
        .key("ports", ["8000"])
        .health_http("/health")
        .set("health", "interval", "30s");
    ok(&apply(&pki, &agent.addr, &spec));
    let id = only_container(&pki.instance, "prompt");
    let mut deployed = Value::Null;
    wait_until(T, "the deployed event", || {
        deployed = events
            .events()
            .into_iter()
            .find(|e| e["kind"] == "deployed" && e["service"] == "prompt")
            .unwrap_or_default();
        !deployed.is_null()
    });
    let after_start = deployed["timestamp_ms"].as_i64().expect("timestamp") - started_at_ms(&id);
    assert!(
        after_start < 15_000,
        "healthy {after_start} ms after its container started: the gate waited for the 30s interval"
    );
}

#[test]
fn a_crashed_container_is_probed_again_at_once_and_its_early_failures_do_not_count() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let first = apply_in_background(&pki, &agent.addr, &gated_slow("eager"));
    let mut ids = Vec::new();
    wait_until(T, "the container", || {
        ids = running(&pki.instance, "eager");
        ids.len() == 1
    });
    let id = ids.remove(0);
    docker(&["exec", &id, "touch", "/tmp/ready"]);
    assert!(first.wait_with_output().expect("apply ends").status.success());
    assert_eq!(service(&ps(&pki, &agent.addr), "eager")["state"], "running");

    let pid = inspect(&id, "{{.State.Pid}}");
    let killed = Command::new("kill").args(["-9", &pid]).status().expect("kill");
    assert!(killed.success());
    wait_until(T, "the crashed container to be started again", || {
        service(&ps(&pki, &agent.addr), "eager")["restarts"] == 1
            && inspect(&id, "{{.State.Running}}") == "true"
            && inspect(&id, "{{.State.Pid}}") != pid
    });
    // /tmp went with the tmpfs: the restarted container fails its check.
    // The verdict of the run that ended is not shown for it, and its
    // failures while it comes up do not count (retries = 1 would replace it).
    let s = ps(&pki, &agent.addr);
    assert_eq!(service(&s, "eager")["state"], "starting", "{s}");
    docker(&["exec", &id, "touch", "/tmp/ready"]);
    // Probed again well before the 30s interval (the monitor retries a
    // restarted container soon, doubling the wait).
    wait_until(
        Duration::from_secs(15),
        "ps to show the restarted container healthy",
        || service(&ps(&pki, &agent.addr), "eager")["state"] == "running",
    );
    assert_eq!(only_container(&pki.instance, "eager"), id, "restarted, never replaced");
    assert_eq!(service(&ps(&pki, &agent.addr), "eager")["restarts"], 1);
}

/// While a crashed container is down, the host has no neighbour entry for
/// its address (it goes with the container's network endpoint), so what
/// keeps sending to the address (nginx, docker-proxy, a client) leaves an
/// unresolved one, which the kernel asks about again only every second,
/// holding what it queued meanwhile. berth fills it in with the container's
/// MAC when it restarts the container, so the restarted one is reached at
/// once.
#[test]
fn a_restarted_container_is_not_left_behind_an_unresolved_neighbour_entry() {
    use berth_agent::neighbours;
    use std::net::{IpAddr, SocketAddr, TcpStream};
    use std::time::Instant;

    let pki = Pki::new();
    // A container with a network of its own: one that joined a network
    // holder keeps its address and link across restarts, so the entry
    // never goes unresolved (holders.rs).
    let config = agent_config(&pki, "").replace("[docker]\n", "[docker]\nnetwork_holders = false\n");
    let agent = Agent::start_ready(&pki, &config);
    // Its own network, alone on its bridge: here that showed the case in
    // every crash, the shared default bridge not in all.
    let network = berth_tests::unique("arp");
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("arp", "v1").key("network", network.as_str()),
    ));
    let id = only_container(&pki.instance, "arp");
    // The crash is repeated if a round did not show the case: the agent
    // restarted the container before the kernel dropped the entry, or a
    // container of a test running alongside took the address meanwhile.
    let mut shown = false;
    for _ in 0..5 {
        let address = || inspect(&id, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
        let ip: IpAddr = address().parse().expect("a bridge address");
        let pid = inspect(&id, "{{.State.Pid}}");
        let killed = Command::new("kill").args(["-9", &pid]).status().expect("kill");
        assert!(killed.success(), "kill -9 {pid}");
        let to = SocketAddr::new(ip, 8000);
        let mut went_unresolved = false;
        let t = Instant::now();
        let mut looked = Instant::now();
        loop {
            let _ = TcpStream::connect_timeout(&to, Duration::from_millis(2));
            let unresolved = neighbours::unresolved().expect("the host's neighbour table");
            went_unresolved = went_unresolved || unresolved.iter().any(|e| e.addr == ip);
            // `docker inspect` takes tens of ms: not between every send.
            if looked.elapsed() >= Duration::from_millis(20) {
                looked = Instant::now();
                let now = try_inspect(&id, "{{.State.Running}} {{.State.Pid}}").unwrap_or_default();
                if now.starts_with("true ") && !now.ends_with(&format!(" {pid}")) {
                    break;
                }
            }
            assert!(t.elapsed() < T, "the killed container did not run again");
            std::thread::sleep(Duration::from_millis(2));
        }
        if !went_unresolved || address() != ip.to_string() {
            continue;
        }
        shown = true;
        let left: Vec<_> = neighbours::unresolved()
            .expect("the host's neighbour table")
            .into_iter()
            .filter(|e| e.addr == ip)
            .collect();
        assert!(left.is_empty(), "still unresolved after the restart: {left:?}");
        assert_eq!(berth_tests::http_get_at(to, "/health").as_deref(), Some("ok"));
        break;
    }
    assert!(
        shown,
        "in 5 crashes, never an unresolved entry while down and the same address after"
    );
}

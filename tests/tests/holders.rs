//! Network holders against the real Docker Engine: a recreate service's
//! containers join a holder that keeps the service's address and ports
//! across deploys and crashes; a holder that stops, or is restarted while
//! the agent is down, takes its container along and both come back; a deploy that changes the ports gets a fresh
//! holder, and one that fails goes back to the old; removing the service
//! removes its holders; and with `network_holders = false` there are none.

use std::process::Command;
use std::time::Duration;

use berth_tests::{
    Agent, Pki, Spec, agent_config, apply, berthctl, containers, docker, fails, free_port, host_port, http_get, image,
    inspect, network_of, ok, only_container, wait_until,
};

const T: Duration = Duration::from_secs(60);

/// This instance's network holders of `service`.
fn holders(pki: &Pki, service: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=berth.instance={}", pki.instance),
        "--filter",
        &format!("label=berth.holder={service}"),
    ]);
    out.split_whitespace().map(str::to_owned).collect()
}

fn running(id: &str) -> bool {
    berth_tests::try_inspect(id, "{{.State.Running}}").as_deref() == Some("true")
}

#[test]
fn a_recreate_service_keeps_its_address_and_port_in_a_holder_across_deploys_and_crashes() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    ok(&apply(&pki, &agent.addr, &Spec::checked("hold", "v1")));
    let v1 = only_container(&pki.instance, "hold");
    let holder = network_of(&v1);
    assert_ne!(holder, v1, "the container joined a holder");
    assert_eq!(holders(&pki, "hold"), std::slice::from_ref(&holder));
    // The holder is berth's and this instance's, but not a container of
    // the service: berth.service is only on the service's own.
    assert_eq!(
        inspect(
            &holder,
            "{{index .Config.Labels \"berth.managed\"}} {{index .Config.Labels \"berth.holder\"}} \
             [{{index .Config.Labels \"berth.service\"}}] {{.Config.Image}} {{.Config.StopSignal}}"
        ),
        "true hold [] berth-pause:1 SIGKILL"
    );
    let port = host_port(&v1);
    assert_eq!(http_get(port, "/").as_deref(), Some("v1"));
    // ps shows the port the holder published.
    let ps = ok(&berthctl(&pki, &agent.addr, &["ps"]));
    assert!(ps.contains(&format!(":{port}->8000")), "{ps}");

    // A deploy replaces the container, not the holder: same address, same
    // (Docker-picked) host port.
    let out = ok(&berthctl(
        &pki,
        &agent.addr,
        &["deploy", "hold", "--image", &image("v2")],
    ));
    assert!(out.contains("revision 2 is running and healthy"), "{out}");
    let v2 = only_container(&pki.instance, "hold");
    assert_ne!(v2, v1);
    assert_eq!(network_of(&v2), holder);
    assert_eq!(host_port(&v2), port);
    assert_eq!(http_get(port, "/").as_deref(), Some("v2"));

    // A crash: the same container starts again in the same holder.
    let pid = inspect(&v2, "{{.State.Pid}}");
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill")
            .success()
    );
    wait_until(T, "the crashed container serves again", || {
        inspect(&v2, "{{.State.Pid}}") != pid && http_get(port, "/health").as_deref() == Some("ok")
    });
    assert_eq!(network_of(&v2), holder);

    // The holder stops (killed by hand): its container has lost its
    // network, so berth replaces it and starts the holder again.
    docker(&["kill", &holder]);
    wait_until(T, "a new container in the restarted holder", || {
        let all = containers(&pki.instance, Some("hold"));
        all.len() == 1 && all[0] != v2 && running(&all[0]) && running(&holder) && {
            let port = host_port(&all[0]);
            http_get(port, "/").as_deref() == Some("v2")
        }
    });
    let v2b = only_container(&pki.instance, "hold");
    assert_eq!(network_of(&v2b), holder);

    // Removing the service removes its holder too.
    ok(&berthctl(&pki, &agent.addr, &["rm", "hold"]));
    assert!(
        holders(&pki, "hold").is_empty(),
        "holders left: {:?}",
        holders(&pki, "hold")
    );
    assert!(containers(&pki.instance, Some("hold")).is_empty());
}

/// A holder restarted while the agent was down: it runs, but in a fresh
/// namespace without the container, which the agent has to notice from
/// the start times alone (it saw no stop). No health check, so nothing
/// else would replace the container.
#[test]
fn a_holder_restarted_while_the_agent_was_down_gets_its_container_replaced() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    let port = free_port();
    let spec = Spec::new("again", "v1").key("ports", [format!("127.0.0.1:{port}:8000").as_str()]);
    ok(&apply(&pki, &agent.addr, &spec));
    wait_until(T, "v1 answers", || http_get(port, "/").as_deref() == Some("v1"));
    let v1 = only_container(&pki.instance, "again");
    let holder = network_of(&v1);
    agent
        .signal_and_wait(15, Duration::from_secs(30))
        .expect("the agent stops");
    docker(&["restart", &holder]);
    assert_eq!(
        http_get(port, "/"),
        None,
        "the restarted holder's namespace has no server"
    );
    let _agent = Agent::start_ready(&pki, &config);
    wait_until(T, "a new container in the restarted holder answers", || {
        http_get(port, "/").as_deref() == Some("v1")
    });
    let replaced = only_container(&pki.instance, "again");
    assert_ne!(replaced, v1);
    assert_eq!(network_of(&replaced), holder);
}

#[test]
fn changed_ports_get_a_fresh_holder_and_a_failed_deploy_goes_back_to_the_old_one() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let (first, second, third) = (free_port(), free_port(), free_port());
    let on =
        |port: u16, tag: &str| Spec::checked("ports", tag).key("ports", [format!("127.0.0.1:{port}:8000").as_str()]);
    ok(&apply(&pki, &agent.addr, &on(first, "v1")));
    let v1 = only_container(&pki.instance, "ports");
    let old_holder = network_of(&v1);
    assert_eq!(http_get(first, "/").as_deref(), Some("v1"));

    // Another host port: another holder; the old one goes once no
    // container joins it.
    ok(&apply(&pki, &agent.addr, &on(second, "v2")));
    let v2 = only_container(&pki.instance, "ports");
    let new_holder = network_of(&v2);
    assert_ne!(new_holder, old_holder);
    assert_eq!(http_get(second, "/").as_deref(), Some("v2"));
    assert_eq!(http_get(first, "/"), None, "the old port is free");
    wait_until(T, "the old holder is removed", || {
        holders(&pki, "ports") == std::slice::from_ref(&new_holder)
    });

    // A bad version on yet another port fails its gate: the v2 container
    // starts again in its own holder, on its own port.
    let bad = on(third, "bad");
    let out = apply(&pki, &agent.addr, &bad);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    fails(&out);
    assert!(stdout.contains("rolled back"), "{stdout}");
    wait_until(T, "v2 serves again on its port", || {
        http_get(second, "/").as_deref() == Some("v2")
    });
    let back = only_container(&pki.instance, "ports");
    assert_eq!(back, v2, "v2's own container was started again");
    assert_eq!(network_of(&back), new_holder);
    assert_eq!(http_get(third, "/"), None);
    wait_until(T, "the failed deploy's holder is removed", || {
        holders(&pki, "ports") == std::slice::from_ref(&new_holder)
    });
}

#[test]
fn with_holders_off_every_container_has_its_own_network() {
    let pki = Pki::new();
    let config = agent_config(&pki, "").replace("[docker]\n", "[docker]\nnetwork_holders = false\n");
    let agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &Spec::checked("own", "v1")));
    let v1 = only_container(&pki.instance, "own");
    assert_eq!(inspect(&v1, "{{.HostConfig.NetworkMode}}"), "default");
    assert!(holders(&pki, "own").is_empty());
    assert_eq!(http_get(host_port(&v1), "/").as_deref(), Some("v1"));
}

//! The agent's event history against real agents and the real Docker
//! Engine: `berthctl events --since` shows a deploy made before it started,
//! also after the agent restarted (the history lives in
//! `state_dir/events.jsonl`), then follows live events; `--no-follow`
//! stops after the record; over a fleet the hosts' records are merged and
//! a dead host makes the command fail, naming it.

use std::time::Duration;

use berth_tests::{Agent, Events, Fleet, Pki, Spec, agent_config, apply, berthctl, fails, ok, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

/// The JSON records of `berthctl events -o json ARGS`, which must end.
fn recorded(pki: &Pki, agent: &Agent, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "-o", "json"];
    all.extend_from_slice(args);
    ok(&berthctl(pki, &agent.addr, &all))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The (kind, service, revision) of each record.
fn what(events: &[Value]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["service"].as_str().unwrap_or("").to_owned(),
                e["revision"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn deployed(service: &str, revision: u64) -> (String, String, u64) {
    ("deployed".to_owned(), service.to_owned(), revision)
}

#[test]
fn since_shows_a_deploy_made_before_it_started_also_after_a_restart() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    ok(&apply(&pki, &agent.addr, &Spec::checked("hist", "v1")));

    let before = what(&recorded(&pki, &agent, &["--since", "1h", "--no-follow"]));
    assert!(before.contains(&deployed("hist", 1)), "{before:?}");
    let other = what(&recorded(
        &pki,
        &agent,
        &["--since", "1h", "--no-follow", "someone-else"],
    ));
    assert!(
        other.iter().all(|(_, s, _)| s != "hist"),
        "filtered by service: {other:?}"
    );

    let status = agent
        .signal_and_wait(15, Duration::from_secs(40))
        .unwrap_or_else(|| panic!("the agent did not stop:\n{}", agent.logs()));
    assert!(status.success(), "{status}");
    let agent = Agent::start_ready(&pki, &config);
    let after = recorded(&pki, &agent, &["--since", "1h", "--no-follow", "hist"]);
    assert!(
        what(&after).contains(&deployed("hist", 1)),
        "kept across the restart: {after:?}"
    );
    let seqs: Vec<u64> = after.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");

    // Following: the record first, then what happens next.
    let watch = Events::watch_with(&pki, &agent.addr, &["--since", "1h", "hist"]);
    wait_until(T, "the recorded deploy of revision 1", || {
        what(&watch.events()).contains(&deployed("hist", 1))
    });
    ok(&apply(&pki, &agent.addr, &Spec::checked("hist", "v2")));
    wait_until(T, "the live deploy of revision 2", || {
        what(&watch.events()).contains(&deployed("hist", 2))
    });
    let seen = what(&watch.events());
    let first = seen.iter().position(|e| *e == deployed("hist", 1));
    let second = seen.iter().position(|e| *e == deployed("hist", 2));
    assert!(first < second, "record before live: {seen:?}");
    assert_eq!(
        seen.iter().filter(|e| **e == deployed("hist", 1)).count(),
        1,
        "no repeats: {seen:?}"
    );
}

#[test]
fn a_fleets_records_are_merged_and_a_dead_host_is_named() {
    let mut fleet = Fleet::start(&[("web", 2)]);
    let inv = fleet.write_inventory(&fleet.inventory("prod"));
    let inv = inv.to_string_lossy().into_owned();
    for name in ["web-1", "web-2"] {
        ok(&fleet.apply(name, &Spec::new("app", "v1")));
    }
    let args = [
        "--inventory",
        inv.as_str(),
        "events",
        "--fleet",
        "prod",
        "--since",
        "1h",
        "--no-follow",
        "-o",
        "json",
    ];
    let out = fleet.ctl(&args).output().expect("run berthctl");
    let text = ok(&out);
    let hosts: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "deployed" && e["service"] == "app")
        .map(|e| e["host"].as_str().unwrap_or("").to_owned())
        .collect();
    for host in ["web-1", "web-2"] {
        assert!(hosts.iter().any(|h| h == host), "{host} deployed in {text}");
    }

    fleet.kill("web-2");
    let out = fleet.ctl(&args).output().expect("run berthctl");
    let err = fails(&out);
    assert!(err.contains("web-2"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"web-1\""),
        "the live host's record still printed: {text}"
    );
}

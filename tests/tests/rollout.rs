//! `berthctl rollout` over fleets of six real agents sharing this machine's
//! Docker Engine: the plan and dry run, a canary then batches (the order
//! visible in when each host's new revision was made), a bad image stopped
//! at the canary or at the failure budget with every changed host rolled
//! back, an agent killed mid-rollout counted as failed, a berthctl killed
//! mid-rollout resumed from another process without deploying any host
//! twice, pause from another process, two rollouts at once, and an env
//! rollout.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use berth_proto::v1::ListLocksRequest;
use berth_proto::v1::fleet_lock_client::FleetLockClient;
use berth_tests::fleet::OPERATOR;
use berth_tests::{Fleet, Host, Spec, image, json, ok, rpc_as, runtime, wait_until};
use serde_json::Value;

/// A fleet of six web hosts with `api` applied on each (`spec(name)`), in
/// parallel, and its inventory written as fleet `prod`.
fn fleet_with(spec: impl Fn(&str) -> Spec + Sync) -> (Fleet, PathBuf) {
    let fleet = Fleet::start_with(Host::tiers(&[("web", 6)]), "");
    std::thread::scope(|s| {
        for m in fleet.members() {
            let (fleet, spec) = (&fleet, &spec);
            s.spawn(move || ok(&fleet.apply(&m.name, &spec(&m.name))));
        }
    });
    let inventory = fleet.write_inventory(&fleet.inventory("prod"));
    (fleet, inventory)
}

fn rollout(fleet: &Fleet, inventory: &Path, args: &[&str]) -> Output {
    fleet
        .ctl(&["--inventory", &inventory.to_string_lossy(), "rollout"])
        .args(args)
        .output()
        .expect("run berthctl rollout")
}

/// `berthctl --inventory INV --fleet prod rollout ARGS`, run to its end.
fn on_prod(fleet: &Fleet, inventory: &Path, args: &[&str]) -> Output {
    fleet
        .ctl(&[
            "--inventory",
            &inventory.to_string_lossy(),
            "--fleet",
            "prod",
            "rollout",
        ])
        .args(args)
        .output()
        .expect("run berthctl rollout")
}

fn spawn_rollout(fleet: &Fleet, inventory: &Path, args: &[&str]) -> Child {
    fleet
        .ctl(&["--inventory", &inventory.to_string_lossy(), "rollout"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berthctl rollout")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `api`'s revisions on host `name`, newest first as berthctl lists them.
fn revisions(fleet: &Fleet, name: &str) -> Vec<Value> {
    json(&fleet.berthctl(name, &["history", "api", "-o", "json"]))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn active(fleet: &Fleet, name: &str) -> (u64, String) {
    let revs = revisions(fleet, name);
    let a = revs
        .iter()
        .find(|r| r["status"] == "active")
        .unwrap_or_else(|| panic!("{name} has no active revision: {revs:?}"));
    (
        a["revision"].as_u64().unwrap_or(0),
        a["image"].as_str().unwrap_or_default().to_owned(),
    )
}

fn created(fleet: &Fleet, name: &str, number: u64) -> u64 {
    revisions(fleet, name)
        .iter()
        .find(|r| r["revision"] == number)
        .and_then(|r| r["created_at_ms"].as_u64())
        .unwrap_or_else(|| panic!("{name} has no revision {number}"))
}

fn state_files(fleet: &Fleet) -> Vec<Vec<u8>> {
    fleet
        .members()
        .iter()
        .map(|m| std::fs::read(m.dir.join("state/state.json")).expect("state.json"))
        .collect()
}

fn rollout_id(out: &Output) -> String {
    let t = text(out);
    t.split_whitespace()
        .find(|w| w.starts_with('r') && w.contains('-') && w.len() > 8)
        .map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no rollout id in: {t}"))
}

#[test]
fn a_dry_run_changes_nothing_then_a_canary_and_batches_go_in_order() {
    let (fleet, inv) = fleet_with(|_| Spec::checked("api", "v1"));
    let before = state_files(&fleet);

    let dry = rollout(
        &fleet,
        &inv,
        &[
            "--fleet",
            "prod",
            "--service",
            "api",
            "--image",
            &image("v2"),
            "--dry-run",
        ],
    );
    assert_eq!(dry.status.code(), Some(2), "something would change: {}", text(&dry));
    let plan = text(&dry);
    assert!(
        plan.contains(&format!("image {} -> {}", image("v1"), image("v2"))),
        "{plan}"
    );
    assert!(plan.contains("batch 6: web-6"), "{plan}");
    let env_dry = rollout(
        &fleet,
        &inv,
        &[
            "--fleet",
            "prod",
            "--service",
            "api",
            "--env",
            "SECRET_TOKEN=hunter2",
            "--dry-run",
        ],
    );
    assert_eq!(env_dry.status.code(), Some(2), "{}", text(&env_dry));
    assert!(text(&env_dry).contains("env +SECRET_TOKEN"), "{}", text(&env_dry));
    assert!(
        !text(&env_dry).contains("hunter2"),
        "values never shown: {}",
        text(&env_dry)
    );
    let spec = Spec::checked("api", "v1").proxy("api.example", 18080);
    let path = spec.write_in(fleet.pki().dir.path());
    let site_dry = rollout(
        &fleet,
        &inv,
        &["--fleet", "prod", "-f", &path.to_string_lossy(), "--dry-run"],
    );
    assert!(
        text(&site_dry).contains("+    server_name api.example;"),
        "{}",
        text(&site_dry)
    );
    assert_eq!(state_files(&fleet), before, "a dry run changes no state file");

    let out = rollout(
        &fleet,
        &inv,
        &[
            "--fleet",
            "prod",
            "--service",
            "api",
            "--image",
            &image("v2"),
            "--canary",
            "1",
            "--batch",
            "2",
            "--yes",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = rollout_id(&out);
    for m in fleet.members() {
        assert_eq!(active(&fleet, &m.name), (2, image("v2")), "{}", m.name);
    }
    // Batches [web-1], [web-2, web-3], [web-4, web-5], [web-6]: each
    // batch's revisions were all made after the previous batch's.
    let batches: [&[&str]; 4] = [&["web-1"], &["web-2", "web-3"], &["web-4", "web-5"], &["web-6"]];
    for pair in batches.windows(2) {
        let last = pair[0].iter().map(|h| created(&fleet, h, 2)).max().unwrap_or(0);
        let first = pair[1].iter().map(|h| created(&fleet, h, 2)).min().unwrap_or(0);
        assert!(last < first, "{:?} before {:?}: {last} < {first}", pair[0], pair[1]);
    }
    let status = json(&on_prod(&fleet, &inv, &["status", &id, "-o", "json"]));
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(status["kept_on"].as_array().map(Vec::len), Some(6), "{status}");
    let ls = json(&on_prod(&fleet, &inv, &["ls", "-o", "json"]));
    assert_eq!(ls[0]["id"], id.as_str(), "{ls}");

    let again = rollout(
        &fleet,
        &inv,
        &["--fleet", "prod", "--service", "api", "--image", &image("v2"), "--yes"],
    );
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("Nothing to do"), "{}", text(&again));
    assert_eq!(revisions(&fleet, "web-1").len(), 2, "no host deployed again");
}

#[test]
fn a_bad_image_stops_at_the_canary_or_the_budget_and_changed_hosts_roll_back() {
    // web-1 and web-2 have no health check, so the bad image "works" there;
    // the others gate on /health, which it fails.
    let (fleet, inv) = fleet_with(|name| {
        if matches!(name, "web-1" | "web-2") {
            Spec::new("api", "v1").key("ports", ["8000"])
        } else {
            Spec::checked("api", "v1")
        }
    });
    let bad = image("bad");
    let hosts: Vec<String> = ["web-3", "web-4", "web-5", "web-6"]
        .iter()
        .flat_map(|h| ["--host".to_owned(), fleet.addr(h).to_owned()])
        .collect();
    let mut args: Vec<&str> = hosts.iter().map(String::as_str).collect();
    args.extend(["--service", "api", "--image", &bad, "--canary", "1", "--yes"]);
    let out = rollout(&fleet, &inv, &args);
    assert!(!out.status.success(), "{}", text(&out));
    let canary = fleet.addr("web-3");
    assert!(text(&out).contains(canary), "{}", text(&out));
    assert_eq!(
        active(&fleet, "web-3"),
        (1, image("v1")),
        "the canary runs its old revision again"
    );
    assert_eq!(revisions(&fleet, "web-3").len(), 2, "the canary was tried");
    for h in ["web-4", "web-5", "web-6"] {
        assert_eq!(revisions(&fleet, h).len(), 1, "{h} was never touched");
    }

    let out = rollout(
        &fleet,
        &inv,
        &[
            "--fleet",
            "prod",
            "--service",
            "api",
            "--image",
            &bad,
            "--batch",
            "2",
            "--max-failures",
            "1",
            "--yes",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("rolled-back"), "{}", text(&out));
    for h in ["web-1", "web-2"] {
        let (n, img) = active(&fleet, h);
        assert_eq!(
            (n, img.as_str()),
            (3, image("v1").as_str()),
            "{h} rolled back to v1 as revision 3"
        );
    }
    for h in ["web-3", "web-4"] {
        assert_eq!(active(&fleet, h).1, image("v1"), "{h} failed and runs v1");
    }
    for h in ["web-5", "web-6"] {
        assert_eq!(
            revisions(&fleet, h).len(),
            1,
            "{h}: no new host starts after the budget"
        );
    }
}

#[test]
fn an_env_rollout_sets_every_host_and_rolls_back_on_a_failing_one() {
    // web-5 checks its env: it turns unhealthy when MODE=broken.
    let (fleet, inv) = fleet_with(|name| {
        if name == "web-5" {
            Spec::new("api", "v1")
                .key("ports", ["8000"])
                .health_exec(&[
                    "sh",
                    "-c",
                    "test \"$MODE\" != broken && wget -q -O- http://127.0.0.1:8000/health",
                ])
                .set("deploy", "health_deadline", "20s")
        } else {
            Spec::checked("api", "v1")
        }
    });
    let out = rollout(
        &fleet,
        &inv,
        &[
            "--fleet",
            "prod",
            "--service",
            "api",
            "--env",
            "MODE=fine",
            "--batch",
            "3",
            "--yes",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    for m in fleet.members() {
        let env = json(&fleet.berthctl(&m.name, &["env", "get", "api", "--reveal", "-o", "json"]));
        assert!(env.to_string().contains("fine"), "{}: {env}", m.name);
    }
    let out = rollout(
        &fleet,
        &inv,
        &[
            "--fleet",
            "prod",
            "--service",
            "api",
            "--env",
            "MODE=broken",
            "--batch",
            "3",
            "--yes",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    for m in fleet.members() {
        let env = json(&fleet.berthctl(&m.name, &["env", "get", "api", "--reveal", "-o", "json"]));
        assert!(
            env.to_string().contains("fine") && !env.to_string().contains("broken"),
            "{} has its env back: {env}",
            m.name
        );
    }
}

#[test]
fn a_killed_agent_fails_its_host_and_a_killed_berthctl_is_resumed_elsewhere() {
    let (mut fleet, inv) = fleet_with(|_| Spec::checked("api", "v1"));
    let v2 = image("v2");
    let args = [
        "--fleet",
        "prod",
        "--service",
        "api",
        "--image",
        &v2,
        "--max-failures",
        "1",
        "--yes",
    ];
    let run = spawn_rollout(&fleet, &inv, &args);
    wait_until(Duration::from_secs(60), "web-2 deployed", || {
        revisions(&fleet, "web-2")
            .iter()
            .any(|r| r["status"] == "active" && r["revision"] == 2)
    });
    fleet.kill("web-4");
    let out = run.wait_with_output().expect("rollout ends");
    let t = text(&out);
    assert!(!out.status.success(), "a failed host fails the rollout: {t}");
    assert!(t.contains("1 host(s) failed, within the budget"), "{t}");
    for h in ["web-1", "web-2", "web-3", "web-5", "web-6"] {
        assert_eq!(active(&fleet, h).1, v2, "{h}");
    }
    fleet.restart("web-4");
    assert_eq!(
        active(&fleet, "web-4"),
        (1, image("v1")),
        "the dead host was never deployed"
    );

    // web-4 died holding the first rollout's lease, which it keeps across
    // its restart until the lease lapses: a second rollout waits for that.
    let rt = runtime();
    let web4 = rpc_as(fleet.pki(), fleet.addr("web-4"), OPERATOR);
    wait_until(Duration::from_secs(45), "web-4's stranded lease lapses", || {
        rt.block_on(web4.call(|ch| async move { FleetLockClient::new(ch).list_locks(ListLocksRequest {}).await }))
            .is_ok_and(|l| l.leases.is_empty())
    });

    // A second rollout, and its berthctl SIGKILLed after its second host.
    let v1 = image("v1");
    let args = ["--fleet", "prod", "--service", "api", "--image", &v1, "--yes"];
    let mut run = spawn_rollout(&fleet, &inv, &args);
    wait_until(Duration::from_secs(60), "web-2 back on v1", || {
        revisions(&fleet, "web-2")
            .iter()
            .any(|r| r["status"] == "active" && r["image"] == v1.as_str())
    });
    let concurrent = rollout(
        &fleet,
        &inv,
        &["--fleet", "prod", "--service", "api", "--restart", "--yes"],
    );
    assert!(
        !concurrent.status.success(),
        "a second rollout is refused: {}",
        text(&concurrent)
    );
    assert!(text(&concurrent).contains("held by alice"), "{}", text(&concurrent));
    run.kill().expect("SIGKILL berthctl");
    let _ = run.wait();
    let ls = json(&on_prod(&fleet, &inv, &["ls", "-o", "json"]));
    let id = ls[0]["id"].as_str().expect("the newest rollout's id").to_owned();
    assert_eq!(ls[0]["status"], "running", "{ls}");
    let resumed = on_prod(&fleet, &inv, &["resume", &id, "--yes"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    for m in fleet.members() {
        let revs = revisions(&fleet, &m.name);
        assert_eq!(active(&fleet, &m.name).1, v1, "{}", m.name);
        let v1_deploys = revs
            .iter()
            .filter(|r| r["reason"] == "deploy" && r["image"] == v1.as_str())
            .count();
        assert_eq!(
            v1_deploys,
            usize::from(m.name != "web-4"),
            "{} deployed once: {revs:?}",
            m.name
        );
    }
}

#[test]
fn a_pause_from_another_process_holds_the_next_batch_until_resume() {
    let (fleet, inv) = fleet_with(|_| Spec::checked("api", "v1"));
    let v2 = image("v2");
    // --wait holds the rollout between its batches, so the pause lands there.
    let args = [
        "--fleet",
        "prod",
        "--service",
        "api",
        "--image",
        &v2,
        "--batch",
        "3",
        "--wait",
        "8s",
        "--yes",
    ];
    let run = spawn_rollout(&fleet, &inv, &args);
    let ctl = |args: &[&str]| on_prod(&fleet, &inv, args);
    let mut id = String::new();
    wait_until(Duration::from_secs(30), "the rollout is recorded", || {
        let ls = json(&ctl(&["ls", "-o", "json"]));
        id = ls[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty()
    });
    ok(&ctl(&["pause", &id]));
    wait_until(Duration::from_secs(60), "paused", || {
        json(&ctl(&["status", &id, "-o", "json"]))["status"] == "paused"
    });
    std::thread::sleep(Duration::from_secs(3));
    let touched = fleet
        .members()
        .iter()
        .filter(|m| revisions(&fleet, &m.name).len() > 1)
        .count();
    assert_eq!(touched, 3, "the first batch only, while paused");
    ok(&ctl(&["resume", &id, "--yes"]));
    let out = run.wait_with_output().expect("rollout ends");
    assert!(out.status.success(), "{}", text(&out));
    for m in fleet.members() {
        assert_eq!(active(&fleet, &m.name).1, v2, "{}", m.name);
    }
}

/// A spec of `api` whose health gate the test opens by hand: healthy only
/// once /tmp/ready exists in the container.
fn gated(tag: &str) -> Spec {
    Spec::new("api", tag)
        .key("ports", ["8000"])
        .health_exec(&[
            "sh",
            "-c",
            "test -e /tmp/ready && wget -q -O- http://127.0.0.1:8000/health",
        ])
        .set("deploy", "health_deadline", "120s")
        // Failing until the test opens it, for up to 30 s.
        .set("health", "retries", 60)
}

/// Opens the gate of every running container of `api` on the fleet.
fn open_gates(fleet: &Fleet) {
    for m in fleet.members() {
        for id in berth_tests::running(&m.instance, "api") {
            let _ = std::process::Command::new("docker")
                .args(["exec", &id, "touch", "/tmp/ready"])
                .output();
        }
    }
}

#[test]
fn a_pause_during_a_batch_stops_the_next_one_from_starting_until_resume() {
    let (fleet, inv) = fleet_with(|_| Spec::checked("api", "v1"));
    let spec = gated("v2").write_in(fleet.pki().dir.path());
    // No --wait: the next batch would start the moment this one ends, so
    // the pause is heard from the next batch's own hosts as they start.
    let args = [
        "--fleet",
        "prod",
        "--service",
        "api",
        "-f",
        &spec.to_string_lossy(),
        "--batch",
        "3",
        "--yes",
    ];
    let mut run = spawn_rollout(&fleet, &inv, &args);
    let ctl = |args: &[&str]| on_prod(&fleet, &inv, args);
    let touched = || {
        fleet
            .members()
            .iter()
            .filter(|m| revisions(&fleet, &m.name).len() > 1)
            .count()
    };
    let mut id = String::new();
    wait_until(Duration::from_secs(60), "the first batch waits in its gates", || {
        let ls = json(&ctl(&["ls", "-o", "json"]));
        id = ls[0]["id"].as_str().unwrap_or_default().to_owned();
        !id.is_empty() && touched() == 3
    });
    ok(&ctl(&["pause", &id]));
    wait_until(Duration::from_secs(60), "paused", || {
        // A host's container may start after its revision is recorded.
        open_gates(&fleet);
        json(&ctl(&["status", &id, "-o", "json"]))["status"] == "paused"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(touched(), 3, "the second batch did not start while paused");

    ok(&ctl(&["resume", &id, "--yes"]));
    let mut ended = None;
    wait_until(Duration::from_secs(120), "the rollout ends", || {
        open_gates(&fleet);
        ended = run.try_wait().expect("rollout process");
        ended.is_some()
    });
    let out = run.wait_with_output().expect("rollout output");
    assert!(ended.is_some_and(|s| s.success()), "{}", text(&out));
    for m in fleet.members() {
        assert_eq!(active(&fleet, &m.name).1, image("v2"), "{}", m.name);
        assert_eq!(revisions(&fleet, &m.name).len(), 2, "deployed once on {}", m.name);
    }
}

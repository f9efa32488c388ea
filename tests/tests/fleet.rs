//! berthctl over a fleet of real agents: reads fan out with a HOST column
//! and a summary, a dead or hung host is named and never stalls the
//! others, `--select` touches only its hosts, changes refuse a fleet,
//! inventory errors name file and line, a discovery command's output is
//! the host list, and `logs -f` / `events` follow every host and survive
//! an agent restart. (The fleet lock is in fleet_lock.rs.)

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::{Fleet, Host, Spec, fails, json, ok, wait_until};
use berthctl::certs::Validity;
use serde_json::Value;

/// Runs `berthctl --inventory INV ARGS` as the operator.
fn ctl(fleet: &Fleet, inventory: &std::path::Path, args: &[&str]) -> std::process::Output {
    fleet
        .ctl(&["--inventory", &inventory.to_string_lossy()])
        .args(args)
        .output()
        .expect("run berthctl")
}

/// The host names of a fan-out JSON document, in order.
fn hosts_of(doc: &Value) -> Vec<String> {
    doc["hosts"]
        .as_array()
        .map(|h| h.iter().filter_map(|h| h["host"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[test]
fn reads_fan_out_and_a_dead_or_hung_host_is_named_without_stalling_the_rest() {
    let mut hosts = Host::tiers(&[("web", 4), ("worker", 2)]);
    hosts[5] = Host::new("worker-2")
        .label("role", "worker")
        .agent_cert(Validity::days(10));
    let mut fleet = Fleet::start_with(hosts, "");
    let inv = fleet.write_inventory(&fleet.inventory("prod"));
    for name in ["web-1", "worker-1"] {
        ok(&fleet.apply(name, &Spec::new("app", "v1")));
    }

    // ps over the fleet: every service of every host, one document.
    let out = ctl(&fleet, &inv, &["ps", "--fleet", "prod", "-o", "json"]);
    let doc = json(&out);
    assert_eq!(
        hosts_of(&doc),
        ["web-1", "web-2", "web-3", "web-4", "worker-1", "worker-2"]
    );
    for h in doc["hosts"].as_array().expect("hosts") {
        let services = h["result"]["services"].as_array().expect("a result per host");
        let expect = usize::from(h["host"] == "web-1" || h["host"] == "worker-1");
        assert_eq!(services.len(), expect, "{h}");
        assert_eq!(h["address"], fleet.addr(h["host"].as_str().expect("name")));
    }
    assert_eq!(
        doc["summary"],
        serde_json::json!({"ok": 6, "unreachable": 0, "failed": 0})
    );

    // The table has a HOST column; the summary follows on stderr.
    let out = ctl(&fleet, &inv, &["ps", "--fleet", "prod"]);
    let table = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(table.starts_with("HOST "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("web-1 ") && l.contains(" app ")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("worker-1 ") && l.contains(" app ")),
        "{table}"
    );
    assert!(stderr.contains("6 hosts ok"), "{stderr}");
    // worker-2's agent certificate expires in 10 days: flagged.
    assert!(
        stderr.contains("worker-2: the agent certificate expires in"),
        "{stderr}"
    );

    // --select role=web touches only the web tier; --select ANDs.
    let doc = json(&ctl(
        &fleet,
        &inv,
        &["ps", "--fleet", "prod", "--select", "role=web", "-o", "json"],
    ));
    assert_eq!(hosts_of(&doc), ["web-1", "web-2", "web-3", "web-4"]);
    let doc = json(&ctl(
        &fleet,
        &inv,
        &[
            "info",
            "--fleet",
            "prod",
            "--select",
            "role=web",
            "--select",
            "name!=web-1",
            "-o",
            "json",
        ],
    ));
    assert_eq!(hosts_of(&doc), ["web-2", "web-3", "web-4"]);
    assert!(
        doc["hosts"][0]["result"]["agent_cert_not_after_ms"].as_u64() > Some(0),
        "{doc}"
    );
    let e = fails(&ctl(&fleet, &inv, &["ps", "--fleet", "prod", "--select", "role=db"]));
    assert!(e.contains("matches none of the 6 hosts"), "{e}");

    // info over the fleet flags worker-2's certificate in its row.
    let table = ok(&ctl(&fleet, &inv, &["info", "--fleet", "prod"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("worker-2 "))
        .expect("worker-2 row");
    assert!(row.contains("(9d) !") || row.contains("(10d) !"), "{row}");

    // history and env get (masked) over several --host.
    let two = ["--host", fleet.addr("web-1"), "--host", fleet.addr("worker-1")];
    let doc = json(
        &fleet
            .ctl(&two)
            .args(["history", "app", "-o", "json"])
            .output()
            .expect("run"),
    );
    assert_eq!(doc["hosts"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(doc["hosts"][1]["result"][0]["revision"], 1, "{doc}");
    ok(&fleet.berthctl("web-1", &["env", "set", "app", "SECRET=hunter2"]));
    let out = fleet.ctl(&two).args(["env", "get", "app"]).output().expect("run");
    let table = ok(&out);
    assert!(table.contains("SECRET") && !table.contains("hunter2"), "{table}");

    // Changes refuse a fleet, pointing to rollout; a fleet of one is fine.
    for args in [
        vec!["deploy", "app", "--image", "x:1"],
        vec!["restart", "app"],
        vec!["rm", "app"],
        vec!["env", "set", "app", "A=1"],
    ] {
        let mut full = vec!["--fleet", "prod"];
        full.extend(args);
        let e = fails(&ctl(&fleet, &inv, &full));
        assert!(e.contains("berthctl rollout") && e.contains("6 hosts"), "{e}");
    }
    ok(&ctl(
        &fleet,
        &inv,
        &["restart", "app", "--fleet", "prod", "--select", "name=worker-1"],
    ));

    // One agent dead, one hung: the rest answer, both are named, exit 1.
    fleet.kill("web-4");
    fleet.freeze("web-3");
    let started = Instant::now();
    let out = ctl(
        &fleet,
        &inv,
        &["ps", "--fleet", "prod", "--timeout", "2s", "-o", "json"],
    );
    let took = started.elapsed();
    fleet.thaw("web-3");
    let stderr = fails(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("still one document");
    assert_eq!(
        doc["summary"],
        serde_json::json!({"ok": 4, "unreachable": 2, "failed": 0})
    );
    assert!(
        stderr.contains("4 hosts ok, 2 unreachable: web-3 (timed out after 2s), web-4 (connection refused"),
        "{stderr}"
    );
    assert_eq!(doc["hosts"][2]["error"], "timed out after 2s", "{doc}");
    assert_eq!(doc["hosts"][3]["unreachable"], true, "{doc}");
    // Bounded by the deadline, not by the hung host (which never answers).
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn inventory_errors_name_the_line_and_discovery_or_a_file_gives_the_hosts() {
    let fleet = Fleet::start(&[("web", 3), ("worker", 2)]);
    let bad =
        fleet.write_inventory("[fleets.prod]\n[[fleets.prod.hosts]]\naddress = \"127.0.0.1:1\"\nrole = \"web\"\n");
    let e = fails(&ctl(&fleet, &bad, &["ps", "--fleet", "prod"]));
    assert!(
        e.contains(&format!(
            "{}:4: fleets.prod.hosts[0].role: unknown field `role`",
            bad.display()
        )),
        "{e}"
    );

    // A discovery command's output (one address a line, with labels) is the host list.
    let hosts = fleet.write_hosts();
    let script = format!(
        "n=0; while read -r a; do n=$((n+1)); echo \"$a name=d-$n tier=$([ $n -le 3 ] && echo web || echo worker)\"; done < {}",
        hosts.display()
    );
    let inv = fleet.write_inventory(&format!(
        "[fleets.cloud]\ndiscover = [\"sh\", \"-c\", {}]\n",
        serde_json::to_string(&script).expect("quoted")
    ));
    let doc = json(&ctl(&fleet, &inv, &["ps", "--fleet", "cloud", "-o", "json"]));
    assert_eq!(hosts_of(&doc), ["d-1", "d-2", "d-3", "d-4", "d-5"]);
    let shown = ok(&ctl(
        &fleet,
        &inv,
        &["fleet", "show", "cloud", "--select", "tier=worker"],
    ));
    assert!(
        shown.contains("d-4") && shown.contains("d-5") && !shown.contains("d-1 "),
        "{shown}"
    );
    let listed = ok(&ctl(&fleet, &inv, &["fleet", "ls"]));
    assert!(
        listed.contains("cloud") && listed.contains("discover: sh -c"),
        "{listed}"
    );

    // metrics and top over the fleet: a (host) row and service rows per host.
    let doc = json(&ctl(&fleet, &inv, &["metrics", "--fleet", "cloud", "-o", "json"]));
    assert_eq!(hosts_of(&doc).len(), 5, "{doc}");
    assert!(doc["hosts"][0]["result"]["machine"]["cpus"].as_u64() > Some(0), "{doc}");
    let top = ok(&ctl(
        &fleet,
        &inv,
        &["top", "--fleet", "cloud", "-n", "1", "--sort", "mem"],
    ));
    assert!(top.starts_with("fleet: 5 hosts (0 down)"), "{top}");
    for n in 1..=5 {
        assert!(
            top.lines()
                .any(|l| l.starts_with(&format!("d-{n} ")) && l.contains("(host)")),
            "{top}"
        );
    }

    // --hosts-from - reads the same list from standard input.
    let mut child = fleet
        .ctl(&["--hosts-from", "-", "info", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&std::fs::read(&hosts).expect("hosts"))
            .expect("write hosts");
    }
    let out = child.wait_with_output().expect("berthctl");
    let doc = json(&out);
    assert_eq!(doc["hosts"].as_array().map(Vec::len), Some(5), "{doc}");
}

/// A berthctl run in the background whose stdout and stderr lines are
/// collected as they come.
struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(cmd: &mut std::process::Command) -> Follower {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berthctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for reader in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Follower { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn has(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines().iter().any(|l| pred(l))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_and_events_follow_every_host_and_survive_an_agent_restart() {
    let mut fleet = Fleet::start(&[("web", 3), ("worker", 2)]);
    let inv = fleet.write_inventory(&fleet.inventory("f"));
    let names: Vec<String> = fleet.members().iter().map(|m| m.name.clone()).collect();
    let ticker = Spec::new("tick", "v1").key(
        "command",
        [
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done",
        ],
    );
    for n in &names {
        ok(&fleet.apply(n, &ticker));
    }

    let events = Follower::start(
        fleet
            .ctl(&["--inventory", &inv.to_string_lossy()])
            .args(["events", "--fleet", "f", "-o", "json"]),
    );
    let logs = Follower::start(fleet.ctl(&["--inventory", &inv.to_string_lossy()]).args([
        "logs",
        "-f",
        "tick",
        "--fleet",
        "f",
        "--timeout",
        "2s",
    ]));
    // Every host's lines, prefixed with its aligned name.
    wait_until(Duration::from_secs(30), "a tick line from every host", || {
        names
            .iter()
            .all(|n| logs.has(|l| l.starts_with(&format!("{n:<8} | tick "))))
    });

    // web-2 restarts: reported, retried, rejoins, and its lines go on
    // where they left off.
    fleet.kill("web-2");
    wait_until(Duration::from_secs(30), "web-2 reported down", || {
        logs.has(|l| l.starts_with("web-2    | dropped out: "))
    });
    fleet.restart("web-2");
    wait_until(Duration::from_secs(60), "web-2 rejoined", || {
        logs.has(|l| l == "web-2    | rejoined")
    });
    let before = logs
        .lines()
        .iter()
        .position(|l| l == "web-2    | rejoined")
        .expect("rejoined");
    wait_until(Duration::from_secs(30), "web-2 ticks again", || {
        logs.lines()[before..].iter().any(|l| l.starts_with("web-2    | tick "))
    });
    let mut ticks: Vec<u64> = logs
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("web-2    | tick "))
        .filter_map(|n| n.parse().ok())
        .collect();
    let count = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), count, "no tick repeated after the rejoin: {ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "no tick lost across the restart: {ticks:?}"
    );

    // events over the fleet sees a deploy made on any one host.
    ok(&fleet.berthctl("worker-2", &["restart", "tick"]));
    wait_until(
        Duration::from_secs(30),
        "worker-2's restart in the fleet's events",
        || {
            events.lines().iter().any(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|e| e["host"] == "worker-2" && e["service"] == "tick")
            })
        },
    );
}

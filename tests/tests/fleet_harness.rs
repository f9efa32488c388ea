//! The fleet harness the fleet tests stand on, against real agents: six
//! agents start together and each answers today's single-host berthctl;
//! the inventory it writes is DESIGN.md's format, and berthctl reads it;
//! one agent killed is a dead host and comes back on the same port with
//! its state; a frozen one is a hung host until thawed; dropping the fleet
//! leaves no agent process and no container behind.

use berth_tests::fleet::{OPERATOR, VIEWER};
use berth_tests::{Fleet, Host, Spec, containers, fails, json, ok, only_container, service};
use berthctl::certs::Validity;
use berthctl::fleet::inventory::{Inventory, Source};

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn a_fleet_starts_answers_survives_a_restart_and_leaves_nothing_behind() {
    let mut hosts = Host::tiers(&[("web", 4), ("worker", 2)]);
    hosts[5] = Host::new("worker-2")
        .label("role", "worker")
        .label("az", "b")
        .agent_cert(Validity::days(10));
    let mut fleet = Fleet::start_with(hosts, "");
    let names: Vec<&str> = fleet.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3", "web-4", "worker-1", "worker-2"]);

    // Each agent answers on its own port, with its own instance.
    let mut addrs: Vec<&str> = fleet.members().iter().map(|m| m.addr()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 6, "one port per agent: {addrs:?}");
    for m in fleet.members() {
        assert!(m.addr().starts_with("127.0.0.1:"), "{}", m.addr());
        let ps = json(&fleet.berthctl(&m.name, &["ps", "-o", "json"]));
        assert_eq!(ps["host"], m.addr(), "{ps}");
        assert_eq!(ps["services"].as_array().map(Vec::len), Some(0), "{ps}");
        let config = std::fs::read_to_string(m.dir.join("agent.toml")).expect("config");
        assert!(config.contains(&format!("instance = \"{}\"", m.instance)), "{config}");
    }
    let worker2 = std::fs::read_to_string(fleet.member("worker-2").dir.join("agent.toml")).expect("config");
    assert!(worker2.contains("agent-worker-2.pem"), "its own certificate: {worker2}");

    // One PKI: the operator and the viewer are who they say on every host.
    for (cert, role) in [(OPERATOR, "operator"), (VIEWER, "viewer")] {
        let out = fleet
            .ctl_as(cert, &["--host", fleet.addr("worker-1"), "info", "-o", "json"])
            .output()
            .expect("berthctl");
        let info = json(&out);
        assert_eq!(info["caller"]["name"], cert, "{info}");
        assert_eq!(info["caller"]["role"], role, "{info}");
    }

    // The inventory, in DESIGN.md's format, names every host with its labels.
    let text = fleet.inventory("prod");
    let web1 = fleet.member("web-1");
    let expected = format!(
        "[[fleets.prod.hosts]]\naddress = \"{}\"\nname    = \"web-1\"\nlabels  = {{ role = \"web\" }}\n",
        web1.addr()
    );
    assert!(text.starts_with(&expected), "{text}");
    assert!(
        text.contains("name    = \"worker-2\"\nlabels  = { role = \"worker\", az = \"b\" }\n"),
        "{text}"
    );
    let path = fleet.write_inventory(&text);
    let inventory = Inventory::load(&path).expect("berthctl reads the inventory");
    let Source::Listed(hosts) = &inventory.fleet("prod").expect("fleet prod").source else {
        panic!("prod lists its hosts: {inventory:?}");
    };
    assert_eq!(hosts.len(), 6);
    for (h, m) in hosts.iter().zip(fleet.members()) {
        assert_eq!(h.target.to_string(), m.addr());
        assert_eq!(h.name, m.name);
        let labels: Vec<(String, String)> = h.labels.clone().into_iter().collect();
        let mut expected = m.labels.clone();
        expected.sort();
        assert_eq!(labels, expected, "{}", h.name);
    }

    // A container on web-1 outlives its agent's death and is adopted again.
    ok(&fleet.apply("web-1", &Spec::checked("site", "v1")));
    ok(&fleet.apply("worker-1", &Spec::new("jobs", "v1")));
    let site = only_container(&fleet.member("web-1").instance, "site");
    let addr = fleet.addr("web-1").to_owned();
    fleet.kill("web-1");
    assert!(fleet.member("web-1").agent().is_none());
    let err = fails(&fleet.berthctl("web-1", &["ps"]));
    assert!(err.contains("connection refused"), "a dead host: {err}");
    ok(&fleet.berthctl("web-2", &["ps"]));
    fleet.restart("web-1");
    assert_eq!(fleet.addr("web-1"), addr, "the same port");
    let ps = json(&fleet.berthctl("web-1", &["ps", "-o", "json"]));
    assert_eq!(service(&ps, "site")["revision"], 1, "the same state: {ps}");
    assert_eq!(only_container(&fleet.member("web-1").instance, "site"), site);
    assert_eq!(
        containers(&fleet.member("web-2").instance, None),
        Vec::<String>::new(),
        "instances are apart"
    );

    // A frozen agent is a hung host: connections are accepted, never
    // answered, until it is thawed.
    fleet.freeze("worker-1");
    let err = fails(&fleet.berthctl("worker-1", &["ps"]));
    assert!(err.contains("no answer"), "a hung host: {err}");
    fleet.thaw("worker-1");
    ok(&fleet.berthctl("worker-1", &["ps"]));

    // Dropping the fleet stops every agent and removes every container.
    let dir = fleet.pki().dir.path().display().to_string();
    let instances: Vec<String> = fleet.members().iter().map(|m| m.instance.clone()).collect();
    // Two services' containers and their network holders.
    assert_eq!(fleet.containers().len(), 4, "{:?}", fleet.containers());
    assert_eq!(processes_mentioning(&dir).len(), 6, "{:?}", processes_mentioning(&dir));
    drop(fleet);
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new(), "no agent is left");
    for instance in &instances {
        assert_eq!(containers(instance, None), Vec::<String>::new(), "{instance}");
    }
    assert!(!std::path::Path::new(&dir).exists(), "the fleet's dir is removed");
}

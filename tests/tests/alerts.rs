//! Threshold alerts (`[[alerts]]` in the agent config) against a real agent,
//! the real Docker Engine and the CPU-burning test image: a per-service rule
//! on `service.cpu_percent` fires a `threshold` event (seen through
//! `berthctl events`), runs its hook with the event as JSON on stdin (the
//! hook's stdout lands in the agent's log), shows `berth_alert_active 1` on
//! the Prometheus endpoint and sends a DogStatsD event (received on a UDP
//! socket the test holds); a deploy of a non-burning image clears it. Bad
//! rules are refused by `berth-agent check-config`.

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use berth_tests::{
    Agent, Events, Pki, Spec, agent_config_with_prometheus, apply, check_config, fails, free_port, http_get, ok,
    wait_until,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

/// The gauge's value for `alert` on `service`, if the endpoint shows it.
fn gauge(port: u16, alert: &str, service: &str) -> Option<f64> {
    let prefix = format!("berth_alert_active{{alert=\"{alert}\",service=\"{service}\"}} ");
    let body = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
}

/// The hook's records so far: one JSON document per line.
fn hook_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn threshold_events(watcher: &Events, state: &str) -> Vec<Value> {
    watcher
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "threshold"
                && e["service"] == "burn"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("alert burn-hot {state}:")))
        })
        .collect()
}

#[test]
fn a_cpu_burner_fires_a_service_alert_and_its_hook_then_it_clears() {
    let pki = Pki::new();
    let prom = free_port();
    let statsd = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let statsd_port = statsd.local_addr().expect("addr").port();
    statsd
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");

    // The hook appends its stdin (the event) as one line and says so on stdout.
    let records = pki.path("hook.jsonl");
    let hook = pki.path("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {r}\necho >> {r}\necho \"hook-saw-$1\"\n",
            r = records.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let config = agent_config_with_prometheus(
        &pki,
        prom,
        &format!(
            "interval = \"1s\"\nstatsd = \"127.0.0.1:{statsd_port}\"\nstatsd_flavor = \"dogstatsd\"\n\
             [[alerts]]\nname = \"burn-hot\"\nmetric = \"service.cpu_percent\"\nservice = \"burn\"\n\
             above = 50\nfor = \"3s\"\nhook = [\"{}\", \"scale\"]\nhook_timeout = \"10s\"\n",
            hook.display()
        ),
    );
    ok(&check_config(&pki, &config));
    let agent = Agent::start_ready(&pki, &config);
    let watcher = Events::watch(&pki, &agent.addr);

    // One core burning under a 0.5 CPU limit: ~100% of its limit.
    let burn = |tag: &str| {
        Spec::checked("burn", tag)
            .set("deploy", "health_deadline", "30s")
            .set("resources", "cpus", 0.5)
            .set("resources", "memory", "64m")
    };
    ok(&apply(&pki, &agent.addr, &burn("cpu")));

    wait_until(T, "a threshold event saying burn-hot fires", || {
        !threshold_events(&watcher, "firing").is_empty()
    });
    let fired = threshold_events(&watcher, "firing").remove(0);
    let message = fired["message"].as_str().unwrap_or("");
    assert!(
        message.contains("service.cpu_percent of burn is") && message.contains("above 50 for 3s"),
        "{fired}"
    );
    assert_eq!(fired["severity"], "warning", "{fired}");

    wait_until(T, "the hook to record the firing event", || {
        hook_records(&records).iter().any(|r| r["state"] == "firing")
    });
    let record = hook_records(&records).remove(0);
    assert_eq!(record["kind"], "threshold", "{record}");
    assert_eq!(record["alert"], "burn-hot", "{record}");
    assert_eq!(record["state"], "firing", "{record}");
    assert_eq!(record["metric"], "service.cpu_percent", "{record}");
    assert_eq!(record["service"], "burn", "{record}");
    assert_eq!(record["threshold"].as_f64(), Some(50.0), "{record}");
    assert!(record["value"].as_f64().unwrap_or(0.0) > 50.0, "{record}");
    agent.wait_for(T, "the hook's stdout in the agent's log", || {
        agent.logs().contains("hook-saw-scale")
    });

    wait_until(T, "berth_alert_active 1 on the Prometheus endpoint", || {
        gauge(prom, "burn-hot", "burn") == Some(1.0)
    });

    // The DogStatsD event, among the metric pushes on the same socket.
    let deadline = Instant::now() + T;
    let mut buf = [0u8; 65536];
    let mut seen_event = None;
    while seen_event.is_none() && Instant::now() < deadline {
        if let Ok(n) = statsd.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen_event = text
                .lines()
                .find(|l| l.starts_with("_e{") && l.contains("berth alert burn-hot firing"))
                .map(str::to_owned);
        }
    }
    let line = seen_event.expect("a DogStatsD event for the alert");
    assert!(line.contains("#alert:burn-hot,service:burn"), "{line}");

    // The burner is replaced by an idle image: the alert clears.
    ok(&apply(&pki, &agent.addr, &burn("v1")));
    wait_until(T, "a threshold event saying burn-hot cleared", || {
        !threshold_events(&watcher, "cleared").is_empty()
    });
    let cleared = threshold_events(&watcher, "cleared").remove(0);
    assert_eq!(cleared["severity"], "info", "{cleared}");
    wait_until(T, "the hook to record the clear", || {
        hook_records(&records).iter().any(|r| r["state"] == "cleared")
    });
    wait_until(T, "berth_alert_active 0 on the Prometheus endpoint", || {
        gauge(prom, "burn-hot", "burn") == Some(0.0)
    });
    assert_eq!(
        threshold_events(&watcher, "firing").len(),
        1,
        "fired once: {}",
        watcher.text()
    );
}

#[test]
fn bad_alert_rules_are_refused_by_check_config() {
    let pki = Pki::new();
    let check = |rule: &str| {
        fails(&check_config(
            &pki,
            &berth_tests::agent_config(&pki, &format!("[[alerts]]\nname = \"r\"\n{rule}\n")),
        ))
    };
    let err = check("metric = \"host.cpu\"\nabove = 50");
    assert!(
        err.contains("host.cpu_percent") && err.contains("line "),
        "names the metrics: {err}"
    );
    let err = check("metric = \"host.cpu_percent\"\nabove = 50\nbelow = 10");
    assert!(err.contains("not both"), "{err}");
    let err = check("metric = \"host.cpu_percent\"\nabove = 50\nfor = \"soon\"");
    assert!(err.contains("duration") && err.contains("\"soon\""), "{err}");
    let err = check("metric = \"host.cpu_percent\"\nabove = 50\nhook = [\"/nonexistent/scale\"]");
    assert!(
        err.contains("alerts.hook") && err.contains("/nonexistent/scale"),
        "{err}"
    );
}

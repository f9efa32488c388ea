//! Metrics and limits against the real Docker Engine and real collectors:
//! CPU use near a CPU limit, an OOM kill becoming an event and a counter,
//! the memory-pressure policy stopping the lowest-priority service, a slow
//! WatchMetrics client not slowing another, Debian's `prometheus` scraping
//! the endpoint, a StatsD push reaching Debian's `collectd` (statsd plugin,
//! read back through its write_prometheus /metrics), the DogStatsD dialect,
//! and the Docker-stats fallback when cgroup files are unreadable.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_proto::v1::WatchMetricsRequest;
use berth_proto::v1::metrics_client::MetricsClient;
use berth_tests::{
    Agent, Events, Pki, Proc, Spec, agent_config, agent_config_with_prometheus, apply, berthctl, check_config,
    containers, fails, find_service as find, free_port, http_get, inspect, json, median, ok, ps, service, wait_until,
};
use berthctl::client::{self, TlsFiles};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

#[test]
fn cpu_burner_shows_usage_near_its_cpu_limit() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, "interval = \"1s\"\n"));
    let burn = Spec::checked("burn", "cpu")
        .set("deploy", "health_deadline", "30s")
        .set("resources", "cpus", 0.5)
        .set("resources", "memory", "64m");
    ok(&apply(&pki, &agent.addr, &burn));

    // The collector learns of the container from the supervisor's next
    // reconcile pass; start watching once it has.
    wait_until(T, "the collector to read burn's container", || {
        let m = json(&berthctl(&pki, &agent.addr, &["metrics", "-o", "json"]));
        find(&m, "burn").is_some_and(|b| b["container_id"].as_str().is_some_and(|id| !id.is_empty()))
    });
    // Each line is one snapshot; the first pass after the container appears
    // has no earlier reading, so its CPU is 0 and is left out.
    // The first snapshot a watcher gets is the latest one, which may predate
    // the deploy; the service's snapshots start at its first pass.
    let out = ok(&berthctl(&pki, &agent.addr, &["top", "burn", "-n", "9", "-o", "json"]));
    let snaps: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .skip_while(|s| find(s, "burn").is_none())
        .take(7)
        .collect();
    assert_eq!(snaps.len(), 7, "{out}");
    let burn: Vec<&Value> = snaps.iter().map(|s| service(s, "burn")).collect();
    let cpu: Vec<f64> = burn[2..]
        .iter()
        .map(|b| b["cpu_percent"].as_f64().expect("cpu"))
        .collect();
    let m = median(&cpu);
    assert!(
        (35.0..=60.0).contains(&m),
        "a one-core burner limited to 0.5 CPUs should use ~50% of a CPU; median {m:.1}% of {cpu:?}"
    );
    let last = burn[6];
    assert_eq!(last["cpu_limit"].as_f64(), Some(0.5), "{last}");
    assert!(
        last["cpu_throttled_periods"].as_u64().unwrap_or(0) > 0,
        "the limit throttles it: {last}"
    );
    assert_eq!(last["memory_limit_bytes"].as_u64(), Some(64 * 1024 * 1024), "{last}");
    assert!(last["memory_bytes"].as_u64().unwrap_or(0) > 0, "{last}");
    assert!(
        last["net_rx_bytes"].as_u64().unwrap_or(0) > 0,
        "health probes reach it over its network: {last}"
    );
    assert_eq!(last["health"], "healthy", "{last}");
    let source = snaps[6]["source"].as_str().unwrap_or("");
    assert!(
        source.starts_with("cgroup-v"),
        "read from cgroup files, not Docker: {source}"
    );

    let info = json(&berthctl(&pki, &agent.addr, &["info", "-o", "json"]));
    let caps: Vec<&str> = info["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(caps.contains(&format!("metrics.{source}").as_str()), "{caps:?}");
    assert!(!caps.contains(&"metrics.docker-stats-fallback"), "{caps:?}");

    // The human table has the host line and the service row.
    let table = ok(&berthctl(&pki, &agent.addr, &["metrics"]));
    assert!(table.starts_with("host "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("burn ")), "{table}");
}

#[test]
fn oom_kill_becomes_an_event_and_a_counter() {
    let pki = Pki::new();
    let prom = free_port();
    let agent = Agent::start_ready(&pki, &agent_config_with_prometheus(&pki, prom, "interval = \"1s\"\n"));
    let watcher = Events::watch(&pki, &agent.addr);
    // No health check (a busy shell doubling strings answers probes late
    // and would be replaced as unhealthy before it reaches the limit), and
    // growth slow enough that the 2s no-check deploy gate passes first.
    std::fs::create_dir_all(pki.path("env")).expect("env dir");
    std::fs::write(pki.path("env/hog.env"), "MEM_STEP_DELAY=1\n").expect("env file");
    set_mode_0600(&pki.path("env/hog.env"));
    let hog = Spec::new("hog", "mem").set("resources", "memory", "64m");
    ok(&apply(&pki, &agent.addr, &hog));

    wait_until(T, "an oom-killed event for hog", || {
        watcher
            .events()
            .iter()
            .any(|e| e["kind"] == "oom-killed" && e["service"] == "hog")
    });
    let oom_event = watcher
        .events()
        .into_iter()
        .find(|e| e["kind"] == "oom-killed")
        .expect("event");
    assert_eq!(oom_event["severity"], "error", "{oom_event}");
    assert!(
        oom_event["message"].as_str().unwrap_or("").contains("OOM-killed"),
        "{oom_event}"
    );
    let ps = ps(&pki, &agent.addr);
    assert!(
        service(&ps, "hog")["oom_kills"].as_u64().unwrap_or(0) >= 1,
        "ps counts it: {ps}"
    );
    wait_until(T, "the OOM counter in berthctl metrics", || {
        let m = json(&berthctl(&pki, &agent.addr, &["metrics", "-o", "json"]));
        find(&m, "hog").is_some_and(|h| h["oom_kills"].as_u64().unwrap_or(0) >= 1)
    });
    wait_until(T, "the OOM counter on the Prometheus endpoint", || {
        http_get(prom, "/metrics").is_some_and(|body| {
            body.lines().any(|l| {
                l.strip_prefix("berth_service_oom_kills_total{service=\"hog\"} ")
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
            })
        })
    });
}

fn set_mode_0600(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn memory_pressure_policy_stops_the_lowest_priority_service() {
    let pki = Pki::new();
    // 100% of memory is always more than is available: permanent pressure.
    let agent = Agent::start_ready(
        &pki,
        &agent_config(
            &pki,
            "interval = \"1s\"\n[limits]\nmemory_pressure_threshold = \"100%\"\npressure_action = \"stop\"\n\
             pressure_sustained = \"2s\"\npressure_cooldown = \"10m\"\n",
        ),
    );
    let watcher = Events::watch(&pki, &agent.addr);
    for (name, priority) in [("low", -5), ("high", 10)] {
        let spec = Spec::checked(name, "v1")
            .set("deploy", "health_deadline", "30s")
            .key("priority", priority);
        ok(&apply(&pki, &agent.addr, &spec));
    }

    wait_until(T, "the policy to stop low", || {
        watcher.events().iter().any(|e| {
            e["kind"] == "memory-pressure"
                && e["service"] == "low"
                && e["message"].as_str().unwrap_or("").starts_with("Stopped low")
        })
    });
    // Entering pressure is an event too; it came before `berthctl events`
    // connected, so look for it in the agent's log, where every event goes.
    let log = agent.logs();
    assert!(
        log.contains("memory-pressure") && log.contains("is under the threshold"),
        "{log}"
    );
    // The cooldown (10m) keeps the policy from touching the next service.
    std::thread::sleep(Duration::from_secs(3));
    let low = containers(&pki.instance, Some("low"));
    assert_eq!(low.len(), 1, "{low:?}");
    assert_eq!(inspect(&low[0], "{{.State.Running}}"), "false", "low stays stopped");
    let high = containers(&pki.instance, Some("high"));
    assert_eq!(high.len(), 1);
    assert_eq!(inspect(&high[0], "{{.State.Running}}"), "true", "high keeps running");
    assert!(
        !watcher
            .events()
            .iter()
            .any(|e| e["kind"] == "memory-pressure" && e["service"] == "high"),
        "high was never acted on"
    );

    let ps = ps(&pki, &agent.addr);
    let low = service(&ps, "low");
    assert_eq!(low["state"], "stopped", "{low}");
    assert!(
        low["detail"].as_str().unwrap_or("").contains("memory-pressure"),
        "{low}"
    );
    assert_eq!(service(&ps, "high")["state"], "running");
    let m = json(&berthctl(&pki, &agent.addr, &["metrics", "-o", "json"]));
    assert_eq!(service(&m, "low")["health"], "held", "{m}");
}

#[test]
fn a_watcher_that_never_reads_does_not_slow_another() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, "interval = \"1s\"\n"));
    let target: client::Target = agent.addr.parse().expect("target");
    let files = TlsFiles::resolve(&pki.tls_dir(), None).expect("tls files");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The stalled client: a 64-byte HTTP/2 window fills with part of the
        // first snapshot, after which the agent cannot send it anything more.
        let stalled_channel = client::connect_with(&target, &files, |e| {
            e.initial_stream_window_size(Some(64))
        })
        .await
        .expect("connect stalled client");
        let mut stalled = MetricsClient::new(stalled_channel)
            .watch_metrics(WatchMetricsRequest::default())
            .await
            .expect("stalled watch")
            .into_inner();

        let reader_channel = client::connect(&target, &files).await.expect("connect reader");
        let mut reader = MetricsClient::new(reader_channel)
            .watch_metrics(WatchMetricsRequest::default())
            .await
            .expect("reader watch")
            .into_inner();
        let mut stamps = Vec::new();
        for _ in 0..8 {
            let s = tokio::time::timeout(Duration::from_secs(30), reader.message())
                .await
                .expect("the reader keeps getting snapshots while the other watcher is stuck")
                .expect("stream ok")
                .expect("a snapshot");
            assert_eq!(s.dropped, 0, "a reading watcher misses nothing");
            stamps.push(s.timestamp_ms);
        }
        assert!(stamps.windows(2).all(|w| w[1] > w[0]), "{stamps:?}");

        // Now the stalled watcher reads: first what was already in flight
        // (the message h2 was sending, one tonic had encoded, one in the
        // watcher's queue, the one the forwarder was waiting to queue), then
        // the newest snapshot, told how many it missed.
        let mut dropped = 0;
        let mut got = Vec::new();
        for _ in 0..8 {
            let s = tokio::time::timeout(Duration::from_secs(30), stalled.message())
                .await
                .expect("the stalled watcher gets snapshots once it reads")
                .expect("stream ok")
                .expect("a snapshot");
            dropped += s.dropped;
            got.push((s.timestamp_ms, s.dropped));
            if dropped > 0 {
                break;
            }
        }
        assert!(
            dropped >= 3,
            "the stalled watcher is told it missed snapshots: {dropped} (timestamp, dropped): {got:?}; reader saw {stamps:?}"
        );
    });
}

#[test]
fn prometheus_scrapes_the_endpoint() {
    let pki = Pki::new();
    let berth_port = free_port();
    let agent = Agent::start_ready(
        &pki,
        &agent_config_with_prometheus(&pki, berth_port, "interval = \"1s\"\n"),
    );
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("scraped", "v1").set("deploy", "health_deadline", "30s"),
    ));

    let prom_port = free_port();
    let config = pki.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: ['127.0.0.1:{berth_port}']\n"
        ),
    )
    .expect("prometheus config");
    let prometheus = Proc::start(
        "/usr/bin/prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", pki.path("prometheus-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        pki.path("prometheus.log"),
    );
    let query = |q: &str| -> Option<Value> {
        let body = http_get(prom_port, &format!("/api/v1/query?query={q}"))?;
        serde_json::from_str::<Value>(&body).ok()
    };
    // berth_service_up{service="scraped"}, URL-encoded.
    wait_until(T, "prometheus to have berth_service_up for the service", || {
        query("berth_service_up%7Bservice%3D%22scraped%22%7D").is_some_and(|v| {
            v["data"]["result"]
                .as_array()
                .and_then(|r| r.first())
                .is_some_and(|r| r["value"][1] == "1")
        })
    });
    let mem = query("berth_container_memory_usage_bytes%7Bservice%3D%22scraped%22%7D")
        .unwrap_or_else(|| panic!("query failed; prometheus log:\n{}", prometheus.logs()));
    let value: f64 = mem["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(value > 0.0, "{mem}");
    let up = query("up%7Bjob%3D%22berth%22%7D").expect("up query");
    assert_eq!(
        up["data"]["result"][0]["value"][1], "1",
        "the scrape target is healthy: {up}"
    );
    let host = query("berth_host_memory_total_bytes").expect("host query");
    assert!(!host["data"]["result"].as_array().is_none_or(Vec::is_empty), "{host}");
}

#[test]
fn statsd_push_reaches_collectd() {
    let pki = Pki::new();
    let statsd_port = free_port();
    let http_port = free_port();
    let config = pki.path("collectd.conf");
    std::fs::write(
        &config,
        format!(
            r#"Interval 1
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
AutoLoadPlugin false
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File STDERR
</Plugin>
LoadPlugin statsd
<Plugin statsd>
  Host "127.0.0.1"
  Port "{statsd_port}"
  DeleteGauges false
</Plugin>
LoadPlugin write_prometheus
<Plugin write_prometheus>
  Port "{http_port}"
</Plugin>
"#,
            dir = pki.dir.path().display()
        ),
    )
    .expect("collectd config");
    let collectd = Proc::start(
        "/usr/sbin/collectd",
        &["-f".into(), "-C".into(), config.display().to_string()],
        pki.path("collectd.log"),
    );
    wait_until(T, "collectd to listen", || {
        collectd.logs().contains("statsd plugin: Listening") && http_get(http_port, "/metrics").is_some()
    });

    let agent = Agent::start_ready(
        &pki,
        &agent_config(
            &pki,
            &format!("interval = \"1s\"\nstatsd = \"127.0.0.1:{statsd_port}\"\n"),
        ),
    );
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("pushed", "v1").set("deploy", "health_deadline", "30s"),
    ));
    let gauge = |name: &str| -> Option<f64> {
        let body = http_get(http_port, "/metrics")?;
        let prefix = format!("collectd_statsd_gauge{{statsd=\"{name}\"");
        body.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    wait_until(T, "collectd to have berth's container gauges", || {
        gauge("berth.container.pushed.memory_bytes").is_some_and(|v| v > 0.0)
            && gauge("berth.container.pushed.up") == Some(1.0)
    });
    assert!(
        gauge("berth.host.memory_total_bytes").is_some_and(|v| v > 0.0),
        "{}",
        http_get(http_port, "/metrics").unwrap_or_default()
    );
    assert!(
        !collectd.logs().contains("Unable to parse line"),
        "every line is valid StatsD:\n{}",
        collectd.logs()
    );
}

#[test]
fn dogstatsd_flavor_tags_the_service() {
    let pki = Pki::new();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let port = socket.local_addr().expect("addr").port();
    let agent = Agent::start_ready(
        &pki,
        &agent_config(
            &pki,
            &format!("interval = \"1s\"\nstatsd = \"127.0.0.1:{port}\"\nstatsd_flavor = \"dogstatsd\"\n"),
        ),
    );
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("tagged", "v1").set("deploy", "health_deadline", "30s"),
    ));
    let mut seen = String::new();
    wait_until(T, "a DogStatsD line tagged with the service", || {
        let mut buf = [0u8; 65536];
        if let Ok(n) = socket.recv(&mut buf) {
            seen = String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        seen.lines()
            .any(|l| l.starts_with("berth.container.memory_bytes:") && l.ends_with("|g|#service:tagged"))
    });
    for line in seen.lines() {
        let (name, rest) = line.split_once(':').expect("name:value");
        assert!(name.starts_with("berth."), "{line}");
        assert!(rest.contains("|g") || rest.contains("|c"), "{line}");
    }
}

/// The agent's open descriptors whose target names `needle` (a container
/// id in a cgroup path, or "(deleted)" for a file of a removed cgroup).
fn open_files_naming(pid: u32, needle: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains(needle))
        .collect()
}

/// A container's own view of its traffic: bytes received and sent over
/// its interfaces but `lo`, from `/proc/PID/net/dev` of its main process.
fn own_traffic(container: &str) -> (u64, u64) {
    let pid = inspect(container, "{{.State.Pid}}");
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("the container's net/dev");
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .fold((0, 0), |(rx, tx), (_, counters)| {
            let f: Vec<u64> = counters.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
            (rx + f[0], tx + f[8])
        })
}

#[test]
fn container_traffic_is_read_from_the_host_end_of_its_veth_pair() {
    let pki = Pki::new();
    let port = free_port();
    let agent = Agent::start_ready(&pki, &agent_config_with_prometheus(&pki, port, "interval = \"1s\"\n"));
    // On Docker's bridge, health-probed through its published port: one
    // veth pair to the host. Without a network: only loopback.
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("bridged", "v1").key("stop_timeout", "1s"),
    ));
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::new("isolated", "v1")
            .key("network", "none")
            .key("stop_timeout", "1s"),
    ));
    wait_until(T, "both containers read, one through its veth", || {
        scraped(port, "berth_metrics_containers_read") == Some(2.0)
            && scraped(port, "berth_metrics_containers_net_from_host") == Some(1.0)
    });
    let bridged = containers(&pki.instance, Some("bridged"))
        .pop()
        .expect("bridged's container");
    let passes = || scraped(port, "berth_metrics_passes_total").unwrap_or(0.0);
    let service_value = |name: &str, service: &str| {
        http_get(port, "/metrics").and_then(|body| {
            let prefix = format!("{name}{{service=\"{service}\"");
            body.lines()
                .find(|l| l.starts_with(&prefix))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        })
    };
    // What the agent took from the host end lies between two readings of
    // the container's own counters taken before and after its pass (the
    // probes keep the counters moving).
    for _ in 0..3 {
        let before = own_traffic(&bridged);
        let seen = passes();
        wait_until(T, "a pass after the first reading", || passes() > seen + 1.0);
        let rx = service_value("berth_container_network_receive_bytes_total", "bridged").expect("rx") as u64;
        let tx = service_value("berth_container_network_transmit_bytes_total", "bridged").expect("tx") as u64;
        let after = own_traffic(&bridged);
        assert!(
            before.0 <= rx && rx <= after.0,
            "rx {rx} not within {before:?}..{after:?}"
        );
        assert!(
            before.1 <= tx && tx <= after.1,
            "tx {tx} not within {before:?}..{after:?}"
        );
        assert!(rx > 0 && tx > 0, "probes reached it: rx {rx}, tx {tx}");
    }
    assert_eq!(
        service_value("berth_container_network_receive_bytes_total", "isolated"),
        Some(0.0),
        "loopback only"
    );
}

fn scraped(port: u16, name: &str) -> Option<f64> {
    http_get(port, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn collector_keeps_cgroup_files_open_and_closes_them_with_the_container() {
    let pki = Pki::new();
    let port = free_port();
    let agent = Agent::start_ready(&pki, &agent_config_with_prometheus(&pki, port, "interval = \"1s\"\n"));
    let pid = agent.pid();
    // A CPU burner, so the first container's counter is far ahead of the
    // fresh one's when it is replaced.
    let burn = Spec::checked("kept", "cpu")
        .set("deploy", "health_deadline", "30s")
        .set("resources", "cpus", 0.5)
        .key("stop_timeout", "1s");
    ok(&apply(&pki, &agent.addr, &burn));
    let container_id = || {
        let m = json(&berthctl(&pki, &agent.addr, &["metrics", "-o", "json"]));
        find(&m, "kept")
            .and_then(|k| k["container_id"].as_str().map(str::to_owned))
            .filter(|id| !id.is_empty())
    };
    let mut first = None;
    wait_until(T, "the collector to hold the first container's files open", || {
        first = container_id();
        first.as_deref().is_some_and(|id| open_files_naming(pid, id).len() >= 3)
    });
    let first = first.expect("first container");
    let held = scraped(port, "berth_metrics_open_files").unwrap_or(0.0);
    assert!(
        held as usize >= open_files_naming(pid, &first).len(),
        "the gauge counts the cgroup files ({held}) and more (net/dev): {:?}",
        open_files_naming(pid, &first)
    );
    // A pass over a running container costs CPU time on the sampler
    // thread (that thread's alone: not more than the pass's wall time).
    let body = http_get(port, "/metrics").expect("a scrape");
    let gauge = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in the scrape"))
    };
    let wall = gauge("berth_metrics_pass_seconds{part=\"containers\"}");
    let cpu = gauge("berth_metrics_pass_cpu_seconds{part=\"containers\"}");
    // (The two clocks are read a few instructions apart: some slack.)
    assert!(cpu > 0.0 && cpu <= wall * 1.1 + 50e-6, "pass CPU {cpu}s, wall {wall}s");
    // Let the first container use well over a CPU-second.
    wait_until(T, "the first container to use 2 CPU-seconds", || {
        scraped(port, "berth_container_cpu_seconds_total{service=\"kept\"}").is_some_and(|v| v >= 2.0)
    });

    // A fresh container: the old one's files are closed, the new one's
    // opened, and its counters are its own.
    ok(&berthctl(&pki, &agent.addr, &["restart", "kept"]));
    let mut second = None;
    wait_until(T, "the collector to follow the fresh container", || {
        second = container_id().filter(|id| *id != first);
        second
            .as_deref()
            .is_some_and(|id| open_files_naming(pid, id).len() >= 3 && open_files_naming(pid, &first).is_empty())
    });
    let second = second.expect("second container");
    let usage_file = open_files_naming(pid, &second)
        .into_iter()
        .find(|p| p.ends_with("cpuacct.usage") || p.ends_with("cpu.stat"))
        .expect("the fresh container's CPU file is open");
    let reported = scraped(port, "berth_container_cpu_seconds_total{service=\"kept\"}").expect("cpu counter");
    let text = std::fs::read_to_string(&usage_file).expect("cgroup file");
    let actual = if usage_file.ends_with("cpuacct.usage") {
        text.trim().parse::<f64>().expect("usage") / 1e9
    } else {
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<f64>().ok())
            .expect("usage_usec")
            / 1e6
    };
    assert!(
        reported <= actual,
        "the counter after the restart is the fresh container's ({actual} s so far), not the old one's: {reported}"
    );
    assert!(
        scraped(port, "berth_container_memory_usage_bytes{service=\"kept\"}").is_some_and(|v| v > 0.0),
        "memory of the fresh container"
    );
    assert!(
        open_files_naming(pid, "(deleted)").is_empty(),
        "no file of a removed cgroup stays open"
    );

    // Removed: nothing of it stays open.
    ok(&berthctl(&pki, &agent.addr, &["rm", "kept"]));
    wait_until(T, "the collector to close the removed container's files", || {
        open_files_naming(pid, &second).is_empty() && scraped(port, "berth_metrics_open_files") == Some(0.0)
    });
    assert!(open_files_naming(pid, "(deleted)").is_empty());
}

#[test]
fn docker_stats_fallback_when_cgroup_files_are_unreadable() {
    let pki = Pki::new();
    let empty = pki.path("no-cgroups");
    std::fs::create_dir_all(&empty).expect("dir");
    let agent = Agent::start_ready(
        &pki,
        &agent_config(
            &pki,
            &format!("interval = \"1s\"\ncgroup_root = \"{}\"\n", empty.display()),
        ),
    );
    let info = json(&berthctl(&pki, &agent.addr, &["info", "-o", "json"]));
    let caps = info["capabilities"].to_string();
    assert!(caps.contains("\"metrics.docker-stats-fallback\""), "{caps}");
    assert!(!caps.contains("metrics.cgroup-v"), "{caps}");

    let fallback = Spec::checked("fallback", "v1")
        .set("deploy", "health_deadline", "30s")
        .set("resources", "memory", "64m")
        .set("resources", "cpus", 0.5);
    ok(&apply(&pki, &agent.addr, &fallback));
    let id = containers(&pki.instance, Some("fallback")).pop().expect("a container");
    // Some engines cannot read cgroups themselves: Docker 20.10 on this
    // test machine answers every stats call with an empty sample and
    // `docker stats` shows "0B / 0B". Then berth must relay "no data" (zeros),
    // not invent numbers; elsewhere it must relay Docker's figures.
    let engine_usage = berth_tests::docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &id]);
    let engine_has_stats = !engine_usage.starts_with("0B /");
    if !engine_has_stats {
        eprintln!("note: this Docker Engine reports no container stats (docker stats: {engine_usage:?})");
    }
    wait_until(T, "fallback metrics from docker stats", || {
        let m = json(&berthctl(&pki, &agent.addr, &["metrics", "-o", "json"]));
        let Some(f) = find(&m, "fallback") else { return false };
        let relayed = if engine_has_stats {
            f["memory_bytes"].as_u64().unwrap_or(0) > 0 && f["memory_limit_bytes"].as_u64() == Some(64 * 1024 * 1024)
        } else {
            f["memory_bytes"].as_u64() == Some(0)
        };
        m["source"] == "docker-stats"
            && f["container_id"] == id.as_str()
            && f["cpu_limit"].as_f64() == Some(0.5)
            && relayed
    });
}

#[test]
fn bad_metrics_and_limits_config_is_refused() {
    let pki = Pki::new();
    let check = |extra: &str| check_config(&pki, &agent_config(&pki, extra));
    let err = fails(&check("interval = \"500ms\"\n"));
    assert!(
        err.contains("metrics.interval") && err.contains("minimum is 1s"),
        "{err}"
    );
    let err = fails(&check("[limits]\nmemory_pressure_threshold = \"plenty\"\n"));
    assert!(err.contains("limits.memory_pressure_threshold"), "{err}");
    let err = fails(&check("[limits]\npressure_action = \"reboot\"\n"));
    assert!(err.contains("pressure_action"), "{err}");

    // A taken Prometheus port fails the start with the key to change.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let path = pki.path("taken.toml");
    std::fs::write(&path, agent_config_with_prometheus(&pki, port, "")).expect("write");
    let mut child = Command::new(berth_tests::bin("berth-agent"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("metrics.prometheus_listen"), "{stderr}");
}

use std::net::{IpAddr, Ipv4Addr};

// Not the prelude: its `Strategy` trait would clash with the spec's enum.
use proptest::prelude::{Just, any, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

use super::*;
use crate::units::{ByteSize, Cpus, Duration};

const EXAMPLE: &str = r#"
name    = "contextgraph-web"
image   = "registry.example.com/contextgraph:1.4.3"
command = ["web"]                 # the same image runs as "worker" in another spec
env_file = "contextgraph-web.env" # under the agent's env dir
ports   = ["8000"]                # container port; "8080:8000" pins a host port
restart = "always"

[resources]
memory = "16g"
cpus   = 8

[health]
http         = "/__lbheartbeat__" # or tcp = 8000, or exec = ["cmd", "arg"]
port         = 8000
interval     = "2s"
timeout      = "1s"
retries      = 3
start_period = "10s"

[proxy]                           # optional: nginx site in front
server_names = ["api.example.com"]
listen       = [80]
upstream_port = 8000

[deploy]
strategy = "blue-green"           # or "recreate"
health_deadline = "2m"
drain = "10s"
"#;

const MINIMAL: &str = "name = \"w\"\nimage = \"busybox\"\n";

fn ok(text: &str) -> ServiceSpec {
    match parse(text) {
        Ok(spec) => spec,
        Err(e) => panic!("spec should parse:\n{text}\n---\n{e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(spec) => panic!("spec should not parse:\n{text}\n---\n{spec:?}"),
        Err(e) => e.to_string(),
    }
}

/// The minimal spec plus `extra` lines.
fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}\n")
}

#[test]
fn design_example_parses() {
    let spec = ok(EXAMPLE);
    assert_eq!(spec.name.as_str(), "contextgraph-web");
    assert_eq!(spec.image.repository(), "registry.example.com/contextgraph");
    assert_eq!(spec.image.tag(), "1.4.3");
    assert_eq!(spec.command, ["web"]);
    assert_eq!(spec.env_file_name(), "contextgraph-web.env");
    assert_eq!(spec.ports.len(), 1);
    assert_eq!(spec.ports[0].container_port, 8000);
    assert_eq!(spec.ports[0].host_port, None);
    assert_eq!(spec.restart, RestartPolicy::Always);
    assert_eq!(spec.resources.memory, ByteSize::new(16 << 30));
    assert_eq!(spec.resources.cpus.map(Cpus::nano_cpus), Some(8_000_000_000));
    let health = spec
        .health
        .as_ref()
        .map(|h| (&h.ready.probe, h.ready.start_period, h.ready.retries));
    let probe = Probe::Http {
        path: "/__lbheartbeat__".to_owned(),
        port: Some(8000),
    };
    assert_eq!(health, Some((&probe, Duration::from_secs(10), 3)));
    assert_eq!(spec.health_port(), Some(8000));
    assert_eq!(spec.upstream_port(), Some(8000));
    assert_eq!(spec.strategy(), Strategy::BlueGreen);
    assert_eq!(spec.deploy.health_deadline, Duration::from_secs(120));
    assert_eq!(spec.deploy.drain, Duration::from_secs(10));
    let proxy = spec
        .proxy
        .as_ref()
        .map(|p| (&p.server_names, &p.listen, &p.health_paths[0]));
    let names = vec!["api.example.com".to_owned()];
    assert_eq!(proxy, Some((&names, &vec![80], &"/__lbheartbeat__".to_owned())));
}

#[test]
fn minimal_spec_gets_the_defaults() {
    let spec = ok(MINIMAL);
    assert_eq!(spec.image.repository(), "busybox");
    assert_eq!(spec.image.tag(), "latest");
    assert!(spec.command.is_empty());
    assert_eq!(spec.entrypoint, None);
    assert_eq!(spec.env_file_name(), "w.env");
    assert!(spec.ports.is_empty());
    assert_eq!(spec.restart, RestartPolicy::Always);
    assert_eq!(spec.env_change, EnvChange::Restart);
    assert_eq!(spec.priority, 0);
    assert_eq!(spec.stop_signal, StopSignal::Term);
    assert_eq!(spec.stop_timeout, Duration::from_secs(10));
    assert!(spec.labels.is_empty());
    assert_eq!(spec.resources, Resources::default());
    assert_eq!(spec.health, None);
    assert_eq!(spec.health_port(), None);
    assert_eq!(spec.proxy, None);
    assert_eq!(spec.upstream_port(), None);
    assert_eq!(spec.strategy(), Strategy::Recreate);
    assert_eq!(spec.deploy, Deploy::default());
    assert_eq!(spec.deploy.health_deadline, Duration::from_secs(60));
    assert_eq!(spec.deploy.drain, Duration::from_secs(5));
}

#[test]
fn health_and_proxy_defaults() {
    let spec = ok(&with(
        "ports = [\"53/udp\", \"9000\"]\n[health]\nhttp = \"/\"\n[proxy]\nserver_names = [\"_\"]",
    ));
    let health = spec
        .health
        .clone()
        .map(|h| (h.ready.interval, h.ready.timeout, h.ready.retries, h.ready.start_period));
    assert_eq!(
        health,
        Some((
            Duration::from_secs(2),
            Duration::from_secs(1),
            3,
            Duration::from_secs(0)
        ))
    );
    // The first *TCP* container port; health checks and nginx speak TCP.
    assert_eq!(spec.health_port(), Some(9000));
    assert_eq!(spec.upstream_port(), Some(9000));
    assert_eq!(spec.strategy(), Strategy::BlueGreen);
    let proxy = spec
        .proxy
        .clone()
        .map(|p| (p.listen, p.health_paths, p.read_timeout, p.connect_timeout));
    let paths = ["/__lbheartbeat__", "/__heartbeat__", "/__version__"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        proxy,
        Some((vec![80], paths, Duration::from_secs(60), Duration::from_secs(5)))
    );
}

#[test]
fn other_probes_and_options_parse() {
    let spec = ok(&with(
        "entrypoint = []\nenv_file = \"shared.env\"\nrestart = \"on-failure\"\n\
         env_change = \"none\"\npriority = -5\nstop_signal = \"quit\"\nstop_timeout = \"1m\"\n\
         [labels]\n\"com.example.team\" = \"search\"\n[health]\ntcp = 6379\n",
    ));
    assert_eq!(spec.entrypoint, Some(vec![]));
    assert_eq!(spec.env_file_name(), "shared.env");
    assert_eq!(spec.restart, RestartPolicy::OnFailure);
    assert_eq!(spec.env_change, EnvChange::Ignore);
    assert_eq!(spec.priority, -5);
    assert_eq!(spec.stop_signal, StopSignal::Quit);
    assert_eq!(spec.stop_signal.as_str(), "SIGQUIT");
    assert_eq!(spec.stop_timeout, Duration::from_secs(60));
    assert_eq!(spec.labels.get("com.example.team").map(String::as_str), Some("search"));
    assert_eq!(spec.health_port(), Some(6379));
    let spec = ok(&with("[health]\nexec = [\"pg_isready\", \"-q\"]"));
    assert_eq!(spec.health_port(), None);
    assert!(matches!(spec.health.map(|h| h.ready.probe), Some(Probe::Exec { command }) if command.len() == 2));
}

#[test]
fn bad_values_name_their_key() {
    assert_eq!(
        err(&with("[resources]\nmemory = \"16x\"")),
        r#"resources.memory "16x": expected a size like 512m or 16g"#
    );
    assert_eq!(
        err(&with("resources.cpus = 0.0001")),
        r#"resources.cpus "0.0001": expected a CPU count like 0.5 or 8 (more than 0, at most 3 decimals)"#
    );
    assert_eq!(
        err(&with("[health]\nhttp = \"/\"\ninterval = \"2 seconds\"")),
        r#"health.interval "2 seconds": expected a duration like 500ms, 2s or 1m"#
    );
    assert_eq!(
        err(&with("ports = [\"8000\", \"80:x\"]")),
        r#"ports "80:x": expected a port mapping like 8000, 8080:8000 or 127.0.0.1:8080:8000/udp"#
    );
    assert_eq!(
        err("name = \"Web\"\nimage = \"busybox\""),
        "name \"Web\": expected a service name like \"web\": lowercase letters, digits, '_', \
         '.' and '-', starting with a letter or digit, at most 63 characters"
    );
    assert!(
        err("name = \"w\"\nimage = \"Busybox\"")
            .starts_with(r#"image "Busybox": expected an image reference like registry.example.com/app:1.4.3 ("#)
    );
    assert_eq!(
        err(&with("stop_signal = \"SIGFOO\"")),
        r#"stop_signal "SIGFOO": expected a signal name like SIGTERM or TERM (one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL)"#
    );
    assert_eq!(
        err(&with("deploy.drain = \"soon\"")),
        r#"deploy.drain "soon": expected a duration like 500ms, 2s or 1m"#
    );
}

#[test]
fn unknown_keys_name_the_key_the_line_and_the_valid_keys() {
    let text = err(&with("[resources]\nmemroy = \"1g\""));
    assert!(text.contains("line 4"), "{text}");
    assert!(text.contains("memroy = \"1g\""), "{text}");
    assert!(
        text.contains("unknown field `memroy`, expected one of `memory`, `cpus`"),
        "{text}"
    );
    let text = err(&with("comand = [\"web\"]"));
    assert!(text.contains("line 3"), "{text}");
    assert!(
        text.contains("unknown field `comand`, expected one of `name`, `image`, `command`"),
        "{text}"
    );
    let text = err(&with("[health]\nhttp = \"/\"\nintreval = \"1s\""));
    assert!(text.contains("line 5"), "{text}");
    assert!(text.contains("unknown field `intreval`"), "{text}");
    assert!(text.contains("`interval`"), "{text}");
}

#[test]
fn syntax_and_type_errors_keep_tomls_position() {
    let text = err("name = \"w\nimage = \"busybox\"");
    assert!(text.starts_with("TOML parse error at line 1"), "{text}");
    let text = err(&with("priority = \"high\""));
    assert!(
        text.contains("line 3") && text.contains("invalid type: string \"high\""),
        "{text}"
    );
    let text = err(&with("[resources]\nmemory = 16"));
    assert!(
        text.contains("line 4") && text.contains("expected a size like 512m or 16g"),
        "{text}"
    );
    let text = err("image = \"busybox\"");
    assert!(text.contains("missing field `name`"), "{text}");
    let text = err(&with("restart = \"sometimes\""));
    assert!(
        text.contains("unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
        "{text}"
    );
}

#[test]
fn health_takes_exactly_one_probe() {
    let text = err(&with("[health]\nhttp = \"/\"\ntcp = 80"));
    assert!(text.contains("line 3"), "{text}");
    assert!(
        text.contains("[health] takes only one of http, tcp or exec, found http and tcp"),
        "{text}"
    );
    let text = err(&with("[health]\ninterval = \"5s\""));
    assert!(text.contains("[health] needs one of http, tcp or exec"), "{text}");
    let text = err(&with("[health]\ntcp = 80\nport = 80"));
    assert!(
        text.contains("health.port is only used with http; drop it, tcp names what to check"),
        "{text}"
    );
}

#[test]
fn validation_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "env_file = \"../etc/passwd\"",
            r#"env_file "../etc/passwd": must be a file name in the agent's env dir, without '/' or '..'"#,
        ),
        (
            "env_file = \"a/b.env\"",
            r#"env_file "a/b.env": must be a file name in the agent's env dir, without '/' or '..'"#,
        ),
        (
            "ports = [\"8080:8000\", \"8080:9000\"]",
            r#"ports "8080:9000": host port 8080 is already used by "8080:8000""#,
        ),
        (
            "resources.memory = \"4m\"",
            r#"resources.memory "4m": Docker needs at least 6m"#,
        ),
        (
            "labels = { \"berth.service\" = \"x\" }",
            r#"labels "berth.service": keys starting with "berth." are reserved for the agent"#,
        ),
        (
            "stop_timeout = \"1500ms\"",
            r#"stop_timeout "1s500ms": Docker counts stop timeouts in whole seconds"#,
        ),
        (
            "[health]\nhttp = \"health\"\nport = 80",
            r#"health.http "health": must start with /"#,
        ),
        (
            "[health]\nhttp = \"/health\"",
            "health.port: an http check needs a port: set health.port, or list the container port in ports",
        ),
        (
            "[health]\nexec = []",
            r#"health.exec: must name a program, like ["cmd", "arg"]"#,
        ),
        ("[health]\ntcp = 0", r#"health.tcp "0": port 0 is not a port"#),
        (
            "[health]\ntcp = 80\ntimeout = \"5s\"",
            r#"health.timeout "5s": must not be longer than health.interval (2s)"#,
        ),
        (
            "[health]\ntcp = 80\nretries = 0",
            r#"health.retries "0": must be at least 1"#,
        ),
        (
            "[health]\ntcp = 80\ninterval = \"0s\"",
            r#"health.interval "0s": must be longer than 0s"#,
        ),
        (
            "[deploy]\nstrategy = \"blue-green\"",
            r#"deploy.strategy "blue-green": needs a [proxy] section, since nginx is what switches traffic to the new container"#,
        ),
        (
            "[deploy]\nhealth_deadline = \"0s\"",
            r#"deploy.health_deadline "0s": must be longer than 0s"#,
        ),
        (
            "ports = [\"8080:8000\"]\n[proxy]\nserver_names = [\"a.example.com\"]",
            r#"ports "8080:8000": a blue-green deploy runs the old and new container side by side, so they cannot share a fixed host port; write "8000" or use deploy.strategy = "recreate""#,
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = []",
            r#"proxy.server_names: list at least one host name, or "_" for any"#,
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"bad name\"]",
            r#"proxy.server_names "bad name": expected a host name like api.example.com or *.example.com, or _ for any"#,
        ),
        (
            "[proxy]\nserver_names = [\"a.example.com\"]",
            "proxy.upstream_port: nginx needs a container port to forward to: set proxy.upstream_port, or list the container port in ports",
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nlisten = [80, 80]",
            r#"proxy.listen "80": is listed twice"#,
        ),
        (
            "ports = [\"80:8000\"]\n[deploy]\nstrategy = \"recreate\"\n[proxy]\nserver_names = [\"_\"]",
            r#"proxy.listen "80": host port 80 is also published by ports "80:8000""#,
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\ntls_cert = \"/etc/ssl/a.pem\"",
            "proxy.tls_key: is needed with proxy.tls_cert",
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\ntls_key = \"/etc/ssl/a.key\"",
            "proxy.tls_cert: is needed with proxy.tls_key",
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\ntls_cert = \"a.pem\"\ntls_key = \"/k\"",
            r#"proxy.tls_cert "a.pem": must be an absolute path"#,
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nhealth_paths = [\"ping\"]",
            r#"proxy.health_paths "ping": must start with /"#,
        ),
        (
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nread_timeout = \"0s\"",
            r#"proxy.read_timeout "0s": must be longer than 0s"#,
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(&err(&with(extra)), expected, "for {extra:?}");
    }
}

#[test]
fn nothing_rendered_into_the_nginx_site_can_carry_config_syntax() {
    let proxied = |keys: &str| with(&format!("ports = [\"8000\"]\n[proxy]\n{keys}"));
    // The attack from the issue, then every character nginx reads as syntax.
    let mut attempts = vec![r#"/x { } location /x/ { alias /etc/; autoindex on; } location = /y"#.to_owned()];
    for c in [' ', '\t', '\n', ';', '{', '}', '"', '\'', '#', '$', '\\'] {
        attempts.push(format!("/a{c}b"));
    }
    for attempt in &attempts {
        let quoted = toml::Value::String(attempt.clone()).to_string();
        let cases = [
            (
                format!("server_names = [\"_\"]\nhealth_paths = [{quoted}]"),
                "proxy.health_paths",
            ),
            (
                format!("server_names = [\"_\"]\ntls_cert = {quoted}\ntls_key = \"/k.pem\""),
                "proxy.tls_cert",
            ),
            (
                format!("server_names = [\"_\"]\ntls_cert = \"/c.pem\"\ntls_key = {quoted}"),
                "proxy.tls_key",
            ),
            (format!("server_names = [{quoted}]"), "proxy.server_names"),
        ];
        for (keys, key) in cases {
            let e = err(&proxied(&keys));
            assert!(e.starts_with(key), "{attempt:?} in {key}: {e}");
        }
    }
    let e = err(&proxied(&format!(
        "server_names = [\"_\"]\nhealth_paths = [\"/{}\"]",
        "a".repeat(2000)
    )));
    assert!(e.contains("at most 1024"), "{e}");
    // What real sites use still passes.
    ok(&proxied(
        "server_names = [\"_\"]\nhealth_paths = [\"/__lbheartbeat__\", \"/health/live%20ok\", \"/v1:ping\"]\n\
         tls_cert = \"/etc/ssl/certs/api.example.com+chain.pem\"\ntls_key = \"/etc/ssl/private/api_key-2024.pem\"",
    ));
}

#[test]
fn round_trips_through_toml_and_json() {
    let full = with(
        "command = [\"web\", \"--port=8000\"]\nentrypoint = [\"/bin/app\"]\n\
         ports = [\"8000\", \"127.0.0.1::9000\", \"[::1]:5353:53/udp\"]\nstop_signal = \"HUP\"\n\
         labels = { \"com.example.team\" = \"search\", plain = \"\" }\n\
         resources = { memory = \"1536m\", cpus = 0.25 }\n\
         [health]\nexec = [\"true\"]\nstart_period = \"1m30s\"\n\
         [proxy]\nserver_names = [\"*.example.com\", \"_\"]\nlisten = [80, 443]\n\
         tls_cert = \"/etc/ssl/a.pem\"\ntls_key = \"/etc/ssl/a.key\"\nupstream_port = 9000\n\
         [deploy]\nstrategy = \"recreate\"",
    );
    for text in [EXAMPLE, MINIMAL, full.as_str()] {
        let spec = ok(text);
        let toml = spec.to_toml();
        assert_eq!(parse(&toml), Ok(spec.clone()), "TOML:\n{toml}");
        let json = serde_json::to_string(&spec).unwrap_or_default();
        let back: Option<ServiceSpec> = serde_json::from_str(&json).ok();
        assert_eq!(back, Some(spec), "JSON:\n{json}");
    }
}

#[test]
fn to_toml_reads_like_a_spec() {
    let toml = ok(MINIMAL).to_toml();
    assert!(toml.starts_with("name = \"w\"\nimage = \"busybox\"\n"), "{toml}");
    assert!(!toml.contains("[resources]"), "{toml}");
    let toml = ok(EXAMPLE).to_toml();
    for line in [
        "memory = \"16g\"",
        "cpus = 8",
        "ports = [\"8000\"]",
        "interval = \"2s\"",
        "strategy = \"blue-green\"",
    ] {
        assert!(toml.contains(line), "{line:?} in\n{toml}");
    }
}

#[test]
fn port_mappings() {
    let show = |s: &str| {
        s.parse::<PortMapping>()
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    };
    for (input, shown) in [
        ("8000", "8000"),
        ("8000/tcp", "8000"),
        ("8000/TCP", "8000"),
        ("53/udp", "53/udp"),
        ("8080:8000", "8080:8000"),
        ("127.0.0.1:8080:8000", "127.0.0.1:8080:8000"),
        ("127.0.0.1::8000", "127.0.0.1::8000"),
        ("[::1]:8080:8000/udp", "[::1]:8080:8000/udp"),
        ("[::]::8000", "[::]::8000"),
    ] {
        assert_eq!(show(input), Ok(shown.to_owned()), "{input}");
    }
    for bad in [
        "",
        "0",
        "80:0",
        "0:80",
        "65536",
        ":8000",
        "x",
        "8000/sctp",
        "1.2.3:80:80",
        "::1:80:80",
        "a:b:c:d",
        "+80",
    ] {
        assert!(bad.parse::<PortMapping>().is_err(), "{bad:?}");
    }
    let mapping = "127.0.0.1:8080:8000/udp".parse::<PortMapping>().ok();
    let expected = PortMapping {
        host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        host_port: Some(8080),
        container_port: 8000,
        protocol: Protocol::Udp,
    };
    assert_eq!(mapping, Some(expected));
}

#[test]
fn stop_signals_normalize() {
    for (input, signal) in [
        ("SIGTERM", StopSignal::Term),
        ("TERM", StopSignal::Term),
        ("int", StopSignal::Int),
        ("SigKill", StopSignal::Kill),
        ("USR2", StopSignal::Usr2),
    ] {
        assert_eq!(input.parse::<StopSignal>(), Ok(signal), "{input}");
    }
    for bad in ["", "SIG", "SIGSTOP", "9", "SIGSIGTERM"] {
        assert!(bad.parse::<StopSignal>().is_err(), "{bad:?}");
    }
    let toml = ok(&with("stop_signal = \"term\"")).to_toml();
    assert!(toml.contains("stop_signal = \"SIGTERM\""), "{toml}");
}

fn any_port_mapping() -> impl proptest::strategy::Strategy<Value = PortMapping> {
    let ip = prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
        any::<[u16; 8]>().prop_map(|s| Some(IpAddr::from(s))),
    ];
    (ip, proptest::option::of(1..=u16::MAX), 1..=u16::MAX, any::<bool>()).prop_map(
        |(host_ip, host_port, container_port, udp)| PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        },
    )
}

proptest! {
    #[test]
    fn port_mapping_display_round_trips(mapping in any_port_mapping()) {
        prop_assert_eq!(mapping.to_string().parse::<PortMapping>(), Ok(mapping));
    }
}

#[test]
fn oversized_specs_and_labels_are_refused_with_the_limit_named() {
    let big = with(&format!("[labels]\nblob = \"{}\"", "x".repeat(MAX_SPEC_BYTES)));
    let e = err(&big);
    assert!(e.starts_with("spec: is ") && e.contains("at most 64 KiB"), "{e}");

    let many: String = (0..=MAX_LABELS).map(|i| format!("l{i} = \"v\"\n")).collect();
    let e = err(&with(&format!("[labels]\n{many}")));
    assert_eq!(
        e,
        format!(
            "labels: has {} labels; at most {MAX_LABELS} are allowed",
            MAX_LABELS + 1
        )
    );

    let e = err(&with(&format!("[labels]\n{} = \"v\"", "k".repeat(MAX_LABEL_KEY + 1))));
    assert!(e.contains("a label key may be at most 128 bytes"), "{e}");
    let e = err(&with(&format!("[labels]\nk = \"{}\"", "v".repeat(MAX_LABEL_VALUE + 1))));
    assert!(e.starts_with("labels.k \""), "{e}");
    // The value is quoted only in part: an error never echoes a blob.
    assert!(e.len() < 300, "{e}");
    assert!(e.contains("(1025 bytes)"), "{e}");

    // toml's own message quotes the line: a long one is cut too.
    let e = err(&format!("name = \"g\"\nimage = \"{}", "y".repeat(10_000)));
    assert!(e.len() < 1_000, "{e}");

    let fine: String = (0..MAX_LABELS).map(|i| format!("l{i} = \"v\"\n")).collect();
    assert_eq!(ok(&with(&format!("[labels]\n{fine}"))).labels.len(), MAX_LABELS);
}

/// Every key of issue 16's items 1, 2, 4 and 5, written as a runbook would.
const RUN_FLAGS: &str = r#"
volumes = ["/data/piper:/data", "cache:/cache", "/etc/ssl/certs:/etc/ssl/certs:ro"]
env_files = ["common.env", "contextgraph-worker.env"]
user = "1000:1000"
workdir = "/srv/app"
hostname = "worker-1"
extra_hosts = ["db.internal:10.0.0.5", "host.docker.internal:host-gateway"]
network = "backend"
read_only = true
tmpfs = ["/tmp", "/run:size=64m,mode=1777"]
cap_add = ["NET_ADMIN"]
cap_drop = ["ALL"]
init = true
shm_size = "256m"
[env]
LAUNCH_ENVIRONMENT = "prod"
[ulimits]
nofile = "1024:65536"
nproc = 512
[resources]
memory = "1g"
memory_reservation = "512m"
memory_swap = "2g"
pids_limit = 200
[logging]
max_size = "50m"
max_file = 5
"#;

#[test]
fn run_flags_volumes_env_and_logging_parse_and_round_trip() {
    let spec = ok(&with(RUN_FLAGS));
    assert_eq!(spec.volumes.len(), 3);
    assert_eq!(spec.volumes[1].volume_name(), Some("cache"));
    assert!(spec.volumes[2].read_only);
    assert_eq!(spec.env_file_names(), ["common.env", "contextgraph-worker.env"]);
    assert!(spec.layered_env());
    assert_eq!(spec.env.get("LAUNCH_ENVIRONMENT").map(String::as_str), Some("prod"));
    assert_eq!(
        spec.ulimits["nofile"],
        Ulimit {
            soft: 1024,
            hard: 65536
        }
    );
    assert_eq!(spec.ulimits["nproc"], Ulimit { soft: 512, hard: 512 });
    assert_eq!(spec.resources.pids_limit, Some(200));
    assert_eq!(spec.logging.max_file, Some(5));
    assert!(spec.logging.rotates());
    let toml = spec.to_toml();
    assert_eq!(parse(&toml), Ok(spec.clone()), "TOML:\n{toml}");
    let json = serde_json::to_string(&spec).unwrap_or_default();
    assert_eq!(serde_json::from_str::<ServiceSpec>(&json).ok(), Some(spec));
    // A spec from before these keys reads as it did.
    let old = ok(MINIMAL);
    assert!(!old.layered_env() && old.volumes.is_empty() && !old.read_only);
    assert_eq!(old.env_file_names(), ["w.env"]);
    let journald = ok(&with(
        "[logging]\ndriver = \"awslogs\"\noptions = { awslogs-group = \"web\" }",
    ));
    assert!(!journald.logging.rotates());
}

#[test]
fn bad_run_flags_name_their_key_and_value() {
    for (extra, expected) in [
        (
            "volumes = [\"/data/../etc:/data\"]",
            "volumes \"/data/../etc:/data\": host path",
        ),
        (
            "volumes = [\"data:/x:rx\"]",
            "volumes \"data:/x:rx\": mode \"rx\" is not ro or rw",
        ),
        (
            "volumes = [\"a:/x\", \"/b:/x\"]",
            "volumes \"/b:/x\": container path /x is already mounted by \"a:/x\"",
        ),
        (
            "env_file = \"a.env\"\nenv_files = [\"b.env\"]",
            "env_files: set env_file or env_files",
        ),
        (
            "env_files = [\"../x.env\"]",
            "env_files \"../x.env\": must be a file name",
        ),
        (
            "env_files = [\"a.env\", \"a.env\"]",
            "env_files \"a.env\": is listed twice",
        ),
        ("[env]\n1BAD = \"x\"", "env \"1BAD\": is not a valid variable name"),
        ("user = \"root;rm\"", "user \"root;rm\": expected USER, UID"),
        ("workdir = \"srv\"", "workdir \"srv\": must be an absolute path"),
        ("hostname = \"-x\"", "hostname \"-x\": expected a host name"),
        ("extra_hosts = [\"db\"]", "extra_hosts \"db\": expected NAME:ADDRESS"),
        (
            "extra_hosts = [\"db:10.0.0.500\"]",
            "extra_hosts \"db:10.0.0.500\": \"10.0.0.500\" is not an IP address",
        ),
        (
            "network = \"my net\"",
            "network \"my net\": expected bridge, host, none or a network name",
        ),
        (
            "network = \"host\"\nports = [\"8000\"]",
            "network \"host\": a container on the host network",
        ),
        ("[ulimits]\nnofiles = 10", "ulimits \"nofiles\": is not a ulimit"),
        (
            "[ulimits]\nnofile = \"10:5\"",
            "ulimits.nofile \"10:5\": the soft limit is above the hard limit",
        ),
        (
            "[ulimits]\nnofile = \"lots\"",
            "ulimits.nofile \"lots\": expected a limit like 65536",
        ),
        (
            "tmpfs = [\"tmp\"]",
            "tmpfs \"tmp\": expected an absolute container path",
        ),
        (
            "tmpfs = [\"/tmp:size=1m;x\"]",
            "tmpfs \"/tmp:size=1m;x\": options are mount options",
        ),
        (
            "cap_add = [\"NET_ADMINN\"]",
            "cap_add \"NET_ADMINN\": is not a Linux capability",
        ),
        (
            "shm_size = \"lots\"",
            "shm_size \"lots\": expected a size like 512m or 16g",
        ),
        (
            "[resources]\nmemory_swap = \"1g\"",
            "resources.memory_swap: needs resources.memory",
        ),
        (
            "[resources]\nmemory = \"1g\"\nmemory_swap = \"512m\"",
            "resources.memory_swap \"512m\": is memory plus swap",
        ),
        (
            "[resources]\nmemory = \"1g\"\nmemory_reservation = \"2g\"",
            "resources.memory_reservation \"2g\": must not be above",
        ),
        (
            "[resources]\npids_limit = 0",
            "resources.pids_limit \"0\": must be at least 1",
        ),
        (
            "[logging]\ndriver = \"files\"",
            "logging.driver \"files\": is not one of Docker's log drivers",
        ),
        (
            "[logging]\ndriver = \"journald\"\nmax_size = \"1m\"",
            "logging.max_size: only applies to the json-file and local drivers, not journald",
        ),
        ("[logging]\nmax_file = 0", "logging.max_file \"0\": must be at least 1"),
        (
            "[logging]\noptions = { max-size = \"1m\" }",
            "logging.options \"max-size\": set it with logging.max_size",
        ),
    ] {
        let e = err(&with(extra));
        assert!(e.starts_with(expected), "for {extra:?}:\n{e}");
    }
}

const ROLES: &str = "ports = [\"8000\"]\n\
[health]\nhttp = \"/__lbheartbeat__\"\nsuccess_threshold = 2\nmin_healthy = \"3s\"\n\
[health.deps]\nhttp = \"/__heartbeat__\"\ninterval = \"10s\"\nretries = 2\n\
[health.version]\npath = \"/__version__\"\n";

#[test]
fn health_roles_parse_and_round_trip() {
    let spec = ok(&with(ROLES));
    let health = spec.health.clone().expect("health");
    assert_eq!(health.ready.success_threshold, 2);
    assert_eq!(health.ready.min_healthy, Duration::from_secs(3));
    assert_eq!(health.live(), &health.ready, "live defaults to the ready check");
    let deps = health.deps.clone().expect("deps");
    assert_eq!(
        (deps.probe, deps.interval, deps.retries, deps.success_threshold),
        (
            Probe::Http {
                path: "/__heartbeat__".into(),
                port: None
            },
            Duration::from_secs(10),
            2,
            1
        )
    );
    let version = health.version.clone().expect("version");
    assert_eq!(
        (version.path.as_str(), version.expect, version.expect_regex),
        ("/__version__", None, None)
    );
    assert_eq!(spec.version_port(), Some(8000));
    assert_eq!(parse(&spec.to_toml()), Ok(spec.clone()));
    let live = ok(&with(&format!("{ROLES}[health.live]\ntcp = 8000\n")));
    assert_eq!(
        live.health.as_ref().map(|h| &h.live().probe),
        Some(&Probe::Tcp { port: 8000 })
    );
    assert_eq!(parse(&live.to_toml()), Ok(live.clone()));
}

#[test]
fn health_roles_are_checked_with_their_key() {
    let cases = [
        (
            "[health.deps]\nhttp = \"beat\"",
            r#"health.deps.http "beat": must start with /"#,
        ),
        (
            "[health.deps]\ntcp = 80\nretries = 0",
            r#"health.deps.retries "0": must be at least 1"#,
        ),
        ("[health.live]\ntcp = 0", r#"health.live.tcp "0": port 0 is not a port"#),
        (
            "success_threshold = 0",
            r#"health.success_threshold "0": must be at least 1"#,
        ),
        (
            "[health.version]\npath = \"v\"",
            r#"health.version.path "v": must start with /"#,
        ),
        (
            "[health.version]\npath = \"/v\"\nexpect = \"1\"\nexpect_regex = \"1\"",
            "health.version: takes only one of expect or expect_regex",
        ),
    ];
    for (extra, want) in cases {
        let text = err(&with(&format!("ports = [\"8000\"]\n[health]\nhttp = \"/\"\n{extra}")));
        assert_eq!(text, want, "{extra}");
    }
    let text = err(&with(
        "ports = [\"8000\"]\n[health]\nhttp = \"/\"\n[health.version]\npath = \"/v\"\nexpect_regex = \"(\"",
    ));
    assert!(
        text.starts_with(r#"health.version.expect_regex "(": not a regular expression"#),
        "{text}"
    );
    let text = err(&with(
        "ports = [\"8000\"]\n[health]\nhttp = \"/\"\n[health.deps]\ntcp = 80\n[health.deps.version]\npath = \"/v\"",
    ));
    assert!(
        text.contains("[health.deps]: live, deps and version are sub-tables of [health] only"),
        "{text}"
    );
}

#[test]
fn version_assertion_reads_json_or_text_and_names_both_versions() {
    let image: ImageRef = "registry.example.com/app:1.4.3".parse().expect("image");
    let check = VersionCheck {
        path: "/__version__".into(),
        port: None,
        expect: None,
        expect_regex: None,
    };
    assert_eq!(
        VersionCheck::reported(r#"{"version": "1.4.3", "commit": "abc"}"#),
        "1.4.3"
    );
    assert_eq!(VersionCheck::reported("1.4.2\n"), "1.4.2");
    assert_eq!(VersionCheck::reported(r#"{"version": 7}"#), "7");
    assert_eq!(check.assert("1.4.3", &image), Ok(()));
    assert_eq!(
        check.assert("1.4.2", &image),
        Err("serving 1.4.2, expected 1.4.3".to_owned())
    );
    let exact = VersionCheck {
        expect: Some("2.0".into()),
        ..check.clone()
    };
    assert_eq!(
        exact.assert("1.4.3", &image),
        Err("serving 1.4.3, expected 2.0".to_owned())
    );
    let pattern = VersionCheck {
        expect_regex: Some(r"^1\.4\.".into()),
        ..check
    };
    assert_eq!(pattern.assert("1.4.9", &image), Ok(()));
    assert_eq!(
        pattern.assert("1.5.0", &image),
        Err(r"serving 1.5.0, expected /^1\.4\./".to_owned())
    );
}

/// Found by the spec fuzzer (`fuzz/corpus/spec/long-*.toml`): a long value,
/// a long map key or a long line came back whole in the error.
#[test]
fn errors_stay_bounded_whatever_the_input() {
    let long = "x".repeat(3000);
    let cases = [
        with(&format!("[resources]\nmemory = \"16{long}\"")),
        with(&format!("[env]\nA{} = \"a\\nb\"", "A".repeat(3000))),
        with(&format!(
            "[logging]\ndriver = \"local\"\noptions = {{ {} = \"a\\u0000\" }}",
            "o".repeat(3000)
        )),
        with(&format!("ports = [{}\"x\"]", "1,".repeat(1500))),
        with(&format!("name2 = 1 {long}")),
    ];
    for text in &cases {
        let e = err(text);
        assert!(
            e.len() <= 2048,
            "{} bytes for {} bytes of spec: {e}",
            e.len(),
            text.len()
        );
    }
    let e = err(&cases[0]);
    assert!(
        e.starts_with("resources.memory \"16xxx") && e.contains("(3002 bytes)"),
        "{e}"
    );
    assert!(e.ends_with("expected a size like 512m or 16g"), "{e}");
}

/// Found by the nginx_site fuzzer: each health path becomes a `location =`
/// block, and nginx refuses a site with the same location twice.
#[test]
fn a_health_path_listed_twice_is_refused() {
    let text = with("ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nhealth_paths = [\"/a\", \"/b\", \"/a\"]");
    assert_eq!(err(&text), "proxy.health_paths \"/a\": is listed twice");
}

//! Reading a config file: parse with unknown keys refused, then check what
//! serde cannot, and (for `check-config`) the files it names.

use std::net::SocketAddr;
use std::path::Path;

use berth_core::text::{capped, shown, toml_error_text};

use super::{Config, ConfigError, MemoryThreshold};

/// Most bytes of one message about a key: the values it quotes are cut
/// ([`shown`]), and this bounds the rest, so a config holding a pasted
/// blob is refused in a few lines, not with the blob.
const MESSAGE_MAX: usize = 1024;

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: toml_error_text(&e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: capped(message, MESSAGE_MAX),
        };
        if self.metrics.interval.as_std() < std::time::Duration::from_secs(1) {
            return Err(invalid(
                "metrics.interval",
                format!("\"{}\" is too short: the minimum is 1s", self.metrics.interval),
            ));
        }
        for (key, addr) in [
            ("metrics.prometheus_listen", &self.metrics.prometheus_listen),
            ("metrics.statsd", &self.metrics.statsd),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    key,
                    format!(
                        "\"{}\" is not an address like 127.0.0.1:9464 (\"\" turns it off)",
                        shown(addr)
                    ),
                ));
            }
        }
        let prefix_ok = !self.metrics.statsd_prefix.is_empty()
            && self
                .metrics
                .statsd_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !prefix_ok {
            return Err(invalid(
                "metrics.statsd_prefix",
                format!(
                    "{:?}: use letters, digits, '_', '.' or '-', like \"berth\"",
                    shown(&self.metrics.statsd_prefix)
                ),
            ));
        }
        if let Err(e) = MemoryThreshold::parse(&self.limits.memory_pressure_threshold) {
            return Err(invalid("limits.memory_pressure_threshold", e));
        }
        for (key, cmd) in [
            ("nginx.test_command", &self.nginx.test_command),
            ("nginx.reload_command", &self.nginx.reload_command),
        ] {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(invalid(key, "must name a program, e.g. [\"nginx\", \"-t\"]".into()));
            }
        }
        for (key, p) in [
            ("state_dir", &self.state_dir),
            ("env_dir", &self.env_dir),
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("docker.socket", &self.docker.socket),
            ("nginx.sites_dir", &self.nginx.sites_dir),
            ("metrics.cgroup_root", &self.metrics.cgroup_root),
            ("metrics.proc_root", &self.metrics.proc_root),
        ] {
            if p.as_os_str().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        if self.audit.keep_files == 0 {
            return Err(invalid(
                "audit.keep_files",
                "must be at least 1: rotation keeps the previous file".into(),
            ));
        }
        if self.audit.max_file_size.bytes() < 4096 {
            return Err(invalid(
                "audit.max_file_size",
                format!("\"{}\" is too small: the minimum is 4k", self.audit.max_file_size),
            ));
        }
        if self.tls.crl.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid(
                "tls.crl",
                "must not be empty; leave it out for no revocation check".into(),
            ));
        }
        if self.docker.timeout.as_std() < std::time::Duration::from_secs(1) {
            return Err(invalid(
                "docker.timeout",
                format!("\"{}\" is too short: the minimum is 1s", self.docker.timeout),
            ));
        }
        let c = &self.connections;
        for (key, value) in [
            ("connections.max", c.max),
            ("connections.max_per_address", c.max_per_address),
            ("connections.max_handshakes", c.max_handshakes),
            ("connections.max_handshakes_per_address", c.max_handshakes_per_address),
            ("connections.max_concurrent_streams", c.max_concurrent_streams),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for (key, d) in [
            ("connections.handshake_timeout", c.handshake_timeout),
            ("connections.keepalive", c.keepalive),
            ("connections.max_connection_age", c.max_connection_age),
        ] {
            if d.as_std() < std::time::Duration::from_secs(1) {
                return Err(invalid(key, format!("\"{d}\" is too short: the minimum is 1s")));
            }
        }
        if let Err(e) = super::parse_filter(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!(
                    "\"{}\" is not a log filter ({}); try \"info\" or \"debug\"",
                    shown(&self.log.level),
                    shown(&e.to_string())
                ),
            ));
        }
        if self.docker.log_max_file == 0 || self.docker.log_max_size.bytes() == 0 {
            return Err(invalid(
                "docker.log_max_file",
                format!(
                    "log rotation needs at least 1 file of more than 0 bytes (log_max_size = \"{}\", log_max_file = {})",
                    self.docker.log_max_size, self.docker.log_max_file
                ),
            ));
        }
        let instance_ok = !self.docker.instance.is_empty()
            && self.docker.instance.len() <= 63
            && self
                .docker
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !instance_ok {
            return Err(invalid(
                "docker.instance",
                format!(
                    "{:?}: use 1-63 letters, digits, '-', '_' or '.'",
                    shown(&self.docker.instance)
                ),
            ));
        }
        for (i, r) in self.registries.iter().enumerate() {
            let bad = |key: &'static str, message: String| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message: capped(
                    format!("entry {} ({}): {message}", i + 1, shown(&r.registry)),
                    MESSAGE_MAX,
                ),
            };
            if r.registry.is_empty() || r.registry.contains('/') {
                return Err(bad(
                    "registries.registry",
                    format!(
                        "{:?} is not a registry host like registry.example.com:5000",
                        shown(&r.registry)
                    ),
                ));
            }
            let sources = [
                r.password_file.is_some(),
                r.password_command.is_some(),
                r.credential_helper.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(bad(
                    "registries",
                    "set exactly one of password_file, password_command and credential_helper".into(),
                ));
            }
            if r.credential_helper.is_none() && r.username.is_empty() {
                return Err(bad(
                    "registries.username",
                    "a username is needed with password_file or password_command (for AWS ECR: \"AWS\")".into(),
                ));
            }
            if let Some(argv) = &r.password_command
                && argv.first().is_none_or(|p| p.is_empty())
            {
                return Err(bad(
                    "registries.password_command",
                    "name the program and its arguments, e.g. [\"aws\", \"ecr\", \"get-login-password\"]".into(),
                ));
            }
            if let Some(helper) = &r.credential_helper
                && (helper.is_empty() || helper.chars().any(char::is_whitespace))
            {
                return Err(bad(
                    "registries.credential_helper",
                    format!("{:?} is not a helper name like \"ecr-login\" or a path", shown(helper)),
                ));
            }
            if let Some(ttl) = r.ttl {
                if r.password_file.is_some() {
                    return Err(bad(
                        "registries.ttl",
                        "ttl applies to password_command and credential_helper, not to a password_file".into(),
                    ));
                }
                if ttl.as_millis() < 1000 || ttl.as_millis() > 24 * 3_600_000 {
                    return Err(bad("registries.ttl", format!("{ttl} is not between 1s and 24h")));
                }
            }
        }
        for (i, rule) in self.alerts.iter().enumerate() {
            if self.alerts[..i].iter().any(|r| r.name == rule.name) {
                return Err(invalid(
                    "alerts.name",
                    format!("{:?} names two rules; each rule needs its own name", rule.name),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the files the agent needs at start exist and are readable,
    /// so `check-config` catches a missing certificate before systemd starts
    /// the daemon.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let registry_files = self
            .registries
            .iter()
            .filter_map(|r| r.password_file.as_ref().map(|p| ("registries.password_file", p)))
            .chain(self.tls.crl.iter().map(|p| ("tls.crl", p)));
        for (key, p) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ]
        .into_iter()
        .chain(registry_files)
        {
            if let Err(source) = std::fs::File::open(p) {
                return Err(ConfigError::MissingFile {
                    key,
                    path: p.clone(),
                    source,
                });
            }
        }
        for rule in &self.alerts {
            if let Some(program) = rule.hook.first() {
                check_program(program).map_err(|source| ConfigError::MissingFile {
                    key: "alerts.hook",
                    path: program.into(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// An alert hook must be an executable file (a bare name is looked up in
/// `PATH`, as the agent will when it runs it).
fn check_program(program: &str) -> Result<(), std::io::Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return match executable(Path::new(program)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not an executable file",
            )),
            Err(e) => Err(e),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program)).unwrap_or(false)) {
        return Ok(());
    }
    Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.toml"))
    }

    /// Found by the agent_config fuzzer (`fuzz/corpus/agent_config/long-*`):
    /// a long line, log filter or value came back whole in the error.
    #[test]
    fn errors_stay_bounded_whatever_the_input() {
        let long = "x".repeat(3000);
        let cases = [
            format!("[log]\nlevel = \"{}\"\n", "=,".repeat(1500)),
            format!("listen = \"0.0.0.0:7443\" {long}\n"),
            format!("[metrics]\nstatsd_prefix = \"{}\"\n", "!".repeat(3000)),
            format!("[metrics]\nstatsd = \"{long}\"\n"),
            format!("[limits]\nmemory_pressure_threshold = \"{long}\"\n"),
            format!("[docker]\ninstance = \"{long}\"\n"),
            format!("[[registries]]\nregistry = \"{long}/\"\nusername = \"u\"\npassword_file = \"/p\"\n"),
        ];
        for text in &cases {
            let e = parse(text).expect_err("invalid").to_string();
            assert!(
                e.len() <= 2048,
                "{} bytes for {} bytes of config: {e}",
                e.len(),
                text.len()
            );
            assert!(e.starts_with("config agent.toml: "), "{e}");
        }
        let e = parse(&cases[3]).expect_err("invalid").to_string();
        assert!(
            e.contains("metrics.statsd: \"xxx") && e.contains("is not an address like"),
            "{e}"
        );
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(MemoryThreshold::parse(""), Ok(None));
        assert_eq!(
            MemoryThreshold::parse("500m"),
            Ok(Some(MemoryThreshold::Bytes(500 * 1024 * 1024)))
        );
        assert_eq!(MemoryThreshold::parse("5%"), Ok(Some(MemoryThreshold::Percent(5.0))));
        for bad in ["0%", "101%", "lots", "-1%", "5 %%"] {
            let err = MemoryThreshold::parse(bad).expect_err(bad);
            assert!(err.contains("500m"), "{err}");
        }
        assert_eq!(MemoryThreshold::Percent(50.0).bytes(1000), 500);
        assert_eq!(MemoryThreshold::Bytes(7).bytes(1000), 7);
    }

    #[test]
    fn empty_config_takes_documented_defaults() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/berth"));
        assert_eq!(c.env_dir, PathBuf::from("/etc/berth/env"));
        assert_eq!(c.tls.ca, PathBuf::from("/etc/berth/tls/ca.pem"));
        assert_eq!(c.docker.socket, PathBuf::from("/var/run/docker.sock"));
        assert_eq!(c.nginx.test_command, ["nginx", "-t"]);
        assert_eq!(c.metrics.interval.as_std().as_secs(), 10);
        assert_eq!(c.metrics.prometheus_listen, "127.0.0.1:9464");
        assert!(c.metrics.statsd.is_empty());
    }

    #[test]
    fn design_example_parses() {
        let c = parse(
            r#"
listen    = "0.0.0.0:7443"
state_dir = "/var/lib/berth"
env_dir   = "/etc/berth/env"
[tls]
ca   = "/etc/berth/tls/ca.pem"
cert = "/etc/berth/tls/agent.pem"
key  = "/etc/berth/tls/agent-key.pem"
[docker]
socket = "/var/run/docker.sock"
[nginx]
sites_dir      = "/etc/nginx/conf.d"
test_command   = ["nginx", "-t"]
reload_command = ["nginx", "-s", "reload"]
[metrics]
interval          = "10s"
prometheus_listen = "127.0.0.1:9464"
statsd            = ""
"#,
        );
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse("listen = \"127.0.0.1:1\"\n\n[tls]\nca = \"/x\"\ncertificate = \"/y\"\n")
            .expect_err("unknown key must fail")
            .to_string();
        assert!(err.contains("certificate"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn a_registry_takes_exactly_one_password_source() {
        let reg = |body: &str| parse(&format!("[[registries]]\nregistry = \"r.example.com\"\n{body}"));
        let ok =
            reg("username = \"AWS\"\npassword_command = [\"aws\", \"ecr\", \"get-login-password\"]\nttl = \"6h\"\n")
                .expect("command");
        assert_eq!(ok.registries[0].ttl.map(|t| t.as_millis()), Some(6 * 3_600_000));
        reg("credential_helper = \"ecr-login\"\n").expect("helper needs no username");
        for (body, key, says) in [
            ("username = \"u\"\n", "registries", "exactly one"),
            (
                "username = \"u\"\npassword_file = \"/p\"\ncredential_helper = \"x\"\n",
                "registries",
                "exactly one",
            ),
            ("password_command = [\"aws\"]\n", "registries.username", "\"AWS\""),
            (
                "username = \"u\"\npassword_command = []\n",
                "registries.password_command",
                "program",
            ),
            (
                "credential_helper = \"ecr login\"\n",
                "registries.credential_helper",
                "helper name",
            ),
            (
                "username = \"u\"\npassword_file = \"/p\"\nttl = \"1h\"\n",
                "registries.ttl",
                "not to a password_file",
            ),
            (
                "credential_helper = \"x\"\nttl = \"48h\"\n",
                "registries.ttl",
                "between 1s and 24h",
            ),
        ] {
            let err = reg(body).expect_err(body).to_string();
            assert!(
                err.contains(key) && err.contains(says) && err.contains("r.example.com"),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn bad_value_is_named() {
        let err = parse("listen = \"localhost-7443\"\n")
            .expect_err("bad addr")
            .to_string();
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("line 1"), "{err}");

        let err = parse("[metrics]\ninterval = \"500ms\"\n")
            .expect_err("too short")
            .to_string();
        assert!(err.contains("metrics.interval"), "{err}");
        assert!(err.contains("minimum is 1s"), "{err}");

        let err = parse("[metrics]\nstatsd = \"nope\"\n")
            .expect_err("bad statsd")
            .to_string();
        assert!(err.contains("metrics.statsd"), "{err}");

        let err = parse("[limits]\nmemory_pressure_threshold = \"lots\"\n")
            .expect_err("bad threshold")
            .to_string();
        assert!(err.contains("limits.memory_pressure_threshold"), "{err}");
        assert!(err.contains("500m"), "{err}");

        let err = parse("[limits]\npressure_action = \"panic\"\n")
            .expect_err("bad action")
            .to_string();
        assert!(err.contains("pressure_action"), "{err}");

        let err = parse("[docker]\nlog_max_file = 0\n")
            .expect_err("no log file")
            .to_string();
        assert!(
            err.contains("docker.log_max_file") && err.contains("log_max_file = 0"),
            "{err}"
        );
        let err = parse("[docker]\nlog_max_size = \"big\"\n")
            .expect_err("bad size")
            .to_string();
        assert!(err.contains("log_max_size"), "{err}");
        let c = parse("[docker]\nlog_max_size = \"20m\"\nlog_max_file = 5\n").expect("valid");
        assert_eq!((c.docker.log_max_size.bytes(), c.docker.log_max_file), (20 << 20, 5));
        assert_eq!(parse("").expect("defaults").docker.log_max_size.to_string(), "50m");
    }

    #[test]
    fn metrics_and_limits_keys_parse() {
        let c = parse(
            "[metrics]\ncgroup_root = \"/tmp/cg\"\nstatsd = \"127.0.0.1:8125\"\nstatsd_flavor = \"dogstatsd\"\n\
             [limits]\nmemory_pressure_threshold = \"10%\"\npressure_action = \"stop\"\npressure_sustained = \"5s\"\n",
        )
        .expect("valid");
        assert_eq!(c.metrics.cgroup_root, PathBuf::from("/tmp/cg"));
        assert_eq!(c.metrics.proc_root, PathBuf::from("/proc"));
        assert_eq!(c.metrics.statsd_flavor, StatsdFlavor::Dogstatsd);
        assert_eq!(c.limits.pressure_action, PressureAction::Stop);
        assert_eq!(c.limits.pressure_sustained.as_std().as_secs(), 5);
        assert_eq!(c.limits.pressure_cooldown.as_std().as_secs(), 60);
        let defaults = parse("").expect("valid");
        assert_eq!(defaults.metrics.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        assert!(defaults.limits.memory_pressure_threshold.is_empty());
        assert_eq!(defaults.limits.pressure_action, PressureAction::Log);
    }

    #[test]
    fn alert_rules_parse_with_their_defaults() {
        let c = parse(
            "[[alerts]]\nname = \"scale-up\"\nmetric = \"host.cpu_percent\"\nabove = 50\nfor = \"5m\"\n\
             hook = [\"/usr/local/bin/scale\", \"up\"]\n\
             [[alerts]]\nname = \"restarting\"\nmetric = \"service.restarts\"\nabove = 3\nservice = \"web\"\n",
        )
        .expect("valid");
        let [up, restarting] = &c.alerts[..] else {
            panic!("two rules: {:?}", c.alerts)
        };
        assert_eq!(up.metric, AlertMetric::HostCpuPercent);
        assert_eq!(
            (up.direction, up.threshold, up.hysteresis),
            (Direction::Above, 50.0, 5.0)
        );
        assert_eq!(up.for_.as_std().as_secs(), 300);
        assert_eq!(up.clear_for, up.for_, "clear_for defaults to for");
        assert_eq!(up.hook, ["/usr/local/bin/scale", "up"]);
        assert_eq!(up.hook_timeout.as_std().as_secs(), 30);
        assert_eq!(restarting.service.as_deref(), Some("web"));
        assert_eq!(restarting.window.as_std().as_secs(), 300);
        assert!(restarting.for_.is_zero());
        assert!(parse("").expect("valid").alerts.is_empty());
    }

    #[test]
    fn bad_alert_rules_are_named_with_their_line() {
        let bad = |rule: &str| {
            parse(&format!(
                "listen = \"127.0.0.1:1\"\n\n[[alerts]]\nname = \"a\"\n{rule}\n"
            ))
            .expect_err(rule)
            .to_string()
        };
        let err = bad("metric = \"host.cpu\"\nabove = 1");
        assert!(err.contains("host.cpu") && err.contains("host.cpu_percent"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        let err = bad("metric = \"host.cpu_percent\"\nabove = 1\nbelow = 2");
        assert!(err.contains("not both") && err.contains("line 3"), "{err}");
        let err = bad("metric = \"host.cpu_percent\"");
        assert!(err.contains("below = N") && err.contains("alerts.above"), "{err}");
        let err = bad("metric = \"host.cpu_percent\"\nabove = 1\nfor = \"5 minutes\"");
        assert!(err.contains("for") && err.contains("line 7"), "{err}");
        let err = bad("metric = \"host.cpu_percent\"\nabove = 1\nservice = \"web\"");
        assert!(err.contains("alerts.service") && err.contains("host metric"), "{err}");
        let err = bad("metric = \"service.cpu_percent\"\nabove = 1\nwindow = \"1m\"");
        assert!(err.contains("alerts.window"), "{err}");
        let err = bad("metric = \"host.cpu_percent\"\nabove = 1\nthreshold = 2");
        assert!(err.contains("threshold") && err.contains("unknown field"), "{err}");
        let err = bad("metric = \"host.cpu_percent\"\nabove = 1\nhook = [\"\"]");
        assert!(err.contains("alerts.hook"), "{err}");
        let err = parse(
            "[[alerts]]\nname = \"a\"\nmetric = \"host.load1\"\nabove = 1\n\
             [[alerts]]\nname = \"a\"\nmetric = \"host.load1\"\nbelow = 1\n",
        )
        .expect_err("duplicate")
        .to_string();
        assert!(err.contains("alerts.name") && err.contains("two rules"), "{err}");
    }

    #[test]
    fn check_files_finds_a_missing_alert_hook() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let d = dir.path().display();
        let config = |hook: &str| {
            parse(&format!(
                "[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
                 [[alerts]]\nname = \"a\"\nmetric = \"host.load1\"\nabove = 1\nhook = [\"{hook}\"]\n"
            ))
            .expect("valid")
        };
        let err = config("/nonexistent/scale")
            .check_files()
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("alerts.hook") && err.contains("/nonexistent/scale"),
            "{err}"
        );
        config("/bin/sh").check_files().expect("an executable hook");
        config("sh").check_files().expect("a hook found in PATH");
        let err = config(&format!("{d}/ca.pem"))
            .check_files()
            .expect_err("not executable")
            .to_string();
        assert!(err.contains("not an executable"), "{err}");
    }
}

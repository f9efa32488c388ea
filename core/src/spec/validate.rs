//! The rules of a spec that involve more than one value, or that a newtype
//! cannot hold by itself.

use std::path::Path;

use super::{
    DOCKER_MIN_MEMORY, Health, HealthCheck, PortMapping, Probe, Protocol, Proxy, RESERVED_LABEL_PREFIX, ServiceSpec,
    SpecError, Strategy, invalid, invalid_key,
};

impl ServiceSpec {
    /// Checks the rules that involve more than one value, or that a newtype
    /// cannot hold by itself. [`parse`] calls this; call it again after
    /// changing a spec in code. Returns the first problem found.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_env_file()?;
        self.validate_ports()?;
        self.validate_resources()?;
        self.validate_labels()?;
        if !self.stop_timeout.as_millis().is_multiple_of(1000) {
            return Err(invalid(
                "stop_timeout",
                self.stop_timeout,
                "Docker counts stop timeouts in whole seconds",
            ));
        }
        if let Some(health) = &self.health {
            self.validate_health(health)?;
        }
        self.validate_deploy()?;
        if let Some(proxy) = &self.proxy {
            self.validate_proxy(proxy)?;
        }
        Ok(())
    }

    fn validate_env_file(&self) -> Result<(), SpecError> {
        let Some(name) = &self.env_file else {
            return Ok(());
        };
        // The agent joins this to its env dir; anything that could step out
        // of it, or name the dir itself, is refused.
        if name.is_empty() || name == "." || name.contains(['/', '\\', '\0']) || name.contains("..") {
            return Err(invalid(
                "env_file",
                name,
                "must be a file name in the agent's env dir, without '/' or '..'",
            ));
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), SpecError> {
        for (i, mapping) in self.ports.iter().enumerate() {
            if mapping.container_port == 0 || mapping.host_port == Some(0) {
                return Err(invalid("ports", mapping, "port 0 is not a port"));
            }
            let Some(host_port) = mapping.host_port else {
                continue;
            };
            if let Some(earlier) = self.ports[..i].iter().find(|e| e.collides_with(mapping)) {
                return Err(invalid(
                    "ports",
                    mapping,
                    format!("host port {host_port} is already used by \"{earlier}\""),
                ));
            }
            if self.strategy() == Strategy::BlueGreen {
                let unpinned = PortMapping {
                    host_ip: None,
                    host_port: None,
                    ..*mapping
                };
                return Err(invalid(
                    "ports",
                    mapping,
                    format!(
                        "a blue-green deploy runs the old and new container side by side, \
                         so they cannot share a fixed host port; write \"{unpinned}\" or use \
                         deploy.strategy = \"recreate\""
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), SpecError> {
        if let Some(memory) = self.resources.memory
            && memory.bytes() < DOCKER_MIN_MEMORY
        {
            return Err(invalid("resources.memory", memory, "Docker needs at least 6m"));
        }
        Ok(())
    }

    fn validate_labels(&self) -> Result<(), SpecError> {
        for key in self.labels.keys() {
            if key.is_empty() {
                return Err(invalid("labels", key, "a label key cannot be empty"));
            }
            if key.to_ascii_lowercase().starts_with(RESERVED_LABEL_PREFIX) {
                return Err(invalid(
                    "labels",
                    key,
                    "keys starting with \"berth.\" are reserved for the agent",
                ));
            }
        }
        Ok(())
    }

    fn validate_health(&self, health: &Health) -> Result<(), SpecError> {
        self.validate_check("health", &health.ready)?;
        if let Some(live) = &health.live {
            self.validate_check("health.live", live)?;
        }
        if let Some(deps) = &health.deps {
            self.validate_check("health.deps", deps)?;
        }
        if let Some(version) = &health.version {
            if !version.path.starts_with('/') {
                return Err(invalid("health.version.path", &version.path, "must start with /"));
            }
            if version.port == Some(0) {
                return Err(invalid("health.version.port", 0, "port 0 is not a port"));
            }
            if self.version_port().is_none() {
                return Err(invalid_key(
                    "health.version.port",
                    "the version check needs a port: set health.version.port, or list the \
                     container port in ports",
                ));
            }
            match (&version.expect, &version.expect_regex) {
                (Some(_), Some(_)) => {
                    return Err(invalid_key(
                        "health.version",
                        "takes only one of expect or expect_regex",
                    ));
                }
                (Some(expect), None) if expect.trim().is_empty() => {
                    return Err(invalid("health.version.expect", expect, "must not be empty"));
                }
                (None, Some(pattern)) => {
                    if let Err(e) = regex::Regex::new(pattern) {
                        let first = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                        return Err(invalid(
                            "health.version.expect_regex",
                            pattern,
                            format!("not a regular expression: {first}"),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks one check; `key` is its table (`health`, `health.deps`, ...).
    fn validate_check(&self, key: &str, check: &HealthCheck) -> Result<(), SpecError> {
        let at = |name: &str| format!("{key}.{name}");
        match &check.probe {
            Probe::Http { path, port } => {
                if !path.starts_with('/') {
                    return Err(invalid(&at("http"), path, "must start with /"));
                }
                if *port == Some(0) {
                    return Err(invalid(&at("port"), 0, "port 0 is not a port"));
                }
                if self.port_for(check).is_none() {
                    return Err(invalid_key(
                        &at("port"),
                        format!(
                            "an http check needs a port: set {key}.port, or list the container \
                             port in ports"
                        ),
                    ));
                }
            }
            Probe::Tcp { port: 0 } => {
                return Err(invalid(&at("tcp"), 0, "port 0 is not a port"));
            }
            Probe::Tcp { .. } => {}
            Probe::Exec { command } => {
                if command.first().is_none_or(String::is_empty) {
                    return Err(invalid_key(&at("exec"), "must name a program, like [\"cmd\", \"arg\"]"));
                }
            }
        }
        if check.interval.is_zero() {
            return Err(invalid(&at("interval"), check.interval, "must be longer than 0s"));
        }
        if check.timeout.is_zero() {
            return Err(invalid(&at("timeout"), check.timeout, "must be longer than 0s"));
        }
        if check.timeout > check.interval {
            return Err(invalid(
                &at("timeout"),
                check.timeout,
                format!("must not be longer than {key}.interval ({})", check.interval),
            ));
        }
        if check.retries == 0 {
            return Err(invalid(&at("retries"), 0, "must be at least 1"));
        }
        if check.success_threshold == 0 {
            return Err(invalid(&at("success_threshold"), 0, "must be at least 1"));
        }
        Ok(())
    }

    fn validate_deploy(&self) -> Result<(), SpecError> {
        if self.deploy.strategy == Some(Strategy::BlueGreen) && self.proxy.is_none() {
            return Err(invalid(
                "deploy.strategy",
                "blue-green",
                "needs a [proxy] section, since nginx is what switches traffic to the new \
                 container",
            ));
        }
        if self.deploy.health_deadline.is_zero() {
            return Err(invalid(
                "deploy.health_deadline",
                self.deploy.health_deadline,
                "must be longer than 0s",
            ));
        }
        Ok(())
    }

    fn validate_proxy(&self, proxy: &Proxy) -> Result<(), SpecError> {
        if proxy.server_names.is_empty() {
            return Err(invalid_key(
                "proxy.server_names",
                "list at least one host name, or \"_\" for any",
            ));
        }
        if let Some(name) = proxy.server_names.iter().find(|n| !is_server_name(n)) {
            return Err(invalid(
                "proxy.server_names",
                name,
                "expected a host name like api.example.com or *.example.com, or _ for any",
            ));
        }
        if proxy.listen.is_empty() {
            return Err(invalid_key("proxy.listen", "list at least one port"));
        }
        for (i, &port) in proxy.listen.iter().enumerate() {
            if port == 0 {
                return Err(invalid("proxy.listen", port, "port 0 is not a port"));
            }
            if proxy.listen[..i].contains(&port) {
                return Err(invalid("proxy.listen", port, "is listed twice"));
            }
            let taken = self
                .ports
                .iter()
                .find(|m| m.protocol == Protocol::Tcp && m.host_port == Some(port));
            if let Some(mapping) = taken {
                return Err(invalid(
                    "proxy.listen",
                    port,
                    format!("host port {port} is also published by ports \"{mapping}\""),
                ));
            }
        }
        if proxy.upstream_port == Some(0) {
            return Err(invalid("proxy.upstream_port", 0, "port 0 is not a port"));
        }
        if self.upstream_port().is_none() {
            return Err(invalid_key(
                "proxy.upstream_port",
                "nginx needs a container port to forward to: set proxy.upstream_port, or list \
                 the container port in ports",
            ));
        }
        match (&proxy.tls_cert, &proxy.tls_key) {
            (Some(_), None) => {
                return Err(invalid_key("proxy.tls_key", "is needed with proxy.tls_cert"));
            }
            (None, Some(_)) => {
                return Err(invalid_key("proxy.tls_cert", "is needed with proxy.tls_key"));
            }
            _ => {}
        }
        for (key, path) in [("proxy.tls_cert", &proxy.tls_cert), ("proxy.tls_key", &proxy.tls_key)] {
            if let Some(path) = path {
                check_absolute(key, path)?;
                check_nginx_word(key, &path.to_string_lossy(), FILE_CHARS)?;
            }
        }
        for path in &proxy.health_paths {
            if !path.starts_with('/') {
                return Err(invalid("proxy.health_paths", path, "must start with /"));
            }
            check_nginx_word("proxy.health_paths", path, URL_PATH_CHARS)?;
        }
        for (key, timeout) in [
            ("proxy.read_timeout", proxy.read_timeout),
            ("proxy.connect_timeout", proxy.connect_timeout),
        ] {
            if timeout.is_zero() {
                return Err(invalid(key, timeout, "must be longer than 0s"));
            }
        }
        Ok(())
    }
}

/// Characters a health path may hold: unreserved URL characters, `/`,
/// percent-escapes and a few sub-delimiters. Nothing nginx's config syntax
/// gives a meaning (whitespace, `;`, `{`, `}`, quotes, `#`, `$`, `\`), since
/// the path is written into the site as a word.
const URL_PATH_CHARS: &str = "-._~/%:@!*+,=";

/// Characters a TLS file path may hold, for the same reason.
const FILE_CHARS: &str = "-._/+@=,";

/// Longest value written into an nginx site as one word.
const NGINX_WORD_MAX: usize = 1024;

/// `value` goes into the nginx site unquoted: only ASCII letters, digits
/// and `allowed` pass, so no value can end a directive or open a block.
fn check_nginx_word(key: &str, value: &str, allowed: &str) -> Result<(), SpecError> {
    if value.len() > NGINX_WORD_MAX {
        return Err(invalid_key(
            key,
            format!("is {} bytes long; at most {NGINX_WORD_MAX} are allowed", value.len()),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !allowed.contains(*c))
    {
        // The value itself is not echoed: it may be long or hostile.
        return Err(invalid_key(
            key,
            format!(
                "contains {bad:?}, which nginx's config syntax could read as more than a value; \
                 use letters, digits and {allowed:?}"
            ),
        ));
    }
    Ok(())
}

fn check_absolute(key: &str, path: &Path) -> Result<(), SpecError> {
    if path.to_str().is_none() {
        return Err(invalid(key, path.display(), "must be valid UTF-8"));
    }
    if !path.is_absolute() {
        return Err(invalid(key, path.display(), "must be an absolute path"));
    }
    Ok(())
}

/// A name nginx's `server_name` takes here: `_`, or a DNS name, optionally
/// starting with `*.`.
fn is_server_name(name: &str) -> bool {
    if name == "_" {
        return true;
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first().is_some_and(|b| *b != b'-')
            && bytes.last().is_some_and(|b| *b != b'-')
    };
    host.len() <= 253 && host.split('.').all(label_ok)
}

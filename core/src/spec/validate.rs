//! The rules of a spec that involve more than one value, or that a newtype
//! cannot hold by itself.

use std::path::Path;

use super::volumes::is_clean_absolute;
use super::{
    DOCKER_MIN_MEMORY, Health, HealthCheck, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, PortMapping, Probe, Protocol,
    Proxy, RESERVED_LABEL_PREFIX, ServiceSpec, SpecError, Strategy, invalid, invalid_key, run,
};

impl ServiceSpec {
    /// Checks the rules that involve more than one value, or that a newtype
    /// cannot hold by itself. [`parse`] calls this; call it again after
    /// changing a spec in code. Returns the first problem found.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_env_file()?;
        self.validate_volumes()?;
        self.validate_ports()?;
        self.validate_resources()?;
        self.validate_run_flags()?;
        self.logging.validate()?;
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
        if self.env_file.is_some() && !self.env_files.is_empty() {
            return Err(invalid_key(
                "env_files",
                "set env_file or env_files, not both (env_files = [\"one.env\"] is env_file = \"one.env\")",
            ));
        }
        let names = self.env_file.iter().map(|n| ("env_file", n));
        for (i, (key, name)) in names.chain(self.env_files.iter().map(|n| ("env_files", n))).enumerate() {
            // The agent joins this to its env dir; anything that could step out
            // of it, or name the dir itself, is refused.
            if name.is_empty() || name == "." || name.contains(['/', '\\', '\0']) || name.contains("..") {
                return Err(invalid(
                    key,
                    name,
                    "must be a file name in the agent's env dir, without '/' or '..'",
                ));
            }
            if key == "env_files" && self.env_files[..i].contains(name) {
                return Err(invalid(key, name, "is listed twice"));
            }
        }
        for (key, value) in &self.env {
            crate::envfile::check_key(key).map_err(|message| invalid("env", key, message))?;
            if value.contains(['\n', '\r', '\0']) {
                return Err(invalid_key(
                    &format!("env.{key}"),
                    "an env value cannot hold a line break or NUL (Docker's env files cannot either)",
                ));
            }
        }
        Ok(())
    }

    fn validate_volumes(&self) -> Result<(), SpecError> {
        for (i, mount) in self.volumes.iter().enumerate() {
            if let Some(earlier) = self.volumes[..i].iter().find(|m| m.target == mount.target) {
                return Err(invalid(
                    "volumes",
                    mount,
                    format!("container path {} is already mounted by \"{earlier}\"", mount.target),
                ));
            }
        }
        Ok(())
    }

    fn validate_run_flags(&self) -> Result<(), SpecError> {
        if let Some(user) = &self.user {
            run::validate_user(user)?;
        }
        if let Some(workdir) = &self.workdir
            && !is_clean_absolute(workdir)
        {
            return Err(invalid("workdir", workdir, "must be an absolute path without . or .."));
        }
        if let Some(hostname) = &self.hostname
            && (!run::is_host_name(hostname) || hostname.len() > 63)
        {
            return Err(invalid(
                "hostname",
                hostname,
                "expected a host name of letters, digits, - and ., at most 63 characters",
            ));
        }
        run::validate_extra_hosts(&self.extra_hosts)?;
        if let Some(network) = &self.network {
            run::validate_network(network)?;
            if network == "host" && !self.ports.is_empty() {
                return Err(invalid(
                    "network",
                    network,
                    "a container on the host network uses the host's ports directly; remove ports",
                ));
            }
            if network == "host" && self.hostname.is_some() {
                return Err(invalid_key("hostname", "cannot be set with network = \"host\""));
            }
            if network == "host" && self.proxy.is_some() {
                return Err(invalid(
                    "network",
                    network,
                    "[proxy] forwards to the container's own address, which a host-network container has not",
                ));
            }
        }
        run::validate_ulimits(&self.ulimits)?;
        run::validate_tmpfs(&self.tmpfs)?;
        for (i, entry) in self.tmpfs.iter().enumerate() {
            let path = entry.split_once(':').map_or(entry.as_str(), |(p, _)| p);
            let taken = self.volumes.iter().any(|m| m.target == path)
                || self.tmpfs[..i].iter().any(|e| e.split(':').next() == Some(path));
            if taken {
                return Err(invalid("tmpfs", entry, format!("{path} is already mounted")));
            }
        }
        run::validate_capabilities("cap_add", &self.cap_add)?;
        run::validate_capabilities("cap_drop", &self.cap_drop)?;
        if let Some(shm) = self.shm_size
            && shm.bytes() == 0
        {
            return Err(invalid("shm_size", shm, "must be larger than 0"));
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
        let resources = &self.resources;
        if let Some(reservation) = resources.memory_reservation {
            if reservation.bytes() < DOCKER_MIN_MEMORY {
                return Err(invalid(
                    "resources.memory_reservation",
                    reservation,
                    "Docker needs at least 6m",
                ));
            }
            if let Some(memory) = resources.memory
                && reservation > memory
            {
                return Err(invalid(
                    "resources.memory_reservation",
                    reservation,
                    format!("must not be above resources.memory ({memory})"),
                ));
            }
        }
        if let Some(swap) = resources.memory_swap {
            let Some(memory) = resources.memory else {
                return Err(invalid_key("resources.memory_swap", "needs resources.memory"));
            };
            if swap < memory {
                return Err(invalid(
                    "resources.memory_swap",
                    swap,
                    format!("is memory plus swap, so at least resources.memory ({memory})"),
                ));
            }
        }
        if resources.pids_limit == Some(0) {
            return Err(invalid("resources.pids_limit", 0, "must be at least 1"));
        }
        Ok(())
    }

    fn validate_labels(&self) -> Result<(), SpecError> {
        if self.labels.len() > MAX_LABELS {
            return Err(invalid_key(
                "labels",
                format!("has {} labels; at most {MAX_LABELS} are allowed", self.labels.len()),
            ));
        }
        for (key, value) in &self.labels {
            if key.len() > MAX_LABEL_KEY {
                return Err(invalid(
                    "labels",
                    key,
                    format!("a label key may be at most {MAX_LABEL_KEY} bytes"),
                ));
            }
            if value.len() > MAX_LABEL_VALUE {
                return Err(invalid(
                    &format!("labels.{key}"),
                    value,
                    format!("a label value may be at most {MAX_LABEL_VALUE} bytes"),
                ));
            }
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
                    if let Err(e) = regex_lite::Regex::new(pattern) {
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
        for (i, path) in proxy.health_paths.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(invalid("proxy.health_paths", path, "must start with /"));
            }
            check_nginx_word("proxy.health_paths", path, URL_PATH_CHARS)?;
            // Each becomes a `location = PATH` block; nginx refuses a
            // duplicate location, so the site would never install.
            if proxy.health_paths[..i].contains(path) {
                return Err(invalid("proxy.health_paths", path, "is listed twice"));
            }
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
    name == "_" || run::is_host_name(name.strip_prefix("*.").unwrap_or(name))
}

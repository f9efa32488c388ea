//! The `docker run` flags a spec can set beyond image, command and limits:
//! ulimits, logging, capabilities, tmpfs mounts, extra hosts, the user and
//! network; their types and the checks each value needs by itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::volumes::{is_clean_absolute, is_docker_name};
use super::{SpecError, invalid, invalid_key};
use crate::units::ByteSize;

/// One `[ulimits]` entry: `nofile = 65536` (soft = hard) or
/// `nofile = "1024:65536"` (soft:hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ulimit {
    /// The soft limit.
    pub soft: i64,
    /// The hard limit, at least `soft`.
    pub hard: i64,
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.soft, self.hard)
    }
}

impl Serialize for Ulimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.soft == self.hard {
            serializer.serialize_i64(self.soft)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(i64),
            Pair(String),
        }
        let expected = |v: &str| {
            serde::de::Error::custom(crate::units::InvalidValue::new(
                "expected a limit like 65536 or \"1024:65536\" (soft:hard)",
                v,
            ))
        };
        match Raw::deserialize(deserializer)? {
            Raw::One(n) => Ok(Ulimit { soft: n, hard: n }),
            Raw::Pair(s) => {
                let (soft, hard) = s.split_once(':').ok_or_else(|| expected(&s))?;
                let soft = soft.trim().parse().map_err(|_| expected(&s))?;
                let hard = hard.trim().parse().map_err(|_| expected(&s))?;
                Ok(Ulimit { soft, hard })
            }
        }
    }
}

/// `[logging]`: where the container's output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// Docker's log driver: `"json-file"` (default), `"local"`,
    /// `"journald"`, `"awslogs"`, `"syslog"`, `"gelf"`, `"fluentd"` or
    /// `"none"`. With json-file and local, berth rotates the files
    /// (`max_size`, `max_file`, defaulting to the agent's `[docker]
    /// log_max_size` and `log_max_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Rotate the log file at this size, like `"50m"` (json-file and local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// How many rotated files to keep, at least 1 (json-file and local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file: Option<u32>,
    /// The driver's options as `docker run --log-opt` takes them, such as
    /// `{ awslogs-group = "web", awslogs-region = "us-west-2" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Log drivers Docker ships with.
const LOG_DRIVERS: [&str; 11] = [
    "json-file",
    "local",
    "journald",
    "awslogs",
    "syslog",
    "gelf",
    "fluentd",
    "splunk",
    "gcplogs",
    "etwlogs",
    "none",
];

impl Logging {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Logging::default()
    }

    /// The driver, `json-file` by default.
    pub fn driver(&self) -> &str {
        self.driver.as_deref().unwrap_or("json-file")
    }

    /// True for the drivers that write files on the host and rotate them.
    pub fn rotates(&self) -> bool {
        matches!(self.driver(), "json-file" | "local")
    }

    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        let driver = self.driver();
        if !LOG_DRIVERS.contains(&driver) {
            return Err(invalid(
                "logging.driver",
                driver,
                format!("is not one of Docker's log drivers: {}", LOG_DRIVERS.join(", ")),
            ));
        }
        if !self.rotates() {
            for (key, set) in [
                ("logging.max_size", self.max_size.is_some()),
                ("logging.max_file", self.max_file.is_some()),
            ] {
                if set {
                    return Err(invalid_key(
                        key,
                        format!("only applies to the json-file and local drivers, not {driver}"),
                    ));
                }
            }
        }
        if self.max_file == Some(0) {
            return Err(invalid("logging.max_file", 0, "must be at least 1"));
        }
        if self.max_size.is_some_and(|s| s.bytes() == 0) {
            return Err(invalid("logging.max_size", "0", "must be larger than 0"));
        }
        for (key, value) in &self.options {
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(invalid(
                    "logging.options",
                    key,
                    "expected an option name like awslogs-group",
                ));
            }
            if self.rotates() && matches!(key.as_str(), "max-size" | "max-file") {
                return Err(invalid(
                    "logging.options",
                    key,
                    "set it with logging.max_size or logging.max_file",
                ));
            }
            if value.contains('\0') {
                return Err(invalid_key(&format!("logging.options.{key}"), "contains a NUL byte"));
            }
        }
        Ok(())
    }
}

/// Resource names `docker run --ulimit` takes.
const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Linux capabilities, without the `CAP_` prefix.
const CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Checks `ulimits`.
pub(crate) fn validate_ulimits(ulimits: &BTreeMap<String, Ulimit>) -> Result<(), SpecError> {
    for (name, limit) in ulimits {
        if !ULIMITS.contains(&name.as_str()) {
            return Err(invalid(
                "ulimits",
                name,
                format!("is not a ulimit; expected one of {}", ULIMITS.join(", ")),
            ));
        }
        let key = format!("ulimits.{name}");
        if limit.soft < 0 || limit.hard < 0 {
            return Err(invalid(&key, limit, "limits cannot be negative"));
        }
        if limit.soft > limit.hard {
            return Err(invalid(&key, limit, "the soft limit is above the hard limit"));
        }
    }
    Ok(())
}

/// Checks `cap_add` or `cap_drop` (named by `key`).
pub(crate) fn validate_capabilities(key: &str, caps: &[String]) -> Result<(), SpecError> {
    for cap in caps {
        let bare = cap.strip_prefix("CAP_").unwrap_or(cap);
        if bare != "ALL" && !CAPABILITIES.contains(&bare) {
            return Err(invalid(
                key,
                cap,
                "is not a Linux capability; write it like NET_ADMIN or CAP_NET_ADMIN (or ALL)",
            ));
        }
    }
    Ok(())
}

/// Checks `extra_hosts`: `NAME:ADDRESS`, as `docker run --add-host` takes it.
pub(crate) fn validate_extra_hosts(hosts: &[String]) -> Result<(), SpecError> {
    for entry in hosts {
        let Some((name, address)) = entry.split_once(':') else {
            return Err(invalid(
                "extra_hosts",
                entry,
                "expected NAME:ADDRESS, like db.internal:10.0.0.5",
            ));
        };
        if !is_host_name(name) {
            return Err(invalid("extra_hosts", entry, format!("{name:?} is not a host name")));
        }
        if address != "host-gateway" && address.parse::<IpAddr>().is_err() {
            return Err(invalid(
                "extra_hosts",
                entry,
                format!("{address:?} is not an IP address (or host-gateway)"),
            ));
        }
    }
    Ok(())
}

/// Checks `tmpfs`: `PATH` or `PATH:OPTIONS` (`size=64m,mode=1777`).
pub(crate) fn validate_tmpfs(mounts: &[String]) -> Result<(), SpecError> {
    for entry in mounts {
        let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
        if !is_clean_absolute(path) || path == "/" {
            return Err(invalid(
                "tmpfs",
                entry,
                "expected an absolute container path other than / (without . or ..), \
                 optionally followed by :OPTIONS like :size=64m",
            ));
        }
        if !options
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b',' | b'_' | b'-'))
        {
            return Err(invalid(
                "tmpfs",
                entry,
                "options are mount options like size=64m,mode=1777",
            ));
        }
    }
    Ok(())
}

/// Checks `user`: `USER`, `UID`, `USER:GROUP` or `UID:GID`.
pub(crate) fn validate_user(user: &str) -> Result<(), SpecError> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    let ok = match user.split_once(':') {
        Some((u, g)) => part_ok(u) && part_ok(g),
        None => part_ok(user),
    };
    if !ok {
        return Err(invalid("user", user, "expected USER, UID, USER:GROUP or UID:GID"));
    }
    Ok(())
}

/// Checks `network`: `bridge`, `host`, `none` or a network name.
pub(crate) fn validate_network(network: &str) -> Result<(), SpecError> {
    if !is_docker_name(network) {
        return Err(invalid(
            "network",
            network,
            "expected bridge, host, none or a network name (letters, digits, _ . -)",
        ));
    }
    Ok(())
}

/// The networks Docker has built in; any other name is one berth creates.
pub fn is_builtin_network(network: &str) -> bool {
    matches!(network, "bridge" | "host" | "none" | "default")
}

/// A host name: dot-separated labels of letters, digits and `-`.
pub(crate) fn is_host_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first().is_some_and(|b| *b != b'-')
            && bytes.last().is_some_and(|b| *b != b'-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

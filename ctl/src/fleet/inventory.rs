//! The fleet inventory: `~/.config/berth/fleets.toml`, `--inventory FILE` or
//! `BERTH_INVENTORY`.
//!
//! Owns the file's format and its checks: named fleets, each either a list
//! of hosts (address, optional name, labels, optionally its own client
//! certificate) or a discovery command whose output gives the hosts
//! ([`super::hostlist`]); settings for the calls made to them (port, TLS dir,
//! certificate, parallelism, timeout) at three levels — `[defaults]`, the
//! fleet, the host — the nearest winning. Unknown keys and bad values are
//! errors that name the file, the line and the key
//! (`fleets.toml:12: fleets.prod.hosts[2].address: ...`). Pure: reading the
//! file is the caller's; running a discovery command is
//! [`super::hostlist::discover`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_core::text::{capped, cut, shown, toml_error_text};
use berth_core::tomlfile::{self, line_of};
use berth_core::units::Duration;
use serde::Deserialize;
use toml::Spanned;

use crate::client::{DEFAULT_PORT, Target};

/// Hosts a fleet command talks to at once unless told otherwise.
pub const DEFAULT_PARALLEL: usize = 64;
/// How long one host may take to answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a discovery command may run unless told otherwise.
pub const DEFAULT_DISCOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Selector keys that name a host's own fields, so no label may take them.
pub const RESERVED_KEYS: [&str; 2] = ["name", "address"];

/// Why an inventory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error(
        "cannot read the inventory {path}: {source}; write one (see `berthctl fleet --help`) or point --inventory / BERTH_INVENTORY at it"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key or value is wrong.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Dotted key path, e.g. `fleets.prod.hosts[2].address`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The text is not TOML (toml's message names line and column).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// `--fleet NAME` names no fleet.
    #[error("no fleet named {name:?} in {path} ({known})")]
    NoFleet {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The fleets there are, for the message.
        known: String,
    },
}

/// Settings for the calls made to a fleet's hosts. Each level (`[defaults]`,
/// `[fleets.NAME]`, a host) may set any of them; the nearest wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Port for addresses written without one (default 7443).
    pub port: Option<u16>,
    /// Directory with `ca.pem` and the client certificates.
    pub tls_dir: Option<PathBuf>,
    /// Which client certificate there (`NAME` of `NAME.pem`).
    pub cert: Option<String>,
    /// Hosts talked to at once.
    pub parallel: Option<usize>,
    /// Per-host deadline for one call.
    pub timeout: Option<Duration>,
}

impl Settings {
    /// `self` where set, else `base`.
    pub fn or(&self, base: &Settings) -> Settings {
        Settings {
            port: self.port.or(base.port),
            tls_dir: self.tls_dir.clone().or_else(|| base.tls_dir.clone()),
            cert: self.cert.clone().or_else(|| base.cert.clone()),
            parallel: self.parallel.or(base.parallel),
            timeout: self.timeout.or(base.timeout),
        }
    }
}

/// One agent of a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// How it is shown: its `name`, else its address.
    pub name: String,
    /// Where its agent listens.
    pub target: Target,
    /// Its labels (`role = "web"`), the fleet's labels included.
    pub labels: BTreeMap<String, String>,
    /// Its own TLS dir, when it has one.
    pub tls_dir: Option<PathBuf>,
    /// Its own client certificate name, when it has one.
    pub cert: Option<String>,
}

/// Where a fleet's hosts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Listed in the file.
    Listed(Vec<Host>),
    /// Printed by a command (cloud discovery stays outside berth).
    Discover {
        /// Program and arguments, run without a shell.
        command: Vec<String>,
        /// How long it may run.
        timeout: Duration,
    },
}

/// A named fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// Its name.
    pub name: String,
    /// Its hosts, or how to find them.
    pub source: Source,
    /// Settings for its hosts (the file's `[defaults]` folded in).
    pub settings: Settings,
    /// Labels every host of the fleet gets.
    pub labels: BTreeMap<String, String>,
}

/// A parsed inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The file it came from, for messages.
    pub path: PathBuf,
    /// Fleets by name.
    pub fleets: BTreeMap<String, Fleet>,
}

impl Inventory {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Inventory::parse(&text, path)
    }

    /// Parses inventory `text`; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
        let raw: InventoryToml = toml::from_str(text).map_err(|e| toml_error(text, path, &e))?;
        let at = |span: std::ops::Range<usize>, key: String, message: String| InventoryError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key: cut(&key, SHOWN_KEY),
            message: capped(message, MESSAGE_MAX),
        };
        let defaults = match raw.defaults {
            Some(d) => {
                let span = d.span();
                let mut d = d.into_inner();
                if d.hosts.is_some() || d.discover.is_some() || d.discover_timeout.is_some() || d.labels.is_some() {
                    return Err(at(
                        span,
                        "defaults".to_owned(),
                        "holds settings only (port, tls_dir, cert, parallel, timeout); hosts, discover and labels belong to a fleet".to_owned(),
                    ));
                }
                take_settings(&mut d, &at, "defaults")?
            }
            None => Settings::default(),
        };
        let mut fleets = BTreeMap::new();
        for (name, fleet) in raw.fleets {
            let key = format!("fleets.{}", name.get_ref());
            check_fleet_name(name.get_ref()).map_err(|m| at(name.span(), key.clone(), m))?;
            let fleet = fleet.into_fleet(name.get_ref(), name.span(), &key, &defaults, &at)?;
            fleets.insert(name.into_inner(), fleet);
        }
        Ok(Inventory {
            path: path.to_owned(),
            fleets,
        })
    }

    /// The fleet called `name`.
    pub fn fleet(&self, name: &str) -> Result<&Fleet, InventoryError> {
        self.fleets.get(name).ok_or_else(|| InventoryError::NoFleet {
            path: self.path.clone(),
            name: name.to_owned(),
            known: if self.fleets.is_empty() {
                "it defines none".to_owned()
            } else {
                format!(
                    "fleets: {}",
                    self.fleets.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                )
            },
        })
    }
}

/// Longest key path an error names, in characters: fleet names and label
/// keys are the user's and may be any length in a bad file.
const SHOWN_KEY: usize = 160;

/// Most bytes of an error's message; the values it quotes are cut too.
const MESSAGE_MAX: usize = 1024;

/// An error while reading the TOML, placed at its key and line.
fn toml_error(text: &str, path: &Path, error: &toml::de::Error) -> InventoryError {
    let located = tomlfile::locate(text, error);
    match (located.line, located.key) {
        (Some(line), Some(key)) => InventoryError::Invalid {
            path: path.to_owned(),
            line,
            key: cut(&key, SHOWN_KEY),
            message: match located.value {
                Some(v) => capped(format!("\"{}\": {}", shown(v.value()), v.expected()), MESSAGE_MAX),
                None => capped(located.message, MESSAGE_MAX),
            },
        },
        _ => InventoryError::Syntax {
            path: path.to_owned(),
            message: toml_error_text(error),
        },
    }
}

type At<'a> = dyn Fn(std::ops::Range<usize>, String, String) -> InventoryError + 'a;

// ---------------------------------------------------------------- the file

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryToml {
    /// Settings for every fleet: a fleet table's settings keys only.
    defaults: Option<Spanned<FleetToml>>,
    /// Fleets by name.
    #[serde(default)]
    fleets: BTreeMap<Spanned<String>, FleetToml>,
}

/// A `[fleets.NAME]` table, and the `[defaults]` table, which may hold its
/// settings keys only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetToml {
    port: Option<Spanned<u16>>,
    tls_dir: Option<String>,
    cert: Option<Spanned<String>>,
    parallel: Option<Spanned<usize>>,
    timeout: Option<Spanned<Duration>>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    hosts: Option<Spanned<Vec<HostToml>>>,
    discover: Option<Spanned<Vec<String>>>,
    discover_timeout: Option<Spanned<Duration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostToml {
    address: Spanned<String>,
    name: Option<Spanned<String>>,
    labels: Option<Spanned<BTreeMap<String, String>>>,
    tls_dir: Option<String>,
    cert: Option<Spanned<String>>,
}

/// Takes the settings keys out of a fleet (or `[defaults]`) table and checks them.
fn take_settings(f: &mut FleetToml, at: &At<'_>, key: &str) -> Result<Settings, InventoryError> {
    if let Some(p) = &f.port
        && *p.get_ref() == 0
    {
        return Err(at(p.span(), format!("{key}.port"), "port 0 is not a port".into()));
    }
    if let Some(p) = &f.parallel
        && *p.get_ref() == 0
    {
        return Err(at(
            p.span(),
            format!("{key}.parallel"),
            "must be at least 1 (hosts talked to at once)".into(),
        ));
    }
    if let Some(t) = &f.timeout
        && t.get_ref().is_zero()
    {
        return Err(at(t.span(), format!("{key}.timeout"), "must be longer than 0s".into()));
    }
    if let Some(c) = &f.cert {
        check_cert_name(c.get_ref()).map_err(|m| at(c.span(), format!("{key}.cert"), m))?;
    }
    Ok(Settings {
        port: f.port.take().map(Spanned::into_inner),
        tls_dir: f.tls_dir.take().map(|d| expand_home(&d)),
        cert: f.cert.take().map(Spanned::into_inner),
        parallel: f.parallel.take().map(Spanned::into_inner),
        timeout: f.timeout.take().map(Spanned::into_inner),
    })
}

impl FleetToml {
    fn into_fleet(
        mut self,
        name: &str,
        name_span: std::ops::Range<usize>,
        key: &str,
        defaults: &Settings,
        at: &At<'_>,
    ) -> Result<Fleet, InventoryError> {
        let settings = take_settings(&mut self, at, key)?.or(defaults);
        let labels = checked_labels(self.labels, &format!("{key}.labels"), at)?;
        let source = match (self.hosts, self.discover) {
            (Some(hosts), None) => {
                if self.discover_timeout.is_some() {
                    return Err(at(
                        hosts.span(),
                        format!("{key}.discover_timeout"),
                        "only goes with discover".into(),
                    ));
                }
                let span = hosts.span();
                let mut seen_names = BTreeSet::new();
                let mut seen_targets = BTreeSet::new();
                let mut list = Vec::new();
                for (i, h) in hosts.into_inner().into_iter().enumerate() {
                    let hkey = format!("{key}.hosts[{i}]");
                    let host = h.into_host(&hkey, &settings, &labels, at)?;
                    if !seen_names.insert(host.name.clone()) {
                        return Err(at(
                            span.clone(),
                            format!("{hkey}.name"),
                            format!("{:?} is the name of another host of fleet {name}", host.name),
                        ));
                    }
                    if !seen_targets.insert(host.target.to_string()) {
                        return Err(at(
                            span.clone(),
                            format!("{hkey}.address"),
                            format!("{} is listed twice in fleet {name}", host.target),
                        ));
                    }
                    list.push(host);
                }
                Source::Listed(list)
            }
            (None, Some(command)) => {
                if command.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(at(
                        command.span(),
                        format!("{key}.discover"),
                        "must name a program, like [\"sh\", \"-c\", \"...\"]".into(),
                    ));
                }
                let timeout = match self.discover_timeout {
                    Some(t) if t.get_ref().is_zero() => {
                        return Err(at(
                            t.span(),
                            format!("{key}.discover_timeout"),
                            "must be longer than 0s".into(),
                        ));
                    }
                    Some(t) => t.into_inner(),
                    None => DEFAULT_DISCOVER_TIMEOUT,
                };
                Source::Discover {
                    command: command.into_inner(),
                    timeout,
                }
            }
            (Some(hosts), Some(_)) => {
                return Err(at(
                    hosts.span(),
                    key.to_owned(),
                    "has both hosts and discover; a fleet's hosts come from one of them".into(),
                ));
            }
            (None, None) => {
                return Err(at(
                    name_span,
                    key.to_owned(),
                    format!("has no hosts: add [[{key}.hosts]] tables with an address, or a discover command"),
                ));
            }
        };
        Ok(Fleet {
            name: name.to_owned(),
            source,
            settings,
            labels,
        })
    }
}

impl HostToml {
    fn into_host(
        self,
        key: &str,
        fleet: &Settings,
        fleet_labels: &BTreeMap<String, String>,
        at: &At<'_>,
    ) -> Result<Host, InventoryError> {
        let target = parse_address(self.address.get_ref(), fleet.port)
            .map_err(|m| at(self.address.span(), format!("{key}.address"), m))?;
        let name = match self.name {
            Some(n) => {
                check_host_name(n.get_ref()).map_err(|m| at(n.span(), format!("{key}.name"), m))?;
                n.into_inner()
            }
            None => target.to_string(),
        };
        let own = checked_labels(self.labels, &format!("{key}.labels"), at)?;
        let mut labels = fleet_labels.clone();
        labels.extend(own);
        if let Some(c) = &self.cert {
            check_cert_name(c.get_ref()).map_err(|m| at(c.span(), format!("{key}.cert"), m))?;
        }
        Ok(Host {
            name,
            target,
            labels,
            tls_dir: self.tls_dir.map(|d| expand_home(&d)),
            cert: self.cert.map(Spanned::into_inner),
        })
    }
}

/// A `labels` table, checked; none written is none.
fn checked_labels(
    labels: Option<Spanned<BTreeMap<String, String>>>,
    key: &str,
    at: &At<'_>,
) -> Result<BTreeMap<String, String>, InventoryError> {
    let Some(labels) = labels else {
        return Ok(BTreeMap::new());
    };
    check_labels(labels.get_ref()).map_err(|m| at(labels.span(), key.to_owned(), m))?;
    Ok(labels.into_inner())
}

// ---------------------------------------------------------------- checks

/// `HOST`, `HOST:PORT`, `[V6]:PORT`; an address without a port gets
/// `default_port`, else 7443.
pub fn parse_address(address: &str, default_port: Option<u16>) -> Result<Target, String> {
    let trimmed = address.trim();
    if trimmed.contains("://") {
        return Err(format!(
            "{address:?}: write HOST or HOST:PORT without a scheme (agents speak mutual TLS only)"
        ));
    }
    let mut target: Target = trimmed.parse()?;
    if !has_port(trimmed) {
        target.port = default_port.unwrap_or(DEFAULT_PORT);
    }
    // berthctl dials `http://HOST:PORT`: refuse here, at the file's line,
    // what it could never dial (spaces, control characters, ...).
    if format!("http://{target}").parse::<http::Uri>().is_err() {
        return Err(format!(
            "{:?}: not a host name or IP address (no spaces, control characters or URL syntax)",
            shown(address)
        ));
    }
    Ok(target)
}

fn has_port(address: &str) -> bool {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.contains("]:");
    }
    address.parse::<IpAddr>().is_err() && address.contains(':')
}

fn check_fleet_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("a fleet name is letters, digits, '-', '_' and '.', starting with a letter or digit".into())
    }
}

fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?}: a host name is up to 253 characters without spaces"));
    }
    Ok(())
}

fn check_cert_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: the name of a client certificate NAME.pem in the TLS dir (letters, digits, '-', '_', '.', '@')"
        ))
    }
}

/// Label keys: letters, digits and `-_./`; not `name` or `address`, which
/// selectors use for the host's own fields.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for key in labels.keys() {
        let ok = !key.is_empty()
            && key.len() <= 63
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !ok {
            return Err(format!(
                "label {key:?}: a label key is letters, digits, '-', '_', '.' and '/'"
            ));
        }
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "label {key:?}: \"name\" and \"address\" select the host's own fields; call the label something else"
            ));
        }
    }
    Ok(())
}

/// `~/x` → `$HOME/x`, as a shell would; anything else unchanged.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[defaults]
cert = "alice"
timeout = "3s"

[fleets.prod]
labels = { env = "prod" }
parallel = 16

[[fleets.prod.hosts]]
address = "10.0.0.5:7443"          # HOST or HOST:PORT
name    = "web-1"
labels  = { role = "web", az = "us-west-2a" }

[[fleets.prod.hosts]]
address = "10.0.0.9"
name    = "worker-1"
labels  = { role = "worker" }
cert    = "deploy"

[fleets.staging]
port = 9443
discover = ["sh", "-c", "echo 10.1.0.1"]
"#;

    fn parse(text: &str) -> Result<Inventory, String> {
        Inventory::parse(text, Path::new("fleets.toml")).map_err(|e| e.to_string())
    }

    /// Found by the inventory fuzzer (`fuzz/corpus/inventory/`): an
    /// address berthctl cannot dial was accepted, and long lines or
    /// values came back whole in errors.
    #[test]
    fn undialable_addresses_are_refused_and_errors_stay_bounded() {
        let e = parse("[[fleets.a.hosts]]\naddress = \"a b\"\n").expect_err("a space");
        assert!(
            e.starts_with("fleets.toml:2: fleets.a.hosts[0].address: \"a b\": not a host name"),
            "{e}"
        );
        let long = "x".repeat(3000);
        for text in [
            format!("[fleets.a]\nport = 1 {long}\n"),
            format!("[[fleets.a.hosts]]\naddress = \"{}x\"\n", "a:".repeat(1500)),
            format!("[fleets.{long}]\ndiscover = [\"true\"]\n"),
            format!("[fleets.a]\ntimeout = \"{long}\"\ndiscover = [\"true\"]\n"),
        ] {
            let e = parse(&text).expect_err("invalid");
            assert!(e.len() <= 2048, "{} bytes for {} bytes: {e}", e.len(), text.len());
            assert!(e.starts_with("fleets.toml"), "{e}");
        }
    }

    #[test]
    fn the_design_example_parses_with_levels_folded() {
        let inv = parse(EXAMPLE).expect("valid");
        let prod = inv.fleet("prod").expect("prod");
        assert_eq!(prod.settings.parallel, Some(16));
        assert_eq!(prod.settings.timeout, Some(Duration::from_secs(3)));
        assert_eq!(prod.settings.cert.as_deref(), Some("alice"));
        let Source::Listed(hosts) = &prod.source else {
            panic!("listed")
        };
        assert_eq!(hosts[0].name, "web-1");
        assert_eq!(hosts[0].target.to_string(), "10.0.0.5:7443");
        assert_eq!(hosts[0].labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(hosts[0].labels.get("az").map(String::as_str), Some("us-west-2a"));
        assert_eq!(hosts[1].target.port, 7443);
        assert_eq!(hosts[1].cert.as_deref(), Some("deploy"));
        let staging = inv.fleet("staging").expect("staging");
        assert!(matches!(&staging.source, Source::Discover { command, timeout }
            if command[0] == "sh" && *timeout == DEFAULT_DISCOVER_TIMEOUT));
        assert_eq!(staging.settings.port, Some(9443));
        let e = inv.fleet("nope").expect_err("unknown").to_string();
        assert!(e.contains("prod, staging"), "{e}");
    }

    #[test]
    fn unnamed_hosts_are_shown_by_address_and_take_the_fleet_port() {
        let inv = parse("[fleets.f]\nport = 9000\n[[fleets.f.hosts]]\naddress = \"h1\"\n[[fleets.f.hosts]]\naddress = \"[::1]:7000\"\n")
            .expect("valid");
        let Source::Listed(hosts) = &inv.fleet("f").expect("f").source else {
            panic!("listed")
        };
        assert_eq!(hosts[0].name, "h1:9000");
        assert_eq!(hosts[1].target.port, 7000);
        assert_eq!(hosts[1].name, "[::1]:7000");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("[fleets.prod]\n[[fleets.prod.hosts]]\naddress = \"a\"\n[[fleets.prod.hosts]]\nadress = \"b\"\n")
            .expect_err("typo");
        assert!(
            e.starts_with("fleets.toml:5: fleets.prod.hosts[1].adress: unknown field `adress`"),
            "{e}"
        );
        let e = parse("[fleets.prod]\ntimeout = \"5x\"\n[[fleets.prod.hosts]]\naddress = \"a\"\n").expect_err("bad");
        assert_eq!(
            e,
            "fleets.toml:2: fleets.prod.timeout: \"5x\": expected a duration like 500ms, 2s or 1m"
        );
        let e = parse("[fleets.prod]\n[[fleets.prod.hosts]]\naddress = \"a:0\"\n").expect_err("port");
        assert!(e.starts_with("fleets.toml:3: fleets.prod.hosts[0].address: "), "{e}");
        let e = parse("[fleets.prod]\nparallel = 0\n[[fleets.prod.hosts]]\naddress = \"a\"\n").expect_err("par");
        assert!(
            e.starts_with("fleets.toml:2: fleets.prod.parallel: must be at least 1"),
            "{e}"
        );
        let e = parse("[fleets.prod]\nlabels = {}\n").expect_err("empty");
        assert!(e.contains("fleets.prod: has no hosts"), "{e}");
        let e = parse("[fleets.p]\n[[fleets.p.hosts]]\naddress = \"a\"\nname = \"x\"\n[[fleets.p.hosts]]\naddress = \"b\"\nname = \"x\"\n")
            .expect_err("dup");
        assert!(
            e.contains("fleets.p.hosts[1].name") && e.contains("another host"),
            "{e}"
        );
        let e = parse("[fleets.p]\n[[fleets.p.hosts]]\naddress = \"a\"\nlabels = { name = \"x\" }\n")
            .expect_err("reserved");
        assert!(
            e.contains("fleets.toml:4: fleets.p.hosts[0].labels: label \"name\""),
            "{e}"
        );
        let e = parse("[fleets.p]\ndiscover = []\n").expect_err("empty discover");
        assert!(
            e.contains("fleets.toml:2: fleets.p.discover: must name a program"),
            "{e}"
        );
        let e = parse("[fleets.\"bad name\"]\ndiscover = [\"x\"]\n").expect_err("fleet name");
        assert!(e.contains("fleets.bad name: a fleet name"), "{e}");
        let e = parse("[fleets.p\n").expect_err("syntax");
        assert!(e.starts_with("fleets.toml: TOML parse error at line 1"), "{e}");
        let e = parse("[fleets.p]\n[[fleets.p.hosts]]\naddress = \"https://a\"\n").expect_err("scheme");
        assert!(e.contains("without a scheme"), "{e}");
    }
}

//! Which agents a command talks to: the selection flags every agent command
//! takes, and resolving them into hosts.
//!
//! Owns [`SelectionArgs`] (`--host` repeatable, `--inventory`, `--fleet`,
//! `--select`, `--hosts-from`, `--parallel`, `--timeout`) and
//! [`SelectionArgs::resolve`], which reads the inventory, runs a fleet's
//! discovery command or reads `--hosts-from`, applies `--select`, and gives
//! a [`Selection`]: the hosts in a stable order, each with its display name,
//! labels and an [`Agent`] with its TLS files resolved, plus the call
//! settings (parallelism, per-host deadline). Nothing is dialed here.
//!
//! Where settings come from, nearest first: a host's own `tls_dir`/`cert`
//! in the inventory, then `--tls-dir`/`--cert` (or their environment
//! variables), then the fleet's and `[defaults]`' settings, then
//! `~/.config/berth`. `--parallel` and `--timeout` beat the inventory's.
//! Without `--host`, `--fleet` or `--hosts-from` the one host is
//! `BERTH_HOST`, else `127.0.0.1:7443`, exactly as berthctl always did.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::units::Duration;

use super::hostlist;
use super::inventory::{DEFAULT_PARALLEL, DEFAULT_TIMEOUT, Fleet, Host, Inventory, InventoryError, Settings, Source};
use crate::client::{Agent, ConnectError, Target, TlsFiles};
use crate::fleet::Selector;

/// The address used when nothing else names one.
pub const DEFAULT_HOST: &str = "127.0.0.1:7443";

/// The selection flags every command that talks to agents takes. Flattened
/// into [`crate::cmd::Global`], so every subcommand (the lead's `rollout`
/// included) has them, before or after its name.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SelectionArgs {
    /// Agent address: HOST or HOST:PORT (default port 7443). Repeat it for
    /// several hosts. Without --host, --fleet or --hosts-from: $BERTH_HOST,
    /// else 127.0.0.1:7443.
    #[arg(long = "host", global = true, value_name = "ADDR")]
    pub hosts: Vec<Target>,

    /// The fleet inventory. [default: ~/.config/berth/fleets.toml]
    #[arg(long, global = true, env = "BERTH_INVENTORY", value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Talk to the hosts of this inventory fleet (see `berthctl fleet ls`).
    #[arg(long, global = true, value_name = "NAME")]
    pub fleet: Option<String>,

    /// Only hosts whose label KEY is VALUE (KEY!=VALUE: is not). Repeat to
    /// AND several; `name` and `address` match the host's own fields.
    #[arg(long = "select", global = true, value_name = "KEY=VALUE")]
    pub selectors: Vec<Selector>,

    /// Read hosts from FILE ("-": standard input): one ADDRESS a line,
    /// optionally followed by name=NAME and KEY=VALUE labels, or a JSON
    /// list of {"address", "name", "labels"}.
    #[arg(long, global = true, value_name = "FILE|-")]
    pub hosts_from: Option<PathBuf>,

    /// How many hosts to talk to at once. [default: the inventory's, else 64]
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: Option<u32>,

    /// How long each host of a selection may take to answer (dial and
    /// call), e.g. 5s or 500ms; a single --host waits as long as it takes.
    /// [default: the inventory's, else 5s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// Why the hosts to talk to could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// The inventory could not be read, or is wrong (file, line and key).
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// A discovery command, `--hosts-from` or `--select` gave no usable hosts.
    #[error("{0}")]
    Hosts(String),
    /// A host's TLS files are missing.
    #[error(transparent)]
    Tls(#[from] ConnectError),
}

/// One selected agent. Cheap to clone: clones share the [`Agent`] (and its
/// connection once dialed).
#[derive(Debug, Clone)]
pub struct SelectedHost {
    /// How it is shown: its inventory name, else its address.
    pub name: String,
    /// Its labels (none for `--host`).
    pub labels: BTreeMap<String, String>,
    /// The agent, not dialed yet.
    pub agent: Arc<Agent>,
}

impl SelectedHost {
    /// Where its agent listens.
    pub fn target(&self) -> &Target {
        &self.agent.target
    }
}

/// The hosts a command talks to, and how.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The hosts, in a stable order: the fleet's (inventory or discovery
    /// order), then `--hosts-from`'s, then each `--host`; an address given
    /// twice counts once.
    pub hosts: Vec<SelectedHost>,
    /// Hosts talked to at once (at least 1).
    pub parallel: usize,
    /// Per-host deadline for one call, dial included.
    pub timeout: std::time::Duration,
    /// True when the user asked for a set of hosts (`--fleet`,
    /// `--hosts-from` or `--host` twice or more): commands then print the
    /// fleet views (a HOST column, a summary), even for one host. False
    /// for one `--host`/`BERTH_HOST`/the default, which print as always.
    pub many: bool,
    /// What was selected, for messages: `fleet prod (role=web)`, `3 hosts`.
    pub origin: String,
}

impl Selection {
    /// The one host of a single-host selection; with several, an error
    /// saying that `what` (e.g. `deploy`) changes one host at a time and
    /// pointing to `berthctl rollout`.
    pub fn single(&self, what: &str) -> anyhow::Result<&SelectedHost> {
        match self.hosts.as_slice() {
            [one] => Ok(one),
            hosts => Err(anyhow::anyhow!(
                "{what} changes one host at a time, and {} selects {} hosts; to change a fleet use \
                 `berthctl rollout` (batches, health gates, a fleet lock), or pick one host with --host \
                 or --select name=HOST",
                self.origin,
                hosts.len()
            )),
        }
    }

    /// The hosts' display names, in order.
    pub fn names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }
}

impl SelectionArgs {
    /// The inventory file: `--inventory`, `BERTH_INVENTORY`, else
    /// `~/.config/berth/fleets.toml`.
    pub fn inventory_path(&self) -> PathBuf {
        self.inventory
            .clone()
            .unwrap_or_else(|| crate::client::default_tls_dir().join("fleets.toml"))
    }

    /// Reads the inventory file.
    pub fn load_inventory(&self) -> Result<Inventory, InventoryError> {
        Inventory::load(&self.inventory_path())
    }

    /// Works out the hosts: reads the inventory (for `--fleet`), runs its
    /// discovery command, reads `--hosts-from`, adds `--host`s, applies
    /// `--select` and resolves every host's TLS files. `tls_dir` and `cert`
    /// are `--tls-dir` and `--cert` (None when not given).
    pub async fn resolve(&self, tls_dir: Option<&Path>, cert: Option<&str>) -> Result<Selection, SelectionError> {
        let mut found: Vec<(Host, Settings)> = Vec::new();
        let mut parts = Vec::new();
        let mut fleet_settings = Settings::default();
        if let Some(name) = &self.fleet {
            let inventory = self.load_inventory()?;
            let fleet = inventory.fleet(name)?;
            fleet_settings = fleet.settings.clone();
            for host in fleet_hosts(fleet).await? {
                found.push((host, fleet.settings.clone()));
            }
            parts.push(format!("fleet {name}"));
        }
        if let Some(path) = &self.hosts_from {
            let (text, origin) = read_hosts_from(path)?;
            let hosts = hostlist::parse(&text, &origin, None).map_err(SelectionError::Hosts)?;
            if hosts.is_empty() {
                return Err(SelectionError::Hosts(format!("{origin} lists no hosts")));
            }
            found.extend(hosts.into_iter().map(|h| (h, Settings::default())));
            parts.push(origin);
        }
        let explicit = !self.hosts.is_empty();
        for target in &self.hosts {
            found.push((plain_host(target.clone()), Settings::default()));
        }
        if explicit {
            parts.push(if self.hosts.len() == 1 {
                self.hosts[0].to_string()
            } else {
                format!("{} --host", self.hosts.len())
            });
        }
        let many = self.fleet.is_some() || self.hosts_from.is_some() || self.hosts.len() > 1;
        if found.is_empty() {
            let target = match std::env::var("BERTH_HOST").ok().filter(|v| !v.trim().is_empty()) {
                Some(v) => v
                    .parse::<Target>()
                    .map_err(|e| SelectionError::Hosts(format!("BERTH_HOST: {e}")))?,
                None => DEFAULT_HOST
                    .parse::<Target>()
                    .map_err(|e| SelectionError::Hosts(format!("the default host: {e}")))?,
            };
            parts.push(target.to_string());
            found.push((plain_host(target), Settings::default()));
        }
        // An address given twice (in the fleet and with --host) counts once.
        let mut seen = std::collections::HashSet::new();
        found.retain(|(h, _)| seen.insert(h.target.to_string()));
        let total = found.len();
        let selected: Vec<(Host, Settings)> = found
            .into_iter()
            .filter(|(h, _)| self.selectors.iter().all(|s| s.matches(h)))
            .collect();
        let mut origin = parts.join(" + ");
        if !self.selectors.is_empty() {
            let sel: Vec<String> = self.selectors.iter().map(ToString::to_string).collect();
            origin = format!("{origin} ({})", sel.join(", "));
            if selected.is_empty() {
                return Err(SelectionError::Hosts(format!(
                    "--select {} matches none of the {total} hosts of {}; `berthctl fleet show NAME` lists their labels",
                    sel.join(" --select "),
                    parts.join(" + ")
                )));
            }
        }
        let mut files: HashMap<(PathBuf, Option<String>), TlsFiles> = HashMap::new();
        let mut hosts = Vec::with_capacity(selected.len());
        for (host, settings) in selected {
            let dir = host
                .tls_dir
                .clone()
                .or_else(|| tls_dir.map(Path::to_owned))
                .or_else(|| settings.tls_dir.clone())
                .unwrap_or_else(crate::client::default_tls_dir);
            let name = host
                .cert
                .clone()
                .or_else(|| cert.map(str::to_owned))
                .or_else(|| settings.cert.clone());
            let key = (dir, name);
            let tls = match files.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = TlsFiles::resolve(&key.0, key.1.as_deref())?;
                    files.insert(key, f.clone());
                    f
                }
            };
            hosts.push(SelectedHost {
                name: host.name,
                labels: host.labels,
                agent: Arc::new(Agent::new(host.target, tls)),
            });
        }
        let parallel = self
            .parallel
            .map(|p| p as usize)
            .or(fleet_settings.parallel)
            .unwrap_or(DEFAULT_PARALLEL)
            .max(1);
        let timeout = self.timeout.or(fleet_settings.timeout).unwrap_or(DEFAULT_TIMEOUT);
        Ok(Selection {
            hosts,
            parallel,
            timeout: timeout.as_std(),
            many,
            origin,
        })
    }
}

/// A fleet's hosts: listed, or printed by its discovery command.
pub async fn fleet_hosts(fleet: &Fleet) -> Result<Vec<Host>, SelectionError> {
    match &fleet.source {
        Source::Listed(hosts) => Ok(hosts.clone()),
        Source::Discover { command, timeout } => {
            let mut hosts = hostlist::discover(&fleet.name, command, timeout.as_std(), fleet.settings.port)
                .await
                .map_err(SelectionError::Hosts)?;
            for h in &mut hosts {
                let mut labels = fleet.labels.clone();
                labels.append(&mut h.labels);
                h.labels = labels;
            }
            Ok(hosts)
        }
    }
}

/// A host given by address only.
fn plain_host(target: Target) -> Host {
    Host {
        name: target.to_string(),
        target,
        labels: BTreeMap::new(),
        tls_dir: None,
        cert: None,
    }
}

/// The text of `--hosts-from` and how to name it in messages.
fn read_hosts_from(path: &Path) -> Result<(String, String), SelectionError> {
    if path.as_os_str() == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .map_err(|e| SelectionError::Hosts(format!("cannot read hosts from standard input: {e}")))?;
        return Ok((text, "--hosts-from -".to_owned()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| SelectionError::Hosts(format!("cannot read --hosts-from {}: {e}", path.display())))?;
    Ok((text, path.display().to_string()))
}

//! A fleet of real agents on this machine, for the fleet tests and
//! benchmarks: N `berth-agent` processes on `127.0.0.1`, each with its own
//! config, state dir, env dir, log, port and `[docker] instance`
//! (`INSTANCE-NAME`, after the [`Pki`]'s), all sharing the machine's
//! Docker Engine and one PKI.
//!
//! The PKI is one CA, one agent certificate for `127.0.0.1` and `localhost`
//! that every agent serves (a certificate names hosts, not ports, so one is
//! valid for all of them, and minting hundreds would only cost start time;
//! [`Host::agent_cert`] gives one host a certificate of its own), an
//! operator client certificate ([`OPERATOR`]) and a viewer one ([`VIEWER`]).
//!
//! Inputs: the hosts (names, labels). Outputs: their addresses, an inventory
//! file in DESIGN.md's format, berthctl runs against them. Start: every
//! agent is spawned at once and waited for together (each says `READY=1`
//! once it listens and supervises), so a fleet of hundreds starts in
//! seconds. Shutdown: [`Fleet::kill`] SIGKILLs one agent and
//! [`Fleet::restart`] brings it back on the same port and state; dropping
//! the fleet kills and reaps every agent, then removes every container of
//! every instance.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berthctl::certs::{self, Role, Validity};

use crate::agent::{Agent, Layout, Until, wait_all};
use crate::{Pki, Spec, TomlValue, berthctl_bare, containers};

/// The operator client certificate every fleet has.
pub const OPERATOR: &str = "alice";
/// The viewer client certificate every fleet has.
pub const VIEWER: &str = "vic";

/// How long a fleet may take to start: one agent's allowance, and more for
/// each agent sharing this machine's cores and Docker Engine.
fn start_allowance(agents: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(250) * u32::try_from(agents).unwrap_or(u32::MAX)
}

/// A host to start: its name and inventory labels.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its inventory name, also its dir and instance suffix.
    pub name: String,
    /// Its inventory labels, in order.
    pub labels: Vec<(String, String)>,
    cert: Option<Validity>,
}

impl Host {
    /// A host named `name` without labels.
    pub fn new(name: &str) -> Host {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "host name {name:?}: use letters, digits and '-'"
        );
        Host {
            name: name.to_owned(),
            labels: Vec::new(),
            cert: None,
        }
    }

    /// Adds the label `key = value`.
    pub fn label(mut self, key: &str, value: &str) -> Host {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Serves a certificate of its own (`agent-NAME.pem`, same names) with
    /// this validity, e.g. one that expires soon.
    pub fn agent_cert(mut self, validity: Validity) -> Host {
        self.cert = Some(validity);
        self
    }

    /// Tiers of hosts: `[("web", 3), ("worker", 2)]` is web-1..web-3
    /// labelled `role = "web"`, then worker-1 and worker-2 (`role = "worker"`).
    pub fn tiers(tiers: &[(&str, usize)]) -> Vec<Host> {
        tiers
            .iter()
            .flat_map(|&(role, n)| (1..=n).map(move |i| Host::new(&format!("{role}-{i}")).label("role", role)))
            .collect()
    }
}

/// One agent of a fleet: running, or killed and waiting to be restarted.
pub struct Member {
    /// Its inventory name.
    pub name: String,
    /// Its inventory labels.
    pub labels: Vec<(String, String)>,
    /// Its `docker.instance`.
    pub instance: String,
    /// Its config, state, env dir and log live here.
    pub dir: PathBuf,
    addr: String,
    cert: String,
    agent: Option<Agent>,
}

impl Member {
    /// `127.0.0.1:PORT`; the same after a restart.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The agent process, unless it was killed.
    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }

    /// Its log so far (every run, appended).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn layout<'a>(&'a self, tls: &'a Path, listen: &'a str) -> Layout<'a> {
        Layout {
            dir: &self.dir,
            tls,
            cert: &self.cert,
            instance: &self.instance,
            listen,
            prometheus: "",
        }
    }
}

/// N agents sharing one PKI; dropping it stops them all and removes their
/// containers.
pub struct Fleet {
    // Dropped in this order: the agents stop before the Pki removes their
    // containers, so none can create another in between.
    members: Vec<Member>,
    extra: String,
    pki: Pki,
}

impl Fleet {
    /// Starts `Host::tiers(tiers)` with the default agent config.
    pub fn start(tiers: &[(&str, usize)]) -> Fleet {
        Fleet::start_with(Host::tiers(tiers), "")
    }

    /// A fleet for benchmarks: `n` agents, `host-1`..`host-N`, every third
    /// labelled `role = "worker"` and the others `role = "web"`, with the
    /// default agent config.
    ///
    /// Cheap enough for hundreds on this 2-core machine (release build,
    /// measured): each agent adds about 1 MiB of its own memory (12 MiB
    /// RSS, nearly all of it the shared binary), 6 threads, 17 file
    /// descriptors, one in this process and one in dockerd; 200 are ready
    /// in about 2 s. Past `fs.inotify.max_user_instances` (128 here, shared
    /// with every other process of the user) an agent cannot watch its env
    /// dir: it says so with an `env-watch-failed` event and notices edits
    /// by its resync instead, which `ps`, `info` and the like do not feel.
    pub fn many(n: usize) -> Fleet {
        let hosts = (1..=n)
            .map(|i| Host::new(&format!("host-{i}")).label("role", if i % 3 == 0 { "worker" } else { "web" }))
            .collect();
        Fleet::start_with(hosts, "")
    }

    /// Starts an agent for each host, `extra` appended to every config (see
    /// [`crate::agent_config`]), and waits until all of them supervise.
    pub fn start_with(hosts: Vec<Host>, extra: &str) -> Fleet {
        let pki = Pki::new();
        pki.issue_client(VIEWER, Role::Viewer);
        let mut members: Vec<Member> = Vec::with_capacity(hosts.len());
        for host in hosts {
            assert!(
                members.iter().all(|m| m.name != host.name),
                "two hosts named {}",
                host.name
            );
            let cert = match host.cert {
                None => "agent".to_owned(),
                Some(validity) => {
                    let name = format!("agent-{}", host.name);
                    let sans = ["127.0.0.1".to_owned(), "localhost".to_owned()];
                    certs::issue_agent(&pki.tls_dir(), &name, &sans, validity, false)
                        .unwrap_or_else(|e| panic!("agent certificate {name}: {e}"));
                    name
                }
            };
            let dir = pki.path(&format!("agents/{}", host.name));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            members.push(Member {
                instance: format!("{}-{}", pki.instance, host.name),
                name: host.name,
                labels: host.labels,
                dir,
                addr: String::new(),
                cert,
                agent: None,
            });
        }
        let mut fleet = Fleet {
            members,
            extra: extra.to_owned(),
            pki,
        };
        let names: Vec<String> = fleet.members.iter().map(|m| m.name.clone()).collect();
        fleet.launch(&names, "127.0.0.1:0");
        fleet
    }

    /// Spawns the named members' agents (all of them first), waits until
    /// every one is ready, and records their addresses. `listen` is the
    /// address to bind, or "" for each member's own.
    fn launch(&mut self, names: &[String], listen: &str) {
        let tls = self.pki.tls_dir();
        for m in self.members.iter_mut().filter(|m| names.contains(&m.name)) {
            let listen = if listen.is_empty() {
                m.addr.clone()
            } else {
                listen.to_owned()
            };
            let config = m.layout(&tls, &listen).config(&self.extra);
            m.agent = Some(Agent::spawn(&m.dir, &config));
        }
        let mut agents: Vec<&mut Agent> = self
            .members
            .iter_mut()
            .filter(|m| names.contains(&m.name))
            .filter_map(|m| m.agent.as_mut())
            .collect();
        let allowance = start_allowance(agents.len());
        wait_all(&mut agents, Until::Ready, allowance);
        for m in self.members.iter_mut().filter(|m| names.contains(&m.name)) {
            if let Some(a) = &m.agent {
                m.addr.clone_from(&a.addr);
            }
        }
    }

    /// The shared certificates (`tls_dir()`), and the dir the fleet lives in.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Every member, in the order the hosts were given.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member called `name`; panics when there is none.
    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this fleet"))
    }

    fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this fleet"))
    }

    /// The address of the member called `name`.
    pub fn addr(&self, name: &str) -> &str {
        self.member(name).addr()
    }

    /// SIGKILLs the agent of `name` and waits until it is gone: a dead
    /// host. Its containers keep running.
    pub fn kill(&mut self, name: &str) {
        let mut agent = self
            .member_mut(name)
            .agent
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        agent
            .signal_and_wait(9, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{name} did not die of SIGKILL"));
    }

    /// SIGSTOPs the agent of `name`: a hung host. The kernel still
    /// accepts connections on its port, but nothing answers them.
    pub fn freeze(&self, name: &str) {
        self.running(name).signal(19);
    }

    /// SIGCONTs a frozen agent: it answers again.
    pub fn thaw(&self, name: &str) {
        self.running(name).signal(18);
    }

    fn running(&self, name: &str) -> &Agent {
        self.member(name)
            .agent
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// Starts the agent of `name` again on the same port, state and env
    /// dir, and waits until it supervises.
    pub fn restart(&mut self, name: &str) {
        assert!(self.member(name).agent.is_none(), "{name} is still running");
        self.launch(&[name.to_owned()], "");
    }

    /// An inventory of every member as fleet `fleet`, in the format of
    /// DESIGN.md ("Fleet inventory").
    pub fn inventory(&self, fleet: &str) -> String {
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        self.inventory_of(fleet, &names)
    }

    /// An inventory of the named members as fleet `fleet`.
    pub fn inventory_of(&self, fleet: &str, names: &[&str]) -> String {
        assert!(
            !fleet.is_empty() && fleet.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "fleet name {fleet:?}: use letters, digits, '-' and '_'"
        );
        let mut out = String::new();
        for name in names {
            let m = self.member(name);
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[[fleets.{fleet}.hosts]]\n"));
            out.push_str(&format!("address = {}\n", m.addr.as_str().toml()));
            out.push_str(&format!("name    = {}\n", m.name.as_str().toml()));
            if !m.labels.is_empty() {
                let labels: Vec<String> = m
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{} = {}", toml_key(k), v.as_str().toml()))
                    .collect();
                out.push_str(&format!("labels  = {{ {} }}\n", labels.join(", ")));
            }
        }
        out
    }

    /// Writes `text` (inventories) as `fleets.toml` in the fleet's dir and
    /// returns its path, for `--inventory`.
    pub fn write_inventory(&self, text: &str) -> PathBuf {
        let path = self.pki.path("fleets.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// `berthctl --tls-dir TLS --cert alice ARGS`: the operator, with no
    /// host chosen (add `--host`, or an inventory and a fleet).
    pub fn ctl(&self, args: &[&str]) -> Command {
        self.ctl_as(OPERATOR, args)
    }

    /// [`Fleet::ctl`] with client certificate `cert` ([`VIEWER`], or one
    /// issued with `pki().issue_client`).
    pub fn ctl_as(&self, cert: &str, args: &[&str]) -> Command {
        let mut cmd = berthctl_bare(&self.pki);
        cmd.args(["--cert", cert]).args(args);
        cmd
    }

    /// Runs `berthctl --host ADDR ARGS` against the member called `name`, as
    /// the operator.
    pub fn berthctl(&self, name: &str, args: &[&str]) -> Output {
        self.ctl(&["--host", self.addr(name)])
            .args(args)
            .output()
            .expect("run berthctl")
    }

    /// Writes `spec` into the member's dir and applies it there.
    pub fn apply(&self, name: &str, spec: &Spec) -> Output {
        let path = spec.write_in(&self.member(name).dir);
        self.berthctl(name, &["apply", "-f", &path.to_string_lossy()])
    }

    /// Writes every member's address, one a line, as `hosts.txt` in the
    /// fleet's dir (for `--hosts-from`, or a shell loop of single-host
    /// berthctl runs) and returns its path.
    pub fn write_hosts(&self) -> PathBuf {
        let path = self.pki.path("hosts.txt");
        let text: String = self.members.iter().map(|m| format!("{}\n", m.addr)).collect();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The process ids of the running agents (to read their memory or CPU
    /// time).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.agent.as_ref())
            .map(Agent::pid)
            .collect()
    }

    /// Ids of every container of every member, in any state.
    pub fn containers(&self) -> Vec<String> {
        self.members
            .iter()
            .flat_map(|m| containers(&m.instance, None))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Every agent is killed first and reaped as its member drops, so
        // stopping hundreds waits for them once, not one after another.
        for agent in self.members.iter_mut().filter_map(|m| m.agent.as_mut()) {
            agent.kill_now();
        }
    }
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        key.to_owned()
    } else {
        key.toml()
    }
}

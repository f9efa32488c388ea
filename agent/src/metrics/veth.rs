//! Container traffic read from the host's end of each container's veth
//! pair.
//!
//! A container on a Docker bridge network has one end of a veth pair in its
//! network namespace (`eth0`) and the other end on the host (`vethXXXX`).
//! The host part of a pass reads the host's `/proc/net/dev` anyway, and it
//! lists the host end of every pair, so a container whose interfaces are
//! all such pairs needs no file of its own for its traffic: what the host
//! end sent, the container received, and the other way round. That saves
//! the container's `/proc/PID/net/dev`, the costliest of the files a pass
//! reads per container (see [`super::cgroup`]).
//!
//! Owns the host ends' counters from the newest `/proc/net/dev` and the map
//! from a host interface's index to its name. A container's interfaces are
//! matched once, when its files are opened, and again every
//! [`super::cgroup::REVALIDATE`]: each interface the container's own
//! `/proc/PID/net/dev` lists besides `lo` must be one end of a veth pair
//! (its `iflink`, the peer's index, differs from its own `ifindex`, as the
//! container's sysfs at `PROC/PID/root/sys/class/net` shows), and a host
//! veth must point back at it (host `ifindex` = the container end's
//! `iflink`, and host `iflink` = the container end's `ifindex`). Anything
//! else (host networking, macvlan, a peer in another namespace, a host
//! sysfs mounted into the container, no sysfs at all) keeps reading the
//! container's own `/proc/PID/net/dev`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The host ends of veth pairs: their counters and indexes.
#[derive(Debug)]
pub struct Veths {
    /// `PROC/self/root/sys/class/net`: the host's interfaces as the agent
    /// sees them.
    host_net: PathBuf,
    /// Bytes received and sent per host veth, from the newest
    /// `/proc/net/dev`, with the update that last saw it.
    counters: HashMap<String, (u64, u64, u64)>,
    /// Host veths by index: name and `iflink` (the container end's index).
    by_index: HashMap<u32, (String, u32)>,
    /// Updates so far, to drop veths a newer `/proc/net/dev` no longer
    /// lists.
    updates: u64,
}

impl Veths {
    /// An empty set; host interfaces are looked up under `proc_root`.
    pub fn new(proc_root: &Path) -> Veths {
        Veths {
            host_net: proc_root.join("self/root/sys/class/net"),
            counters: HashMap::new(),
            by_index: HashMap::new(),
            updates: 0,
        }
    }

    /// Takes the host ends' counters from the host's `/proc/net/dev`
    /// (`text`); veths it no longer lists are forgotten.
    pub fn update(&mut self, text: &str) {
        self.updates += 1;
        let now = self.updates;
        for (name, rx, tx) in veth_lines(text) {
            match self.counters.get_mut(name) {
                Some(entry) => *entry = (rx, tx, now),
                None => {
                    self.counters.insert(name.to_owned(), (rx, tx, now));
                }
            }
        }
        let before = self.counters.len();
        self.counters.retain(|_, (_, _, seen)| *seen == now);
        if self.counters.len() != before {
            let counters = &self.counters;
            self.by_index.retain(|_, (name, _)| counters.contains_key(name));
        }
    }

    /// What the container whose host ends are `ends` received and sent:
    /// the sum of what those ends sent and received. `None` when one of
    /// them is gone (the container's network changed): match it again.
    pub fn traffic(&self, ends: &[String]) -> Option<(u64, u64)> {
        ends.iter().try_fold((0u64, 0u64), |(rx, tx), end| {
            let (end_rx, end_tx, _) = self.counters.get(end)?;
            Some((rx.saturating_add(*end_tx), tx.saturating_add(*end_rx)))
        })
    }

    /// The host ends of the container whose first process is `pid` and
    /// whose own `/proc/PID/net/dev` reads `own_net_dev`; `None` unless
    /// every interface besides `lo` pairs with a host veth (see the module
    /// documentation).
    pub fn host_ends(&mut self, proc_root: &Path, pid: u32, own_net_dev: &str) -> Option<Vec<String>> {
        let sys_net = proc_root.join(pid.to_string()).join("root/sys/class/net");
        let mut ends = Vec::new();
        for name in interfaces(own_net_dev) {
            let dir = sys_net.join(name);
            let index = read_index(&dir.join("ifindex"))?;
            let peer = read_index(&dir.join("iflink"))?;
            if peer == index {
                return None;
            }
            ends.push(self.host_end(peer, index)?);
        }
        // A namespace with nothing but loopback has no traffic to read
        // from anywhere: its own file says so as cheaply.
        (!ends.is_empty()).then_some(ends)
    }

    /// The host veth with index `index` whose peer is `peer`, looking the
    /// host's interfaces up again when `index` is not known yet.
    fn host_end(&mut self, index: u32, peer: u32) -> Option<String> {
        if !self.by_index.contains_key(&index) {
            self.rescan();
        }
        let (name, link) = self.by_index.get(&index)?;
        (*link == peer && self.counters.contains_key(name)).then(|| name.clone())
    }

    /// Reads the index and peer of every host veth `/proc/net/dev` listed
    /// that is not mapped yet.
    fn rescan(&mut self) {
        let known: Vec<&String> = self.by_index.values().map(|(name, _)| name).collect();
        let unmapped: Vec<String> = self
            .counters
            .keys()
            .filter(|name| !known.contains(name))
            .cloned()
            .collect();
        for name in unmapped {
            let dir = self.host_net.join(&name);
            if let (Some(index), Some(link)) = (read_index(&dir.join("ifindex")), read_index(&dir.join("iflink"))) {
                self.by_index.insert(index, (name, link));
            }
        }
    }
}

/// The interfaces a `/proc/net/dev` lists, loopback left out.
fn interfaces(text: &str) -> impl Iterator<Item = &str> {
    super::netdev::interfaces(text, |name| name != "lo").map(|(name, _, _)| name)
}

/// The `veth*` lines of the host's `/proc/net/dev`: name, bytes received,
/// bytes sent.
fn veth_lines(text: &str) -> impl Iterator<Item = (&str, u64, u64)> {
    super::netdev::interfaces(text, |name| name.starts_with("veth"))
}

fn read_index(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
";

    fn net_dev(lines: &[(&str, u64, u64)]) -> String {
        let mut text = HEADER.to_owned();
        for (name, rx, tx) in lines {
            text.push_str(&format!("{name:>6}: {rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n"));
        }
        text
    }

    fn iface(dir: &Path, name: &str, index: u32, link: u32) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ifindex"), format!("{index}\n")).expect("ifindex");
        std::fs::write(d.join("iflink"), format!("{link}\n")).expect("iflink");
    }

    /// A host with veths `vethA` (index 7, peer 2) and `vethB` (index 9,
    /// peer 2), and container 100's `eth0` (index 2, peer 7).
    fn host(root: &Path) -> Veths {
        let host_net = root.join("self/root/sys/class/net");
        iface(&host_net, "eth0", 2, 2);
        iface(&host_net, "vethA", 7, 2);
        iface(&host_net, "vethB", 9, 2);
        let container_net = root.join("100/root/sys/class/net");
        iface(&container_net, "lo", 1, 1);
        iface(&container_net, "eth0", 2, 7);
        let mut veths = Veths::new(root);
        veths.update(&net_dev(&[
            ("lo", 5, 5),
            ("eth0", 1000, 2000),
            ("vethA", 30, 40),
            ("vethB", 1, 1),
        ]));
        veths
    }

    #[test]
    fn a_container_reads_the_host_end_of_its_pair_swapped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut veths = host(tmp.path());
        let own = net_dev(&[("lo", 5, 5), ("eth0", 40, 30)]);
        let ends = veths.host_ends(tmp.path(), 100, &own).expect("paired");
        assert_eq!(ends, ["vethA"]);
        // The container received what its host end sent.
        assert_eq!(veths.traffic(&ends), Some((40, 30)));
        veths.update(&net_dev(&[("vethA", 35, 50), ("vethB", 1, 1)]));
        assert_eq!(veths.traffic(&ends), Some((50, 35)), "newest counters");
        veths.update(&net_dev(&[("vethB", 1, 1)]));
        assert_eq!(veths.traffic(&ends), None, "its end is gone");
        assert!(veths.by_index.values().all(|(name, _)| name != "vethA"), "forgotten");
    }

    #[test]
    fn anything_but_veth_pairs_to_the_host_keeps_the_containers_own_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut veths = host(root);
        // Host networking: eth0 is its own link.
        let own_host = net_dev(&[("lo", 1, 1), ("eth0", 1000, 2000)]);
        iface(&root.join("200/root/sys/class/net"), "eth0", 2, 2);
        assert_eq!(veths.host_ends(root, 200, &own_host), None, "host network");
        // A peer the host does not have (another namespace).
        iface(&root.join("300/root/sys/class/net"), "eth0", 2, 42);
        let own = net_dev(&[("eth0", 0, 0)]);
        assert_eq!(veths.host_ends(root, 300, &own), None, "peer elsewhere");
        // A host veth with that index whose peer is another interface.
        iface(&root.join("400/root/sys/class/net"), "eth0", 3, 9);
        assert_eq!(veths.host_ends(root, 400, &own), None, "not pointing back");
        // No sysfs in the container.
        assert_eq!(veths.host_ends(root, 500, &own), None, "no sysfs");
        // A second interface that does not pair.
        let c = root.join("600/root/sys/class/net");
        iface(&c, "eth0", 2, 7);
        iface(&c, "eth1", 3, 3);
        let two = net_dev(&[("eth0", 0, 0), ("eth1", 0, 0)]);
        assert_eq!(veths.host_ends(root, 600, &two), None, "eth1 unpaired");
        // Only loopback.
        assert_eq!(veths.host_ends(root, 100, &net_dev(&[("lo", 1, 1)])), None, "lo only");
    }

    #[test]
    fn a_new_veth_is_found_on_a_rescan() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut veths = host(root);
        let own = net_dev(&[("eth0", 0, 0)]);
        assert!(veths.host_ends(root, 100, &own).is_some());
        iface(&root.join("self/root/sys/class/net"), "vethC", 11, 2);
        iface(&root.join("700/root/sys/class/net"), "eth0", 2, 11);
        // Not listed in /proc/net/dev yet: not a host end.
        assert_eq!(veths.host_ends(root, 700, &own), None);
        veths.update(&net_dev(&[("vethA", 0, 0), ("vethB", 0, 0), ("vethC", 7, 8)]));
        assert_eq!(
            veths.host_ends(root, 700, &own).as_deref(),
            Some(&["vethC".to_owned()][..])
        );
        assert_eq!(veths.traffic(&["vethA".into(), "vethC".into()]), Some((8, 7)));
    }
}

//! Host metrics: CPU, memory, load and disk space per mount through
//! `sysinfo`, traffic per interface from `/proc/net/dev`.
//!
//! Owns the `sysinfo` handles, which keep the previous CPU sample so usage
//! is a rate between two passes. Container plumbing is left out so the
//! host line stays readable and its cardinality bounded: overlay and tmpfs
//! mounts (one per container), mounts under Docker's and the kernel's
//! directories, and `veth*` interfaces (one per container).
//!
//! Cost matters here because it is paid every pass: mounts are listed
//! without `statvfs` and only the kept ones are asked for their space
//! (a `statvfs` on each container's fuse-overlayfs mount is a round trip to
//! a FUSE daemon), and interfaces come from one read of `/proc/net/dev`
//! rather than two `sysfs` files per interface.

use std::path::PathBuf;

use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

use super::{DiskSample, HostSample, NetSample};

/// File systems that are not storage a person manages.
const SKIP_FS: &[&str] = &[
    "overlay",
    "fuse-overlayfs",
    "tmpfs",
    "devtmpfs",
    "squashfs",
    "nsfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "autofs",
];

/// Mount points under these belong to Docker or the kernel.
const SKIP_MOUNTS: &[&str] = &["/var/lib/docker/", "/run/", "/proc/", "/sys/", "/dev/", "/snap/"];

/// The host's `sysinfo` handles.
pub struct HostCollector {
    system: System,
    disks: Disks,
    net_dev: PathBuf,
}

impl HostCollector {
    /// Takes a first CPU sample, so the first pass has a rate. `proc_root`
    /// is where procfs is mounted (`/proc`).
    pub fn new(proc_root: &std::path::Path) -> Self {
        let mut system = System::new();
        system.refresh_cpu_list(CpuRefreshKind::nothing().with_cpu_usage());
        HostCollector {
            system,
            disks: Disks::new(),
            net_dev: proc_root.join("net").join("dev"),
        }
    }

    /// One sample of the host.
    pub fn sample(&mut self) -> HostSample {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        // Re-list mounts (cheap: /proc/mounts), then ask only the kept ones
        // for their space.
        self.disks.refresh_specifics(true, DiskRefreshKind::nothing());
        let load = System::load_average();
        let mut disks: Vec<DiskSample> = self
            .disks
            .list_mut()
            .iter_mut()
            .filter(|d| {
                let fs = d.file_system().to_string_lossy();
                let mount = d.mount_point().to_string_lossy();
                !SKIP_FS.contains(&fs.as_ref()) && !SKIP_MOUNTS.iter().any(|p| mount.starts_with(p))
            })
            .map(|d| {
                d.refresh_specifics(DiskRefreshKind::nothing().with_storage());
                DiskSample {
                    mount: d.mount_point().to_string_lossy().into_owned(),
                    total_bytes: d.total_space(),
                    available_bytes: d.available_space(),
                }
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        disks.dedup_by(|a, b| a.mount == b.mount);
        let networks = parse_interfaces(&std::fs::read_to_string(&self.net_dev).unwrap_or_default());
        HostSample {
            cpu_percent: f64::from(self.system.global_cpu_usage()),
            cpus: u32::try_from(self.system.cpus().len()).unwrap_or(u32::MAX),
            memory_total_bytes: self.system.total_memory(),
            memory_available_bytes: self.system.available_memory(),
            load: [load.one, load.five, load.fifteen],
            disks,
            networks,
        }
    }
}

/// `/proc/net/dev`: bytes received and sent per interface, `veth*` left
/// out, sorted by name.
pub fn parse_interfaces(text: &str) -> Vec<NetSample> {
    let mut out: Vec<NetSample> = text
        .lines()
        .skip(2)
        .filter_map(|line| {
            let (iface, counters) = line.split_once(':')?;
            let iface = iface.trim();
            if iface.starts_with("veth") {
                return None;
            }
            let fields: Vec<&str> = counters.split_whitespace().collect();
            Some(NetSample {
                interface: iface.to_owned(),
                rx_bytes: fields.first()?.parse().ok()?,
                tx_bytes: fields.get(8)?.parse().ok()?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interfaces_without_veths() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
  eth0: 471062062  300    0    0    0     0          0         0  1414279    20    0    0    0     0       0          0
vethab12cd:  10       1    0    0    0     0          0         0       20       1    0    0    0     0       0          0
    lo:  500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
";
        let n = parse_interfaces(text);
        assert_eq!(
            n,
            vec![
                NetSample {
                    interface: "eth0".into(),
                    rx_bytes: 471_062_062,
                    tx_bytes: 1_414_279
                },
                NetSample {
                    interface: "lo".into(),
                    rx_bytes: 500,
                    tx_bytes: 500
                },
            ]
        );
    }

    #[test]
    fn samples_this_host() {
        let mut h = HostCollector::new(std::path::Path::new("/proc"));
        let s = h.sample();
        assert!(s.cpus >= 1);
        assert!(s.memory_total_bytes > 0);
        assert!(s.memory_available_bytes <= s.memory_total_bytes);
        assert!(s.disks.iter().any(|d| d.mount == "/"), "root fs listed: {:?}", s.disks);
        assert!(s.disks.iter().all(|d| !d.mount.starts_with("/var/lib/docker/")));
        assert!(s.networks.iter().all(|n| !n.interface.starts_with("veth")));
        assert!((0.0..=100.0).contains(&s.cpu_percent));
        assert!(s.networks.iter().any(|n| n.interface == "lo"), "{:?}", s.networks);
    }
}

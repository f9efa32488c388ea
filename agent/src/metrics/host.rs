//! Host metrics: CPU, memory, load, disk space per mount and traffic per
//! interface, through `sysinfo`.
//!
//! Owns the `sysinfo` handles, which keep the previous CPU sample so usage
//! is a rate between two passes. Container plumbing is left out so the
//! host line stays readable and its cardinality bounded: overlay and tmpfs
//! mounts (one per container), mounts under Docker's and the kernel's
//! directories, and `veth*` interfaces (one per container).

use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, System};

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
    networks: Networks,
}

impl Default for HostCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCollector {
    /// Takes a first CPU sample, so the first pass has a rate.
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_list(CpuRefreshKind::nothing().with_cpu_usage());
        HostCollector {
            system,
            disks: Disks::new(),
            networks: Networks::new(),
        }
    }

    /// One sample of the host.
    pub fn sample(&mut self) -> HostSample {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        // Both re-read their lists, so a new mount or interface shows up.
        // Space only: kind and I/O counters cost reads nobody looks at here.
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        self.networks.refresh(true);
        let load = System::load_average();
        let mut disks: Vec<DiskSample> = self
            .disks
            .list()
            .iter()
            .filter(|d| {
                let fs = d.file_system().to_string_lossy();
                let mount = d.mount_point().to_string_lossy();
                !SKIP_FS.contains(&fs.as_ref()) && !SKIP_MOUNTS.iter().any(|p| mount.starts_with(p))
            })
            .map(|d| DiskSample {
                mount: d.mount_point().to_string_lossy().into_owned(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        disks.dedup_by(|a, b| a.mount == b.mount);
        let mut networks: Vec<NetSample> = self
            .networks
            .list()
            .iter()
            .filter(|(name, _)| !name.starts_with("veth"))
            .map(|(name, data)| NetSample {
                interface: name.clone(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
            })
            .collect();
        networks.sort_by(|a, b| a.interface.cmp(&b.interface));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_host() {
        let mut h = HostCollector::new();
        let s = h.sample();
        assert!(s.cpus >= 1);
        assert!(s.memory_total_bytes > 0);
        assert!(s.memory_available_bytes <= s.memory_total_bytes);
        assert!(s.disks.iter().any(|d| d.mount == "/"), "root fs listed: {:?}", s.disks);
        assert!(s.disks.iter().all(|d| !d.mount.starts_with("/var/lib/docker/")));
        assert!(s.networks.iter().all(|n| !n.interface.starts_with("veth")));
        assert!((0.0..=100.0).contains(&s.cpu_percent));
    }
}

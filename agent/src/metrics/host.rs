//! Host metrics: CPU (`/proc/stat`), memory (`/proc/meminfo`), load
//! (`/proc/loadavg`), space per mounted file system (`statvfs`) and
//! traffic per interface (`/proc/net/dev`).
//!
//! Owns the host's open procfs files and the previous CPU sample, so usage
//! is a rate between two passes. Cost matters here because it is paid
//! every pass: each file is kept open and re-read with `pread` into the
//! pass's buffer (see [`super::procfile`]), and the mount table is parsed
//! only when it changed (`poll` on `/proc/self/mounts` says so), then only
//! the kept file systems are asked for their space.
//!
//! Container plumbing is left out so the host line stays readable and its
//! cardinality bounded: overlay and tmpfs mounts (one per container), mounts
//! under Docker's and the kernel's directories, and `veth*` interfaces (one
//! per container; their counters go to [`super::veth`], for the containers'
//! traffic). Network file systems are left out too: a `statvfs` of a
//! hung NFS server would stall the pass.

use std::path::Path;

use super::procfile::{Kept, optional};
use super::veth::Veths;
use super::{DiskSample, HostSample, NetSample};

/// File systems that are not storage a person manages, or whose `statvfs`
/// may block on a server.
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
    "rootfs",
    "pstore",
    "rpc_pipefs",
    "iso9660",
    "devpts",
    "hugetlbfs",
    "mqueue",
    "nfs",
    "nfs4",
    "cifs",
];

/// Mount points under these belong to Docker or the kernel.
const SKIP_MOUNTS: &[&str] = &["/var/lib/docker/", "/run/", "/proc/", "/sys/", "/dev/", "/snap/"];

/// CPU time counters of the whole host, in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal (guest time is inside
    /// user and nice).
    pub busy: u64,
    /// busy + idle + iowait.
    pub total: u64,
}

/// The host's open files and what the previous pass saw.
pub struct HostCollector {
    stat: Option<Kept>,
    meminfo: Option<Kept>,
    loadavg: Option<Kept>,
    net_dev: Option<Kept>,
    /// `/proc/self/mounts`, polled for changes.
    mounts: Option<Kept>,
    /// The kept mount points, from the newest mount table read.
    kept_mounts: Vec<String>,
    /// The mount table has been read at least once.
    listed: bool,
    prev_cpu: Option<CpuTimes>,
}

impl HostCollector {
    /// Opens the host's files under `proc_root` (where procfs is mounted)
    /// and takes a first CPU sample, so the first pass has a rate.
    pub fn new(proc_root: &Path) -> Self {
        let open = |rel: &str| Kept::optional(proc_root.join(rel));
        let mut collector = HostCollector {
            stat: open("stat"),
            meminfo: open("meminfo"),
            loadavg: open("loadavg"),
            net_dev: open("net/dev"),
            mounts: open("self/mounts"),
            kept_mounts: Vec::new(),
            listed: false,
            prev_cpu: None,
        };
        let mut buf = Vec::new();
        collector.prev_cpu = optional(&collector.stat, &mut buf, |t| parse_stat(t).0).flatten();
        collector
    }

    /// One sample of the host; `buf` is scratch space. The host ends of
    /// containers' veth pairs, left out of the sample, go to `veths`.
    pub fn sample(&mut self, buf: &mut Vec<u8>, veths: &mut Veths) -> HostSample {
        let (cpu, cpus) = optional(&self.stat, buf, parse_stat).unwrap_or((None, 0));
        let cpu_percent = match (self.prev_cpu, cpu) {
            (Some(a), Some(b)) => busy_percent(a, b),
            _ => 0.0,
        };
        if cpu.is_some() {
            self.prev_cpu = cpu;
        }
        let (memory_total_bytes, memory_available_bytes) =
            optional(&self.meminfo, buf, parse_meminfo).unwrap_or((0, 0));
        let load = optional(&self.loadavg, buf, parse_loadavg).unwrap_or([0.0; 3]);
        if self.mounts_changed()
            && let Some(text) = self.mounts.as_ref().and_then(|m| m.read(buf).ok())
        {
            self.kept_mounts = kept_mounts(text);
            self.listed = true;
        }
        let disks = self
            .kept_mounts
            .iter()
            .filter_map(|mount| {
                let st = rustix::fs::statvfs(mount.as_str()).ok()?;
                Some(DiskSample {
                    mount: mount.clone(),
                    total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
                    available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
                })
            })
            .collect();
        let networks = match self.net_dev.as_ref().and_then(|f| f.read(buf).ok()) {
            Some(text) => {
                veths.update(text);
                parse_interfaces(text)
            }
            None => Vec::new(),
        };
        HostSample {
            cpu_percent,
            cpus,
            memory_total_bytes,
            memory_available_bytes,
            load,
            disks,
            networks,
        }
    }

    /// Whether the mount table may differ from the one last read: always
    /// before the first read, then when `poll` flags the file (the kernel
    /// raises POLLPRI on `/proc/self/mounts` after any mount or unmount and
    /// clears it on that poll).
    fn mounts_changed(&self) -> bool {
        if !self.listed {
            return true;
        }
        let Some(mounts) = &self.mounts else {
            return false;
        };
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(mounts.file(), PollFlags::PRI)];
        let now = Timespec { tv_sec: 0, tv_nsec: 0 };
        match rustix::event::poll(&mut fds, Some(&now)) {
            Ok(_) => fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
            // Cannot tell: read it again.
            Err(_) => true,
        }
    }
}

/// The busy share between two CPU samples, 0-100.
pub fn busy_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    (after.busy.saturating_sub(before.busy) as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
}

/// `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
pub fn parse_stat(text: &str) -> (Option<CpuTimes>, u32) {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            // The cpu lines come first.
            if times.is_some() {
                break;
            }
            continue;
        };
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
            continue;
        }
        let mut f = rest.split_ascii_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        let mut next = || f.next().unwrap_or(0);
        let (user, nice, system, idle, iowait, irq, softirq, steal) =
            (next(), next(), next(), next(), next(), next(), next(), next());
        let busy = user + nice + system + irq + softirq + steal;
        times = Some(CpuTimes {
            busy,
            total: busy + idle + iowait,
        });
    }
    (times, cpus)
}

/// `/proc/meminfo`: `MemTotal` and `MemAvailable` in bytes (`MemFree`
/// when the kernel is too old to report `MemAvailable`).
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let kib = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix(':')?;
            v.split_ascii_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = kib("MemTotal").unwrap_or(0);
    let available = kib("MemAvailable").or_else(|| kib("MemFree")).unwrap_or(0);
    (total.saturating_mul(1024), available.saturating_mul(1024))
}

/// `/proc/loadavg`: the 1, 5 and 15 minute averages.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        f.next().unwrap_or(0.0),
        f.next().unwrap_or(0.0),
        f.next().unwrap_or(0.0),
    ]
}

/// The mount points of `/proc/self/mounts` worth reporting, sorted, each
/// once.
pub fn kept_mounts(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (spec, mount, fs) = (f.next()?, f.next()?, f.next()?);
            let mount = unescape(mount);
            let skip = SKIP_FS.contains(&fs)
                || spec.starts_with("sunrpc")
                || SKIP_MOUNTS.iter().any(|p| mount.starts_with(p))
                || mount == "/proc"
                || mount == "/sys"
                || mount == "/dev";
            (!skip).then_some(mount)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Mount points escape space, tab, newline and backslash as `\OOO`.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/net/dev`: bytes received and sent per interface, `veth*` left
/// out, sorted by name.
pub fn parse_interfaces(text: &str) -> Vec<NetSample> {
    let mut out: Vec<NetSample> = super::netdev::interfaces(text, |iface| !iface.starts_with("veth"))
        .map(|(iface, rx_bytes, tx_bytes)| NetSample {
            interface: iface.to_owned(),
            rx_bytes,
            tx_bytes,
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
    fn parses_proc_files() {
        let stat = "cpu  100 10 50 800 40 5 5 0 7 0\ncpu0 50 5 25 400 20 2 3 0 0 0\ncpu1 50 5 25 400 20 3 2 0 0 0\nintr 1 2 3\n";
        let (times, cpus) = parse_stat(stat);
        assert_eq!(cpus, 2);
        assert_eq!(times, Some(CpuTimes { busy: 170, total: 1010 }));
        let later = CpuTimes { busy: 270, total: 1410 };
        assert!((busy_percent(CpuTimes { busy: 170, total: 1010 }, later) - 25.0).abs() < 1e-9);
        assert_eq!(busy_percent(later, later), 0.0, "no time passed");
        let meminfo = "MemTotal:       16318412 kB\nMemFree:         1000 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(meminfo), (16_318_412 * 1024, 8_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 10 kB\nMemFree: 4 kB\n"), (10240, 4096));
        assert_eq!(parse_loadavg("0.50 0.25 0.12 1/234 5678\n"), [0.5, 0.25, 0.12]);
        let mounts = "/dev/sda1 / ext4 rw 0 0\n\
            overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0\n\
            tmpfs /run tmpfs rw 0 0\n\
            /dev/sdb1 /data\\040disk ext4 rw 0 0\n\
            server:/x /mnt/nfs nfs4 rw 0 0\n\
            nsfs /run/docker/netns/x nsfs rw 0 0\n\
            /dev/sda1 / ext4 rw 0 0\n";
        assert_eq!(kept_mounts(mounts), vec!["/".to_owned(), "/data disk".to_owned()]);
    }

    #[test]
    fn samples_this_host() {
        let mut h = HostCollector::new(Path::new("/proc"));
        let mut buf = Vec::new();
        let s = h.sample(&mut buf, &mut Veths::new(Path::new("/proc")));
        assert!(s.cpus >= 1);
        assert!(s.memory_total_bytes > 0);
        assert!(s.memory_available_bytes <= s.memory_total_bytes);
        assert!(
            s.disks.iter().any(|d| d.mount == "/" && d.total_bytes > 0),
            "root fs listed: {:?}",
            s.disks
        );
        assert!(s.disks.iter().all(|d| !d.mount.starts_with("/var/lib/docker/")));
        assert!(s.networks.iter().all(|n| !n.interface.starts_with("veth")));
        assert!((0.0..=100.0).contains(&s.cpu_percent));
        assert!(s.networks.iter().any(|n| n.interface == "lo"), "{:?}", s.networks);
        // A second pass without mount changes reuses the mount list.
        let again = h.sample(&mut buf, &mut Veths::new(Path::new("/proc")));
        assert_eq!(
            again.disks.iter().map(|d| &d.mount).collect::<Vec<_>>(),
            s.disks.iter().map(|d| &d.mount).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lists_mounts_on_the_first_pass() {
        let mut h = HostCollector::new(Path::new("/proc"));
        assert!(h.mounts_changed(), "nothing listed yet");
        h.sample(&mut Vec::new(), &mut Veths::new(Path::new("/proc")));
        assert!(h.listed && !h.kept_mounts.is_empty(), "{:?}", h.kept_mounts);
        h.mounts = None;
        assert!(!h.mounts_changed(), "without the mounts file the list stays");
    }
}

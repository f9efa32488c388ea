//! Per-container counters read straight from the cgroup filesystem.
//!
//! Owns finding a container's cgroup directories and parsing the kernel's
//! files; no Docker call is made. Both hierarchies are supported:
//! - cgroup v2 (unified): `ROOT/docker/ID` (cgroupfs driver) or
//!   `ROOT/system.slice/docker-ID.scope` (systemd driver), files `cpu.stat`,
//!   `cpu.max`, `memory.current`, `memory.max`, `memory.stat`,
//!   `memory.events`, `io.stat`, `cgroup.procs`;
//! - cgroup v1: the same two layouts under each controller's mount
//!   (`ROOT/cpuacct/…`, `ROOT/cpu/…`, `ROOT/memory/…`, `ROOT/blkio/…`), files
//!   `cpuacct.usage`, `cpu.stat`, `cpu.cfs_quota_us`, `cpu.cfs_period_us`,
//!   `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat`,
//!   `memory.oom_control`, `blkio.throttle.io_service_bytes_recursive`.
//!
//! Network counters are not in cgroups. They come from the host's end of
//! the container's veth pairs, which the host part of the pass reads anyway
//! (see [`super::veth`]), or else from `PROC/PID/net/dev` of the first
//! process listed in the container's `cgroup.procs`, which sees the
//! container's network namespace.
//!
//! A container's files are opened once ([`Files`]) and re-read with
//! `pread` (see [`super::procfile`]); a pass reads only the files whose
//! values may have moved ([`Files::read`] says which follow what), and
//! every file at least once per [`REVALIDATE`]. Everything here is plain
//! blocking file I/O on pseudo-files (about a microsecond each); the
//! collector runs it on its sampler thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use super::procfile::ReadError;
use super::procfile::{Kept, optional};
use super::veth::Veths;

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Separate hierarchies per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

impl Version {
    /// As reported in snapshots and capabilities: "cgroup-v1", "cgroup-v2".
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "cgroup-v1",
            Version::V2 => "cgroup-v2",
        }
    }
}

/// Looks at `root` and tells which hierarchy Docker's containers live in.
/// `None` when neither is readable (no cgroupfs mounted, or a container
/// without the host's cgroups): the collector then falls back to Docker.
///
/// A hybrid host (v1 controllers plus a v2 mount at `ROOT/unified`) counts
/// as v1, because that is where Docker puts limits and accounting there.
pub fn detect(root: &Path) -> Option<Version> {
    if root.join("cgroup.controllers").is_file() {
        Some(Version::V2)
    } else if root.join("memory").is_dir() && root.join("cpuacct").is_dir() {
        Some(Version::V1)
    } else {
        None
    }
}

/// A container's cgroup directories, found once and reused while the
/// container lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dirs {
    /// One directory holding every controller's files.
    V2(PathBuf),
    /// One directory per controller.
    V1 {
        /// `cpuacct` (usage).
        cpuacct: PathBuf,
        /// `cpu` (quota, throttling).
        cpu: PathBuf,
        /// `memory`.
        memory: PathBuf,
        /// `blkio`.
        blkio: PathBuf,
    },
}

/// The two places Docker puts a container's cgroup, relative to a
/// hierarchy's root: cgroupfs driver first (the default), then systemd.
fn candidates(id: &str) -> [PathBuf; 2] {
    [
        PathBuf::from("docker").join(id),
        PathBuf::from("system.slice").join(format!("docker-{id}.scope")),
    ]
}

/// Finds the cgroup directories of container `id` (full id) under `root`;
/// `None` when the container has none there (gone, or a custom
/// `--cgroup-parent`).
pub fn locate(root: &Path, version: Version, id: &str) -> Option<Dirs> {
    match version {
        Version::V2 => candidates(id)
            .into_iter()
            .map(|rel| root.join(rel))
            .find(|d| d.join("cgroup.procs").is_file())
            .map(Dirs::V2),
        Version::V1 => candidates(id).into_iter().find_map(|rel| {
            let memory = root.join("memory").join(&rel);
            memory.join("cgroup.procs").is_file().then(|| Dirs::V1 {
                cpuacct: root.join("cpuacct").join(&rel),
                cpu: root.join("cpu").join(&rel),
                memory,
                blkio: root.join("blkio").join(&rel),
            })
        }),
    }
}

/// Raw counters of one container at one instant. Cumulative values are
/// since the container (its cgroup) started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Raw {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// CFS periods in which the container was throttled.
    pub throttled_periods: u64,
    /// Time spent throttled, in nanoseconds.
    pub throttled_ns: u64,
    /// The CPU limit in CPUs; `None` = no limit.
    pub cpu_limit: Option<f64>,
    /// Memory in use, without the inactive page cache the kernel reclaims
    /// first (what `docker stats` shows).
    pub memory_bytes: u64,
    /// The memory limit; `None` = no limit.
    pub memory_limit: Option<u64>,
    /// OOM kills inside this cgroup.
    pub oom_kills: u64,
    /// Bytes read from block devices.
    pub blkio_read: u64,
    /// Bytes written to block devices.
    pub blkio_write: u64,
    /// Bytes received on the container's interfaces (loopback excluded).
    pub net_rx: u64,
    /// Bytes sent on the container's interfaces (loopback excluded).
    pub net_tx: u64,
}

/// The open files of one container, per hierarchy. Required files make a
/// pass fail when they cannot be read (the cgroup is gone); optional ones
/// read as empty.
#[derive(Debug)]
enum Open {
    V2 {
        cpu_stat: Kept,
        memory_current: Kept,
        memory_stat: Option<Kept>,
        memory_events: Option<Kept>,
        io_stat: Option<Kept>,
        cpu_max: Option<Kept>,
        memory_max: Option<Kept>,
    },
    V1 {
        usage: Kept,
        cpu_stat: Option<Kept>,
        quota: Option<Kept>,
        period: Option<Kept>,
        memory_usage: Kept,
        memory_stat: Option<Kept>,
        memory_limit: Option<Kept>,
        oom_control: Option<Kept>,
        /// `blkio.throttle.io_service_bytes_recursive`, then the flat
        /// file for kernels that leave the recursive one empty.
        blkio: [Option<Kept>; 2],
    },
}

/// A container's counter files, opened once while the container lives and
/// re-read each pass. Dropping it closes every descriptor; the collector
/// drops it when the container stops being a service's primary or a read
/// fails.
#[derive(Debug)]
pub struct Files {
    open: Open,
    /// `cgroup.procs`, read only until a process is found for `net`.
    procs: Kept,
    /// Where the container's traffic is read, once a process is found.
    net: Option<Net>,
    cache: Cache,
}

/// Where a container's network counters come from.
#[derive(Debug)]
struct Net {
    /// `PROC/PID/net/dev` of the container's first process. The open file
    /// stays bound to the container's network namespace, so it is opened
    /// once and kept even if that process exits before the container does.
    own: Kept,
    /// That process, whose sysfs matches the container's interfaces to the
    /// host's veths.
    pid: u32,
    /// The host ends of the container's veth pairs, when every interface
    /// has one: a pass then reads the counters the host part read, and
    /// `own` only when they are matched again.
    ends: Option<Vec<String>>,
}

impl Files {
    /// Opens the container's files in `dirs`; fails when a required one is
    /// missing (the container is gone).
    pub fn open(dirs: &Dirs) -> Result<Files, ReadError> {
        let (open, procs_dir) = match dirs {
            Dirs::V2(dir) => (
                Open::V2 {
                    cpu_stat: Kept::open(dir.join("cpu.stat"))?,
                    memory_current: Kept::open(dir.join("memory.current"))?,
                    memory_stat: Kept::optional(dir.join("memory.stat")),
                    memory_events: Kept::optional(dir.join("memory.events")),
                    io_stat: Kept::optional(dir.join("io.stat")),
                    cpu_max: Kept::optional(dir.join("cpu.max")),
                    memory_max: Kept::optional(dir.join("memory.max")),
                },
                dir,
            ),
            Dirs::V1 {
                cpuacct,
                cpu,
                memory,
                blkio,
            } => (
                Open::V1 {
                    usage: Kept::open(cpuacct.join("cpuacct.usage"))?,
                    cpu_stat: Kept::optional(cpu.join("cpu.stat")),
                    quota: Kept::optional(cpu.join("cpu.cfs_quota_us")),
                    period: Kept::optional(cpu.join("cpu.cfs_period_us")),
                    memory_usage: Kept::open(memory.join("memory.usage_in_bytes"))?,
                    memory_stat: Kept::optional(memory.join("memory.stat")),
                    memory_limit: Kept::optional(memory.join("memory.limit_in_bytes")),
                    oom_control: Kept::optional(memory.join("memory.oom_control")),
                    blkio: [
                        Kept::optional(blkio.join("blkio.throttle.io_service_bytes_recursive")),
                        Kept::optional(blkio.join("blkio.throttle.io_service_bytes")),
                    ],
                },
                memory,
            ),
        };
        Ok(Files {
            open,
            procs: Kept::open(procs_dir.join("cgroup.procs"))?,
            net: None,
            cache: Cache::default(),
        })
    }

    /// Whether the container's traffic comes from the host ends of its
    /// veth pairs (no file of its own is read for it).
    pub fn net_from_host(&self) -> bool {
        self.net.as_ref().is_some_and(|n| n.ends.is_some())
    }

    /// Descriptors this container holds open (for tests and accounting).
    pub fn descriptors(&self) -> usize {
        let kept = |k: &Option<Kept>| usize::from(k.is_some());
        let own = match &self.open {
            Open::V2 {
                memory_stat,
                memory_events,
                io_stat,
                cpu_max,
                memory_max,
                ..
            } => 2 + kept(memory_stat) + kept(memory_events) + kept(io_stat) + kept(cpu_max) + kept(memory_max),
            Open::V1 {
                cpu_stat,
                quota,
                period,
                memory_stat,
                memory_limit,
                oom_control,
                blkio,
                ..
            } => {
                2 + kept(cpu_stat)
                    + kept(quota)
                    + kept(period)
                    + kept(memory_stat)
                    + kept(memory_limit)
                    + kept(oom_control)
                    + blkio.iter().map(kept).sum::<usize>()
            }
        };
        own + 1 + usize::from(self.net.is_some())
    }

    /// Reads every counter, using `buf` as scratch space; `now` is the
    /// pass's time and `updates` the service's count of Docker `update`
    /// events ([`super::MetricsTarget::updates`]). Fails when a required
    /// file cannot be read, which means the container (its cgroup) is gone.
    ///
    /// Reads only what may have changed since the previous pass:
    /// - the usage counters (CPU, memory) and network bytes every pass;
    /// - throttling, and on v1 block I/O, only when CPU usage moved: a
    ///   cgroup is throttled only while it runs, and v1 charges block I/O
    ///   to the task that issues it (writeback goes to the root cgroup), so
    ///   an idle container's counters stand still. v2 charges writeback to
    ///   the container's cgroup without its CPU, so `io.stat` is read every
    ///   pass;
    /// - `memory.stat` (the costliest file: the kernel sums its statistics
    ///   on each read) and the OOM kill count only when memory usage moved:
    ///   a kill frees the victim's memory;
    /// - the limits when `updates` moved (a `docker update`, by hand or by
    ///   the reconciler setting drift back, shows at the next pass).
    ///
    /// Everything is read again at least once per [`REVALIDATE`], which
    /// bounds how stale a skipped file can be (an update event missed while
    /// the event stream was down, an OOM kill of a process too small to
    /// move the usage counter).
    ///
    /// Network bytes come from `veths` (the host ends the host part of the
    /// pass read) when the container's interfaces are all veth pairs to the
    /// host, matched when its files are opened and again at each
    /// revalidation; from the container's own `net/dev` otherwise.
    pub fn read(
        &mut self,
        proc_root: &Path,
        buf: &mut Vec<u8>,
        now: Instant,
        updates: u32,
        veths: &mut Veths,
    ) -> Result<Raw, ReadError> {
        let cache = &mut self.cache;
        let revalidate = cache.updates != Some(updates)
            || cache
                .revalidated_at
                .is_none_or(|at| now.saturating_duration_since(at) >= REVALIDATE);
        if revalidate {
            cache.revalidated_at = Some(now);
            cache.updates = Some(updates);
        }
        let raw = &mut cache.raw;
        match &self.open {
            Open::V2 {
                cpu_stat,
                memory_current,
                memory_stat,
                memory_events,
                io_stat,
                cpu_max,
                memory_max,
            } => {
                // Usage and throttling share one file.
                let cpu = cpu_stat.read(buf)?;
                raw.cpu_usage_ns = keyed(cpu, "usage_usec").unwrap_or(0).saturating_mul(1000);
                raw.throttled_periods = keyed(cpu, "nr_throttled").unwrap_or(0);
                raw.throttled_ns = keyed(cpu, "throttled_usec").unwrap_or(0).saturating_mul(1000);
                let current = parse_u64(memory_current.read(buf)?);
                if moved(&mut cache.usage_at_stat, current, revalidate) {
                    cache.inactive = optional(memory_stat, buf, |t| keyed(t, "inactive_file"))
                        .flatten()
                        .unwrap_or(0);
                    raw.oom_kills = optional(memory_events, buf, |t| keyed(t, "oom_kill"))
                        .flatten()
                        .unwrap_or(0);
                }
                raw.memory_bytes = current.saturating_sub(cache.inactive);
                (raw.blkio_read, raw.blkio_write) = optional(io_stat, buf, parse_io_stat).unwrap_or((0, 0));
                if revalidate {
                    raw.cpu_limit = optional(cpu_max, buf, parse_cpu_max).flatten();
                    raw.memory_limit = optional(memory_max, buf, parse_memory_max).flatten();
                }
            }
            Open::V1 {
                usage,
                cpu_stat,
                quota,
                period,
                memory_usage,
                memory_stat,
                memory_limit,
                oom_control,
                blkio,
            } => {
                let cpu_usage_ns = parse_u64(usage.read(buf)?);
                if moved(&mut cache.cpu_at_stat, cpu_usage_ns, revalidate) {
                    (raw.throttled_periods, raw.throttled_ns) = optional(cpu_stat, buf, |t| {
                        (
                            keyed(t, "nr_throttled").unwrap_or(0),
                            keyed(t, "throttled_time").unwrap_or(0),
                        )
                    })
                    .unwrap_or((0, 0));
                    (raw.blkio_read, raw.blkio_write) = blkio
                        .iter()
                        .find_map(|f| {
                            let text = f.as_ref()?.read(buf).ok()?;
                            (!text.is_empty()).then(|| parse_v1_blkio(text))
                        })
                        .unwrap_or((0, 0));
                }
                raw.cpu_usage_ns = cpu_usage_ns;
                let current = parse_u64(memory_usage.read(buf)?);
                if moved(&mut cache.usage_at_stat, current, revalidate) {
                    cache.inactive = optional(memory_stat, buf, |t| keyed(t, "total_inactive_file"))
                        .flatten()
                        .unwrap_or(0);
                    raw.oom_kills = optional(oom_control, buf, |t| keyed(t, "oom_kill"))
                        .flatten()
                        .unwrap_or(0);
                }
                raw.memory_bytes = current.saturating_sub(cache.inactive);
                if revalidate {
                    let quota = optional(quota, buf, parse_i64).flatten();
                    let period = optional(period, buf, parse_i64).flatten();
                    raw.cpu_limit = v1_cpus(quota, period);
                    raw.memory_limit = optional(memory_limit, buf, parse_u64).and_then(v1_limit);
                }
            }
        }
        let mut rematch = revalidate;
        if self.net.is_none() {
            // Only the first pid matters: a short read is enough however
            // many processes the container runs.
            if let Some(pid) = first_pid(self.procs.read_prefix(buf, 64)?) {
                // The process may exit between the two reads; try again
                // next pass.
                let mut path = proc_root.join(pid.to_string());
                path.push("net/dev");
                self.net = Kept::optional(path).map(|own| Net { own, pid, ends: None });
                rematch = true;
            }
        }
        if let Some(net) = &mut self.net {
            let from_host = match &net.ends {
                Some(ends) if !rematch => veths.traffic(ends),
                _ => None,
            };
            match from_host {
                Some(traffic) => (raw.net_rx, raw.net_tx) = traffic,
                None => match net.own.read(buf) {
                    Ok(text) => {
                        (raw.net_rx, raw.net_tx) = parse_net_dev(text);
                        // Matched anew when due, or when a host end went
                        // away (the container's network changed).
                        if rematch || net.ends.is_some() {
                            net.ends = veths.host_ends(proc_root, net.pid, text);
                        }
                    }
                    // Open it afresh next pass.
                    Err(_) => self.net = None,
                },
            }
        }
        Ok(raw.clone())
    }
}

/// How long a file skipped because what it follows did not move (limits,
/// `memory.stat`, throttling, OOM kills, v1 block I/O) may go unread.
/// Limits are re-read at once on a Docker `update` event, so this bounds
/// only what no event or counter announces; at the default 10 s interval
/// it is one pass in six.
pub const REVALIDATE: Duration = Duration::from_secs(60);

/// What a container's previous passes read, kept for the files a pass
/// skips.
#[derive(Debug, Default)]
struct Cache {
    /// When every file was last read.
    revalidated_at: Option<Instant>,
    /// The service's `update` event count at that read.
    updates: Option<u32>,
    /// CPU usage when throttling (and v1 block I/O) was last read.
    cpu_at_stat: Option<u64>,
    /// Memory usage when `memory.stat` and the OOM count were last read.
    usage_at_stat: Option<u64>,
    /// Inactive file cache from that read.
    inactive: u64,
    /// The previous pass's counters; what a pass skips stays as read.
    raw: Raw,
}

/// Whether the files that follow a counter are due: it moved since they
/// were last read (`at`, updated here), or everything is being
/// revalidated.
fn moved(at: &mut Option<u64>, current: u64, revalidate: bool) -> bool {
    let due = revalidate || *at != Some(current);
    if due {
        *at = Some(current);
    }
    due
}

/// Reads every counter of a container once (opens, reads and closes its
/// files). The collector keeps [`Files`] open instead.
pub fn read_container(dirs: &Dirs, proc_root: &Path) -> Result<Raw, ReadError> {
    let mut veths = Veths::new(proc_root);
    Files::open(dirs)?.read(proc_root, &mut Vec::new(), Instant::now(), 0, &mut veths)
}

// ------------------------------------------------------------------ parsers

/// A file holding one number (`memory.current`, `cpuacct.usage`); 0 when
/// it is not one.
pub fn parse_u64(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// The value of `key` in a flat-keyed file (`cpu.stat`, `memory.stat`,
/// `memory.events`, `memory.oom_control`): lines of `key value`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `cpu.max` (v2): `"50000 100000"` = 0.5 CPUs; `"max 100000"` = none.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` (v1): quota -1 = none.
pub fn parse_v1_quota(quota: &str, period: &str) -> Option<f64> {
    v1_cpus(parse_i64(quota), parse_i64(period))
}

fn v1_cpus(quota: Option<i64>, period: Option<i64>) -> Option<f64> {
    let (quota, period) = (quota?, period?);
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

fn parse_i64(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// `memory.max` (v2): `"max"` = none.
pub fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 reports "no limit" as a huge page-aligned number near `i64::MAX`.
fn v1_limit(limit: u64) -> Option<u64> {
    (limit > 0 && limit < (1 << 62)).then_some(limit)
}

/// `io.stat` (v2): `MAJ:MIN rbytes=N wbytes=N rios=N …` per device; sums
/// read and written bytes over devices.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            read = read.saturating_add(v.parse().unwrap_or(0));
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            write = write.saturating_add(v.parse().unwrap_or(0));
        }
    }
    (read, write)
}

/// `blkio.throttle.io_service_bytes[_recursive]` (v1): `MAJ:MIN Read N`
/// lines per device plus a `Total` line; sums Read and Write over devices.
pub fn parse_v1_blkio(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_device), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => write = write.saturating_add(value),
            _ => {}
        }
    }
    (read, write)
}

/// `/proc/PID/net/dev`: received and sent bytes summed over the
/// interfaces, loopback excluded (traffic a container sends itself is not
/// network traffic).
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    super::netdev::interfaces(text, |iface| iface != "lo").fold((0u64, 0u64), |(rx, tx), (_, r, t)| {
        (rx.saturating_add(r), tx.saturating_add(t))
    })
}

/// The first pid in a `cgroup.procs` file.
pub fn first_pid(text: &str) -> Option<u32> {
    text.lines().find_map(|l| l.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
  eth0:    1736      18    0    0    0     0          0         0      942       9    0    0    0     0       0          0
";

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write fixture");
        }
    }

    fn proc_with_net(root: &Path, pid: u32) -> PathBuf {
        let proc_root = root.join("proc");
        write(&proc_root.join(pid.to_string()).join("net"), &[("dev", NET_DEV)]);
        proc_root
    }

    fn v2_files(dir: &Path) {
        write(
            dir,
            &[
                ("cgroup.procs", "4242\n4243\n"),
                (
                    "cpu.stat",
                    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 12\nthrottled_usec 900000\n",
                ),
                ("cpu.max", "50000 100000\n"),
                ("memory.current", "73400320\n"),
                ("memory.max", "67108864\n"),
                (
                    "memory.stat",
                    "anon 60000000\nfile 13400320\ninactive_file 4194304\nactive_file 100\n",
                ),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 0\n",
                ),
                (
                    "io.stat",
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=100 wbytes=200 rios=1 wios=1 dbytes=0 dios=0\n",
                ),
            ],
        );
    }

    fn expect_v2(raw: &Raw) {
        assert_eq!(raw.cpu_usage_ns, 2_500_000_000);
        assert_eq!(raw.throttled_periods, 12);
        assert_eq!(raw.throttled_ns, 900_000_000);
        assert_eq!(raw.cpu_limit, Some(0.5));
        assert_eq!(raw.memory_bytes, 73_400_320 - 4_194_304);
        assert_eq!(raw.memory_limit, Some(64 * 1024 * 1024));
        assert_eq!(raw.oom_kills, 2);
        assert_eq!((raw.blkio_read, raw.blkio_write), (4196, 8392));
        assert_eq!((raw.net_rx, raw.net_tx), (1736, 942), "loopback excluded");
    }

    #[test]
    fn v2_cgroupfs_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        write(&root, &[("cgroup.controllers", "cpuset cpu io memory pids\n")]);
        v2_files(&root.join("docker").join(ID));
        let proc_root = proc_with_net(tmp.path(), 4242);

        assert_eq!(detect(&root), Some(Version::V2));
        let dirs = locate(&root, Version::V2, ID).expect("found");
        assert_eq!(dirs, Dirs::V2(root.join("docker").join(ID)));
        expect_v2(&read_container(&dirs, &proc_root).expect("read"));
    }

    #[test]
    fn v2_systemd_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        write(&root, &[("cgroup.controllers", "cpu memory\n")]);
        let scope = root.join("system.slice").join(format!("docker-{ID}.scope"));
        v2_files(&scope);
        let proc_root = proc_with_net(tmp.path(), 4242);

        let dirs = locate(&root, Version::V2, ID).expect("found");
        assert_eq!(dirs, Dirs::V2(scope));
        expect_v2(&read_container(&dirs, &proc_root).expect("read"));
    }

    #[test]
    fn v2_without_limits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("docker").join(ID);
        v2_files(&dir);
        write(&dir, &[("cpu.max", "max 100000\n"), ("memory.max", "max\n")]);
        let raw = read_container(&Dirs::V2(dir), tmp.path()).expect("read");
        assert_eq!(raw.cpu_limit, None);
        assert_eq!(raw.memory_limit, None);
    }

    fn v1_files(root: &Path, rel: &Path) {
        write(
            &root.join("cpuacct").join(rel),
            &[("cpuacct.usage", "1500000000\n"), ("cgroup.procs", "77\n")],
        );
        write(
            &root.join("cpu").join(rel),
            &[
                ("cpu.stat", "nr_periods 30\nnr_throttled 9\nthrottled_time 450000000\n"),
                ("cpu.cfs_quota_us", "150000\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        write(
            &root.join("memory").join(rel),
            &[
                ("cgroup.procs", "77\n"),
                ("memory.usage_in_bytes", "10485760\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory.stat",
                    "cache 100\ninactive_file 9\ntotal_inactive_file 2097152\n",
                ),
                ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            ],
        );
        write(
            &root.join("blkio").join(rel),
            &[(
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 1024\n8:0 Write 2048\n8:0 Sync 0\n8:0 Async 3072\n8:0 Discard 0\n8:0 Total 3072\n8:16 Read 1\n8:16 Write 2\nTotal 3075\n",
            )],
        );
    }

    fn expect_v1(raw: &Raw) {
        assert_eq!(raw.cpu_usage_ns, 1_500_000_000);
        assert_eq!(raw.throttled_periods, 9);
        assert_eq!(raw.throttled_ns, 450_000_000);
        assert_eq!(raw.cpu_limit, Some(1.5));
        assert_eq!(raw.memory_bytes, 10_485_760 - 2_097_152);
        assert_eq!(raw.memory_limit, None, "v1's 'unlimited' is a huge number");
        assert_eq!(raw.oom_kills, 3);
        assert_eq!((raw.blkio_read, raw.blkio_write), (1025, 2050));
        assert_eq!((raw.net_rx, raw.net_tx), (1736, 942));
    }

    #[test]
    fn v1_cgroupfs_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        v1_files(&root, &PathBuf::from("docker").join(ID));
        let proc_root = proc_with_net(tmp.path(), 77);

        assert_eq!(detect(&root), Some(Version::V1));
        let dirs = locate(&root, Version::V1, ID).expect("found");
        match &dirs {
            Dirs::V1 { memory, .. } => assert_eq!(memory, &root.join("memory").join("docker").join(ID)),
            other => panic!("expected v1 dirs, got {other:?}"),
        }
        expect_v1(&read_container(&dirs, &proc_root).expect("read"));
    }

    #[test]
    fn v1_systemd_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        v1_files(&root, &PathBuf::from("system.slice").join(format!("docker-{ID}.scope")));
        let proc_root = proc_with_net(tmp.path(), 77);
        let dirs = locate(&root, Version::V1, ID).expect("found");
        expect_v1(&read_container(&dirs, &proc_root).expect("read"));
    }

    #[test]
    fn kept_files_show_new_values_and_slow_files_are_reread_in_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("docker").join(ID);
        v2_files(&dir);
        let proc_root = proc_with_net(tmp.path(), 4242);
        let mut files = Files::open(&Dirs::V2(dir.clone())).expect("open");
        let mut buf = Vec::new();
        let mut veths = Veths::new(&proc_root);
        let t0 = Instant::now();
        expect_v2(&files.read(&proc_root, &mut buf, t0, 0, &mut veths).expect("read"));
        assert_eq!(files.descriptors(), 9, "7 cgroup files, cgroup.procs, net/dev");

        // Counters move: the kept descriptors read the new values.
        write(
            &dir,
            &[
                (
                    "cpu.stat",
                    "usage_usec 3000000\nnr_throttled 13\nthrottled_usec 1000000\n",
                ),
                ("memory.events", "oom_kill 3\n"),
                ("cpu.max", "max 100000\n"),
                ("memory.stat", "inactive_file 1000\n"),
                ("io.stat", "8:0 rbytes=5000 wbytes=6000\n"),
            ],
        );
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(1), 0, &mut veths)
            .expect("read");
        assert_eq!(raw.cpu_usage_ns, 3_000_000_000);
        assert_eq!((raw.throttled_periods, raw.throttled_ns), (13, 1_000_000_000));
        assert_eq!((raw.blkio_read, raw.blkio_write), (5000, 6000), "io.stat every pass");
        // Memory usage did not move, no update event and REVALIDATE has
        // not passed: memory.stat, memory.events and the limit are the
        // earlier readings.
        assert_eq!(raw.oom_kills, 2);
        assert_eq!(raw.cpu_limit, Some(0.5));
        assert_eq!(raw.memory_bytes, 73_400_320 - 4_194_304);
        // Usage moved: memory.stat and memory.events are read again.
        write(&dir, &[("memory.current", "73401320\n")]);
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(2), 0, &mut veths)
            .expect("read");
        assert_eq!(raw.memory_bytes, 73_401_320 - 1000);
        assert_eq!(raw.oom_kills, 3);
        assert_eq!(raw.cpu_limit, Some(0.5), "limits wait for an update or REVALIDATE");
        // A Docker update event: the limits are read at the next pass.
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(3), 1, &mut veths)
            .expect("read");
        assert_eq!(raw.cpu_limit, None, "re-read after an update event");
        write(
            &dir,
            &[("cpu.max", "25000 100000\n"), ("memory.stat", "inactive_file 0\n")],
        );
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(4), 1, &mut veths)
            .expect("read");
        assert_eq!(raw.cpu_limit, None, "no new event: the last reading");
        // Without any event, REVALIDATE bounds how stale they get.
        let raw = files
            .read(
                &proc_root,
                &mut buf,
                t0 + Duration::from_secs(3) + REVALIDATE,
                1,
                &mut veths,
            )
            .expect("read");
        assert_eq!(raw.cpu_limit, Some(0.25), "re-read after REVALIDATE");
        assert_eq!(raw.memory_bytes, 73_401_320, "memory.stat too");

        // The cgroup goes away: a required file fails and names itself.
        std::fs::remove_file(dir.join("cpu.stat")).expect("rm");
        let fresh = Files::open(&Dirs::V2(dir.clone())).expect_err("cpu.stat is required");
        assert!(fresh.to_string().contains("cpu.stat"), "{fresh}");
    }

    #[test]
    fn traffic_comes_from_the_host_end_of_a_veth_pair_once_matched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("docker").join(ID);
        v2_files(&dir);
        let proc_root = proc_with_net(tmp.path(), 4242);
        for (base, index, link) in [
            ("4242/root/sys/class/net/eth0", 2, 7),
            ("self/root/sys/class/net/vethA", 7, 2),
        ] {
            let d = proc_root.join(base);
            std::fs::create_dir_all(&d).expect("mkdir");
            write(
                &d,
                &[("ifindex", &format!("{index}\n")), ("iflink", &format!("{link}\n"))],
            );
        }
        let host = |rx: u64, tx: u64| {
            format!("h\nh\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n vethA: {rx} 9 0 0 0 0 0 0 {tx} 18 0 0 0 0 0 0\n")
        };
        let mut veths = Veths::new(&proc_root);
        veths.update(&host(942, 1736));
        let mut files = Files::open(&Dirs::V2(dir)).expect("open");
        let mut buf = Vec::new();
        let t0 = Instant::now();
        // The first pass reads the container's own file and matches eth0
        // to vethA.
        let raw = files.read(&proc_root, &mut buf, t0, 0, &mut veths).expect("read");
        assert_eq!((raw.net_rx, raw.net_tx), (1736, 942));
        assert_eq!(files.descriptors(), 9, "its own net/dev stays open");
        // Later passes take what the host end sent and received (swapped),
        // not the container's file.
        std::fs::write(proc_root.join("4242/net/dev"), "changed\n").expect("rewrite");
        veths.update(&host(1000, 5000));
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(1), 0, &mut veths)
            .expect("read");
        assert_eq!((raw.net_rx, raw.net_tx), (5000, 1000), "from the host end");
        // The host end is gone: back to the container's own file at once.
        std::fs::write(proc_root.join("4242/net/dev"), NET_DEV).expect("restore");
        veths.update("h\nh\n");
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(2), 0, &mut veths)
            .expect("read");
        assert_eq!((raw.net_rx, raw.net_tx), (1736, 942), "own file");
    }

    #[test]
    fn v1_reads_throttling_and_block_io_when_cpu_usage_moves() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        let rel = PathBuf::from("docker").join(ID);
        v1_files(&root, &rel);
        let proc_root = proc_with_net(tmp.path(), 77);
        let dirs = locate(&root, Version::V1, ID).expect("found");
        let mut files = Files::open(&dirs).expect("open");
        let mut buf = Vec::new();
        let mut veths = Veths::new(&proc_root);
        let t0 = Instant::now();
        expect_v1(&files.read(&proc_root, &mut buf, t0, 0, &mut veths).expect("read"));

        let (cpu, blkio) = (root.join("cpu").join(&rel), root.join("blkio").join(&rel));
        write(&cpu, &[("cpu.stat", "nr_throttled 10\nthrottled_time 500000000\n")]);
        write(
            &blkio,
            &[(
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 4096\n8:0 Write 0\n",
            )],
        );
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(1), 0, &mut veths)
            .expect("read");
        assert_eq!(raw.throttled_periods, 9, "CPU usage did not move: not read");
        assert_eq!((raw.blkio_read, raw.blkio_write), (1025, 2050));
        write(&root.join("cpuacct").join(&rel), &[("cpuacct.usage", "1600000000\n")]);
        let raw = files
            .read(&proc_root, &mut buf, t0 + Duration::from_secs(2), 0, &mut veths)
            .expect("read");
        assert_eq!(raw.cpu_usage_ns, 1_600_000_000);
        assert_eq!((raw.throttled_periods, raw.throttled_ns), (10, 500_000_000));
        assert_eq!((raw.blkio_read, raw.blkio_write), (4096, 0));
        assert_eq!(raw.cpu_limit, Some(1.5), "limits stay as read");
    }

    #[test]
    fn missing_container_and_missing_hierarchy() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(tmp.path()), None, "an empty dir is no cgroup root");
        assert_eq!(locate(tmp.path(), Version::V2, ID), None);
        assert_eq!(locate(tmp.path(), Version::V1, ID), None);
        let gone = Dirs::V2(tmp.path().join("docker").join(ID));
        let err = read_container(&gone, tmp.path()).expect_err("gone");
        assert!(err.to_string().contains("cpu.stat"), "{err}");
    }

    #[test]
    fn parsers_tolerate_odd_input() {
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
        assert_eq!(parse_v1_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_net_dev("garbage"), (0, 0));
        assert_eq!(keyed("a 1\nab 2\n", "ab"), Some(2));
        assert_eq!(keyed("a x\n", "a"), None);
        assert_eq!(first_pid("\n"), None);
        assert_eq!(parse_u64("max"), 0);
    }
}

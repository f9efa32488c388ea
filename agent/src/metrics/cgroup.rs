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
//! Network counters are not in cgroups: they come from `PROC/PID/net/dev`
//! of the first process listed in the container's `cgroup.procs`, which
//! sees the container's network namespace.
//!
//! Everything here is plain blocking file I/O on pseudo-files (microseconds
//! each); the collector runs it on a blocking thread.

use std::path::{Path, PathBuf};

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

/// Why a container's counters could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

fn read(path: PathBuf) -> Result<String, ReadError> {
    std::fs::read_to_string(&path).map_err(|source| ReadError { path, source })
}

/// Reads a file that may be missing on some kernels or configurations
/// (e.g. blkio without the throttle policy): missing counts as empty.
fn read_optional(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Reads every counter of a container. Fails when a required file is
/// missing, which means the container (its cgroup) is gone.
pub fn read_container(dirs: &Dirs, proc_root: &Path) -> Result<Raw, ReadError> {
    let mut raw = match dirs {
        Dirs::V2(dir) => read_v2(dir)?,
        Dirs::V1 {
            cpuacct,
            cpu,
            memory,
            blkio,
        } => read_v1(cpuacct, cpu, memory, blkio)?,
    };
    let procs_dir = match dirs {
        Dirs::V2(dir) => dir,
        Dirs::V1 { memory, .. } => memory,
    };
    if let Some(pid) = first_pid(&read(procs_dir.join("cgroup.procs"))?) {
        // The process may exit between the two reads; its counters are then
        // simply missing this pass.
        let net = read_optional(proc_root.join(pid.to_string()).join("net").join("dev"));
        let (rx, tx) = parse_net_dev(&net);
        raw.net_rx = rx;
        raw.net_tx = tx;
    }
    Ok(raw)
}

fn read_v2(dir: &Path) -> Result<Raw, ReadError> {
    let cpu_stat = read(dir.join("cpu.stat"))?;
    let memory_stat = read_optional(dir.join("memory.stat"));
    let current = parse_u64(&read(dir.join("memory.current"))?);
    let inactive = keyed(&memory_stat, "inactive_file").unwrap_or(0);
    let events = read_optional(dir.join("memory.events"));
    let (blkio_read, blkio_write) = parse_io_stat(&read_optional(dir.join("io.stat")));
    Ok(Raw {
        cpu_usage_ns: keyed(&cpu_stat, "usage_usec").unwrap_or(0).saturating_mul(1000),
        throttled_periods: keyed(&cpu_stat, "nr_throttled").unwrap_or(0),
        throttled_ns: keyed(&cpu_stat, "throttled_usec").unwrap_or(0).saturating_mul(1000),
        cpu_limit: parse_cpu_max(&read_optional(dir.join("cpu.max"))),
        memory_bytes: current.saturating_sub(inactive),
        memory_limit: parse_memory_max(&read_optional(dir.join("memory.max"))),
        oom_kills: keyed(&events, "oom_kill").unwrap_or(0),
        blkio_read,
        blkio_write,
        net_rx: 0,
        net_tx: 0,
    })
}

fn read_v1(cpuacct: &Path, cpu: &Path, memory: &Path, blkio: &Path) -> Result<Raw, ReadError> {
    let usage = parse_u64(&read(cpuacct.join("cpuacct.usage"))?);
    let cpu_stat = read_optional(cpu.join("cpu.stat"));
    let quota = read_optional(cpu.join("cpu.cfs_quota_us"));
    let period = read_optional(cpu.join("cpu.cfs_period_us"));
    let current = parse_u64(&read(memory.join("memory.usage_in_bytes"))?);
    let memory_stat = read_optional(memory.join("memory.stat"));
    let inactive = keyed(&memory_stat, "total_inactive_file").unwrap_or(0);
    let limit = parse_u64(&read_optional(memory.join("memory.limit_in_bytes")));
    let oom = read_optional(memory.join("memory.oom_control"));
    let mut io = read_optional(blkio.join("blkio.throttle.io_service_bytes_recursive"));
    if io.is_empty() {
        io = read_optional(blkio.join("blkio.throttle.io_service_bytes"));
    }
    let (blkio_read, blkio_write) = parse_v1_blkio(&io);
    Ok(Raw {
        cpu_usage_ns: usage,
        throttled_periods: keyed(&cpu_stat, "nr_throttled").unwrap_or(0),
        throttled_ns: keyed(&cpu_stat, "throttled_time").unwrap_or(0),
        cpu_limit: parse_v1_quota(&quota, &period),
        memory_bytes: current.saturating_sub(inactive),
        memory_limit: v1_limit(limit),
        oom_kills: keyed(&oom, "oom_kill").unwrap_or(0),
        blkio_read,
        blkio_write,
        net_rx: 0,
        net_tx: 0,
    })
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
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
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
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let fields: Vec<&str> = counters.split_whitespace().collect();
        if fields.len() < 9 {
            continue;
        }
        rx = rx.saturating_add(fields[0].parse().unwrap_or(0));
        tx = tx.saturating_add(fields[8].parse().unwrap_or(0));
    }
    (rx, tx)
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

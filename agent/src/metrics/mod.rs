//! Metrics: one collector task samples the host and every service's running
//! container at `[metrics] interval` and publishes a [`Snapshot`].
//!
//! Inputs: procfs for the host ([`host`]), the cgroup filesystem for
//! containers ([`cgroup`]; v1 or v2, found at start) with their traffic
//! from the host ends of their veth pairs ([`veth`]), and two `watch`
//! channels ([`Inputs`]): the [`MetricsTarget`]s the supervisor publishes
//! after every change (which container is whose, restarts, OOM kills,
//! health), and the Docker client once the agent has reached Docker.
//! Containers whose cgroup files cannot be read fall back to Docker's
//! one-shot stats ([`dockerstats`]). No blocking Docker stats call is made
//! otherwise.
//!
//! Output: the newest snapshot in a `tokio::sync::watch` channel. Readers
//! (the `WatchMetrics` streams, the Prometheus endpoint in [`prometheus`],
//! the StatsD pusher in [`statsd`], the memory-pressure policy) each look
//! at the newest snapshot when they are ready; publishing never waits for
//! any of them, so a slow reader only misses snapshots, and knows how many
//! from the sequence numbers.
//!
//! Cost: the file reading runs on one long-lived sampler thread that keeps
//! every file open between passes and re-reads it with `pread` into one
//! reused buffer ([`procfile`]); a container's files are closed when it
//! stops being a service's primary. The pass's timings and the number of
//! files held are in the snapshot (`berth_metrics_pass_seconds`,
//! `berth_metrics_open_files`).
//!
//! Shutdown: the collector stops on cancel and drops the sender, which
//! ends every reader and the sampler thread.

pub mod cgroup;
pub mod dockerstats;
pub mod host;
pub mod netdev;
pub mod procfile;
pub mod prometheus;
pub mod statsd;
pub mod veth;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{Config, MetricsConfig};

/// Docker stats calls in flight at once during a fallback pass: enough to
/// hide a round trip, few enough not to load dockerd.
const STATS_CONCURRENCY: usize = 4;

/// One desired service as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTarget {
    /// Service name.
    pub service: String,
    /// Active revision.
    pub revision: u64,
    /// Spec `priority` (lower is acted on first under memory pressure).
    pub priority: i32,
    /// Full id of its running container of the active revision, if any.
    pub container_id: Option<String>,
    /// Restarts by the agent since it started.
    pub restarts: u32,
    /// OOM kills seen since the agent started.
    pub oom_kills: u32,
    /// Docker `update` events seen since the agent started: when this
    /// moves, the container's limits are re-read at the next pass instead
    /// of at the next [`cgroup::REVALIDATE`].
    pub updates: u32,
    /// "healthy", "unhealthy", "starting", or "" without a health check.
    pub health: String,
    /// Its `[health.deps]` check is failing.
    pub degraded: bool,
    /// Why the memory-pressure policy holds it stopped, if it does.
    pub held: Option<String>,
    /// The spec's CPU limit in CPUs, if any.
    pub cpus: Option<f64>,
}

/// What the collector reads besides the host: both are read afresh at
/// every pass, so nothing is ever waited for.
pub struct Inputs {
    /// The services to sample, as the supervisor last published them.
    pub targets: watch::Receiver<Arc<Vec<MetricsTarget>>>,
    /// The Docker client for the stats fallback; `None` until Docker is reached.
    pub docker: watch::Receiver<Option<bollard::Docker>>,
}

/// The host at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    /// Busy share of all CPUs since the previous pass, 0-100.
    pub cpu_percent: f64,
    /// Logical CPUs.
    pub cpus: u32,
    /// Physical memory.
    pub memory_total_bytes: u64,
    /// Memory available to new work without swapping (`MemAvailable`).
    pub memory_available_bytes: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Space per mounted file system.
    pub disks: Vec<DiskSample>,
    /// Traffic per interface.
    pub networks: Vec<NetSample>,
}

/// Space on one mounted file system.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskSample {
    /// Mount point.
    pub mount: String,
    /// Size.
    pub total_bytes: u64,
    /// Free space usable by unprivileged users.
    pub available_bytes: u64,
}

/// Traffic counters of one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetSample {
    /// Interface name.
    pub interface: String,
    /// Bytes received since boot.
    pub rx_bytes: u64,
    /// Bytes sent since boot.
    pub tx_bytes: u64,
}

/// One service and its running container at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    /// Service name.
    pub service: String,
    /// Full container id; empty when the service has no running container.
    pub container_id: String,
    /// Active revision.
    pub revision: u64,
    /// Spec priority (memory-pressure order).
    pub priority: i32,
    /// CPU use since the previous pass, in percent of one CPU.
    pub cpu_percent: f64,
    /// CPU time used by the container, in seconds (a counter).
    pub cpu_seconds: f64,
    /// CPU limit in CPUs; 0 = none.
    pub cpu_limit: f64,
    /// CFS periods in which it was throttled (a counter).
    pub cpu_throttled_periods: u64,
    /// Time spent throttled, in nanoseconds (a counter).
    pub cpu_throttled_ns: u64,
    /// Memory in use, without inactive file cache.
    pub memory_bytes: u64,
    /// Memory limit; 0 = none.
    pub memory_limit_bytes: u64,
    /// OOM kills of the service since the agent started (Docker's events).
    pub oom_kills: u64,
    /// OOM kills inside the current container's cgroup (kills of a process
    /// other than PID 1 leave the container running and show here).
    pub cgroup_oom_kills: u64,
    /// Bytes received (a counter, loopback excluded).
    pub net_rx_bytes: u64,
    /// Bytes sent (a counter, loopback excluded).
    pub net_tx_bytes: u64,
    /// Bytes read from block devices (a counter).
    pub blkio_read_bytes: u64,
    /// Bytes written to block devices (a counter).
    pub blkio_write_bytes: u64,
    /// Restarts by the agent since it started.
    pub restarts: u32,
    /// "healthy", "unhealthy", "starting" or "" (no check or not running).
    pub health: String,
    /// Its `[health.deps]` check is failing.
    pub degraded: bool,
    /// Why the memory-pressure policy holds it stopped, if it does.
    pub held: Option<String>,
    /// Where the counters came from: "cgroup-v1", "cgroup-v2",
    /// "docker-stats", or "" when not running.
    pub source: &'static str,
}

/// Everything one collection pass saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// 1 for the first pass, then +1 per pass; 0 = nothing collected yet.
    pub seq: u64,
    /// When the pass ran, ms since the epoch.
    pub timestamp_ms: u64,
    /// The host.
    pub host: HostSample,
    /// One entry per desired service, by name.
    pub containers: Vec<ContainerSample>,
    /// "cgroup-v1", "cgroup-v2" or "docker-stats"; "+docker-stats" is
    /// appended when some containers needed the fallback.
    pub source: String,
    /// Time the host part of the pass took.
    pub host_elapsed: Duration,
    /// Time the container part of the pass took.
    pub containers_elapsed: Duration,
    /// CPU time the sampler thread spent on the host part: the pass's cost
    /// without the time it waited for a core.
    pub host_cpu: Duration,
    /// CPU time the sampler thread spent reading the containers' files.
    pub containers_cpu: Duration,
    /// Containers read in this pass.
    pub containers_read: u32,
    /// Container cgroup and procfs files the collector holds open.
    pub open_files: usize,
    /// Containers whose traffic the pass took from the host ends of their
    /// veth pairs ([`veth`]) rather than their own `net/dev`.
    pub containers_net_from_host: u32,
}

/// One alert instance as the Prometheus endpoint shows it
/// (`berth_alert_active`); published by `crate::alerts` after every pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGauge {
    /// The rule's name.
    pub alert: String,
    /// The service, or "" for a host rule.
    pub service: String,
    /// Firing.
    pub active: bool,
}

/// A handle readers subscribe with.
#[derive(Clone)]
pub struct MetricsHub {
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl MetricsHub {
    /// A receiver of the newest snapshot (seq 0 until the first pass).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    /// The newest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }
}

/// Where container counters come from on this host, decided at start.
pub fn container_source(config: &MetricsConfig) -> Option<cgroup::Version> {
    cgroup::detect(&config.cgroup_root)
}

/// The metrics part of `GetInfo`'s capabilities.
pub fn capabilities(config: &Config) -> Vec<String> {
    let mut caps = vec!["metrics".to_owned()];
    match container_source(&config.metrics) {
        Some(v) => caps.push(format!("metrics.{}", v.as_str())),
        None => caps.push("metrics.docker-stats-fallback".to_owned()),
    }
    if !config.metrics.prometheus_listen.is_empty() {
        caps.push("metrics.prometheus".to_owned());
    }
    if !config.metrics.statsd.is_empty() {
        caps.push("metrics.statsd".to_owned());
    }
    if !config.limits.memory_pressure_threshold.is_empty() {
        caps.push("limits.memory-pressure".to_owned());
    }
    caps
}

/// What reading one container's files gave.
enum FileRead {
    /// Counters from the cgroup files.
    Cgroup(cgroup::Raw),
    /// No readable cgroup: ask Docker.
    NeedsFallback,
    /// The service has no running container.
    NotRunning,
}

/// The blocking half of the collector: the host's open files and every
/// container's open cgroup files. Owned by the sampler thread.
struct FileState {
    version: Option<cgroup::Version>,
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    host: host::HostCollector,
    /// The host ends of containers' veth pairs, from the host part of the
    /// pass, for the containers' traffic.
    veths: veth::Veths,
    /// Open files per container id, kept while the container is some
    /// service's primary, with the last pass that read them.
    files: HashMap<String, (u64, cgroup::Files)>,
    /// Passes run, to tell the files this pass read from the others.
    passes: u64,
    /// Scratch space every file is read into.
    buf: Vec<u8>,
}

/// What one pass over the files gave.
struct PassRead {
    host: HostSample,
    host_elapsed: Duration,
    host_cpu: Duration,
    reads: Vec<FileRead>,
    containers_elapsed: Duration,
    containers_cpu: Duration,
}

impl FileState {
    fn new(config: &MetricsConfig) -> Self {
        FileState {
            version: container_source(config),
            cgroup_root: config.cgroup_root.clone(),
            proc_root: config.proc_root.clone(),
            host: host::HostCollector::new(&config.proc_root),
            veths: veth::Veths::new(&config.proc_root),
            files: HashMap::new(),
            passes: 0,
            buf: Vec::new(),
        }
    }

    fn read(&mut self, targets: &[MetricsTarget]) -> PassRead {
        let mut watch = Stopwatch::start();
        let host = self.host.sample(&mut self.buf, &mut self.veths);
        let (host_elapsed, host_cpu) = watch.lap();
        let now = watch.last;
        self.passes += 1;
        let pass = self.passes;
        let reads = targets
            .iter()
            .map(|target| {
                let Some(id) = target.container_id.as_deref() else {
                    return FileRead::NotRunning;
                };
                let Some(version) = self.version else {
                    return FileRead::NeedsFallback;
                };
                if let Some((seen, files)) = self.files.get_mut(id) {
                    *seen = pass;
                    match files.read(&self.proc_root, &mut self.buf, now, target.updates, &mut self.veths) {
                        Ok(raw) => return FileRead::Cgroup(raw),
                        // The cgroup was removed under the open files (a
                        // `docker restart` keeps the id but makes a new
                        // cgroup): close them and look afresh below.
                        Err(e) => {
                            debug!(container = id, error = %e, "Container cgroup files went stale; reopening.");
                            self.files.remove(id);
                        }
                    }
                }
                let Some(dirs) = cgroup::locate(&self.cgroup_root, version, id) else {
                    return FileRead::NeedsFallback;
                };
                let read = cgroup::Files::open(&dirs).and_then(|mut files| {
                    let raw = files.read(&self.proc_root, &mut self.buf, now, target.updates, &mut self.veths)?;
                    Ok((files, raw))
                });
                match read {
                    Ok((files, raw)) => {
                        self.files.insert(id.to_owned(), (pass, files));
                        FileRead::Cgroup(raw)
                    }
                    Err(e) => {
                        // Gone since the supervisor last looked, most likely.
                        debug!(container = id, error = %e, "Cannot read container cgroup.");
                        FileRead::NeedsFallback
                    }
                }
            })
            .collect();
        // Close the files of containers no longer anybody's primary.
        self.files.retain(|_, (seen, _)| *seen == pass);
        let (containers_elapsed, containers_cpu) = watch.lap();
        PassRead {
            host,
            host_elapsed,
            host_cpu,
            reads,
            containers_elapsed,
            containers_cpu,
        }
    }

    /// The files held open for containers.
    fn held(&self) -> FilesHeld {
        FilesHeld {
            descriptors: self.files.values().map(|(_, f)| f.descriptors()).sum(),
            net_from_host: self.files.values().map(|(_, f)| u32::from(f.net_from_host())).sum(),
        }
    }
}

/// Wall clock and the thread's CPU time, read together, so each part of a
/// pass is timed over the same span by both.
struct Stopwatch {
    last: Instant,
    last_cpu: Duration,
}

impl Stopwatch {
    fn start() -> Self {
        Stopwatch {
            last: Instant::now(),
            last_cpu: crate::clock::thread_cpu(),
        }
    }

    /// Wall and CPU time since the previous lap (or the start).
    fn lap(&mut self) -> (Duration, Duration) {
        let (now, cpu) = (Instant::now(), crate::clock::thread_cpu());
        let lap = (now - self.last, cpu.saturating_sub(self.last_cpu));
        (self.last, self.last_cpu) = (now, cpu);
        lap
    }
}

/// A pass the sampler thread is asked for: the targets to read, and where
/// to send what it read.
type PassRequest = (
    Arc<Vec<MetricsTarget>>,
    tokio::sync::oneshot::Sender<(PassRead, FilesHeld)>,
);

/// What the sampler thread holds after a pass.
struct FilesHeld {
    /// Descriptors open for containers.
    descriptors: usize,
    /// Containers whose traffic comes from the host ends of their veth
    /// pairs.
    net_from_host: u32,
}

/// Starts the sampler thread: it owns the open files and runs one pass per
/// request, off the async workers (a `statvfs` of a hung network mount
/// blocks only it). One long-lived thread rather than `spawn_blocking`
/// per pass, whose pool would start a fresh thread for every pass at
/// intervals longer than its keep-alive. It ends when the collector drops
/// the sender.
fn spawn_sampler(config: &MetricsConfig) -> std::io::Result<std::sync::mpsc::SyncSender<PassRequest>> {
    // One pass in flight at a time: the collector waits for each reply.
    let (tx, rx) = std::sync::mpsc::sync_channel::<PassRequest>(1);
    let mut state = FileState::new(config);
    std::thread::Builder::new()
        .name("berth-metrics".into())
        .spawn(move || {
            while let Ok((targets, reply)) = rx.recv() {
                let read = state.read(&targets);
                let _ = reply.send((read, state.held()));
            }
        })?;
    Ok(tx)
}

/// The previous CPU reading of a container, for rates.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    usage_ns: u64,
    at: Instant,
}

/// CPU use between two readings, in percent of one CPU; 0 without a usable
/// earlier reading (first sight, or a counter that went back because the
/// container restarted).
pub fn cpu_percent(prev_usage_ns: Option<u64>, prev_at: Option<Instant>, usage_ns: u64, now: Instant) -> f64 {
    match (prev_usage_ns, prev_at) {
        (Some(before), Some(at)) if usage_ns >= before => {
            let wall = now.saturating_duration_since(at).as_nanos() as f64;
            if wall <= 0.0 {
                0.0
            } else {
                (usage_ns - before) as f64 / wall * 100.0
            }
        }
        _ => 0.0,
    }
}

/// Starts the collector on `tracker`; returns the hub readers subscribe to.
pub fn spawn(
    config: &Config,
    inputs: Inputs,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> MetricsHub {
    use tracing::Instrument as _;
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let interval = config.metrics.interval.as_std();
    let metrics_config = config.metrics.clone();
    tracker
        .spawn(collect_loop(metrics_config, interval, inputs, tx, cancel).instrument(tracing::info_span!("metrics")));
    MetricsHub { rx }
}

async fn collect_loop(
    config: MetricsConfig,
    interval: Duration,
    inputs: Inputs,
    tx: watch::Sender<Arc<Snapshot>>,
    cancel: CancellationToken,
) {
    let version = container_source(&config);
    let sampler = match spawn_sampler(&config) {
        Ok(tx) => tx,
        Err(e) => {
            warn!(error = %e, "Cannot start the metrics sampler thread; no metrics will be collected.");
            return;
        }
    };
    let mut marks: HashMap<String, CpuMark> = HashMap::new();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(interval);
    // A pass that overran is not followed by a burst of catch-up passes.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let targets: Arc<Vec<MetricsTarget>> = inputs.targets.borrow().clone();
        let docker = inputs.docker.borrow().clone();
        let (reply, replied) = tokio::sync::oneshot::channel();
        if sampler.send((targets.clone(), reply)).is_err() {
            warn!("The metrics sampler thread ended; no more metrics will be collected.");
            break;
        }
        let Ok((
            PassRead {
                host,
                host_elapsed,
                host_cpu,
                reads,
                mut containers_elapsed,
                containers_cpu,
            },
            held,
        )) = replied.await
        else {
            warn!("The metrics sampler thread ended during a pass; no more metrics will be collected.");
            break;
        };

        // Containers without readable cgroup files: Docker's one-shot stats.
        let fallback_ids: Vec<String> = targets
            .iter()
            .zip(&reads)
            .filter(|(_, r)| matches!(r, FileRead::NeedsFallback))
            .filter_map(|(t, _)| t.container_id.clone())
            .collect();
        let mut fallback: HashMap<String, cgroup::Raw> = HashMap::new();
        if let (false, Some(docker)) = (fallback_ids.is_empty(), docker) {
            let t = Instant::now();
            let results: Vec<(String, Result<cgroup::Raw, String>)> = futures::stream::iter(fallback_ids)
                .map(|id| {
                    let docker = docker.clone();
                    async move {
                        let r = dockerstats::read(&docker, &id).await;
                        (id, r)
                    }
                })
                .buffer_unordered(STATS_CONCURRENCY)
                .collect()
                .await;
            for (id, r) in results {
                match r {
                    Ok(raw) => {
                        fallback.insert(id, raw);
                    }
                    Err(e) => debug!(container = %id, error = %e, "No stats for this container this pass."),
                }
            }
            containers_elapsed += t.elapsed();
        }

        let now = Instant::now();
        let mut used_fallback = false;
        let mut containers_read = 0u32;
        let mut containers = Vec::with_capacity(targets.len());
        for (target, read) in targets.iter().zip(reads) {
            let id = target.container_id.clone().unwrap_or_default();
            let (raw, source) = match read {
                FileRead::Cgroup(raw) => (Some(raw), version.map_or("", cgroup::Version::as_str)),
                FileRead::NeedsFallback => match fallback.remove(&id) {
                    Some(raw) => {
                        used_fallback = true;
                        (Some(raw), "docker-stats")
                    }
                    None => (None, ""),
                },
                FileRead::NotRunning => (None, ""),
            };
            let mut sample = ContainerSample {
                service: target.service.clone(),
                container_id: id.clone(),
                revision: target.revision,
                priority: target.priority,
                oom_kills: u64::from(target.oom_kills),
                restarts: target.restarts,
                health: target.health.clone(),
                degraded: target.degraded,
                held: target.held.clone(),
                source,
                ..Default::default()
            };
            if let Some(raw) = raw {
                containers_read += 1;
                let prev = marks.get(&id);
                sample.cpu_percent = cpu_percent(prev.map(|m| m.usage_ns), prev.map(|m| m.at), raw.cpu_usage_ns, now);
                marks.insert(
                    id.clone(),
                    CpuMark {
                        usage_ns: raw.cpu_usage_ns,
                        at: now,
                    },
                );
                sample.cpu_seconds = raw.cpu_usage_ns as f64 / 1e9;
                sample.cpu_limit = raw.cpu_limit.or(target.cpus).unwrap_or(0.0);
                sample.cpu_throttled_periods = raw.throttled_periods;
                sample.cpu_throttled_ns = raw.throttled_ns;
                sample.memory_bytes = raw.memory_bytes;
                sample.memory_limit_bytes = raw.memory_limit.unwrap_or(0);
                sample.cgroup_oom_kills = raw.oom_kills;
                sample.net_rx_bytes = raw.net_rx;
                sample.net_tx_bytes = raw.net_tx;
                sample.blkio_read_bytes = raw.blkio_read;
                sample.blkio_write_bytes = raw.blkio_write;
            }
            containers.push(sample);
        }
        marks.retain(|id, _| targets.iter().any(|t| t.container_id.as_deref() == Some(id.as_str())));

        let source = match (version, used_fallback) {
            (Some(v), false) => v.as_str().to_owned(),
            (Some(v), true) => format!("{}+docker-stats", v.as_str()),
            (None, _) => "docker-stats".to_owned(),
        };
        seq += 1;
        let snapshot = Snapshot {
            seq,
            timestamp_ms: crate::clock::now_ms(),
            host,
            containers,
            source,
            host_elapsed,
            containers_elapsed,
            host_cpu,
            containers_cpu,
            containers_read,
            open_files: held.descriptors,
            containers_net_from_host: held.net_from_host,
        };
        debug!(
            seq,
            containers = containers_read,
            host_us = host_elapsed.as_micros() as u64,
            containers_us = containers_elapsed.as_micros() as u64,
            containers_cpu_us = containers_cpu.as_micros() as u64,
            "Metrics pass done."
        );
        // Never waits: readers look at the newest value when they are ready.
        tx.send_replace(Arc::new(snapshot));
    }
    debug!("Metrics collector stopped.");
}

/// The services a watcher asked for; empty = all.
pub fn wanted(filter: &[String], service: &str) -> bool {
    filter.is_empty() || filter.iter().any(|f| f == service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_a_rate_of_one_cpu() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        // 1 CPU-second over 2 wall seconds = 50% of one CPU.
        let p = cpu_percent(Some(1_000_000_000), Some(t0), 2_000_000_000, t1);
        assert!((p - 50.0).abs() < 1e-9, "{p}");
        // Two full CPUs = 200%.
        let p = cpu_percent(Some(0), Some(t0), 4_000_000_000, t1);
        assert!((p - 200.0).abs() < 1e-9, "{p}");
        assert_eq!(cpu_percent(None, None, 5, t1), 0.0, "first sight");
        assert_eq!(cpu_percent(Some(10), Some(t0), 5, t1), 0.0, "counter reset");
        assert_eq!(cpu_percent(Some(1), Some(t1), 5, t1), 0.0, "no time passed");
    }

    #[test]
    fn filter_matches_names() {
        assert!(wanted(&[], "web"));
        assert!(wanted(&["web".into()], "web"));
        assert!(!wanted(&["web".into()], "worker"));
    }

    fn target(service: &str, id: Option<&str>) -> MetricsTarget {
        MetricsTarget {
            service: service.into(),
            revision: 1,
            priority: 0,
            container_id: id.map(str::to_owned),
            restarts: 0,
            oom_kills: 0,
            updates: 0,
            health: String::new(),
            degraded: false,
            held: None,
            cpus: None,
        }
    }

    #[test]
    fn files_are_kept_between_passes_and_closed_with_the_container() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("cgroup");
        let ids = ["a".repeat(64), "b".repeat(64)];
        std::fs::create_dir_all(&root).expect("root");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory\n").expect("controllers");
        for (n, id) in ids.iter().enumerate() {
            let c = root.join("docker").join(id);
            std::fs::create_dir_all(&c).expect("container dir");
            std::fs::write(c.join("cgroup.procs"), "").expect("procs");
            std::fs::write(c.join("cpu.stat"), format!("usage_usec {}\n", n + 1)).expect("cpu.stat");
            std::fs::write(c.join("memory.current"), "4096\n").expect("memory.current");
        }
        let mut config = crate::config::Config::parse("", std::path::Path::new("t.toml"))
            .expect("config")
            .metrics;
        config.cgroup_root = root.clone();
        config.proc_root = dir.path().join("proc");
        let mut state = FileState::new(&config);
        let both = [
            target("a", Some(&ids[0])),
            target("b", Some(&ids[1])),
            target("idle", None),
        ];
        let pass = state.read(&both);
        assert!(matches!(pass.reads[0], FileRead::Cgroup(ref r) if r.cpu_usage_ns == 1000));
        assert!(matches!(pass.reads[1], FileRead::Cgroup(ref r) if r.cpu_usage_ns == 2000));
        assert!(matches!(pass.reads[2], FileRead::NotRunning));
        // cpu.stat, memory.current and cgroup.procs each.
        assert_eq!(state.held().descriptors, 6);

        // Counters move in the kept files; the next pass sees them.
        std::fs::write(root.join("docker").join(&ids[0]).join("cpu.stat"), "usage_usec 7\n").expect("rewrite");
        let pass = state.read(&both);
        assert!(matches!(pass.reads[0], FileRead::Cgroup(ref r) if r.cpu_usage_ns == 7000));

        // b is nobody's primary any more: its files are closed.
        let pass = state.read(&both[..1]);
        assert_eq!(pass.reads.len(), 1);
        assert_eq!(state.files.len(), 1);
        assert_eq!(state.held().descriptors, 3);
        let pass = state.read(&[]);
        assert!(pass.reads.is_empty());
        assert_eq!(state.held().descriptors, 0, "every file closed");
    }

    #[test]
    fn capabilities_name_the_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::config::Config::parse("", std::path::Path::new("t.toml")).expect("config");
        config.metrics.cgroup_root = dir.path().to_owned();
        config.metrics.prometheus_listen = String::new();
        let caps = capabilities(&config);
        assert!(caps.contains(&"metrics.docker-stats-fallback".to_owned()), "{caps:?}");
        assert!(!caps.iter().any(|c| c == "metrics.prometheus"), "{caps:?}");
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").expect("write");
        let caps = capabilities(&config);
        assert!(caps.contains(&"metrics.cgroup-v2".to_owned()), "{caps:?}");
    }
}

//! The fallback for containers whose cgroup files cannot be read (the agent
//! runs without the host's cgroupfs, or Docker uses a custom
//! `--cgroup-parent`): one non-streaming, one-shot `GET /containers/ID/stats`
//! per container, turned into the same [`Raw`] counters.
//!
//! One-shot stats return at once instead of waiting a second for Docker's
//! own second sample; the collector computes rates from its previous pass,
//! as it does for cgroup counters.

use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptions;
use futures::StreamExt as _;

use super::cgroup::Raw;

/// The most a stats call may take; a slower engine loses that container's
/// sample for the pass rather than delaying the whole snapshot.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// One-shot stats of container `id`.
pub async fn read(docker: &Docker, id: &str) -> Result<Raw, String> {
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    let mut stream = docker.stats(id, Some(options));
    let next = tokio::time::timeout(STATS_TIMEOUT, stream.next())
        .await
        .map_err(|_| format!("docker stats {id}: no answer within {}s", STATS_TIMEOUT.as_secs()))?;
    match next {
        Some(Ok(stats)) if is_empty(&stats) => Err(format!(
            "docker stats {id}: the engine has no stats for this container (`docker stats` shows 0B / 0B too)"
        )),
        Some(Ok(stats)) => Ok(raw_of(&stats)),
        Some(Err(e)) => Err(format!("docker stats {id}: {e}")),
        None => Err(format!("docker stats {id}: empty answer")),
    }
}

/// An engine that cannot read the container's cgroups answers with an
/// empty sample (zero read time, no memory stats, zero CPU) rather than an
/// error; that is "no data", not "zero use".
pub fn is_empty(s: &ContainerStatsResponse) -> bool {
    let no_memory = s.memory_stats.as_ref().is_none_or(|m| m.usage.is_none());
    let no_cpu = s
        .cpu_stats
        .as_ref()
        .and_then(|c| c.cpu_usage.as_ref())
        .and_then(|u| u.total_usage)
        .unwrap_or(0)
        == 0;
    no_memory && no_cpu
}

/// Docker's stats → counters.
pub fn raw_of(s: &ContainerStatsResponse) -> Raw {
    let cpu = s.cpu_stats.as_ref();
    let throttling = cpu.and_then(|c| c.throttling_data.as_ref());
    let memory = s.memory_stats.as_ref();
    let usage = memory.and_then(|m| m.usage).unwrap_or(0);
    // What `docker stats` subtracts: inactive file cache (v2 "inactive_file",
    // v1 "total_inactive_file").
    let inactive = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    let limit = memory.and_then(|m| m.limit).filter(|l| *l > 0 && *l < (1 << 62));
    let (mut read, mut write) = (0u64, 0u64);
    for e in s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
    {
        let v = e.value.unwrap_or(0);
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read = read.saturating_add(v),
            Some("write") => write = write.saturating_add(v),
            _ => {}
        }
    }
    let (mut rx, mut tx) = (0u64, 0u64);
    for n in s.networks.as_ref().into_iter().flat_map(|n| n.values()) {
        rx = rx.saturating_add(n.rx_bytes.unwrap_or(0));
        tx = tx.saturating_add(n.tx_bytes.unwrap_or(0));
    }
    Raw {
        cpu_usage_ns: cpu
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0),
        throttled_periods: throttling.and_then(|t| t.throttled_periods).unwrap_or(0),
        throttled_ns: throttling.and_then(|t| t.throttled_time).unwrap_or(0),
        // Docker's stats do not carry the CPU limit; the collector fills it
        // in from the container's NanoCpus.
        cpu_limit: None,
        memory_bytes: usage.saturating_sub(inactive),
        memory_limit: limit,
        // Not in Docker's stats; the supervisor counts OOM kills from events.
        oom_kills: 0,
        blkio_read: read,
        blkio_write: write,
        net_rx: rx,
        net_tx: tx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_maps_to_counters() {
        let json = r#"{
          "cpu_stats": {"cpu_usage": {"total_usage": 123456789},
                        "throttling_data": {"periods": 10, "throttled_periods": 4, "throttled_time": 5000}},
          "memory_stats": {"usage": 10000, "limit": 67108864, "stats": {"total_inactive_file": 1000}},
          "blkio_stats": {"io_service_bytes_recursive": [
              {"major": 8, "minor": 0, "op": "Read", "value": 4096},
              {"major": 8, "minor": 0, "op": "write", "value": 512},
              {"major": 8, "minor": 0, "op": "Total", "value": 4608}]},
          "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}}
        }"#;
        let stats: ContainerStatsResponse = serde_json::from_str(json).expect("stats json");
        assert!(!is_empty(&stats));
        let raw = raw_of(&stats);
        assert_eq!(raw.cpu_usage_ns, 123_456_789);
        assert_eq!(raw.throttled_periods, 4);
        assert_eq!(raw.throttled_ns, 5000);
        assert_eq!(raw.memory_bytes, 9000);
        assert_eq!(raw.memory_limit, Some(67_108_864));
        assert_eq!((raw.blkio_read, raw.blkio_write), (4096, 512));
        assert_eq!((raw.net_rx, raw.net_tx), (101, 52));
    }

    #[test]
    fn an_engine_without_stats_is_no_data() {
        // What Docker 20.10 answers on an engine that cannot read cgroups.
        let json = r#"{"read":"0001-01-01T00:00:00Z","pids_stats":{},"memory_stats":{},
          "cpu_stats":{"cpu_usage":{"total_usage":0},"throttling_data":{"periods":0}}}"#;
        let stats: ContainerStatsResponse = serde_json::from_str(json).expect("stats json");
        assert!(is_empty(&stats));
    }
}

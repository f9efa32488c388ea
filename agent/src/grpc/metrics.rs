//! The `berth.v1.Metrics` service: `WatchMetrics`, a stream of snapshots at
//! the agent's collection interval, as a thin adapter over the
//! [`MetricsHub`].
//!
//! Each watcher gets its own forwarding task, on the agent's tracker, that
//! reads the newest snapshot whenever the client has taken the previous
//! one. Collection never waits for a watcher: a slow one skips snapshots
//! and the next one it gets says how many in `dropped`. The stream starts
//! with the newest snapshot (so a one-shot `berthctl metrics` answers at
//! once), and ends when the client hangs up, the agent shuts down, or the
//! collector stops.

use std::pin::Pin;

use berth_proto::v1::metrics_server::Metrics;
use berth_proto::v1::{self as pb, MetricsSnapshot, WatchMetricsRequest};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::services::Streams;
use crate::metrics::{MetricsHub, Snapshot, wanted};

/// The Metrics API.
pub struct MetricsApi {
    hub: MetricsHub,
    streams: Streams,
}

impl MetricsApi {
    /// Serves snapshots from `hub`; streams run on `streams` and end when
    /// the agent shuts down.
    pub fn new(hub: MetricsHub, streams: Streams) -> Self {
        MetricsApi { hub, streams }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Domain snapshot → wire, keeping only the `filter`ed services.
pub fn snapshot_of(s: &Snapshot, filter: &[String], dropped: u64) -> MetricsSnapshot {
    let h = &s.host;
    MetricsSnapshot {
        timestamp_ms: s.timestamp_ms,
        host: Some(pb::HostMetrics {
            cpu_percent: h.cpu_percent,
            cpus: h.cpus,
            memory_total_bytes: h.memory_total_bytes,
            memory_available_bytes: h.memory_available_bytes,
            load1: h.load[0],
            load5: h.load[1],
            load15: h.load[2],
            disks: h
                .disks
                .iter()
                .map(|d| pb::DiskMetrics {
                    mount: d.mount.clone(),
                    total_bytes: d.total_bytes,
                    available_bytes: d.available_bytes,
                })
                .collect(),
            networks: h
                .networks
                .iter()
                .map(|n| pb::NetworkMetrics {
                    interface: n.interface.clone(),
                    rx_bytes: n.rx_bytes,
                    tx_bytes: n.tx_bytes,
                })
                .collect(),
        }),
        containers: s
            .containers
            .iter()
            .filter(|c| wanted(filter, &c.service))
            .map(|c| pb::ContainerMetrics {
                service: c.service.clone(),
                container_id: c.container_id.clone(),
                revision: c.revision,
                cpu_percent: c.cpu_percent,
                cpu_limit: c.cpu_limit,
                cpu_throttled_periods: c.cpu_throttled_periods,
                cpu_throttled_ns: c.cpu_throttled_ns,
                memory_bytes: c.memory_bytes,
                memory_limit_bytes: c.memory_limit_bytes,
                oom_kills: c.oom_kills,
                net_rx_bytes: c.net_rx_bytes,
                net_tx_bytes: c.net_tx_bytes,
                blkio_read_bytes: c.blkio_read_bytes,
                blkio_write_bytes: c.blkio_write_bytes,
                restarts: c.restarts,
                health: match &c.held {
                    Some(_) => "held".to_owned(),
                    None => c.health.clone(),
                },
            })
            .collect(),
        dropped,
        source: s.source.clone(),
    }
}

#[tonic::async_trait]
impl Metrics for MetricsApi {
    type WatchMetricsStream = BoxStream<MetricsSnapshot>;

    async fn watch_metrics(
        &self,
        request: Request<WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        super::caller(&request)?;
        let peer = request.extensions().get::<super::listener::PeerInfo>().cloned();
        let filter = request.into_inner().services;
        let mut rx = self.hub.subscribe();
        let cancel = self.streams.cancel.clone();
        // One message in flight per watcher: anything more would only be
        // stale by the time a slow client reads it.
        let (tx, out) = mpsc::channel(1);
        self.streams.tracker.spawn(async move {
            let mut last_sent: Option<u64> = None;
            loop {
                let snapshot = rx.borrow_and_update().clone();
                if snapshot.seq > 0 && last_sent != Some(snapshot.seq) {
                    let dropped = last_sent.map_or(0, |last| snapshot.seq.saturating_sub(last + 1));
                    let msg = snapshot_of(&snapshot, &filter, dropped);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        sent = tx.send(Ok(msg)) => if sent.is_err() { return },
                    }
                    last_sent = Some(snapshot.seq);
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tx.closed() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
        let out = ReceiverStream::new(out);
        Ok(Response::new(Box::pin(super::listener::until_refresh(
            peer.as_ref(),
            out,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ContainerSample;

    #[test]
    fn filter_and_held_show_in_the_wire_form() {
        let s = Snapshot {
            seq: 2,
            containers: vec![
                ContainerSample {
                    service: "web".into(),
                    health: "healthy".into(),
                    ..Default::default()
                },
                ContainerSample {
                    service: "batch".into(),
                    held: Some("pressure".into()),
                    ..Default::default()
                },
            ],
            source: "cgroup-v1".into(),
            ..Default::default()
        };
        let all = snapshot_of(&s, &[], 3);
        assert_eq!(all.containers.len(), 2);
        assert_eq!(all.dropped, 3);
        assert_eq!(all.source, "cgroup-v1");
        assert_eq!(all.containers[1].health, "held");
        let one = snapshot_of(&s, &["web".into()], 0);
        assert_eq!(one.containers.len(), 1);
        assert_eq!(one.containers[0].health, "healthy");
    }
}

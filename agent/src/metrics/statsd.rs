//! StatsD / DogStatsD push: after each collection pass, the snapshot goes
//! out over UDP to `[metrics] statsd` (a Datadog agent or StatsD daemon on
//! the host is the usual receiver).
//!
//! Levels (CPU %, memory, limits, load, up) are gauges (`|g`); counters
//! (network and block I/O bytes, throttled periods, restarts, OOM kills) are
//! sent as the increase since the previous push (`|c`), which is what StatsD
//! counters mean. A counter seen for the first time only sets the baseline.
//!
//! Names: `PREFIX.host.NAME` for the host; for containers `"statsd"` puts
//! the service in the name (`PREFIX.container.SERVICE.NAME`, dots in the
//! service name become `_`), `"dogstatsd"` in a tag
//! (`PREFIX.container.NAME|#service:SERVICE`). Lines are packed into
//! datagrams of at most [`MAX_DATAGRAM`] bytes.
//!
//! Alert rules add, on every fire and clear ([`alert_lines`]), a gauge
//! `PREFIX.alert.NAME[.SERVICE].active` (1 firing, 0 cleared) in plain
//! StatsD; in DogStatsD the gauge `PREFIX.alert.active` tagged
//! `alert:NAME` (and `service:SERVICE`) and a DogStatsD event (`_e{..}`)
//! titled `berth alert NAME firing|cleared`. Plain StatsD has no events.
//!
//! UDP is fire-and-forget: a missing receiver costs nothing but a debug log
//! line, and the pusher never slows collection (it reads the newest
//! snapshot when it is ready). It stops when the collector does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{MetricsHub, Snapshot};
use crate::config::StatsdFlavor;

/// Fits a typical 1500-byte MTU with IP and UDP headers to spare.
pub const MAX_DATAGRAM: usize = 1432;

/// Turns snapshots into StatsD lines, remembering counters between pushes.
pub struct Formatter {
    prefix: String,
    flavor: StatsdFlavor,
    last: HashMap<(String, &'static str), (String, u64)>,
}

impl Formatter {
    /// A formatter with no counter baselines yet.
    pub fn new(prefix: &str, flavor: StatsdFlavor) -> Self {
        Formatter {
            prefix: prefix.to_owned(),
            flavor,
            last: HashMap::new(),
        }
    }

    /// The lines for one snapshot.
    pub fn lines(&mut self, s: &Snapshot) -> Vec<String> {
        let p = &self.prefix;
        let h = &s.host;
        let mut out = vec![
            format!("{p}.host.cpu_percent:{}|g", num(h.cpu_percent)),
            format!("{p}.host.memory_total_bytes:{}|g", h.memory_total_bytes),
            format!("{p}.host.memory_available_bytes:{}|g", h.memory_available_bytes),
            format!("{p}.host.load1:{}|g", num(h.load[0])),
            format!("{p}.host.load5:{}|g", num(h.load[1])),
            format!("{p}.host.load15:{}|g", num(h.load[2])),
        ];
        for c in &s.containers {
            let running = !c.source.is_empty();
            let gauges: &[(&str, f64)] = &[
                ("up", if running { 1.0 } else { 0.0 }),
                ("cpu_percent", c.cpu_percent),
                ("cpu_limit", c.cpu_limit),
                ("memory_bytes", c.memory_bytes as f64),
                ("memory_limit_bytes", c.memory_limit_bytes as f64),
            ];
            for (name, v) in gauges.iter().filter(|(n, _)| running || *n == "up") {
                out.push(self.line(&c.service, name, &num(*v), "g"));
            }
            // Service counters live as long as the agent; container counters
            // as long as the container, so their baseline is per container.
            let service_counters: [(&'static str, u64); 2] =
                [("restarts", u64::from(c.restarts)), ("oom_kills", c.oom_kills)];
            for (name, v) in service_counters {
                if let Some(d) = self.delta(&c.service, name, "", v) {
                    out.push(self.line(&c.service, name, &d.to_string(), "c"));
                }
            }
            if running {
                let container_counters: [(&'static str, u64); 5] = [
                    ("net_rx_bytes", c.net_rx_bytes),
                    ("net_tx_bytes", c.net_tx_bytes),
                    ("blkio_read_bytes", c.blkio_read_bytes),
                    ("blkio_write_bytes", c.blkio_write_bytes),
                    ("cpu_throttled_periods", c.cpu_throttled_periods),
                ];
                for (name, v) in container_counters {
                    if let Some(d) = self.delta(&c.service, name, &c.container_id, v) {
                        out.push(self.line(&c.service, name, &d.to_string(), "c"));
                    }
                }
            }
        }
        out
    }

    fn line(&self, service: &str, name: &str, value: &str, kind: &str) -> String {
        let p = &self.prefix;
        match self.flavor {
            StatsdFlavor::Statsd => {
                let service = service.replace('.', "_");
                format!("{p}.container.{service}.{name}:{value}|{kind}")
            }
            StatsdFlavor::Dogstatsd => format!("{p}.container.{name}:{value}|{kind}|#service:{service}"),
        }
    }

    /// The increase of a counter since the last push; `None` on first
    /// sight, for a new container, or when nothing changed.
    fn delta(&mut self, service: &str, name: &'static str, container: &str, value: u64) -> Option<u64> {
        let key = (service.to_owned(), name);
        let prev = self.last.insert(key, (container.to_owned(), value));
        match prev {
            Some((c, before)) if c == container && value > before => Some(value - before),
            _ => None,
        }
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// Packs lines into newline-separated datagrams of at most `max` bytes (a
/// longer line goes alone).
pub fn pack(lines: &[String], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for l in lines {
        if !current.is_empty() && current.len() + 1 + l.len() > max {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        let _ = write!(current, "{l}");
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The lines telling StatsD that alert `alert` (on `service`, "" for the
/// host) fired (`firing`) or cleared; `text` is the event's sentence.
pub fn alert_lines(
    prefix: &str,
    flavor: StatsdFlavor,
    alert: &str,
    service: &str,
    firing: bool,
    text: &str,
) -> Vec<String> {
    let value = u8::from(firing);
    match flavor {
        StatsdFlavor::Statsd => {
            let service = if service.is_empty() {
                String::new()
            } else {
                format!(".{}", service.replace('.', "_"))
            };
            vec![format!("{prefix}.alert.{alert}{service}.active:{value}|g")]
        }
        StatsdFlavor::Dogstatsd => {
            let tags = if service.is_empty() {
                format!("alert:{alert}")
            } else {
                format!("alert:{alert},service:{service}")
            };
            let title = format!("berth alert {alert} {}", if firing { "firing" } else { "cleared" });
            let text = text.replace('\n', "\\n");
            let kind = if firing { "warning" } else { "success" };
            vec![
                format!("{prefix}.alert.active:{value}|g|#{tags}"),
                format!(
                    "_e{{{},{}}}:{title}|{text}|t:{kind}|s:berth|#{tags}",
                    title.len(),
                    text.len()
                ),
            ]
        }
    }
}

/// A UDP socket to send to `target` from (any local port, same family).
pub async fn socket_for(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(bind).await
}

/// Pushes every snapshot to `target` until the collector stops or `cancel`
/// fires.
pub async fn push_loop(
    target: SocketAddr,
    prefix: String,
    flavor: StatsdFlavor,
    hub: MetricsHub,
    cancel: CancellationToken,
) {
    let socket = match socket_for(target).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "Cannot open a UDP socket for StatsD; not pushing metrics.");
            return;
        }
    };
    info!(target = %target, flavor = ?flavor, "Pushing metrics to StatsD.");
    let mut rx = hub.subscribe();
    let mut formatter = Formatter::new(&prefix, flavor);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let snapshot = rx.borrow_and_update().clone();
        for datagram in pack(&formatter.lines(&snapshot), MAX_DATAGRAM) {
            if let Err(e) = socket.send_to(datagram.as_bytes(), target).await {
                debug!(target = %target, error = %e, "StatsD push failed; will try again next pass.");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ContainerSample;

    fn snap(rx: u64, restarts: u32, id: &str) -> Snapshot {
        Snapshot {
            seq: 1,
            containers: vec![ContainerSample {
                service: "api.v2".into(),
                container_id: id.into(),
                cpu_percent: 50.25,
                memory_bytes: 1000,
                net_rx_bytes: rx,
                restarts,
                source: "cgroup-v2",
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn plain_statsd_names_the_service_in_the_metric() {
        let mut f = Formatter::new("berth", StatsdFlavor::Statsd);
        let first = f.lines(&snap(100, 0, "c1"));
        assert!(
            first.contains(&"berth.container.api_v2.cpu_percent:50.250|g".to_owned()),
            "{first:?}"
        );
        assert!(first.contains(&"berth.container.api_v2.memory_bytes:1000|g".to_owned()));
        assert!(first.contains(&"berth.container.api_v2.up:1|g".to_owned()));
        assert!(
            first
                .iter()
                .any(|l| l.starts_with("berth.host.memory_available_bytes:"))
        );
        assert!(
            !first.iter().any(|l| l.ends_with("|c")),
            "first sight sets baselines only: {first:?}"
        );

        let second = f.lines(&snap(160, 1, "c1"));
        assert!(
            second.contains(&"berth.container.api_v2.net_rx_bytes:60|c".to_owned()),
            "{second:?}"
        );
        assert!(
            second.contains(&"berth.container.api_v2.restarts:1|c".to_owned()),
            "{second:?}"
        );

        // A new container: its counters start a new baseline.
        let third = f.lines(&snap(10, 1, "c2"));
        assert!(!third.iter().any(|l| l.contains("net_rx_bytes")), "{third:?}");
    }

    #[test]
    fn dogstatsd_tags_the_service() {
        let mut f = Formatter::new("berth", StatsdFlavor::Dogstatsd);
        let lines = f.lines(&snap(1, 0, "c1"));
        assert!(
            lines.contains(&"berth.container.cpu_percent:50.250|g|#service:api.v2".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn packs_into_bounded_datagrams() {
        let lines: Vec<String> = (0..100).map(|i| format!("berth.metric.{i}:1|g")).collect();
        let packed = pack(&lines, 100);
        assert!(packed.iter().all(|d| d.len() <= 100), "{packed:?}");
        let rejoined: Vec<&str> = packed.iter().flat_map(|d| d.split('\n')).collect();
        assert_eq!(rejoined.len(), 100);
        assert_eq!(rejoined[99], "berth.metric.99:1|g");
    }

    #[test]
    fn alerts_are_a_gauge_and_in_dogstatsd_an_event() {
        let plain = alert_lines("berth", StatsdFlavor::Statsd, "hot", "api.v2", true, "x");
        assert_eq!(plain, ["berth.alert.hot.api_v2.active:1|g"]);
        let host = alert_lines("berth", StatsdFlavor::Statsd, "scale-up", "", false, "x");
        assert_eq!(host, ["berth.alert.scale-up.active:0|g"]);
        let dog = alert_lines("berth", StatsdFlavor::Dogstatsd, "hot", "web", true, "cpu is 90");
        assert_eq!(dog[0], "berth.alert.active:1|g|#alert:hot,service:web");
        assert_eq!(
            dog[1],
            "_e{22,9}:berth alert hot firing|cpu is 90|t:warning|s:berth|#alert:hot,service:web"
        );
    }
}

//! The Prometheus text endpoint: `GET /metrics` on `[metrics]
//! prometheus_listen` (plain HTTP, meant for localhost or a private
//! network; `""` turns it off).
//!
//! Owns the rendering of a [`Snapshot`] in the text exposition format
//! (0.0.4) and a small HTTP/1.1 server. A scrape renders the newest
//! snapshot; it never triggers collection, so scraping often costs the
//! agent a render, not a pass. The text is written straight into one
//! buffer (no string per sample) and kept until the next snapshot or alert
//! change, so scrapers that share a snapshot share one render.
//! Connections end when the agent's cancellation token fires.
//!
//! Alert rules (`[[alerts]]`) add `berth_alert_active{alert,service}`:
//! 1 while an instance fires, 0 otherwise, from the newest list
//! `crate::alerts` published.
//!
//! Names follow Prometheus conventions: `berth_` prefix, base units
//! (bytes, seconds), `_total` on counters, `service` as the label that
//! names a berth service.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{AlertGauge, MetricsHub, Snapshot};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the endpoint; `Ok(None)` when it is turned off.
pub async fn bind(listen: &str) -> Result<Option<TcpListener>, String> {
    if listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("metrics.prometheus_listen {listen:?}: {e}"))?;
    TcpListener::bind(addr).await.map(Some).map_err(|e| {
        format!(
            "cannot listen on {addr} for Prometheus (metrics.prometheus_listen): {e}; \
             pick another address or set it to \"\" to turn the endpoint off"
        )
    })
}

/// What a scrape shows: the newest snapshot and the alert instances.
#[derive(Clone)]
pub struct Sources {
    /// The collector's snapshots.
    pub hub: MetricsHub,
    /// The alert instances after the newest evaluated pass.
    pub alerts: watch::Receiver<Arc<Vec<AlertGauge>>>,
}

/// The newest rendered body and what it was rendered from.
#[derive(Default)]
struct Rendered {
    /// Snapshot sequence number and the alert list (held, so that its
    /// address is not reused while compared).
    key: Option<(u64, Arc<Vec<AlertGauge>>)>,
    body: Bytes,
}

/// Serves scrapes on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, sources: Sources, tracker: TaskTracker, cancel: CancellationToken) {
    let rendered = Arc::new(std::sync::Mutex::new(Rendered::default()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little
                    // instead of spinning.
                    warn!(error = %e, "Cannot accept a Prometheus connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sources = sources.clone();
        let rendered = rendered.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reply = respond(&req, &sources, &rendered);
                async move { Ok::<_, std::convert::Infallible>(reply) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn => if let Err(e) = r {
                    debug!(peer = %peer, error = %e, "Prometheus connection ended with an error.");
                },
            }
        });
    }
}

fn respond<B>(req: &Request<B>, sources: &Sources, rendered: &std::sync::Mutex<Rendered>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"only GET /metrics\n"),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, CONTENT_TYPE, body(sources, rendered)),
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"berth agent: metrics at /metrics\n"),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found; try /metrics\n"),
        ),
    }
}

/// The newest snapshot and alerts rendered, or the body already rendered
/// from them.
fn body(sources: &Sources, rendered: &std::sync::Mutex<Rendered>) -> Bytes {
    let snapshot = sources.hub.latest();
    let alerts = sources.alerts.borrow().clone();
    let mut cache = rendered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let fresh = cache
        .key
        .as_ref()
        .is_some_and(|(seq, a)| *seq == snapshot.seq && Arc::ptr_eq(a, &alerts));
    if !fresh {
        // Sized from the previous render, so the buffer is allocated once.
        let mut w = Writer {
            out: String::with_capacity(cache.body.len().max(4096 + 2048 * snapshot.containers.len())),
        };
        render_into(&mut w, &snapshot);
        render_alerts_into(&mut w, &alerts);
        *cache = Rendered {
            key: Some((snapshot.seq, alerts)),
            body: Bytes::from(w.out),
        };
    }
    cache.body.clone()
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

fn escape_into(out: &mut String, value: &str) {
    // Label values rarely need escaping: copy runs between special
    // characters whole.
    let mut rest = value;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_number(&mut self.out, value);
        self.out.push('\n');
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A gauge of seconds with a `part` label: the pass's host part and its
    /// containers' part.
    fn by_part(&mut self, name: &str, help: &str, host: Duration, containers: Duration) {
        self.family(name, "gauge", help);
        self.sample(name, &[("part", "host")], host.as_secs_f64());
        self.sample(name, &[("part", "containers")], containers.as_secs_f64());
    }
}

/// Integers without a fraction, others with Rust's shortest exact form.
fn write_number(out: &mut String, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The alert instances in the text exposition format; nothing without rules.
pub fn render_alerts(gauges: &[AlertGauge]) -> String {
    let mut w = Writer { out: String::new() };
    render_alerts_into(&mut w, gauges);
    w.out
}

fn render_alerts_into(w: &mut Writer, gauges: &[AlertGauge]) {
    if gauges.is_empty() {
        return;
    }
    w.family(
        "berth_alert_active",
        "gauge",
        "1 while an [[alerts]] rule fires (per service for service rules), else 0.",
    );
    for g in gauges {
        w.sample(
            "berth_alert_active",
            &[("alert", &g.alert), ("service", &g.service)],
            if g.active { 1.0 } else { 0.0 },
        );
    }
}

/// The snapshot in the text exposition format.
pub fn render(s: &Snapshot) -> String {
    let mut w = Writer {
        out: String::with_capacity(4096 + 2048 * s.containers.len()),
    };
    render_into(&mut w, s);
    w.out
}

fn render_into(w: &mut Writer, s: &Snapshot) {
    let h = &s.host;
    w.one(
        "berth_metrics_passes_total",
        "counter",
        "Collection passes since the agent started.",
        s.seq as f64,
    );
    if s.seq == 0 {
        return;
    }
    w.one(
        "berth_metrics_last_pass_timestamp_seconds",
        "gauge",
        "When the newest collection pass ran.",
        s.timestamp_ms as f64 / 1000.0,
    );
    w.by_part(
        "berth_metrics_pass_seconds",
        "Time the newest collection pass took, by part.",
        s.host_elapsed,
        s.containers_elapsed,
    );
    w.by_part(
        "berth_metrics_pass_cpu_seconds",
        "CPU time the newest collection pass took on the sampler thread, by part (the containers' part counts their cgroup and procfs reads).",
        s.host_cpu,
        s.containers_cpu,
    );
    w.one(
        "berth_metrics_containers_read",
        "gauge",
        "Containers whose counters the newest pass read.",
        f64::from(s.containers_read),
    );
    w.one(
        "berth_metrics_containers_net_from_host",
        "gauge",
        "Containers whose traffic the newest pass took from the host ends of their veth pairs, with no file of their own.",
        f64::from(s.containers_net_from_host),
    );
    w.one(
        "berth_metrics_open_files",
        "gauge",
        "Container cgroup and procfs files the collector keeps open between passes.",
        s.open_files as f64,
    );
    w.family(
        "berth_metrics_source_info",
        "gauge",
        "Where container counters come from (cgroup-v1, cgroup-v2, docker-stats).",
    );
    w.sample("berth_metrics_source_info", &[("source", &s.source)], 1.0);

    w.one(
        "berth_host_cpus",
        "gauge",
        "Logical CPUs of the host.",
        f64::from(h.cpus),
    );
    w.one(
        "berth_host_cpu_usage_percent",
        "gauge",
        "Busy share of all the host's CPUs over the last interval, 0-100.",
        h.cpu_percent,
    );
    w.one(
        "berth_host_memory_total_bytes",
        "gauge",
        "Physical memory of the host.",
        h.memory_total_bytes as f64,
    );
    w.one(
        "berth_host_memory_available_bytes",
        "gauge",
        "Memory available for new work without swapping (MemAvailable).",
        h.memory_available_bytes as f64,
    );
    w.family("berth_host_load", "gauge", "Load average over 1, 5 and 15 minutes.");
    for (window, v) in ["1m", "5m", "15m"].iter().zip(h.load) {
        w.sample("berth_host_load", &[("window", window)], v);
    }
    w.family(
        "berth_host_filesystem_size_bytes",
        "gauge",
        "Size of a mounted file system.",
    );
    for d in &h.disks {
        w.sample(
            "berth_host_filesystem_size_bytes",
            &[("mount", &d.mount)],
            d.total_bytes as f64,
        );
    }
    w.family(
        "berth_host_filesystem_avail_bytes",
        "gauge",
        "Space available to unprivileged users on a mounted file system.",
    );
    for d in &h.disks {
        w.sample(
            "berth_host_filesystem_avail_bytes",
            &[("mount", &d.mount)],
            d.available_bytes as f64,
        );
    }
    w.family(
        "berth_host_network_receive_bytes_total",
        "counter",
        "Bytes received on an interface.",
    );
    for n in &h.networks {
        w.sample(
            "berth_host_network_receive_bytes_total",
            &[("interface", &n.interface)],
            n.rx_bytes as f64,
        );
    }
    w.family(
        "berth_host_network_transmit_bytes_total",
        "counter",
        "Bytes sent on an interface.",
    );
    for n in &h.networks {
        w.sample(
            "berth_host_network_transmit_bytes_total",
            &[("interface", &n.interface)],
            n.tx_bytes as f64,
        );
    }

    // Counters every service has, running or not.
    w.family(
        "berth_service_restarts_total",
        "counter",
        "Restarts of the service by the agent since it started.",
    );
    for c in &s.containers {
        w.sample(
            "berth_service_restarts_total",
            &[("service", &c.service)],
            f64::from(c.restarts),
        );
    }
    w.family(
        "berth_service_oom_kills_total",
        "counter",
        "OOM kills of the service's containers since the agent started.",
    );
    for c in &s.containers {
        w.sample(
            "berth_service_oom_kills_total",
            &[("service", &c.service)],
            c.oom_kills as f64,
        );
    }
    w.family(
        "berth_service_up",
        "gauge",
        "1 when the service has a running container of its active revision.",
    );
    for c in &s.containers {
        let up = if c.container_id.is_empty() { 0.0 } else { 1.0 };
        w.sample("berth_service_up", &[("service", &c.service)], up);
    }
    w.family(
        "berth_service_healthy",
        "gauge",
        "1 healthy, 0 unhealthy or starting; absent without a health check.",
    );
    for c in s.containers.iter().filter(|c| !c.health.is_empty()) {
        let v = if c.health == "healthy" { 1.0 } else { 0.0 };
        w.sample("berth_service_healthy", &[("service", &c.service)], v);
    }
    w.family(
        "berth_service_degraded",
        "gauge",
        "1 while the service's [health.deps] check fails (its container keeps running).",
    );
    for c in &s.containers {
        let v = if c.degraded { 1.0 } else { 0.0 };
        w.sample("berth_service_degraded", &[("service", &c.service)], v);
    }
    w.family(
        "berth_service_held",
        "gauge",
        "1 while the memory-pressure policy keeps the service stopped.",
    );
    for c in &s.containers {
        let v = if c.held.is_some() { 1.0 } else { 0.0 };
        w.sample("berth_service_held", &[("service", &c.service)], v);
    }

    let running: Vec<_> = s.containers.iter().filter(|c| !c.source.is_empty()).collect();
    w.family(
        "berth_container_info",
        "gauge",
        "The running container of each service: id and revision.",
    );
    for c in &running {
        let rev = c.revision.to_string();
        let short = &c.container_id[..c.container_id.len().min(12)];
        w.sample(
            "berth_container_info",
            &[("service", &c.service), ("container", short), ("revision", &rev)],
            1.0,
        );
    }
    type Field = fn(&super::ContainerSample) -> f64;
    let families: [(&str, &str, &str, Field); 12] = [
        (
            "berth_container_cpu_seconds_total",
            "counter",
            "CPU time used by the service's container.",
            |c| c.cpu_seconds,
        ),
        (
            "berth_container_cpu_usage_percent",
            "gauge",
            "CPU use over the last interval in percent of one CPU (200 = two CPUs).",
            |c| c.cpu_percent,
        ),
        (
            "berth_container_cpu_limit_cpus",
            "gauge",
            "CPU limit in CPUs; 0 = none.",
            |c| c.cpu_limit,
        ),
        (
            "berth_container_cpu_throttled_periods_total",
            "counter",
            "CFS periods in which the container was throttled by its CPU limit.",
            |c| c.cpu_throttled_periods as f64,
        ),
        (
            "berth_container_cpu_throttled_seconds_total",
            "counter",
            "Time the container spent throttled by its CPU limit.",
            |c| c.cpu_throttled_ns as f64 / 1e9,
        ),
        (
            "berth_container_memory_usage_bytes",
            "gauge",
            "Memory in use, without inactive file cache (as docker stats shows).",
            |c| c.memory_bytes as f64,
        ),
        (
            "berth_container_memory_limit_bytes",
            "gauge",
            "Memory limit; 0 = none.",
            |c| c.memory_limit_bytes as f64,
        ),
        (
            "berth_container_memory_oom_kills",
            "gauge",
            "OOM kills inside the current container's cgroup (resets with the container).",
            |c| c.cgroup_oom_kills as f64,
        ),
        (
            "berth_container_network_receive_bytes_total",
            "counter",
            "Bytes received by the container (loopback excluded).",
            |c| c.net_rx_bytes as f64,
        ),
        (
            "berth_container_network_transmit_bytes_total",
            "counter",
            "Bytes sent by the container (loopback excluded).",
            |c| c.net_tx_bytes as f64,
        ),
        (
            "berth_container_blkio_read_bytes_total",
            "counter",
            "Bytes the container read from block devices.",
            |c| c.blkio_read_bytes as f64,
        ),
        (
            "berth_container_blkio_write_bytes_total",
            "counter",
            "Bytes the container wrote to block devices.",
            |c| c.blkio_write_bytes as f64,
        ),
    ];
    for (name, kind, help, field) in families {
        w.family(name, kind, help);
        for c in &running {
            w.sample(name, &[("service", &c.service)], field(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ContainerSample, DiskSample, HostSample, NetSample};

    fn snapshot() -> Snapshot {
        Snapshot {
            seq: 3,
            timestamp_ms: 1_700_000_000_000,
            host: HostSample {
                cpu_percent: 12.5,
                cpus: 2,
                memory_total_bytes: 1 << 30,
                memory_available_bytes: 1 << 29,
                load: [0.5, 0.25, 0.125],
                disks: vec![DiskSample {
                    mount: "/data \"x\"".into(),
                    total_bytes: 100,
                    available_bytes: 40,
                }],
                networks: vec![NetSample {
                    interface: "eth0".into(),
                    rx_bytes: 10,
                    tx_bytes: 20,
                }],
            },
            containers: vec![
                ContainerSample {
                    service: "web".into(),
                    container_id: "0123456789abcdef".into(),
                    revision: 4,
                    cpu_percent: 49.5,
                    cpu_seconds: 12.25,
                    cpu_limit: 0.5,
                    memory_bytes: 1024,
                    memory_limit_bytes: 67_108_864,
                    oom_kills: 2,
                    restarts: 1,
                    health: "healthy".into(),
                    source: "cgroup-v1",
                    ..Default::default()
                },
                ContainerSample {
                    service: "idle".into(),
                    ..Default::default()
                },
            ],
            source: "cgroup-v1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn renders_conventional_names_and_labels() {
        let text = render(&snapshot());
        for line in [
            "berth_container_cpu_seconds_total{service=\"web\"} 12.25",
            "berth_container_cpu_usage_percent{service=\"web\"} 49.5",
            "berth_container_memory_limit_bytes{service=\"web\"} 67108864",
            "berth_service_oom_kills_total{service=\"web\"} 2",
            "berth_service_oom_kills_total{service=\"idle\"} 0",
            "berth_service_up{service=\"idle\"} 0",
            "berth_service_up{service=\"web\"} 1",
            "berth_service_healthy{service=\"web\"} 1",
            "berth_container_info{service=\"web\",container=\"0123456789ab\",revision=\"4\"} 1",
            "berth_host_memory_available_bytes 536870912",
            "berth_host_load{window=\"15m\"} 0.125",
            "berth_host_filesystem_avail_bytes{mount=\"/data \\\"x\\\"\"} 40",
            "berth_host_network_receive_bytes_total{interface=\"eth0\"} 10",
            "# TYPE berth_container_cpu_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("berth_container_cpu_seconds_total{service=\"idle\"}"),
            "a service without a container has no container series"
        );
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "bad value in {l:?}");
        }
    }

    #[test]
    fn scrapes_of_one_snapshot_share_one_render() {
        let (tx, rx) = watch::channel(Arc::new(snapshot()));
        let (alerts_tx, alerts) = watch::channel(Arc::new(Vec::new()));
        let sources = Sources {
            hub: MetricsHub { rx },
            alerts,
        };
        let rendered = std::sync::Mutex::new(Rendered::default());
        let a = body(&sources, &rendered);
        let b = body(&sources, &rendered);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the second scrape reuses the render");
        assert_eq!(&a[..], render(&snapshot()).as_bytes());

        let mut next = snapshot();
        next.seq = 4;
        tx.send_replace(Arc::new(next));
        let c = body(&sources, &rendered);
        assert_ne!(c.as_ptr(), a.as_ptr());
        assert!(String::from_utf8_lossy(&c).contains("berth_metrics_passes_total 4"));

        alerts_tx.send_replace(Arc::new(vec![AlertGauge {
            alert: "hot".into(),
            service: "web".into(),
            active: true,
        }]));
        let d = body(&sources, &rendered);
        assert!(
            String::from_utf8_lossy(&d).ends_with("berth_alert_active{alert=\"hot\",service=\"web\"} 1\n"),
            "a new alert list renders again"
        );
    }

    #[test]
    fn empty_before_the_first_pass() {
        let text = render(&Snapshot::default());
        assert!(text.contains("berth_metrics_passes_total 0"), "{text}");
        assert!(!text.contains("berth_host_"), "{text}");
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn alert_gauges_are_labelled_by_alert_and_service() {
        assert_eq!(render_alerts(&[]), "", "no rules, no family");
        let text = render_alerts(&[
            AlertGauge {
                alert: "scale-up".into(),
                service: String::new(),
                active: true,
            },
            AlertGauge {
                alert: "hot".into(),
                service: "web".into(),
                active: false,
            },
        ]);
        assert!(text.contains("# TYPE berth_alert_active gauge"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "berth_alert_active{alert=\"scale-up\",service=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "berth_alert_active{alert=\"hot\",service=\"web\"} 0"),
            "{text}"
        );
    }
}

//! Threshold alerts: the `[[alerts]]` rules of the agent config, evaluated
//! on every metrics pass.
//!
//! Input: the collector's snapshots (the same values `berthctl metrics`,
//! Prometheus and StatsD show; no collection of its own). [`eval`] is the
//! pure part (which value a rule sees, when an instance fires and clears,
//! with `for`, `clear_for` and the hysteresis). [`run`] is the task: for
//! each fire and clear it publishes a `threshold` event (WatchEvents,
//! `berthctl events`, the log), pushes the StatsD lines when StatsD is on,
//! and hands the event as JSON to the rule's hook runner; after each pass
//! it publishes the instances for `berth_alert_active` on the Prometheus
//! endpoint.
//!
//! Each rule with a hook has its own runner task, so one slow hook never
//! delays another rule's, and one rule's hooks run in order (a clear never
//! overtakes its fire). Its queue is bounded ([`HOOK_QUEUE`]); when a hook
//! is that far behind, further runs are dropped with a warning.
//!
//! Shutdown: the task stops on cancel or when the collector stops; hook
//! runners stop on cancel, killing a hook still running.

pub mod eval;
pub mod hook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::clock::now_ms;
use crate::config::{AlertRule, Config, StatsdFlavor};
use crate::events::{EventBus, Severity};
use crate::metrics::{AlertGauge, MetricsHub, statsd};

use eval::{Change, Evaluator, Transition};

/// Hook runs queued per rule: a rule changes at most once per pass, so a
/// full queue means its hook is many passes behind.
pub const HOOK_QUEUE: usize = 16;

/// The event kind of a fire or clear.
pub const EVENT_KIND: &str = "threshold";

/// Where the task tells the world.
pub struct Outputs {
    /// The agent's event bus.
    pub bus: EventBus,
    /// The instances, for the Prometheus endpoint.
    pub gauges: watch::Sender<Arc<Vec<AlertGauge>>>,
}

/// The StatsD settings alerts are pushed with.
struct Statsd {
    target: SocketAddr,
    prefix: String,
    flavor: StatsdFlavor,
}

/// The sentence of the event and the hook's `message`.
pub fn message(rule: &AlertRule, change: &Change) -> String {
    let name = &rule.name;
    let metric = rule.metric.as_str();
    let of = if change.service.is_empty() {
        String::new()
    } else {
        format!(" of {}", change.service)
    };
    let Some(value) = change.value else {
        return format!("alert {name} cleared: service {} is no longer deployed", change.service);
    };
    match change.transition {
        Transition::Fired => format!(
            "alert {name} firing: {metric}{of} is {value:.1}, {} {} for {}",
            rule.direction.as_str(),
            rule.threshold,
            rule.for_
        ),
        Transition::Cleared => {
            let back = match rule.direction {
                crate::config::Direction::Above => "at or below",
                crate::config::Direction::Below => "at or above",
            };
            format!(
                "alert {name} cleared: {metric}{of} is {value:.1}, {back} {} for {} (fires {} {})",
                rule.clear_level(),
                rule.clear_for,
                rule.direction.as_str(),
                rule.threshold
            )
        }
    }
}

/// The event as the hook reads it on stdin.
pub fn hook_input(rule: &AlertRule, change: &Change, host: &str, message: &str, timestamp_ms: u64) -> String {
    let state = match change.transition {
        Transition::Fired => "firing",
        Transition::Cleared => "cleared",
    };
    json!({
        "kind": EVENT_KIND,
        "alert": rule.name,
        "state": state,
        "metric": rule.metric.as_str(),
        "service": (!change.service.is_empty()).then_some(&change.service),
        "value": change.value,
        "direction": rule.direction.as_str(),
        "threshold": rule.threshold,
        "clear_level": rule.clear_level(),
        "for_seconds": rule.for_.as_std().as_secs_f64(),
        "host": host,
        "timestamp_ms": timestamp_ms,
        "message": message,
    })
    .to_string()
}

/// Starts the alert task (and a hook runner per rule with a hook) on
/// `tracker`; without rules there is nothing to start.
pub fn spawn(config: &Config, hub: MetricsHub, outputs: Outputs, tracker: &TaskTracker, cancel: CancellationToken) {
    if config.alerts.is_empty() {
        return;
    }
    let statsd = config.metrics.statsd.parse::<SocketAddr>().ok().map(|target| Statsd {
        target,
        prefix: config.metrics.statsd_prefix.clone(),
        flavor: config.metrics.statsd_flavor,
    });
    let mut hooks = HashMap::new();
    for (i, rule) in config.alerts.iter().enumerate() {
        if rule.hook.is_empty() {
            continue;
        }
        let (tx, rx) = mpsc::channel(HOOK_QUEUE);
        hooks.insert(i, tx);
        tracker.spawn(
            hook_runner(rule.clone(), rx, cancel.clone()).instrument(info_span!("alert-hook", alert = %rule.name)),
        );
    }
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    info!(
        rules = config.alerts.len(),
        "Evaluating alert rules at every metrics pass."
    );
    tracker.spawn(
        run(
            Evaluator::new(config.alerts.clone()),
            hub,
            outputs,
            statsd,
            hooks,
            host,
            cancel,
        )
        .instrument(info_span!("alerts")),
    );
}

async fn run(
    mut evaluator: Evaluator,
    hub: MetricsHub,
    outputs: Outputs,
    statsd: Option<Statsd>,
    hooks: HashMap<usize, mpsc::Sender<String>>,
    host: String,
    cancel: CancellationToken,
) {
    let socket = match &statsd {
        Some(s) => match statsd::socket_for(s.target).await {
            Ok(socket) => Some(socket),
            Err(e) => {
                warn!(error = %e, "Cannot open a UDP socket for StatsD; alerts go to events and hooks only.");
                None
            }
        },
        None => None,
    };
    let mut rx = hub.subscribe();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
        let snapshot = rx.borrow_and_update().clone();
        if snapshot.seq == 0 {
            continue;
        }
        let changes = evaluator.observe(&snapshot, Instant::now());
        outputs.gauges.send_replace(Arc::new(evaluator.gauges()));
        for change in changes {
            let rule = &evaluator.rules()[change.rule];
            let text = message(rule, &change);
            let firing = change.transition == Transition::Fired;
            let severity = if firing { Severity::Warning } else { Severity::Info };
            outputs
                .bus
                .publish(EVENT_KIND, &change.service, 0, severity, text.clone());
            if let (Some(s), Some(socket)) = (&statsd, &socket) {
                let lines = statsd::alert_lines(&s.prefix, s.flavor, &rule.name, &change.service, firing, &text);
                for datagram in statsd::pack(&lines, statsd::MAX_DATAGRAM) {
                    if let Err(e) = socket.send_to(datagram.as_bytes(), s.target).await {
                        debug!(target = %s.target, error = %e, "StatsD alert push failed.");
                    }
                }
            }
            if let Some(tx) = hooks.get(&change.rule) {
                let input = hook_input(rule, &change, &host, &text, now_ms());
                if tx.try_send(input).is_err() {
                    warn!(
                        alert = %rule.name,
                        queued = HOOK_QUEUE,
                        "The alert hook is far behind; this run is dropped."
                    );
                }
            }
        }
    }
    debug!("Alert evaluation stopped.");
}

async fn hook_runner(rule: AlertRule, mut rx: mpsc::Receiver<String>, cancel: CancellationToken) {
    loop {
        let input = tokio::select! {
            _ = cancel.cancelled() => return,
            next = rx.recv() => match next {
                Some(i) => i,
                None => return,
            },
        };
        hook::run(&rule.name, &rule.hook, &input, rule.hook_timeout.as_std(), &cancel).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawAlertRule;

    fn rule(text: &str) -> AlertRule {
        let raw: RawAlertRule = toml::from_str(text).expect("raw");
        AlertRule::try_from(raw).expect("rule")
    }

    #[test]
    fn the_event_names_rule_metric_value_threshold_and_service() {
        let r = rule("name = \"hot\"\nmetric = \"service.cpu_percent\"\nabove = 20\nfor = \"3s\"");
        let fired = Change {
            rule: 0,
            service: "burn".into(),
            value: Some(96.04),
            transition: Transition::Fired,
        };
        assert_eq!(
            message(&r, &fired),
            "alert hot firing: service.cpu_percent of burn is 96.0, above 20 for 3s"
        );
        let cleared = Change {
            value: Some(0.5),
            transition: Transition::Cleared,
            ..fired.clone()
        };
        assert_eq!(
            message(&r, &cleared),
            "alert hot cleared: service.cpu_percent of burn is 0.5, at or below 18 for 3s (fires above 20)"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&hook_input(&r, &fired, "h1", "m", 7)).expect("hook input is JSON");
        assert_eq!(doc["alert"], "hot");
        assert_eq!(doc["state"], "firing");
        assert_eq!(doc["service"], "burn");
        assert_eq!(doc["value"], 96.04);
        assert_eq!(doc["threshold"], 20.0);
        assert_eq!(doc["host"], "h1");
        let host = rule("name = \"up\"\nmetric = \"host.load1\"\nbelow = 1");
        let change = Change {
            service: String::new(),
            ..cleared
        };
        let doc: serde_json::Value = serde_json::from_str(&hook_input(&host, &change, "h", "m", 7)).expect("json");
        assert!(doc["service"].is_null(), "{doc}");
        assert_eq!(doc["direction"], "below");
    }
}

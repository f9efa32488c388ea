//! Limits enforcement beyond Docker's own: the host memory-pressure policy.
//!
//! Per-service limits (`[resources] memory`, `cpus`) are Docker limits set
//! when a container is created and put back by the reconciler when they
//! drift; every OOM kill becomes an `oom-killed` event and a counter (the
//! supervisor's Docker event watcher). This module adds `[limits]`: when the
//! host's available memory stays under `memory_pressure_threshold` for
//! `pressure_sustained`, act on the lowest-priority running service (spec
//! `priority`, lower first; among equals the one using most memory) by
//! `pressure_action`: `log` (an event only), `restart`, or `stop` (held
//! stopped until available memory is back over the threshold). At most one
//! action per `pressure_cooldown`. Every step is a `memory-pressure` event.
//!
//! [`PressurePolicy`] is the pure decision logic; [`run`] is the task that
//! feeds it each metrics snapshot and carries out its decisions through the
//! supervisor's handle (a restart is a health-gated change on its own
//! tracked task; a stop holds the service through the supervisor). Before
//! the supervisor runs there is nothing to act on, and snapshots are
//! skipped. It stops when the collector does or on cancel; a restart it
//! started settles like any change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::config::{LimitsConfig, MemoryThreshold, PressureAction};
use crate::events::Severity;
use crate::metrics::{ContainerSample, MetricsHub, Snapshot};
use crate::supervisor::deploy::ProgressTx;
use crate::supervisor::{Supervisor, SupervisorError};

/// What the policy decided after one observation.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Available memory just fell under the threshold.
    Entered {
        /// Available bytes.
        available: u64,
        /// Threshold bytes.
        threshold: u64,
    },
    /// Pressure has lasted: act on this service.
    Act {
        /// The service.
        service: String,
        /// Its priority.
        priority: i32,
        /// Its memory use.
        memory_bytes: u64,
        /// Available bytes.
        available: u64,
        /// Threshold bytes.
        threshold: u64,
    },
    /// Pressure has lasted but no running service is left to act on.
    NothingToActOn {
        /// Available bytes.
        available: u64,
        /// Threshold bytes.
        threshold: u64,
    },
    /// Available memory is back over the threshold.
    Cleared {
        /// Available bytes.
        available: u64,
        /// Threshold bytes.
        threshold: u64,
    },
}

/// The decision logic, fed one observation per metrics pass.
#[derive(Debug)]
pub struct PressurePolicy {
    threshold: MemoryThreshold,
    sustained: Duration,
    cooldown: Duration,
    under_since: Option<Instant>,
    last_action: Option<Instant>,
    /// When "nothing to act on" was last reported, so it is said once per
    /// cooldown; it does not start a cooldown, so the first service to
    /// come up under pressure is acted on at once.
    last_idle_report: Option<Instant>,
}

impl PressurePolicy {
    /// A policy with nothing observed yet.
    pub fn new(threshold: MemoryThreshold, sustained: Duration, cooldown: Duration) -> Self {
        PressurePolicy {
            threshold,
            sustained,
            cooldown,
            under_since: None,
            last_action: None,
            last_idle_report: None,
        }
    }

    /// Looks at one snapshot's host memory and running services.
    pub fn observe(&mut self, available: u64, total: u64, services: &[ContainerSample], now: Instant) -> Vec<Decision> {
        let threshold = self.threshold.bytes(total);
        let mut out = Vec::new();
        if available >= threshold {
            if self.under_since.take().is_some() {
                out.push(Decision::Cleared { available, threshold });
            }
            return out;
        }
        let since = *self.under_since.get_or_insert_with(|| {
            out.push(Decision::Entered { available, threshold });
            now
        });
        let lasted = now.saturating_duration_since(since) >= self.sustained;
        let cooled = |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= self.cooldown);
        if lasted && cooled(self.last_action) {
            match pick(services) {
                Some(c) => {
                    self.last_action = Some(now);
                    out.push(Decision::Act {
                        service: c.service.clone(),
                        priority: c.priority,
                        memory_bytes: c.memory_bytes,
                        available,
                        threshold,
                    });
                }
                None if cooled(self.last_idle_report) => {
                    self.last_idle_report = Some(now);
                    out.push(Decision::NothingToActOn { available, threshold });
                }
                None => {}
            }
        }
        out
    }

    /// The last action did not happen (the service was busy with a deploy):
    /// try again at the next observation instead of after the cooldown.
    pub fn action_failed(&mut self) {
        self.last_action = None;
    }
}

/// The running service to act on: lowest priority, then most memory, then
/// name (so the choice is stable).
pub fn pick(services: &[ContainerSample]) -> Option<&ContainerSample> {
    services
        .iter()
        .filter(|c| !c.container_id.is_empty() && c.held.is_none())
        .min_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then(b.memory_bytes.cmp(&a.memory_bytes))
                .then(a.service.cmp(&b.service))
        })
}

fn mib(b: u64) -> String {
    format!("{} MiB", b / (1024 * 1024))
}

/// Runs the policy on every snapshot until the collector stops or `cancel`
/// fires. Does nothing when the policy is off.
pub async fn run(
    config: LimitsConfig,
    hub: MetricsHub,
    sup: Supervisor,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let threshold = match MemoryThreshold::parse(&config.memory_pressure_threshold) {
        Ok(Some(t)) => t,
        // Off, or refused by config validation already.
        Ok(None) | Err(_) => return,
    };
    let action = config.pressure_action;
    let sustained = config.pressure_sustained.as_std();
    let mut policy = PressurePolicy::new(threshold, sustained, config.pressure_cooldown.as_std());
    let mut rx = hub.subscribe();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let snapshot: Arc<Snapshot> = rx.borrow_and_update().clone();
        // Without the supervisor there is nothing to act on or report to.
        if !sup.is_running() {
            continue;
        }
        // A held service someone started again (a deploy, a restart) is no
        // longer held.
        for c in snapshot
            .containers
            .iter()
            .filter(|c| c.held.is_some() && !c.container_id.is_empty())
        {
            let _ = sup.release_hold(&c.service).await;
        }
        let h = &snapshot.host;
        for decision in policy.observe(
            h.memory_available_bytes,
            h.memory_total_bytes,
            &snapshot.containers,
            Instant::now(),
        ) {
            let bus = sup.bus();
            match decision {
                Decision::Entered { available, threshold } => bus.publish(
                    "memory-pressure",
                    "",
                    0,
                    Severity::Warning,
                    format!(
                        "Available memory {} is under the threshold {} (limits.memory_pressure_threshold); \
                         pressure_action = \"{}\" acts if it stays there for {}s.",
                        mib(available),
                        mib(threshold),
                        action.as_str(),
                        sustained.as_secs()
                    ),
                ),
                Decision::NothingToActOn { available, threshold } => bus.publish(
                    "memory-pressure",
                    "",
                    0,
                    Severity::Warning,
                    format!(
                        "Available memory {} has stayed under {}, but no running service is left to act on.",
                        mib(available),
                        mib(threshold)
                    ),
                ),
                Decision::Cleared { available, threshold } => {
                    let held: Vec<&str> = snapshot
                        .containers
                        .iter()
                        .filter(|c| c.held.is_some())
                        .map(|c| c.service.as_str())
                        .collect();
                    for s in &held {
                        let _ = sup.release_hold(s).await;
                    }
                    let restart = if held.is_empty() {
                        String::new()
                    } else {
                        format!(" Starting again: {}.", held.join(", "))
                    };
                    bus.publish(
                        "memory-pressure-cleared",
                        "",
                        0,
                        Severity::Info,
                        format!(
                            "Available memory {} is back over the threshold {}.{restart}",
                            mib(available),
                            mib(threshold)
                        ),
                    );
                }
                Decision::Act {
                    service,
                    priority,
                    memory_bytes,
                    available,
                    threshold,
                } => {
                    let revision = snapshot
                        .containers
                        .iter()
                        .find(|c| c.service == service)
                        .map_or(0, |c| c.revision);
                    let why = format!(
                        "available memory {} stayed under {} for {}s; {service} has the lowest priority ({priority}) \
                         and uses {}",
                        mib(available),
                        mib(threshold),
                        sustained.as_secs(),
                        mib(memory_bytes)
                    );
                    match action {
                        PressureAction::Log => bus.publish(
                            "memory-pressure",
                            &service,
                            revision,
                            Severity::Warning,
                            format!("Would act on {service}: {why} (pressure_action = \"log\" changes nothing)."),
                        ),
                        PressureAction::Restart => {
                            bus.publish(
                                "memory-pressure",
                                &service,
                                revision,
                                Severity::Warning,
                                format!("Restarting {service}: {why}."),
                            );
                            let sup = sup.clone();
                            let span = info_span!("pressure-restart", service = %service);
                            // A health-gated restart takes a while; collection
                            // and this policy go on meanwhile.
                            tracker.spawn(
                                async move {
                                    let progress = ProgressTx::new(None);
                                    if let Err(e) = sup
                                        .restart(
                                            &service,
                                            &crate::audit::Actor::agent("agent (memory pressure)"),
                                            progress,
                                        )
                                        .await
                                    {
                                        warn!(service = %service, error = %e, "Memory-pressure restart failed.");
                                    }
                                }
                                .instrument(span),
                            );
                        }
                        PressureAction::Stop => {
                            // Awaited here (a stop takes at most the spec's
                            // stop_timeout): this task is not the collector,
                            // it only skips snapshots meanwhile.
                            let held = format!("held stopped by the memory-pressure policy: {why}");
                            match sup.hold_stopped(&service, held).await {
                                Ok(container) => bus.publish(
                                    "memory-pressure",
                                    &service,
                                    revision,
                                    Severity::Error,
                                    format!(
                                        "Stopped {service} (container {}): {why}. It starts again when \
                                         available memory is back over the threshold.",
                                        &container[..container.len().min(12)]
                                    ),
                                ),
                                Err(SupervisorError::Refused(reason)) => {
                                    debug!(service = %service, reason = %reason, "Cannot stop it now; trying again.");
                                    policy.action_failed();
                                }
                                Err(e) => bus.publish(
                                    "memory-pressure",
                                    &service,
                                    revision,
                                    Severity::Error,
                                    format!("Could not stop {service} under memory pressure: {e}."),
                                ),
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, priority: i32, memory: u64, running: bool) -> ContainerSample {
        ContainerSample {
            service: name.into(),
            container_id: if running { format!("id-{name}") } else { String::new() },
            priority,
            memory_bytes: memory,
            ..Default::default()
        }
    }

    #[test]
    fn picks_lowest_priority_then_biggest() {
        let services = [
            svc("db", 10, 900, true),
            svc("batch", -5, 100, true),
            svc("cache", -5, 300, true),
            svc("stopped", -50, 0, false),
        ];
        assert_eq!(pick(&services).map(|c| c.service.as_str()), Some("cache"));
        let mut held = svc("cache", -5, 300, true);
        held.held = Some("held".into());
        assert_eq!(
            pick(&[held, svc("batch", -5, 100, true)]).map(|c| c.service.as_str()),
            Some("batch")
        );
        assert_eq!(pick(&[svc("x", 0, 0, false)]), None);
    }

    #[test]
    fn acts_only_after_sustained_pressure_then_waits_for_cooldown() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut p = PressurePolicy::new(
            MemoryThreshold::Bytes(1000),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
        let services = [svc("low", -1, 10, true), svc("high", 5, 10, true)];
        assert_eq!(p.observe(2000, 10_000, &services, s(0)), vec![]);
        assert_eq!(
            p.observe(500, 10_000, &services, s(10)),
            vec![Decision::Entered {
                available: 500,
                threshold: 1000
            }]
        );
        assert_eq!(p.observe(500, 10_000, &services, s(20)), vec![], "not yet sustained");
        let acted = p.observe(400, 10_000, &services, s(40));
        assert!(
            matches!(&acted[..], [Decision::Act { service, .. }] if service == "low"),
            "{acted:?}"
        );
        assert_eq!(p.observe(400, 10_000, &services, s(70)), vec![], "cooling down");
        let again = p.observe(400, 10_000, &services, s(100));
        assert!(matches!(&again[..], [Decision::Act { .. }]), "{again:?}");
        assert_eq!(
            p.observe(5000, 10_000, &services, s(110)),
            vec![Decision::Cleared {
                available: 5000,
                threshold: 1000
            }]
        );
        assert_eq!(p.observe(5000, 10_000, &services, s(120)), vec![]);
    }

    #[test]
    fn a_dip_shorter_than_sustained_does_nothing() {
        let t0 = Instant::now();
        let mut p = PressurePolicy::new(MemoryThreshold::Percent(10.0), Duration::from_secs(30), Duration::ZERO);
        let services = [svc("a", 0, 1, true)];
        assert_eq!(p.observe(50, 1000, &services, t0).len(), 1, "entered");
        assert!(matches!(
            p.observe(500, 1000, &services, t0 + Duration::from_secs(20))[..],
            [Decision::Cleared { .. }]
        ));
        assert_eq!(
            p.observe(50, 1000, &services, t0 + Duration::from_secs(40)).len(),
            1,
            "entered again, timer restarted"
        );
        assert!(p.observe(50, 1000, &services, t0 + Duration::from_secs(50)).is_empty());
    }

    #[test]
    fn nothing_to_act_on_is_reported_once_and_does_not_delay_the_first_action() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut p = PressurePolicy::new(MemoryThreshold::Bytes(100), Duration::ZERO, Duration::from_secs(60));
        let d = p.observe(1, 1000, &[svc("down", 0, 0, false)], s(0));
        assert!(
            matches!(&d[..], [Decision::Entered { .. }, Decision::NothingToActOn { .. }]),
            "{d:?}"
        );
        assert!(p.observe(1, 1000, &[svc("down", 0, 0, false)], s(1)).is_empty());
        let d = p.observe(1, 1000, &[svc("up", 0, 0, true)], s(2));
        assert!(
            matches!(&d[..], [Decision::Act { service, .. }] if service == "up"),
            "{d:?}"
        );
    }

    #[test]
    fn a_failed_action_is_retried_without_waiting_for_the_cooldown() {
        let t0 = Instant::now();
        let mut p = PressurePolicy::new(MemoryThreshold::Bytes(100), Duration::ZERO, Duration::from_secs(600));
        let services = [svc("a", 0, 0, true)];
        assert_eq!(p.observe(1, 1000, &services, t0).len(), 2, "entered + act");
        p.action_failed();
        let d = p.observe(1, 1000, &services, t0 + Duration::from_secs(1));
        assert!(matches!(&d[..], [Decision::Act { .. }]), "{d:?}");
    }
}

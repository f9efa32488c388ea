//! The health monitor: probes each running service at its interval and
//! marks a container unhealthy after `retries` failures in a row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{HEALTH_TICK, HealthState, Supervisor};
use crate::docker::ContainerInfo;
use crate::events::Severity;
use crate::health;
use berth_core::spec::ServiceSpec;

impl Supervisor {
    /// Seeds the health monitor with a container that just passed its gate,
    /// so `ps` shows it healthy at once.
    pub(crate) fn mark_healthy(&self, container: &str, spec: &ServiceSpec, output: String) {
        let interval = spec
            .health
            .as_ref()
            .map_or(Duration::from_secs(2), |h| h.interval.as_std());
        self.runtime().health.insert(
            container.to_owned(),
            HealthState {
                failures: 0,
                healthy: Some(true),
                last_output: output,
                next_probe: Instant::now() + interval,
                unhealthy: false,
            },
        );
    }

    // ---------------------------------------------------------------- health

    pub(super) async fn health_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due: Vec<(String, ContainerInfo, ServiceSpec)> = {
                let records = self.records();
                let rt = self.runtime();
                let now = Instant::now();
                rt.primaries
                    .iter()
                    .filter(|(name, _)| !rt.busy.contains(*name))
                    .filter_map(|(name, c)| {
                        let spec = records.get(name)?.active_revision()?.spec.clone();
                        spec.health.as_ref()?;
                        let due = rt.health.get(&c.id).is_none_or(|h| h.next_probe <= now && !h.unhealthy);
                        due.then(|| (name.clone(), c.clone(), spec))
                    })
                    .collect()
            };
            for (name, container, spec) in due {
                let Some(check) = spec.health.as_ref() else { continue };
                let outcome = health::probe(&self.engine, &container, &spec, check).await;
                self.record_probe(&name, &container, check, outcome);
            }
        }
    }

    fn record_probe(
        &self,
        service: &str,
        container: &ContainerInfo,
        check: &berth_core::spec::HealthCheck,
        outcome: health::Outcome,
    ) {
        let in_start_period = container
            .started_at_ms
            .is_some_and(|t| (crate::clock::now_ms_signed() - t) < check.start_period.as_millis() as i64);
        let mut newly_unhealthy = None;
        {
            let mut rt = self.runtime();
            let h = rt.health.entry(container.id.clone()).or_insert(HealthState {
                failures: 0,
                healthy: None,
                last_output: String::new(),
                next_probe: Instant::now(),
                unhealthy: false,
            });
            h.next_probe = Instant::now() + check.interval.as_std();
            h.last_output = outcome.output.clone();
            if outcome.healthy {
                h.failures = 0;
                h.healthy = Some(true);
            } else if !in_start_period {
                h.failures += 1;
                h.healthy = Some(false);
                if h.failures >= check.retries && !h.unhealthy {
                    h.unhealthy = true;
                    newly_unhealthy = Some(h.failures);
                }
            }
        }
        if let Some(failures) = newly_unhealthy {
            self.bus.publish(
                "unhealthy",
                service,
                container.revision.unwrap_or(0),
                Severity::Warning,
                format!(
                    "Health check failed {failures} times in a row ({}); replacing the container.",
                    outcome.output
                ),
            );
            self.trigger();
        }
    }
}

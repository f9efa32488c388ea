//! The health monitor: probes each service's running container at its
//! check's interval and reports every outcome to the owner, which marks a
//! container unhealthy after `retries` failures in a row and wakes the
//! reconciler to replace it.
//!
//! Reads what is due from the newest snapshot (each service's primary
//! container and its verdict's next probe time); services a change holds
//! are left to that change's own gate. Probes run one after another on this
//! task, on the tracker, and it ends on cancel.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Supervisor;
use crate::docker::ContainerInfo;
use crate::health;
use berth_core::spec::ServiceSpec;

/// How often the health monitor looks for due probes.
const HEALTH_TICK: Duration = Duration::from_millis(250);

/// Probes until `cancel` fires.
pub(super) async fn run(sup: Supervisor, cancel: CancellationToken) {
    let Ok(engine) = sup.engine() else { return };
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due: Vec<(String, ContainerInfo, ServiceSpec)> = {
            let snap = sup.snapshot();
            let now = Instant::now();
            snap.primaries
                .iter()
                .filter(|(name, _)| !snap.changing.contains(*name))
                .filter_map(|(name, c)| {
                    let spec = snap.record(name)?.active_revision()?.spec.clone();
                    spec.health.as_ref()?;
                    let due = snap
                        .health
                        .get(&c.id)
                        .is_none_or(|h| h.next_probe <= now && !h.unhealthy);
                    due.then(|| (name.clone(), c.clone(), spec))
                })
                .collect()
        };
        for (name, container, spec) in due {
            let Some(check) = spec.health.clone() else { continue };
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = health::probe(&engine, &container, &spec, &check) => o,
            };
            if sup.probed(&name, container, check, outcome).await.is_err() {
                return;
            }
        }
    }
}

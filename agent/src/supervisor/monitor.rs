//! The health monitor: probes each service's running container at its
//! checks' intervals and reports every outcome to the owner, which marks a
//! container unhealthy after `retries` failures of its live check in a row
//! and wakes the reconciler to replace it, marks the service degraded when
//! its deps check fails (never restarting it), and keeps what the container
//! reports serving (`[health.version]`) for `ps`.
//!
//! Reads what is due from the newest snapshot (each service's primary
//! container and its verdict's next probe time); services a change holds
//! are left to that change's own gate. Wakes when the next probe is due or
//! a new snapshot arrives, so a container that just (re)started is probed
//! at once and then eagerly (see [`super::runtime::RAMP_FIRST`]), and looks
//! at least every [`HEALTH_TICK`]. Probes run one after another on this
//! task, on the tracker, and it ends on cancel.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{HealthState, Supervisor};
use crate::docker::ContainerInfo;
use crate::health;
use berth_core::spec::{HealthCheck, ServiceSpec};

/// How long the health monitor sleeps at most between looks for due
/// probes.
const HEALTH_TICK: Duration = Duration::from_millis(250);

/// Probes until `cancel` fires.
pub(super) async fn run(sup: Supervisor, cancel: CancellationToken) {
    let Ok(engine) = sup.engine() else { return };
    let mut snapshots = sup.snapshots();
    let mut wake = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let now = Instant::now();
        let (due, next): (Vec<Due>, Option<Instant>) = {
            let snap = snapshots.borrow_and_update().clone();
            let watched: Vec<(&String, &ContainerInfo, ServiceSpec)> = snap
                .primaries
                .iter()
                .filter(|(name, _)| !snap.changing.contains(*name))
                .filter_map(|(name, c)| Some((name, c, snap.record(name)?.active_revision()?.spec.clone())))
                .collect();
            let next = watched
                .iter()
                .filter_map(|(_, c, spec)| next_due(spec, snap.health.get(&c.id), now))
                .min();
            let due = watched
                .iter()
                .flat_map(|(name, c, spec)| due_checks(name, c, spec, snap.health.get(&c.id), now))
                .collect();
            (due, next)
        };
        // What is due now is probed below; the rest wakes the loop then.
        wake = next
            .filter(|t| *t > now)
            .map_or(now + HEALTH_TICK, |t| t.min(now + HEALTH_TICK));
        for Due {
            service,
            container,
            spec,
            role,
            check,
        } in due
        {
            let redact = sup.redactor(&spec);
            let probe = async {
                match role {
                    health::Role::Version => match health::read_version(&container, &spec, &check, &redact).await {
                        Ok(version) => health::Outcome {
                            healthy: true,
                            unknown: false,
                            output: version,
                        },
                        Err(failed) => failed,
                    },
                    _ => health::probe(&engine, &container, &spec, &check, &redact).await,
                }
            };
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = probe => o,
            };
            if sup.probed(&service, container, role, check, outcome).await.is_err() {
                return;
            }
        }
    }
}

/// One probe the monitor owes.
struct Due {
    service: String,
    container: ContainerInfo,
    spec: ServiceSpec,
    role: health::Role,
    check: HealthCheck,
}

/// When the next probe of a container with `state` is due, if `spec` has
/// checks: `now` for one never probed.
fn next_due(spec: &ServiceSpec, state: Option<&HealthState>, now: Instant) -> Option<Instant> {
    let health = spec.health.as_ref()?;
    let Some(h) = state else { return Some(now) };
    let live = (!h.unhealthy).then_some(h.next_probe);
    let deps = health
        .deps
        .as_ref()
        .map(|_| h.deps.as_ref().map_or(now, |d| d.next_probe));
    let version = health.version.as_ref().map(|_| h.next_version_read);
    [live, deps, version].into_iter().flatten().min()
}

/// The probes of `container` (the primary of `service`) due at `now`: its
/// live check unless it is already unhealthy, its deps check, and a
/// version read.
fn due_checks(
    service: &str,
    container: &ContainerInfo,
    spec: &ServiceSpec,
    state: Option<&HealthState>,
    now: Instant,
) -> Vec<Due> {
    let Some(health) = &spec.health else {
        return Vec::new();
    };
    let live_due = state.is_none_or(|h| h.next_probe <= now && !h.unhealthy);
    let deps_due = state.and_then(|h| h.deps.as_ref()).is_none_or(|d| d.next_probe <= now);
    let version_due = state.is_none_or(|h| h.next_version_read <= now);
    [
        live_due.then(|| (health::Role::Live, health.live().clone())),
        health
            .deps
            .clone()
            .filter(|_| deps_due)
            .map(|c| (health::Role::Deps, c)),
        // The version is read with the ready check's timeout.
        health
            .version
            .as_ref()
            .filter(|_| version_due)
            .map(|_| (health::Role::Version, health.ready.clone())),
    ]
    .into_iter()
    .flatten()
    .map(|(role, check)| Due {
        service: service.to_owned(),
        container: container.clone(),
        spec: spec.clone(),
        role,
        check,
    })
    .collect()
}

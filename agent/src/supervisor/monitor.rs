//! The health monitor: probes each service's running container at its
//! checks' intervals and reports every outcome to the owner, which marks a
//! container unhealthy after `retries` failures of its live check in a row
//! and wakes the reconciler to replace it, marks the service degraded when
//! its deps check fails (never restarting it), and keeps what the container
//! reports serving (`[health.version]`) for `ps`.
//!
//! Reads what is due from the newest snapshot (each service's primary
//! container and its verdict's next probe time); services a change holds
//! are left to that change's own gate. Probes run one after another on this
//! task, on the tracker, and it ends on cancel.
//!
//! It sleeps until the earliest probe is due, or until the snapshot
//! changes (a new or restarted container, a finished change), rather than
//! ticking: an agent whose services probe every 10 s, or that has none,
//! wakes only then. A container that just (re)started is probed at once and
//! then eagerly (see [`super::runtime::RAMP_FIRST`]); timer wake-ups are at
//! least that far apart, so a probe whose verdict does not move its due
//! time cannot spin.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{HealthState, Supervisor};
use crate::docker::ContainerInfo;
use crate::health;
use berth_core::spec::{HealthCheck, ServiceSpec};

/// The shortest time between two timer wake-ups of the monitor: the eager
/// ramp's first step, so the ramp is not slowed.
const HEALTH_TICK: Duration = super::runtime::RAMP_FIRST;

/// Probes until `cancel` fires.
pub(super) async fn run(sup: Supervisor, cancel: CancellationToken) {
    let Ok(engine) = sup.engine() else { return };
    let mut snapshots = sup.snapshots();
    let mut wake_at: Option<Instant> = Some(Instant::now());
    let mut looked_at = Instant::now();
    loop {
        let timer = crate::clock::sleep_until(wake_at.map(|t| t.max(looked_at + HEALTH_TICK)));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = timer => {}
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        looked_at = Instant::now();
        let due: Vec<Due> = {
            let snap = snapshots.borrow_and_update().clone();
            let now = Instant::now();
            wake_at = next_due(&snap);
            snap.primaries
                .iter()
                .filter(|(name, _)| !snap.changing.contains(*name))
                .filter_map(|(name, c)| Some((name, c, snap.record(name)?.active_revision()?.spec.clone())))
                .flat_map(|(name, c, spec)| due_checks(name, c, &spec, snap.health.get(&c.id), now))
                .collect()
        };
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

/// When the earliest probe of any primary is due; `None` when no service
/// has a check to probe. Mirrors [`due_checks`].
fn next_due(snap: &super::Snapshot) -> Option<Instant> {
    snap.primaries
        .iter()
        .filter(|(name, _)| !snap.changing.contains(*name))
        .filter_map(|(name, c)| {
            let spec = &snap.record(name)?.active_revision()?.spec;
            let health = spec.health.as_ref()?;
            let Some(state) = snap.health.get(&c.id) else {
                return Some(Instant::now());
            };
            let live = (!state.unhealthy).then_some(state.next_probe);
            let deps = health
                .deps
                .as_ref()
                .map(|_| state.deps.as_ref().map_or_else(Instant::now, |d| d.next_probe));
            let version = health.version.as_ref().map(|_| state.next_version_read);
            [live, deps, version].into_iter().flatten().min()
        })
        .min()
}

/// One probe the monitor owes.
struct Due {
    service: String,
    container: ContainerInfo,
    spec: ServiceSpec,
    role: health::Role,
    check: HealthCheck,
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

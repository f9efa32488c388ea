//! The reconcile loop: `select! { cancel, resync tick, trigger, backoff
//! timer }`, then one [`pass`]. A resync tick first looks whether anything
//! moved since the last full pass (one listing of berth's containers, no
//! inspect, and the sites dir) and runs the pass only then, or once per
//! [`FULL_RESYNC`]: triggers already cover what Docker announces.
//!
//! A pass reads the supervisor's newest snapshot, then Docker (every berth
//! container) and nginx's sites dir, hands what Docker showed to the owner
//! (which follows the running containers and forgets stale verdicts),
//! [`plan`]s, permits the services it has actions for — only those whose
//! state has not moved since the snapshot and that no change holds — and
//! applies their actions. Runs on the tracker; ends on cancel (a pass in
//! progress finishes its current actions first).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Context, Desired, SiteFiles, apply, plan};
use crate::state::ServiceRecord;
use crate::supervisor::Supervisor;

/// How often the host is looked at even without events: berth's
/// containers listed (ids and states) and the sites dir read, compared with
/// what the last full pass saw; a full pass follows when they differ or
/// that pass found something to do. A
/// container removed, stopped or started, or a site file changed, is thus
/// repaired within this even when its event was missed.
const RESYNC: Duration = Duration::from_secs(10);

/// How often a resync runs a full pass (every container inspected) even
/// when nothing listed moved: what only an inspect shows (limits, mounts,
/// Docker's health status) is repaired at its Docker event (`update`,
/// `health_status`), or within this when that event was missed. Inspecting
/// every container is most of an idle agent's CPU at 50 containers.
const FULL_RESYNC: Duration = Duration::from_secs(60);

/// What the last full pass saw, for a resync to compare with.
struct Seen {
    at: Instant,
    /// Ids and states of berth's containers, sorted by id.
    containers: Vec<(String, String)>,
    sites: SiteFiles,
    /// The supervisor's generations (they move with every change).
    generations: HashMap<String, u64>,
}

/// How soon to look again after a failed action or listing.
const RETRY: Duration = Duration::from_secs(2);

/// Runs passes until `cancel` fires, woken by `triggers` (Docker events,
/// health verdicts, finished changes), the resync and pending backoffs.
pub async fn run(sup: Supervisor, mut triggers: mpsc::Receiver<()>, cancel: CancellationToken) {
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wake_at: Option<Instant> = None;
    let mut seen: Option<Seen> = None;
    loop {
        let backoff_timer = crate::clock::sleep_until(wake_at);
        let resync_tick = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = resync.tick() => true,
            Some(()) = triggers.recv() => false,
            _ = backoff_timer => false,
        };
        if resync_tick
            && let Some(last) = &seen
            && unchanged(&sup, last).await
        {
            continue;
        }
        (wake_at, seen) = full_pass(&sup).await;
    }
    debug!("Reconcile loop stopped.");
}

/// Whether nothing a resync can see moved since `last` (and it is younger
/// than [`FULL_RESYNC`]): no pass is needed.
async fn unchanged(sup: &Supervisor, last: &Seen) -> bool {
    if last.at.elapsed() >= FULL_RESYNC {
        return false;
    }
    let Ok(engine) = sup.engine() else { return false };
    let snap = sup.snapshot();
    if snap.generations != last.generations {
        return false;
    }
    match engine.list_states().await {
        Ok(containers) if containers == last.containers => {}
        _ => return false,
    }
    site_files(sup, &desired(snap.records())) == last.sites
}

/// The services with an active revision, as the planner takes them.
fn desired(records: &BTreeMap<String, ServiceRecord>) -> BTreeMap<String, Desired<'_>> {
    records
        .iter()
        .filter_map(|(name, r)| {
            r.active_revision().map(|rev| {
                (
                    name.clone(),
                    Desired {
                        revision: rev.number,
                        spec: &rev.spec,
                        maintenance: r.maintenance,
                    },
                )
            })
        })
        .collect()
}

/// One pass: observe, plan, permit, apply. Returns when to look again for a
/// pending backoff or after a failure.
pub async fn pass(sup: &Supervisor) -> Option<Instant> {
    full_pass(sup).await.0
}

/// [`pass`], and what it saw of Docker and the sites dir (`None` when it
/// could not look or found something to do).
async fn full_pass(sup: &Supervisor) -> (Option<Instant>, Option<Seen>) {
    let Ok(engine) = sup.engine() else {
        return (None, None);
    };
    // Taken before Docker is read: a change that starts or ends after this
    // moves the generation, and the permit below is then refused.
    let snap = sup.snapshot();
    let observed = match engine.list_managed().await {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "Cannot list containers; retrying.");
            return (Some(Instant::now() + RETRY), None);
        }
    };
    // Fails only when the agent is stopping.
    let Ok(observation) = sup.observed(observed.clone()).await else {
        return (None, None);
    };
    let now = Instant::now();
    let records = snap.records();
    let desired = desired(records);
    let ctx = Context {
        busy: snap.changing.iter().cloned().collect(),
        unhealthy: observation.unhealthy,
        not_before: observation.not_before,
        healthy: observation.healthy,
    };
    let sites = site_files(sup, &desired);
    let plan = plan(&desired, &observed, &ctx, &sites, now);
    // A resync may skip the next full pass only if this one found the host
    // converged: an action not taken (no permit) or not yet effective must
    // be looked at again.
    let seen = plan.actions.is_empty().then(|| {
        let mut containers: Vec<(String, String)> = observed.iter().map(|c| (c.id.clone(), c.state.clone())).collect();
        containers.sort();
        Seen {
            at: now,
            containers,
            sites,
            generations: snap.generations.clone(),
        }
    });

    // The last action of each service, so its permit ends right after it.
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, a) in plan.actions.iter().enumerate() {
        if let Some(s) = a.service() {
            last.insert(s.to_owned(), i);
        }
    }
    let wanted = last.keys().map(|s| (s.clone(), snap.generation(s))).collect();
    let mut permits: HashMap<String, _> = match sup.claim(wanted).await {
        Ok(permits) => permits.into_iter().map(|l| (l.service().to_owned(), l)).collect(),
        Err(_) => return (None, None),
    };
    let (mut tried, mut failed) = (0, 0);
    for (i, action) in plan.actions.iter().enumerate() {
        if let Some(s) = action.service() {
            // Someone else acts on it now; the next pass looks again.
            if !permits.contains_key(s) {
                continue;
            }
        }
        tried += 1;
        if let Err(e) = apply(sup, &engine, action, records).await {
            failed += 1;
            warn!(action = ?action, error = %e, "Reconcile action failed; will retry.");
        }
        if let Some(s) = action.service()
            && last.get(s) == Some(&i)
        {
            permits.remove(s);
        }
    }
    if tried > 0 {
        debug!(tried, failed, "Reconcile pass done.");
    }
    if failed > 0 {
        // Something is off (port taken, image gone, nginx refusing); look
        // again soon rather than waiting for the resync.
        return (Some(plan.wake_at.map_or(now + RETRY, |w| w.min(now + RETRY))), seen);
    }
    (plan.wake_at, seen)
}

/// What the sites dir holds for the desired proxied services, and which
/// sites berth wrote.
fn site_files(sup: &Supervisor, desired: &BTreeMap<String, Desired<'_>>) -> SiteFiles {
    let sites = sup.sites();
    SiteFiles {
        current: desired
            .iter()
            .filter(|(_, d)| d.spec.proxy.is_some())
            .filter_map(|(name, _)| sites.current(name).map(|c| (name.clone(), c)))
            .collect(),
        managed: sites.managed().into_iter().collect(),
    }
}

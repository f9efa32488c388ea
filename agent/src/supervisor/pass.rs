//! One reconcile pass and the loop that runs it: observe Docker, plan
//! ([`crate::reconcile::plan`]), apply, converge nginx sites.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{RESYNC, STABLE_AFTER, Supervisor, SupervisorError, revision_of, short, upstream_of};
use crate::docker::ContainerInfo;
use crate::events::Severity;
use crate::nginx::{self, Sites};
use crate::reconcile::{self, Action, Context, Desired};
use crate::state::{Revision, ServiceRecord};

impl Supervisor {
    // ------------------------------------------------------------- reconcile

    pub(super) async fn reconcile_loop(self: Arc<Self>, mut trigger: mpsc::Receiver<()>, cancel: CancellationToken) {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake_at: Option<Instant> = None;
        loop {
            let backoff_timer = async {
                match wake_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = resync.tick() => {}
                Some(()) = trigger.recv() => {}
                _ = backoff_timer => {}
            }
            wake_at = self.reconcile_once().await;
        }
        debug!("Reconcile loop stopped.");
    }

    /// One pass: observe, plan, apply. Returns when to look again for a
    /// pending backoff.
    pub async fn reconcile_once(&self) -> Option<Instant> {
        let observed = match self.engine.list_managed().await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "Cannot list containers; retrying.");
                return Some(Instant::now() + Duration::from_secs(2));
            }
        };
        let records = self.records();
        let now = Instant::now();
        let plan = {
            let mut rt = self.runtime();
            // Remember each service's running container for the health
            // monitor, and forget the crash count of a service whose
            // container stayed up long enough, judged by how long it ran
            // (not by when this pass happens to look), so a crash after a
            // long healthy run restarts at once.
            rt.primaries.clear();
            let now_ms = crate::clock::now_ms_signed();
            let stable = STABLE_AFTER.as_millis() as i64;
            for (name, record) in &records {
                let mine = observed
                    .iter()
                    .filter(|c| c.service.as_deref() == Some(name) && c.revision == Some(record.active));
                let mut ran_long = false;
                for c in mine {
                    let started = c.started_at_ms.unwrap_or(now_ms);
                    if c.running {
                        rt.primaries.insert(name.clone(), c.clone());
                        ran_long |= now_ms - started > stable;
                    } else if let Some(finished) = c.finished_at_ms {
                        ran_long |= finished - started > stable;
                    }
                }
                if ran_long && let Some(s) = rt.services.get_mut(name) {
                    s.failures = 0;
                    s.not_before = None;
                }
            }
            let live: HashSet<&str> = observed.iter().map(|c| c.id.as_str()).collect();
            rt.health.retain(|id, _| live.contains(id.as_str()));
            let ctx = Context {
                busy: rt.busy.clone(),
                unhealthy: rt
                    .health
                    .iter()
                    .filter(|(_, h)| h.unhealthy)
                    .map(|(id, _)| id.clone())
                    .collect(),
                not_before: rt
                    .services
                    .iter()
                    .filter_map(|(n, s)| s.not_before.map(|t| (n.clone(), t)))
                    .collect(),
            };
            let desired: BTreeMap<String, Desired<'_>> = records
                .iter()
                .filter_map(|(name, r)| {
                    r.active_revision().map(|rev| {
                        (
                            name.clone(),
                            Desired {
                                revision: rev.number,
                                spec: &rev.spec,
                            },
                        )
                    })
                })
                .collect();
            reconcile::plan(&desired, &observed, &ctx, now)
        };
        let (mut tried, mut failed) = (0, 0);
        for action in plan.actions {
            tried += 1;
            if let Err(e) = self.apply(&action, &records).await {
                failed += 1;
                warn!(action = ?action, error = %e, "Reconcile action failed; will retry.");
            }
        }
        failed += self.converge_sites(&records, &observed).await;
        if tried > 0 {
            debug!(tried, failed, "Reconcile pass done.");
        }
        if failed > 0 {
            // Something is off (port taken, image gone); look again soon
            // rather than waiting for the resync.
            return Some(
                plan.wake_at
                    .map_or(now + Duration::from_secs(2), |w| w.min(now + Duration::from_secs(2))),
            );
        }
        plan.wake_at
    }

    async fn apply(&self, action: &Action, records: &BTreeMap<String, ServiceRecord>) -> Result<(), SupervisorError> {
        let service = match action {
            Action::Create { service, .. }
            | Action::Start { service, .. }
            | Action::Replace { service, .. }
            | Action::UpdateLimits { service, .. } => Some(service.clone()),
            Action::Remove { service, .. } => service.clone(),
        };
        // Act only on a service no deploy holds; the deploy owns it.
        let lock = service.as_deref().map(|s| self.lock_for(s));
        let _guard = match &lock {
            Some(l) => match l.clone().try_lock_owned() {
                Ok(g) => Some(g),
                Err(_) => return Ok(()),
            },
            None => None,
        };
        let spec_of =
            |name: &str, rev: u64| -> Option<Revision> { records.get(name).and_then(|r| r.revision(rev)).cloned() };
        match action {
            Action::Create { service, revision, why } => {
                let rev = spec_of(service, *revision)
                    .ok_or_else(|| SupervisorError::NotFound(format!("revision {revision} of {service}")))?;
                self.create_container(&rev.spec, *revision).await?;
                // Someone removed it; that is drift, not a crash, so no backoff grows.
                self.count_restart(service, false);
                self.bus.publish(
                    "recreated",
                    service,
                    *revision,
                    Severity::Warning,
                    format!("Created a new container: {why}."),
                );
            }
            Action::Start {
                service,
                container,
                why,
            } => {
                // A container being removed cannot start; the error retries
                // the pass shortly and the next plan creates a fresh one.
                self.engine
                    .start(container)
                    .await
                    .map_err(|e| SupervisorError::Internal(e.to_string()))?;
                self.count_restart(service, true);
                self.bus.publish(
                    "restarted",
                    service,
                    revision_of(records, service),
                    Severity::Warning,
                    format!("Restarted the container: {why}."),
                );
            }
            Action::Replace {
                service,
                container,
                revision,
                why,
            } => {
                let rev = spec_of(service, *revision)
                    .ok_or_else(|| SupervisorError::NotFound(format!("revision {revision} of {service}")))?;
                self.stop_and_remove(container, rev.spec.stop_timeout.as_std()).await?;
                self.create_container(&rev.spec, *revision).await?;
                self.count_restart(service, true);
                self.bus.publish(
                    "replaced",
                    service,
                    *revision,
                    Severity::Warning,
                    format!("Replaced the container: {why}."),
                );
            }
            Action::UpdateLimits {
                service,
                container,
                memory,
                nano_cpus,
                why,
            } => {
                match self.engine.update_limits(container, *memory, *nano_cpus).await {
                    Ok(()) => {}
                    // Docker cannot lift a limit in place; a fresh container can.
                    Err(crate::docker::DockerError::LimitNotRemovable { .. }) => {
                        let revision = revision_of(records, service);
                        let rev = spec_of(service, revision)
                            .ok_or_else(|| SupervisorError::NotFound(format!("revision {revision} of {service}")))?;
                        self.stop_and_remove(container, rev.spec.stop_timeout.as_std()).await?;
                        self.create_container(&rev.spec, revision).await?;
                    }
                    Err(e) => return Err(SupervisorError::Internal(e.to_string())),
                }
                self.bus.publish(
                    "drift-repaired",
                    service,
                    revision_of(records, service),
                    Severity::Warning,
                    format!("Set the limits back: {why}."),
                );
            }
            Action::Remove {
                service,
                container,
                why,
            } => {
                self.stop_and_remove(container, Duration::from_secs(10)).await?;
                let name = service.as_deref().unwrap_or("");
                self.bus.publish(
                    "removed",
                    name,
                    0,
                    Severity::Info,
                    format!("Removed container {}: {why}.", short(container)),
                );
            }
        }
        Ok(())
    }

    /// Makes each proxied service's nginx site match its running container
    /// (restoring a site edited or removed by hand, following a container
    /// whose address changed) and removes sites of services no longer
    /// desired. Returns how many sites could not be fixed.
    async fn converge_sites(&self, records: &BTreeMap<String, ServiceRecord>, observed: &[ContainerInfo]) -> usize {
        let mut failed = 0;
        for (name, record) in records {
            let Some(rev) = record.active_revision() else { continue };
            let Some(proxy) = rev.spec.proxy.as_ref() else { continue };
            let Some(primary) = observed
                .iter()
                .find(|c| c.running && c.service.as_deref() == Some(name) && c.revision == Some(record.active))
            else {
                continue;
            };
            let Some(upstream) = upstream_of(primary, &rev.spec) else {
                continue;
            };
            let lock = self.lock_for(name);
            let Ok(_guard) = lock.try_lock_owned() else { continue };
            let want = nginx::render(&rev.spec, proxy, upstream);
            let had = self.sites.current(name);
            if had.as_deref() == Some(want.as_str()) {
                continue;
            }
            match self.sites.install(name, &want).await {
                Ok(_) => {
                    let why = match had {
                        None => "the site file was missing",
                        Some(_) => "the site file differed from the spec (edited by hand, or the container moved)",
                    };
                    self.bus.publish(
                        "site-restored",
                        name,
                        record.active,
                        Severity::Warning,
                        format!("Rewrote the nginx site: {why}."),
                    );
                }
                Err(e) => {
                    failed += 1;
                    warn!(service = %name, error = %e, "Cannot restore the nginx site.");
                }
            }
        }
        for stale in self.sites.managed().into_iter().filter(|s| !records.contains_key(s)) {
            match self.sites.remove(&stale).await {
                Ok(()) => self.bus.publish(
                    "site-removed",
                    &stale,
                    0,
                    Severity::Info,
                    "Removed the nginx site of a service that is gone.",
                ),
                Err(e) => {
                    failed += 1;
                    warn!(service = %stale, error = %e, "Cannot remove a stale nginx site.");
                }
            }
        }
        failed
    }

    /// The nginx sites.
    pub(crate) fn sites(&self) -> &Sites {
        &self.sites
    }

    /// Counts a restart by the agent. A crash (exit, unhealthy) grows the
    /// backoff for the next one; recreating a removed container does not.
    fn count_restart(&self, service: &str, crash: bool) {
        let mut rt = self.runtime();
        let s = rt.services.entry(service.to_owned()).or_default();
        s.restarts += 1;
        if crash {
            s.failures += 1;
            s.not_before = Some(Instant::now() + reconcile::backoff(s.failures + 1));
        }
    }
}

//! Maintenance mode: `berthctl maintenance on|off SERVICE`.
//!
//! Owns turning a proxied service's maintenance flag on or off: the flag is
//! written to the state (so it survives agent restarts and deploys), then
//! the service's nginx site is rendered again, answering 503 with a short
//! page on every path (health paths too, so a load balancer drains the
//! host) or proxying again; the containers are never touched. Each change
//! is an event and an audit record. Runs on a worker holding the service's
//! permit, so it never races a deploy's switch; the reconciler keeps the
//! site as the flag says afterwards.

use tracing::info_span;

use super::command::StateChange;
use super::deploy::ProgressTx;
use super::view::not_found;
use super::{Supervisor, SupervisorError, upstream_of};
use crate::audit::Actor;
use crate::events::Severity;
use crate::nginx;

impl Supervisor {
    /// Turns maintenance mode of `service` on or off. Returns false when it
    /// already was so (nothing changed, the site is written again anyway).
    pub async fn set_maintenance(&self, service: &str, on: bool, author: &Actor) -> Result<bool, SupervisorError> {
        let snap = self.ready_snapshot()?;
        let record = snap.record(service).ok_or_else(|| not_found(service))?;
        let has_proxy = record.active_revision().is_some_and(|r| r.spec.proxy.is_some());
        if !has_proxy {
            return Err(SupervisorError::Invalid(format!(
                "{service} has no [proxy]: maintenance mode answers 503 through its nginx site, so the \
                 service needs one"
            )));
        }
        let sup = self.clone();
        let (name, author) = (service.to_owned(), author.to_owned());
        let span = info_span!("maintenance", service = %name, on);
        self.in_worker(span, async move {
            let _permit = sup.acquire(&name, &ProgressTx::new(None)).await?;
            let changed = sup
                .commit(StateChange::Maintenance {
                    service: name.clone(),
                    on,
                })
                .await?
                != 0;
            sup.write_site(&name, on).await?;
            let word = if on { "on" } else { "off" };
            if changed {
                let snap = sup.snapshot();
                let revision = snap.record(&name).map_or(0, |r| r.active);
                let message = if on {
                    format!("Maintenance on: nginx answers 503 for {name}; its containers keep running.")
                } else {
                    format!("Maintenance off: nginx sends traffic to {name} again.")
                };
                let kind = if on { "maintenance-on" } else { "maintenance-off" };
                sup.bus().publish(kind, &name, revision, Severity::Info, message);
            }
            let detail = if changed { "" } else { "unchanged" };
            sup.audit()
                .record(&author, &format!("maintenance {word}"), &name, detail, "ok");
            Ok(changed)
        })
        .await
    }

    /// Writes `service`'s site for its running container, in or out of
    /// maintenance. Without a running container there is nothing to route
    /// to; the reconciler writes the site once one runs.
    async fn write_site(&self, service: &str, maintenance: bool) -> Result<(), SupervisorError> {
        let snap = self.snapshot();
        let Some(spec) = snap
            .record(service)
            .and_then(|r| r.active_revision())
            .map(|r| r.spec.clone())
        else {
            return Err(not_found(service));
        };
        let Some(proxy) = spec.proxy.as_ref() else {
            return Ok(());
        };
        let active = snap.record(service).map_or(0, |r| r.active);
        let primary = self
            .containers_of(service)
            .await?
            .into_iter()
            .find(|c| c.running && c.revision == Some(active));
        let Some(upstream) = primary.as_ref().and_then(|p| upstream_of(p, &spec)) else {
            return Ok(());
        };
        let site = nginx::render(&spec, proxy, upstream, maintenance);
        self.sites()
            .install(service, &site)
            .await
            .map(drop)
            .map_err(|e| SupervisorError::Internal(e.to_string()))
    }
}

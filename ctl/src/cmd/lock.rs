//! `berthctl lock status | break`: the fleet locks (leases) the selected
//! agents hold, and ending one by force.

use berth_proto::v1::fleet_lock_client::FleetLockClient;
use berth_proto::v1::{BreakLockRequest, Lease, ListLocksRequest, ListLocksResponse};
use serde_json::json;

use super::Global;
use super::fleetview::{self, View};
use crate::output::{self, Sink};

/// Show or break fleet locks: the leases a fleet-wide change (a rollout)
/// holds on every agent it touches, so two cannot race.
///
/// A lock has a holder (the client certificate's name), where it runs, a
/// purpose and an expiry; its holder renews it, and one nobody renews
/// lapses after its TTL (30s by default). The agents keep them in their
/// state_dir, so they survive an agent restart.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The live locks on every selected host: holder, purpose, since,
    /// expires (viewers may ask).
    Status {
        /// Only this lock.
        #[arg(long)]
        name: Option<String>,
    },
    /// End lock NAME on every selected host whoever holds it (operators
    /// only; the agents audit it and say whose it was). Its holder finds
    /// out at its next renewal and stops.
    Break {
        /// The lock.
        #[arg(long)]
        name: String,
        /// Why, for the audit log and the event.
        #[arg(long, default_value = "broken with berthctl lock break")]
        reason: String,
    },
}

/// Runs `berthctl lock`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    match args.command {
        Command::Status { name } => {
            let outcomes = selection
                .fan_out(|h| async move {
                    Ok(h.agent
                        .call(|ch| async move { FleetLockClient::new(ch).list_locks(ListLocksRequest {}).await })
                        .await?)
                })
                .await;
            let only = |l: &&Lease| name.as_ref().is_none_or(|n| *n == l.name);
            fleetview::print(
                out,
                global.output,
                &outcomes,
                &View {
                    header: &["LOCK", "HOLDER", "CLIENT", "PURPOSE", "SINCE", "EXPIRES"],
                    rows: &|r: &ListLocksResponse| {
                        r.leases
                            .iter()
                            .filter(only)
                            .map(|l| {
                                vec![
                                    l.name.clone(),
                                    l.holder.clone(),
                                    l.client.clone(),
                                    l.purpose.clone(),
                                    output::utc(l.acquired_at_ms),
                                    format!(
                                        "{} (in {}s)",
                                        output::utc(l.expires_at_ms),
                                        l.expires_at_ms.saturating_sub(r.now_ms).div_ceil(1000)
                                    ),
                                ]
                            })
                            .collect()
                    },
                    json: &|r| {
                        json!(
                            r.leases
                                .iter()
                                .filter(only)
                                .map(|l| json!({
                                    "name": l.name, "holder": l.holder, "client": l.client, "purpose": l.purpose,
                                    "acquired_at_ms": l.acquired_at_ms, "renewed_at_ms": l.renewed_at_ms,
                                    "expires_at_ms": l.expires_at_ms, "ttl_seconds": l.ttl_seconds,
                                    "expires_in_ms": l.expires_at_ms.saturating_sub(r.now_ms),
                                }))
                                .collect::<Vec<_>>()
                        )
                    },
                    notes: &|_| Vec::new(),
                    empty: "no locks held",
                },
            )
        }
        Command::Break { name, reason } => {
            let (name, reason) = (&name, &reason);
            let outcomes = selection
                .fan_out(|h| async move {
                    // Only where it is held: elsewhere there is nothing to break.
                    let listed = h
                        .agent
                        .call(|ch| async move { FleetLockClient::new(ch).list_locks(ListLocksRequest {}).await })
                        .await?;
                    if !listed.leases.iter().any(|l| l.name == *name) {
                        return Ok(None);
                    }
                    let req = BreakLockRequest {
                        name: name.clone(),
                        reason: reason.clone(),
                    };
                    Ok(Some(
                        h.agent
                            .call(|ch| async move { FleetLockClient::new(ch).break_lock(req).await })
                            .await?,
                    ))
                })
                .await;
            fleetview::print(
                out,
                global.output,
                &outcomes,
                &View {
                    header: &["LOCK", "BROKEN", "HOLDER", "CLIENT", "PURPOSE", "SINCE"],
                    rows: &|l: &Option<Lease>| {
                        vec![match l {
                            Some(l) => vec![
                                l.name.clone(),
                                "yes".into(),
                                l.holder.clone(),
                                l.client.clone(),
                                l.purpose.clone(),
                                output::utc(l.acquired_at_ms),
                            ],
                            None => vec![name.clone(), "not held".into()],
                        }]
                    },
                    json: &|l| match l {
                        Some(l) => json!({"name": l.name, "broken": true, "holder": l.holder,
                                          "client": l.client, "purpose": l.purpose,
                                          "acquired_at_ms": l.acquired_at_ms}),
                        None => json!({"name": name, "broken": false}),
                    },
                    notes: &|_| Vec::new(),
                    empty: "",
                },
            )
        }
    }
}

//! `berthctl history SERVICE`: a service's revisions, on one host or every
//! selected one.

use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{HistoryRequest, HistoryResponse, Revision};
use serde_json::{Value, json};

use super::Global;
use super::fleetview::{self, View};
use crate::output::{self, Format, Sink};

/// List a service's revisions, newest first: image, why it was made, who
/// made it, and whether it is active, superseded or failed (with why).
/// Env changes show which keys changed, never their values; SPEC lists the
/// spec keys changed since the revision before (`-o json` adds each
/// revision's whole spec).
///
/// Over a selection (--fleet, --hosts-from, several --host) one table with
/// a HOST column; a host without the service counts as failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
}

const HEADER: [&str; 8] = ["REV", "AGE", "IMAGE", "REASON", "AUTHOR", "ENV", "SPEC", "STATUS"];

/// Runs `berthctl history`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    let now = output::now_ms();
    if !selection.many {
        let req = HistoryRequest { service: args.service };
        let history = selection.hosts[0]
            .agent
            .call(|ch| async move { ServicesClient::new(ch).history(req).await })
            .await?;
        match global.output {
            Format::Json => out.document(&to_json(&history))?,
            Format::Table => {
                let mut rows = vec![HEADER.map(String::from).to_vec()];
                rows.extend(rows_of(&history, now));
                out.text(&output::table(&rows))?;
            }
        }
        return Ok(());
    }
    let service = &args.service;
    let outcomes = selection
        .fan_out(|h| async move {
            let req = HistoryRequest {
                service: service.clone(),
            };
            Ok(h.agent
                .call(|ch| async move { ServicesClient::new(ch).history(req).await })
                .await?)
        })
        .await;
    fleetview::print(
        out,
        global.output,
        &outcomes,
        &View {
            header: &HEADER,
            rows: &|h: &HistoryResponse| rows_of(h, now),
            json: &to_json,
            notes: &|_| Vec::new(),
            empty: "no revisions on any host",
        },
    )
}

fn to_json(history: &HistoryResponse) -> Value {
    let changes = spec_changes(history);
    let revs: Vec<_> = history
        .revisions
        .iter()
        .zip(changes)
        .map(|(r, spec_keys)| {
            json!({
                "revision": r.number, "created_at_ms": r.created_at_ms, "image": r.image,
                "reason": r.reason, "author": r.author, "status": r.status,
                "env_keys_changed": r.env_keys_changed,
                "spec_keys_changed": spec_keys, "spec_toml": r.spec_toml,
            })
        })
        .collect();
    json!(revs)
}

/// For each revision (newest first), the spec keys that differ from the
/// revision before it (`volumes`, `env.LAUNCH_ENVIRONMENT`,
/// `resources.pids_limit`, ...); empty for the oldest one kept, or a spec
/// this berthctl cannot read.
fn spec_changes(history: &HistoryResponse) -> Vec<Vec<String>> {
    let specs: Vec<Option<berth_core::spec::ServiceSpec>> = history
        .revisions
        .iter()
        .map(|r| berth_core::spec::parse(&r.spec_toml).ok())
        .collect();
    (0..specs.len())
        .map(|i| match (specs.get(i + 1), &specs[i]) {
            (Some(Some(older)), Some(newer)) => berth_core::spec::diff::diff(older, newer)
                .into_iter()
                .map(|c| c.key)
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn rows_of(history: &HistoryResponse, now: u64) -> Vec<Vec<String>> {
    history
        .revisions
        .iter()
        .zip(spec_changes(history))
        .map(|(r, keys)| row(r, &keys, now))
        .collect()
}

fn row(r: &Revision, spec_keys: &[String], now: u64) -> Vec<String> {
    vec![
        r.number.to_string(),
        output::duration(now.saturating_sub(r.created_at_ms) / 1000),
        r.image.clone(),
        r.reason.clone(),
        r.author.clone(),
        if r.env_keys_changed.is_empty() {
            "-".into()
        } else {
            r.env_keys_changed.join(",")
        },
        if spec_keys.is_empty() {
            "-".into()
        } else {
            spec_keys.join(",")
        },
        r.status.clone(),
    ]
}

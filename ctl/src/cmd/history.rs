//! `berthctl history SERVICE`: a service's revisions.

use berth_proto::v1::HistoryRequest;
use berth_proto::v1::services_client::ServicesClient;
use serde_json::json;

use super::Global;
use crate::output::{self, Format, Sink};

/// List a service's revisions, newest first: image, why it was made, who
/// made it, and whether it is active, superseded or failed (with why).
/// Env changes show which keys changed, never their values.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service.
    service: String,
}

/// Runs `berthctl history`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let req = HistoryRequest { service: args.service };
    let history = global
        .one_agent("history")
        .await?
        .call(|ch| async move { ServicesClient::new(ch).history(req).await })
        .await?;
    match global.output {
        Format::Json => {
            let revs: Vec<_> = history
                .revisions
                .iter()
                .map(|r| {
                    json!({
                        "revision": r.number, "created_at_ms": r.created_at_ms, "image": r.image,
                        "reason": r.reason, "author": r.author, "status": r.status,
                        "env_keys_changed": r.env_keys_changed,
                    })
                })
                .collect();
            out.document(&json!(revs))?;
        }
        Format::Table => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let mut rows = vec![
                ["REV", "AGE", "IMAGE", "REASON", "AUTHOR", "ENV", "STATUS"]
                    .map(String::from)
                    .to_vec(),
            ];
            for r in &history.revisions {
                rows.push(vec![
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
                    r.status.clone(),
                ]);
            }
            out.text(&output::table(&rows))?;
        }
    }
    Ok(())
}

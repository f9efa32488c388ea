//! `berthctl fleet ls | show NAME`: the inventory's fleets and their hosts.

use serde_json::json;

use super::Global;
use crate::fleet::selection::fleet_hosts;
use crate::fleet::{Source, select};
use crate::output::{self, Format, Sink};

/// List the inventory's fleets, or show one fleet's hosts and labels.
///
/// The inventory is ~/.config/berth/fleets.toml, or --inventory FILE, or
/// $BERTH_INVENTORY. A fleet lists its hosts, or names a discovery command
/// whose output (one address a line, or JSON) gives them:
///
///   [defaults]                        # port, tls_dir, cert, parallel, timeout
///   timeout = "5s"
///
///   [fleets.prod]
///   labels = { env = "prod" }         # every host of the fleet gets these
///
///   [[fleets.prod.hosts]]
///   address = "10.0.0.5:7443"         # HOST or HOST:PORT
///   name    = "web-1"
///   labels  = { role = "web", az = "us-west-2a" }
///
///   [fleets.staging]
///   discover = ["sh", "-c", "aws ec2 describe-instances ... --output text"]
///
/// Then any agent command takes --fleet NAME (and --select role=web).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The fleets: how many hosts, or the discovery command.
    Ls,
    /// A fleet's hosts: name, address, labels (after --select; runs its
    /// discovery command).
    Show {
        /// The fleet.
        name: String,
    },
}

/// Runs `berthctl fleet`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    let inventory = global.select.load_inventory()?;
    match args.command {
        Command::Ls => {
            let fleets: Vec<_> = inventory.fleets.values().collect();
            match global.output {
                Format::Json => out.document(&json!(
                    fleets
                        .iter()
                        .map(|f| match &f.source {
                            Source::Listed(hosts) => json!({"name": f.name, "hosts": hosts.len(), "labels": f.labels}),
                            Source::Discover { command, .. } =>
                                json!({"name": f.name, "discover": command, "labels": f.labels}),
                        })
                        .collect::<Vec<_>>()
                ))?,
                Format::Table => {
                    if fleets.is_empty() {
                        out.out(&format!("no fleets in {}", inventory.path.display()))?;
                        return Ok(());
                    }
                    let mut rows = vec![vec!["FLEET".into(), "HOSTS".into(), "LABELS".into()]];
                    for f in fleets {
                        rows.push(vec![
                            f.name.clone(),
                            match &f.source {
                                Source::Listed(hosts) => hosts.len().to_string(),
                                Source::Discover { command, .. } => format!("discover: {}", command.join(" ")),
                            },
                            labels(&f.labels),
                        ]);
                    }
                    out.text(&output::table(&rows))?;
                }
            }
        }
        Command::Show { name } => {
            let fleet = inventory.fleet(&name)?;
            let hosts = select::filter(fleet_hosts(fleet).await?, &global.select.selectors);
            match global.output {
                Format::Json => out.document(&json!({
                    "name": fleet.name,
                    "hosts": hosts.iter().map(|h| json!({
                        "name": h.name, "address": h.target.to_string(), "labels": h.labels,
                    })).collect::<Vec<_>>(),
                }))?,
                Format::Table => {
                    let mut rows = vec![vec!["NAME".into(), "ADDRESS".into(), "LABELS".into()]];
                    for h in &hosts {
                        rows.push(vec![h.name.clone(), h.target.to_string(), labels(&h.labels)]);
                    }
                    out.text(&output::table(&rows))?;
                    out.err(&format!("{} hosts", hosts.len()))?;
                }
            }
        }
    }
    Ok(())
}

fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

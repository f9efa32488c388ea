//! `berthctl env set|unset|get|import`: a service's env file.

use std::path::PathBuf;

use berth_core::envfile;
use berth_proto::v1::env_client::EnvClient;
use berth_proto::v1::{GetEnvRequest, GetEnvResponse, SetEnvRequest, UnsetEnvRequest};
use serde_json::json;

use super::{Global, fleetview, progress};
use crate::output::{self, Format, Sink};

/// `berthctl env`: its subcommands. (The command's long help is on its
/// variant in `main.rs`, which clap shows.)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Set variables, keeping the others: `env set web DB_URL=postgres://... QUEUE=jobs`.
    ///
    /// Values given here show in the shell's history and the process list;
    /// for secrets prefer `env import` from a file only you can read.
    /// For a service not applied yet, writes env_dir/SERVICE.env for its
    /// first apply.
    Set {
        /// The service.
        service: String,
        /// KEY=VALUE pairs; the value is everything after the first '=',
        /// taken literally (quotes are part of it, as in Docker env files).
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// Remove variables: `env unset web QUEUE`. Each must be set.
    Unset {
        /// The service.
        service: String,
        /// Names to remove.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Show a service's variables, values masked unless --reveal.
    Get {
        /// The service.
        service: String,
        /// Show the values. Only operator certificates may; it is written to
        /// the agent's audit log.
        #[arg(long)]
        reveal: bool,
    },
    /// Replace the whole env with the variables of FILE (Docker env-file
    /// syntax: KEY=VALUE lines, # comments). Keys not in FILE are removed.
    ///
    /// FILE is checked here first (errors name the line, never a value),
    /// then again by the agent.
    ///
    /// A value wrapped in matching quotes (`KEY="prod"`, as in a .env file
    /// of another tool or a shell script) is imported with its quotes, as
    /// Docker would, with a warning naming the key and line; --strip-quotes
    /// removes them instead.
    Import {
        /// The service.
        service: String,
        /// The env file to read.
        file: PathBuf,
        /// Remove one matching pair of quotes (" or ') around a value.
        #[arg(long)]
        strip_quotes: bool,
    },
}

/// Runs `berthctl env`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Set { service, vars } => {
            let set = vars
                .iter()
                .map(|a| envfile::parse_assignment(a))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("env set {service}: {e}"))?;
            change(
                global,
                out,
                "env set",
                SetEnvRequest {
                    service,
                    set,
                    replace: false,
                },
            )
            .await
        }
        Command::Import {
            service,
            file,
            strip_quotes,
        } => {
            let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let vars = envfile::parse(&bytes, &file).map_err(|e| anyhow::anyhow!("{e}"))?;
            let set = imported(&vars, &bytes, &file, strip_quotes, out)?;
            change(
                global,
                out,
                "env import",
                SetEnvRequest {
                    service,
                    set,
                    replace: true,
                },
            )
            .await
        }
        Command::Unset { service, keys } => {
            for k in &keys {
                envfile::check_key(k).map_err(|m| anyhow::anyhow!("env unset {service}: {k:?} {m}"))?;
            }
            let req = UnsetEnvRequest { service, keys };
            progress::run(
                &*global.one_agent("env unset").await?,
                global.output,
                out,
                |ch| async move { EnvClient::new(ch).unset_env(req).await },
            )
            .await
            .map(|_| ())
        }
        Command::Get { service, reveal } => get(global, out, service, reveal).await,
    }
}

/// The variables to send for `env import`: `vars` as parsed from `bytes`
/// (the file at `path`), with a warning on stderr for each value wrapped
/// in quotes, or those quotes removed when `strip` is set.
fn imported(
    vars: &envfile::Vars,
    bytes: &[u8],
    path: &std::path::Path,
    strip: bool,
    out: &Sink,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut set: std::collections::HashMap<String, String> =
        vars.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    // `parse` accepted the bytes, so they are UTF-8.
    let text = String::from_utf8_lossy(bytes);
    let file = path.display();
    for q in envfile::quoted_values(&text) {
        let note = if strip {
            if let Some(v) = set.get_mut(&q.key)
                && let Some(inner) = envfile::unquote(v)
            {
                *v = inner.to_owned();
            }
            format!("{file}:{}: removed the quotes around the value of {}", q.line, q.key)
        } else {
            format!(
                "warning: {file}:{}: the value of {} is wrapped in quotes, which Docker keeps as part \
                 of the value; pass --strip-quotes to remove them",
                q.line, q.key
            )
        };
        out.err(&note)?;
    }
    Ok(set)
}

async fn change(global: &Global, out: &Sink, what: &str, req: SetEnvRequest) -> anyhow::Result<()> {
    progress::run(&*global.one_agent(what).await?, global.output, out, |ch| async move {
        EnvClient::new(ch).set_env(req).await
    })
    .await
    .map(|_| ())
}

async fn get(global: &Global, out: &Sink, service: String, reveal: bool) -> anyhow::Result<()> {
    let selection = global.selection().await?;
    if !selection.many {
        let req = GetEnvRequest {
            service: service.clone(),
            reveal,
        };
        let env = selection.hosts[0]
            .agent
            .call(|ch| async move { EnvClient::new(ch).get_env(req).await })
            .await?;
        match global.output {
            Format::Json => out.document(&env_json(&service, &env))?,
            Format::Table => {
                let at = if env.revision == 0 {
                    "not applied yet".to_owned()
                } else {
                    format!("revision {}", env.revision)
                };
                out.err(&format!("# {service}: {} ({at})", env.path))?;
                let mut rows = vec![vec!["KEY".to_owned(), "VALUE".to_owned()]];
                rows.extend(env.vars.iter().map(|v| vec![v.key.clone(), v.value.clone()]));
                out.text(&output::table(&rows))?;
                if env.vars.iter().any(|v| v.masked) {
                    out.err("# values masked; --reveal shows them (operators only)")?;
                }
            }
        }
        return Ok(());
    }
    let name = &service;
    let outcomes = selection
        .fan_out(|h| async move {
            let req = GetEnvRequest {
                service: name.clone(),
                reveal,
            };
            Ok(h.agent
                .call(|ch| async move { EnvClient::new(ch).get_env(req).await })
                .await?)
        })
        .await;
    fleetview::print(
        out,
        global.output,
        &outcomes,
        &fleetview::View {
            header: &["REV", "KEY", "VALUE"],
            rows: &|env: &GetEnvResponse| {
                env.vars
                    .iter()
                    .map(|v| vec![env.revision.to_string(), v.key.clone(), v.value.clone()])
                    .collect()
            },
            json: &|env| env_json(name, env),
            notes: &|_| Vec::new(),
            empty: "no variables on any host",
        },
    )
}

fn env_json(service: &str, env: &GetEnvResponse) -> serde_json::Value {
    let vars: serde_json::Map<String, serde_json::Value> =
        env.vars.iter().map(|v| (v.key.clone(), json!(v.value))).collect();
    json!({
        "service": service,
        "revision": env.revision,
        "path": env.path,
        "masked": env.vars.iter().any(|v| v.masked),
        "vars": vars,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::output::console::capture::console;

    const FILE: &[u8] = b"LAUNCH_ENVIRONMENT=\"prod\"\nPLAIN=x\nSINGLE='a b'\n";

    fn import(strip: bool) -> (std::collections::HashMap<String, String>, String) {
        let path = Path::new("prod.env");
        let vars = envfile::parse(FILE, path).expect("parse");
        let (c, _, err) = console(false);
        let set = imported(&vars, FILE, path, strip, &Sink::new(c)).expect("imported");
        (set, err.written())
    }

    #[test]
    fn a_quoted_value_is_warned_about_and_kept() {
        let (set, err) = import(false);
        assert_eq!(set["LAUNCH_ENVIRONMENT"], "\"prod\"");
        assert_eq!(set["SINGLE"], "'a b'");
        assert!(
            err.contains("prod.env:1: the value of LAUNCH_ENVIRONMENT is wrapped in quotes"),
            "{err}"
        );
        assert!(err.contains("prod.env:3: the value of SINGLE"), "{err}");
        assert!(!err.contains("PLAIN"), "{err}");
        assert!(!err.contains("prod\""), "never the value: {err}");
    }

    #[test]
    fn strip_quotes_removes_them() {
        let (set, err) = import(true);
        assert_eq!(
            (
                set["LAUNCH_ENVIRONMENT"].as_str(),
                set["SINGLE"].as_str(),
                set["PLAIN"].as_str()
            ),
            ("prod", "a b", "x")
        );
        assert!(err.contains("prod.env:1: removed the quotes"), "{err}");
    }
}

//! `berthctl`: the command line. Parses arguments and hands each subcommand
//! to its module; prints errors as one actionable line and exits non-zero.
//! When the reader of its output goes away (`berthctl events | head -1`),
//! it ends quietly with exit 0.

use std::process::ExitCode;

use berthctl::cmd::{self, Global};
use berthctl::output::{Console, Sink, WriteError};
use clap::{CommandFactory as _, Parser, Subcommand};

/// Drive berth agents: deploy, roll back and watch services on one host or a
/// fleet, over mutual-TLS gRPC.
///
/// Every command that talks to an agent takes --host (or BERTH_HOST) and
/// --tls-dir (or BERTH_TLS_DIR; default ~/.config/berth), which holds ca.pem
/// and your client certificate. Start with `berthctl certs --help`.
///
/// For many hosts at once: --fleet NAME from the inventory (`berthctl fleet
/// --help`), --select KEY=VALUE, --host more than once, or --hosts-from
/// FILE. Reads (info, ps, history, metrics, env get) then print one table
/// with a HOST column and a summary, and exit non-zero when any host
/// failed; logs -f, events and top follow every host at once. Changes
/// (apply, deploy, restart, rm, env set) take one host: use `berthctl
/// rollout` for a fleet.
#[derive(Parser)]
#[command(name = "berthctl", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

// Each subcommand's help is the doc comment on its `Args` (first paragraph
// for the list, all of it for `berthctl CMD --help`).
#[derive(Subcommand)]
enum Command {
    Certs(cmd::certs::Args),
    Info(cmd::info::Args),
    Apply(cmd::apply::Args),
    Deploy(cmd::deploy::Args),
    Rollback(cmd::rollback::Args),
    Ps(cmd::ps::Args),
    History(cmd::history::Args),
    Restart(cmd::restart::Args),
    Rm(cmd::rm::Args),
    Maintenance(cmd::maintenance::Args),
    Logs(cmd::logs::Args),
    Events(cmd::events::Args),
    /// Set, unset, show or import a service's env (values masked unless revealed).
    ///
    /// The env lives in the agent's env_dir/NAME.env (mode 0600, Docker
    /// env-file syntax). Every change is a new revision, applied by the
    /// spec's env_change policy: "restart" (default) replaces the container
    /// health-gated and, on failure, runs the old one again and writes the
    /// old env back; "none" only records it for the next deploy or restart.
    /// `berthctl history` shows which keys changed, never values; `berthctl
    /// rollback` brings back the env that went with a revision.
    ///
    /// The agent also watches the files: a hand edit is validated and
    /// applied the same way (author "file"); an invalid one is refused, the
    /// service keeps its env, and an "env-rejected" event names the file and
    /// line (`berthctl events`).
    Env(cmd::env::Args),
    Top(cmd::top::Args),
    Metrics(cmd::metrics::Args),
    Audit(cmd::audit::Args),
    Fleet(cmd::fleet::Args),
    Lock(cmd::lock::Args),
    Rollout(cmd::rollout::Args),
    Completions(cmd::completions::Args),
    Man(cmd::completions::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = &Sink::new(Console::stdio());
    let result = match cli.command {
        Command::Certs(args) => cmd::certs::run(out, args),
        Command::Info(args) => block_on(cmd::info::run(&cli.global, out, args)),
        Command::Apply(args) => block_on(cmd::apply::run(&cli.global, out, args)),
        Command::Deploy(args) => block_on(cmd::deploy::run(&cli.global, out, args)),
        Command::Rollback(args) => block_on(cmd::rollback::run(&cli.global, out, args)),
        Command::Ps(args) => block_on(cmd::ps::run(&cli.global, out, args)),
        Command::History(args) => block_on(cmd::history::run(&cli.global, out, args)),
        Command::Restart(args) => block_on(cmd::restart::run(&cli.global, out, args)),
        Command::Rm(args) => block_on(cmd::rm::run(&cli.global, out, args)),
        Command::Maintenance(args) => block_on(cmd::maintenance::run(&cli.global, out, args)),
        Command::Logs(args) => block_on(cmd::logs::run(&cli.global, out, args)),
        Command::Events(args) => block_on(cmd::events::run(&cli.global, out, args)),
        Command::Env(args) => block_on(cmd::env::run(&cli.global, out, args)),
        Command::Top(args) => block_on(cmd::top::run(&cli.global, out, args)),
        Command::Metrics(args) => block_on(cmd::metrics::run(&cli.global, out, args)),
        Command::Audit(args) => block_on(cmd::audit::run(&cli.global, out, args)),
        Command::Fleet(args) => block_on(cmd::fleet::run(&cli.global, out, args)),
        Command::Lock(args) => block_on(cmd::lock::run(&cli.global, out, args)),
        Command::Rollout(args) => block_on(cmd::rollout::run(&cli.global, out, args)),
        Command::Completions(args) => cmd::completions::run(Cli::command(), out, args),
        Command::Man(args) => cmd::completions::man(Cli::command(), out, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has gone: there is no one left to tell.
        Err(e) if WriteError::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<cmd::Exit>().is_some() => {
            ExitCode::from(e.downcast_ref::<cmd::Exit>().map_or(1, |x| x.0))
        }
        Err(e) => {
            // If stderr is gone too, the exit code still says it.
            let _ = out.err(&format!("berthctl: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// berthctl does little concurrent work per host, so a current-thread
/// runtime keeps start-up cheap.
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(f)
}

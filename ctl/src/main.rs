//! `berthctl`: the command line. Parses arguments and hands each subcommand
//! to its module; prints errors as one actionable line and exits non-zero.

use std::process::ExitCode;

use berthctl::cmd::{self, Global};
use clap::{Parser, Subcommand};

/// Drive berth agents: deploy, roll back and watch services on one host or a
/// fleet, over mutual-TLS gRPC.
///
/// Every command that talks to an agent takes --host (or BERTH_HOST) and
/// --tls-dir (or BERTH_TLS_DIR; default ~/.config/berth), which holds ca.pem
/// and your client certificate. Start with `berthctl certs --help`.
#[derive(Parser)]
#[command(name = "berthctl", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the CA, agent and client certificates for mutual TLS.
    Certs(cmd::certs::Args),
    /// Show an agent's version, host facts, Docker status and capabilities.
    Info(cmd::info::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(args) => cmd::certs::run(args),
        Command::Info(args) => block_on(cmd::info::run(&cli.global, args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthctl: {e:#}");
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

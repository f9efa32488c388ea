//! `berth-agent`: the daemon binary. Parses arguments, loads the config,
//! installs logging, runs the agent and turns SIGTERM/SIGINT into a graceful
//! shutdown with a grace timeout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_agent::config::Config;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long in-flight work gets to finish after SIGTERM before the agent
/// exits anyway. systemd's default stop timeout is 90s; this stays well inside.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Async worker threads at most (fewer on a one-core host). tokio's default
/// is one per core; the agent's async work (gRPC, probes, Docker events) is
/// light and never blocks a worker (file writes and metrics passes run on
/// the blocking pool), so two serve any host, and a 64-core host does not
/// pay 64 stacks and malloc arenas.
const MAX_WORKER_THREADS: usize = 2;

/// How long an idle blocking-pool thread lingers (tokio's default is 10s).
/// The pool serves metrics passes and state writes, seconds apart; a thread
/// costs microseconds to start, and one kept for nothing costs its stack.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Exit code for a bad config or usage (EX_USAGE from sysexits.h); systemd
/// units can tell it apart from a crash.
const EX_CONFIG: u8 = 64;

mod cli;
use cli::{Cli, Command};

// MAN_PAGES: (file name, roff text) of each page, rendered by build.rs.
include!(concat!(env!("OUT_DIR"), "/man_pages.rs"));

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Man { dir }) = &cli.command {
        return match write_man_pages(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-agent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-agent: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(Command::CheckConfig) = &cli.command {
        return match config.check_files() {
            Ok(()) => {
                // A warning, not a refusal: the agent runs, but the key is
                // exposed to other users of the host.
                if let Some(warning) = berth_agent::tls::key_mode_warning(&config.tls.key) {
                    eprintln!("berth-agent: warning: {warning}");
                }
                println!("{}: OK", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("berth-agent: {e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }

    berth_agent::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKER_THREADS),
        )
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, cli.config))
}

async fn serve(config: Config, path: PathBuf) -> ExitCode {
    info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "Starting berth-agent.");
    let cancel = CancellationToken::new();
    // Polled right here, not spawned: this function is the agent's root
    // task, and every task `run` starts is on its tracker.
    let agent = berth_agent::run(config, cancel.clone());
    tokio::pin!(agent);

    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            error!("Cannot install signal handlers.");
            return ExitCode::FAILURE;
        }
    };
    let finished = tokio::select! {
        _ = term.recv() => { info!(signal = "SIGTERM", "Shutting down."); None }
        _ = int.recv() => { info!(signal = "SIGINT", "Shutting down."); None }
        result = &mut agent => Some(result),
    };
    let result = match finished {
        Some(result) => result,
        None => {
            berth_agent::notify::stopping();
            cancel.cancel();
            match tokio::time::timeout(SHUTDOWN_GRACE, agent).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(grace = ?SHUTDOWN_GRACE, "Tasks did not finish in time; exiting anyway.");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(()) => {
            info!("Stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `berth-agent man DIR`: the pages build.rs rendered from [`Cli`].
fn write_man_pages(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in MAN_PAGES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_config_path_is_the_agents() {
        assert_eq!(
            super::cli::DEFAULT_CONFIG_PATH,
            berth_agent::config::DEFAULT_CONFIG_PATH
        );
    }

    #[test]
    fn the_man_pages_cover_the_agent_and_its_subcommands() {
        let names: Vec<&str> = super::MAN_PAGES.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["berth-agent.1", "berth-agent-check-config.1", "berth-agent-man.1"]
        );
        let page = String::from_utf8_lossy(super::MAN_PAGES[0].1);
        assert!(
            page.contains("berth node agent") && page.contains("BERTH_AGENT_CONFIG"),
            "{page}"
        );
    }
}

//! berth-agent's command line. Also compiled into build.rs, which renders
//! its man pages at build time (as clap_mangen suggests), so the agent
//! carries their text but no roff renderer; this file may use only std and
//! clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The config file when `--config` is not given
/// (`berth_agent::config::DEFAULT_CONFIG_PATH`, which a test compares).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/agent.toml";

/// berth node agent: keeps this host's Docker services, env files and nginx
/// sites converged, and serves the berth.v1 API over mutual TLS.
///
/// Runs in the foreground until SIGTERM or SIGINT. Logs go to stderr, or to
/// journald when started by systemd.
#[derive(Parser)]
#[command(name = "berth-agent", version, about, long_about)]
pub struct Cli {
    /// Agent config file (TOML). Unknown keys are errors.
    #[arg(long, short, global = true, env = "BERTH_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate the config file and the files it names, then exit: 0 when the
    /// agent would start, non-zero with the key and problem otherwise.
    CheckConfig,
    /// Write the man page of berth-agent (berth-agent.1, and one per
    /// subcommand) into DIR, then exit. Reads no config.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

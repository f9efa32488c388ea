//! One module per subcommand; each has `Args` (its doc comments are the
//! help) and `run(global, out, args)`, which calls agents through
//! [`Agent::call`] and prints only to the sink `out`. [`Global`] holds the
//! options every agent command takes; [`progress`] renders the deploy-shaped
//! calls' event streams for several subcommands.

pub mod apply;
pub mod audit;
pub mod certs;
pub mod completions;
pub mod deploy;
pub mod env;
pub mod events;
pub mod fleet;
pub mod fleetview;
pub mod history;
pub mod info;
pub mod lock;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod multiplex;
pub mod progress;
pub mod ps;
pub mod restart;
pub mod rm;
pub mod rollback;
pub mod rollout;
pub mod top;

use std::path::PathBuf;
use std::sync::Arc;

use crate::client::{Agent, default_tls_dir};
use crate::fleet::{Selection, SelectionArgs, SelectionError};
use crate::output::Format;

/// Options shared by every command that talks to an agent.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Which agents: --host, --fleet, --select, --hosts-from, and how to
    /// call them: --parallel, --timeout.
    #[command(flatten)]
    pub select: SelectionArgs,

    /// Directory with ca.pem and your client certificate NAME.pem/NAME-key.pem.
    /// [default: ~/.config/berth]
    #[arg(long, global = true, env = "BERTH_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// Which client certificate in --tls-dir to use (NAME of NAME.pem);
    /// default: the only one there.
    #[arg(long, global = true, env = "BERTH_CERT")]
    pub cert: Option<String>,

    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl Global {
    /// The TLS dir: --tls-dir, else ~/.config/berth.
    pub fn tls_dir(&self) -> PathBuf {
        self.tls_dir.clone().unwrap_or_else(default_tls_dir)
    }

    /// The selected hosts (see [`SelectionArgs::resolve`]), with
    /// `--tls-dir` and `--cert` applied; nothing is dialed yet.
    pub async fn selection(&self) -> Result<Selection, SelectionError> {
        self.select.resolve(self.tls_dir.as_deref(), self.cert.as_deref()).await
    }

    /// The one agent a changing command (`what`, e.g. `deploy`) talks to;
    /// a selection of several hosts is refused, pointing to `berthctl
    /// rollout`. It dials on its first [`Agent::call`].
    pub async fn one_agent(&self, what: &str) -> anyhow::Result<Arc<Agent>> {
        let selection = self.selection().await?;
        Ok(selection.single(what)?.agent.clone())
    }
}

/// Ends berthctl with this exit code and nothing more printed (what there
/// was to say has been said), e.g. 2 for `rollout --dry-run` when
/// something would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub u8);

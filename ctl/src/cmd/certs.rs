//! `berthctl certs`: make the CA, agent and client certificates.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::certs::{self, AGENT_DAYS, CA_DAYS, CLIENT_DAYS, Role, Validity};
use crate::output::Sink;

/// Make the certificates berth's mutual TLS runs on.
///
/// A fleet has one CA. Every agent gets a certificate for the names and IPs
/// clients dial; every person or tool gets a client certificate whose role
/// (operator: may change things; viewer: read and watch only) is written into
/// the certificate's subject as OU=<role>, with the name as CN=<name>. Agents
/// read the role from there: no other configuration is needed.
///
/// Every file is written with mode 0600; existing files are never replaced
/// without --force. Keep ca-key.pem offline in production: it can mint
/// operators.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a CA: DIR/ca.pem and DIR/ca-key.pem (valid 10 years).
    Init {
        /// Where to write the files.
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = CA_DAYS)]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by DIR/ca.pem.
    Issue {
        #[command(subcommand)]
        kind: Kind,
    },
    /// Revoke client certificates: add DIR/NAME.pem to the CA's revocation
    /// list (DIR/crl.pem, kept entries included), signed by DIR/ca-key.pem.
    /// Copy the list to every agent and point `[tls] crl` at it; agents
    /// reload it when it changes and refuse those certificates at the
    /// handshake.
    Revoke {
        /// Where the CA and the certificates are.
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke (NAME of DIR/NAME.pem); repeat for several.
        #[arg(long, required = true, num_args = 1..)]
        name: Vec<String>,
        /// The revocation list to update [default: DIR/crl.pem].
        #[arg(long)]
        crl: Option<PathBuf>,
        /// Days until the list says it should be replaced (agents keep
        /// refusing what it lists after that too).
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Kind {
    /// An agent (server) certificate: DIR/NAME.pem, DIR/NAME-key.pem (valid
    /// 825 days). Copy them and ca.pem to the host's /etc/berth/tls/.
    Agent {
        /// Where the CA is and the files go.
        #[arg(long)]
        dir: PathBuf,
        /// File name and certificate CN, e.g. the host name.
        #[arg(long)]
        name: String,
        /// A host name or IP address clients use to reach the agent; repeat
        /// for several. berthctl refuses an agent whose certificate does not
        /// hold the name it dialed.
        #[arg(long = "san", required = true, num_args = 1..)]
        sans: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = AGENT_DAYS)]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// A client certificate for a person or tool: DIR/NAME.pem,
    /// DIR/NAME-key.pem (valid 365 days).
    Client {
        /// Where the CA is and the files go.
        #[arg(long)]
        dir: PathBuf,
        /// Who this is, e.g. alice or ci-deployer; agents log it in the audit trail.
        #[arg(long)]
        name: String,
        /// What the holder may do.
        #[arg(long, value_enum)]
        role: Role,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = CLIENT_DAYS)]
        days: i64,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `berthctl certs`.
pub fn run(out: &Sink, args: Args) -> anyhow::Result<()> {
    let check_days = |days: i64| {
        anyhow::ensure!(days > 0 && days <= 36_500, "--days {days}: use 1 to 36500");
        Ok(Validity::days(days))
    };
    let pair = match args.command {
        Command::Revoke { dir, name, crl, days } => {
            check_days(days)?;
            let crl = crl.unwrap_or_else(|| dir.join("crl.pem"));
            let certs: Vec<PathBuf> = name.iter().map(|n| dir.join(format!("{n}.pem"))).collect();
            let count = certs::revoke(&dir, &certs, &crl, days).context("certs revoke")?;
            out.out(&format!(
                "wrote {} ({count} revoked certificate(s)); point the agents' [tls] crl at it",
                crl.display()
            ))?;
            return Ok(());
        }
        Command::Init { dir, days, force } => certs::init_ca(&dir, check_days(days)?, force),
        Command::Issue {
            kind:
                Kind::Agent {
                    dir,
                    name,
                    sans,
                    days,
                    force,
                },
        } => certs::issue_agent(&dir, &name, &sans, check_days(days)?, force),
        Command::Issue {
            kind:
                Kind::Client {
                    dir,
                    name,
                    role,
                    days,
                    force,
                },
        } => certs::issue_client(&dir, &name, role, check_days(days)?, force),
    }
    .context("certs")?;
    out.out(&format!("wrote {}\nwrote {}", pair.cert.display(), pair.key.display()))?;
    Ok(())
}

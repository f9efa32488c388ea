//! Helper processes a test runs next to its agents (a collector, a
//! `berthctl events` stream), their output in a file. Dropping one kills
//! and reaps it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::{Pki, berthctl_command};

/// A child process killed and reaped when dropped, for one whose pipes the
/// test reads itself (`berthctl logs -f` beside the test).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process this test started, stdout and stderr in `log`; killed and
/// reaped on drop.
pub struct Proc {
    child: Running,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`. Panics with where it comes from when
    /// it is not installed.
    pub fn start(program: &str, args: &[String], log: PathBuf) -> Proc {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: scripts/test-env.sh installs it (Debian package; see the script's PACKAGES)"
        );
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Proc {
            child: Running(child),
            log,
        }
    }

    /// What it wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// `berthctl events -o json` running in the background against one agent,
/// its output in `events-PORT.jsonl` in the test dir.
pub struct Events(Proc);

impl Events {
    /// Starts watching the agent at `addr`.
    pub fn watch(pki: &Pki, addr: &str) -> Events {
        Events::watch_with(pki, addr, &[])
    }

    /// Starts `berthctl events -o json ARGS` (e.g. `--since 1h SERVICE`)
    /// against the agent at `addr`.
    pub fn watch_with(pki: &Pki, addr: &str, args: &[&str]) -> Events {
        let port = addr.rsplit(':').next().unwrap_or(addr);
        let log = pki.path(&format!("events-{port}.jsonl"));
        let out = std::fs::File::create(&log).expect("events file");
        let child = berthctl_command(pki, addr)
            .args(["events", "-o", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berthctl events");
        Events(Proc {
            child: Running(child),
            log,
        })
    }

    /// Everything received so far, one JSON event a line.
    pub fn text(&self) -> String {
        self.0.logs()
    }

    /// The events received so far.
    pub fn events(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

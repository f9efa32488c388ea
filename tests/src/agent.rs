//! One `berth-agent` process under test: its config, its log, and its
//! start (until it listens, or until it supervises) and stop. Dropping an
//! [`Agent`] kills the process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Pki, berthctl, bin, wait_until};

/// A running `berth-agent` process; killed on drop.
pub struct Agent {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: String,
    /// Its stderr.
    pub log: PathBuf,
    /// Its config file.
    pub config: PathBuf,
}

/// The agent config for a test: everything under `pki`'s temp dir, port 0,
/// Prometheus off. `extra` is appended (more TOML keys or tables).
pub fn agent_config(pki: &Pki, extra: &str) -> String {
    let d = pki.dir.path().display();
    format!(
        r#"listen = "127.0.0.1:0"
listen_address_file = "{d}/agent.addr"
state_dir = "{d}/state"
env_dir = "{d}/env"
[tls]
ca = "{d}/tls/ca.pem"
cert = "{d}/tls/agent.pem"
key = "{d}/tls/agent-key.pem"
[docker]
instance = "{instance}"
[metrics]
prometheus_listen = ""
{extra}
"#,
        instance = pki.instance
    )
}

impl Agent {
    /// Writes `config` and starts an agent on it; waits until it listens.
    pub fn start(pki: &Pki, config: &str) -> Agent {
        let config_path = pki.path("agent.toml");
        std::fs::write(&config_path, config).expect("write config");
        let addr_file = pki.path("agent.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = pki.path("agent.log");
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(bin("berth-agent"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn berth-agent");
        let mut agent = Agent {
            child: Some(child),
            addr: String::new(),
            log,
            config: config_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && a.ends_with('\n')
            {
                agent.addr = a.trim().to_owned();
                return agent;
            }
            if let Some(status) = agent.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("berth-agent exited with {status} before listening:\n{}", agent.logs());
            }
            assert!(
                Instant::now() < deadline,
                "berth-agent did not listen within 30s:\n{}",
                agent.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts an agent and waits until it supervises services (it listens
    /// first and reaches Docker right after; calls in between get
    /// UNAVAILABLE).
    pub fn start_ready(pki: &Pki, config: &str) -> Agent {
        let agent = Agent::start(pki, config);
        wait_until(Duration::from_secs(30), "the agent to supervise services", || {
            berthctl(pki, &agent.addr, &["--cert", "alice", "ps"]).status.success()
        });
        agent
    }

    /// The agent's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("agent is running")
    }

    /// Sends `signal` and waits up to `within` for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // kill(1) rather than libc::kill keeps this crate free of unsafe.
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

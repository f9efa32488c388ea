//! One `berth-agent` process under test: its config, its log, and its
//! start (until it listens, or until it supervises) and stop. Dropping an
//! [`Agent`] kills the process.
//!
//! Every agent the harness starts gets its own `NOTIFY_SOCKET`, the
//! systemd readiness protocol of the packaged unit: `READY=1` comes once it
//! listens *and* supervises (`tests/tests/sdnotify.rs` holds the agent to
//! that), so waiting for an agent costs no polling RPCs, and a fleet of
//! hundreds is waited for as cheaply as one.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Pki, bin};

/// How long one agent may take to start.
const START: Duration = Duration::from_secs(30);

/// A running `berth-agent` process; killed on drop.
pub struct Agent {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: String,
    /// Its stderr.
    pub log: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    addr_file: PathBuf,
    notify: UnixDatagram,
    ready: bool,
}

/// Where one agent keeps its files, and what it listens on and as.
pub(crate) struct Layout<'a> {
    /// Config, address file, log, state and env dirs go here.
    pub dir: &'a Path,
    /// The dir with `ca.pem` and the agent certificate.
    pub tls: &'a Path,
    /// The agent certificate's name: `NAME.pem`, `NAME-key.pem`.
    pub cert: &'a str,
    /// `docker.instance`.
    pub instance: &'a str,
    /// `listen`.
    pub listen: &'a str,
    /// `metrics.prometheus_listen` ("" is off).
    pub prometheus: &'a str,
}

impl Layout<'_> {
    /// The agent config, `extra` appended (more TOML keys of `[metrics]`,
    /// or tables).
    pub fn config(&self, extra: &str) -> String {
        let d = self.dir.display();
        let t = self.tls.display();
        format!(
            r#"listen = "{listen}"
listen_address_file = "{d}/agent.addr"
state_dir = "{d}/state"
env_dir = "{d}/env"
[tls]
ca = "{t}/ca.pem"
cert = "{t}/{cert}.pem"
key = "{t}/{cert}-key.pem"
[docker]
instance = "{instance}"
[metrics]
prometheus_listen = "{prometheus}"
{extra}
"#,
            listen = self.listen,
            prometheus = self.prometheus,
            cert = self.cert,
            instance = self.instance
        )
    }
}

/// The agent config for a test: everything under `pki`'s temp dir, port 0,
/// Prometheus off. `extra` is appended (more TOML keys or tables).
pub fn agent_config(pki: &Pki, extra: &str) -> String {
    config_in(pki, "", extra)
}

/// [`agent_config`] with the Prometheus endpoint on `127.0.0.1:PORT`.
pub fn agent_config_with_prometheus(pki: &Pki, port: u16, extra: &str) -> String {
    config_in(pki, &format!("127.0.0.1:{port}"), extra)
}

fn config_in(pki: &Pki, prometheus: &str, extra: &str) -> String {
    Layout {
        dir: pki.dir.path(),
        tls: &pki.tls_dir(),
        cert: "agent",
        instance: &pki.instance,
        listen: "127.0.0.1:0",
        prometheus,
    }
    .config(extra)
}

/// What an agent is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// It wrote its listen address.
    Listening,
    /// It said `READY=1`: it listens and supervises.
    Ready,
}

impl Agent {
    /// Writes `config` and starts an agent on it; waits until it listens.
    pub fn start(pki: &Pki, config: &str) -> Agent {
        let mut agent = Agent::spawn(pki.dir.path(), config);
        wait_all(&mut [&mut agent], Until::Listening, START);
        agent
    }

    /// Starts an agent and waits until it supervises services (it listens
    /// first and reaches Docker right after; calls in between get
    /// UNAVAILABLE).
    pub fn start_ready(pki: &Pki, config: &str) -> Agent {
        let mut agent = Agent::spawn(pki.dir.path(), config);
        wait_all(&mut [&mut agent], Until::Ready, START);
        agent
    }

    /// Like [`Agent::start_ready`], with the agent's open-file limit (soft
    /// and hard) set to `nofile` by prlimit(1): 1024 is what systemd gives a
    /// unit without `LimitNOFILE`.
    pub fn start_ready_nofile(pki: &Pki, config: &str, nofile: u64) -> Agent {
        let mut agent = Agent::spawn_with(pki.dir.path(), config, Some(nofile));
        wait_all(&mut [&mut agent], Until::Ready, START);
        agent
    }

    /// `berth-agent --config CONFIG`, its stderr appended to `log`, logging
    /// at info to stderr (never journald; `BERTH_TEST_AGENT_LOG` sets another
    /// filter, e.g. `info,berth_agent::supervisor=debug`), stdin and stdout
    /// closed.
    pub fn command(config: &Path, log: &Path) -> Command {
        Agent::command_with(config, log, None)
    }

    /// [`Agent::command`], run under `prlimit --nofile=N:N` when `nofile`
    /// is given (prlimit execs the agent: the pid is the agent's).
    fn command_with(config: &Path, log: &Path, nofile: Option<u64>) -> Command {
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin("berth-agent"));
                c
            }
            None => Command::new(bin("berth-agent")),
        };
        cmd.arg("--config")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("BERTH_TEST_AGENT_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        cmd
    }

    /// Writes `config` as `DIR/agent.toml` and starts an agent on it, its
    /// log in `DIR/agent.log` and its notify socket `DIR/notify.sock`;
    /// returns at once ([`wait_all`] waits).
    pub(crate) fn spawn(dir: &Path, config: &str) -> Agent {
        Agent::spawn_with(dir, config, None)
    }

    fn spawn_with(dir: &Path, config: &str, nofile: Option<u64>) -> Agent {
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config).expect("write config");
        let addr_file = dir.join("agent.addr");
        let _ = std::fs::remove_file(&addr_file);
        let sock = dir.join("notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).unwrap_or_else(|e| panic!("bind {}: {e}", sock.display()));
        notify.set_nonblocking(true).expect("nonblocking notify socket");
        let log = dir.join("agent.log");
        let child = Agent::command_with(&config_path, &log, nofile)
            .env("NOTIFY_SOCKET", &sock)
            .spawn()
            .expect("spawn berth-agent");
        Agent {
            child: Some(child),
            addr: String::new(),
            log,
            config: config_path,
            addr_file,
            notify,
            ready: false,
        }
    }

    /// Whether the agent got as far as `until`.
    fn reached(&self, until: Until) -> bool {
        !self.addr.is_empty() && (until == Until::Listening || self.ready)
    }

    /// Takes in what the agent said so far; `Err` when it has exited.
    fn poll(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            self.ready |= String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1");
        }
        if self.addr.is_empty()
            && let Ok(a) = std::fs::read_to_string(&self.addr_file)
            && a.ends_with('\n')
        {
            self.addr = a.trim().to_owned();
        }
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!("berth-agent exited with {status}")),
            Some(Err(e)) => Err(format!("cannot wait for berth-agent: {e}")),
            None => Err("berth-agent was stopped".to_owned()),
        }
    }

    /// The agent's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Like [`crate::wait_until`], but a timeout shows this agent's log, so
    /// a failure says what the agent did instead.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; agent log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("agent is running")
    }

    /// Sends `signal` (e.g. SIGSTOP, 19, to make it hang) without waiting.
    pub fn signal(&self, signal: i32) {
        assert!(send(self.pid(), signal), "kill -{signal} {}", self.pid());
    }

    /// SIGKILLs the process without reaping it (drop reaps), so many
    /// agents can be stopped at once.
    pub(crate) fn kill_now(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
        }
    }

    /// Sends `signal` and waits up to `within` for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        send(child.id(), signal);
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

/// `kill -SIGNAL PID`: kill(1) rather than libc::kill keeps this crate free
/// of unsafe. Whether it was sent.
fn send(pid: u32, signal: i32) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until every agent got as far as `until`, all at once; panics with
/// the log of the first that exits or is late.
pub(crate) fn wait_all(agents: &mut [&mut Agent], until: Until, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut late = None;
        for agent in agents.iter_mut().filter(|a| !a.reached(until)) {
            if let Err(e) = agent.poll() {
                panic!("{e} before {until:?}:\n{}", agent.logs());
            }
            if !agent.reached(until) {
                late.get_or_insert(&**agent);
            }
        }
        let Some(late) = late else { return };
        assert!(
            Instant::now() < deadline,
            "berth-agent ({}) was not {until:?} within {within:?}:\n{}",
            late.config.display(),
            late.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
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

//! Shared harness for the end-to-end tests: real `berth-agent` processes on
//! `127.0.0.1:0` with freshly minted certificates, driven by the real
//! `berthctl` binary.
//!
//! Every test gets its own temp dir (certs, config, state, logs) and its own
//! agent; dropping an [`Agent`] kills its process, so tests run in parallel
//! and leave nothing behind.

pub mod dockerproxy;
pub mod nginx;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berthctl::certs::{self, Role, Validity};

/// Path of a workspace binary built by `cargo build --bins` (the test
/// command builds them first). Panics with what to run when it is missing.
pub fn bin(name: &str) -> PathBuf {
    // target/debug/deps/this-test → target/debug/NAME
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test.sh does this)",
        path.display()
    );
    path
}

/// A temp dir with a CA, an agent certificate for 127.0.0.1 and localhost,
/// and an operator client certificate named "alice". Its agents use their
/// own `docker.instance`, so tests in parallel never see each other's
/// containers; dropping it removes every container of that instance.
pub struct Pki {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// The agents' `docker.instance`.
    pub instance: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        for id in containers(&self.instance, None) {
            let _ = Command::new("docker").args(["rm", "-f", "-v", &id]).output();
        }
    }
}

impl Pki {
    /// Mints a fresh CA, agent and operator certificates.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        let tls = dir.path().join("tls");
        certs::init_ca(&tls, Validity::days(1), false).expect("ca");
        certs::issue_agent(
            &tls,
            "agent",
            &["127.0.0.1".into(), "localhost".into()],
            Validity::days(1),
            false,
        )
        .expect("agent cert");
        certs::issue_client(&tls, "alice", Role::Operator, Validity::days(1), false).expect("client cert");
        let tag = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let instance = format!(
            "t{}-{}",
            std::process::id(),
            tag.trim_start_matches("berth-test-").to_lowercase()
        );
        Pki { dir, instance }
    }

    /// The dir berthctl's --tls-dir points at.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

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

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Writes `text` as `NAME.toml` in the test dir and runs `berthctl apply -f` on it.
pub fn apply_spec(pki: &Pki, addr: &str, name: &str, text: &str) -> Output {
    let path = pki.path(&format!("{name}.toml"));
    std::fs::write(&path, text).expect("write spec");
    berthctl(pki, addr, &["apply", "-f", &path.to_string_lossy()])
}

/// The test registry (`BERTH_TEST_REGISTRY`, default 127.0.0.1:5000).
pub fn registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

/// A test image reference: v1, v2, bad, crashy, cpu, mem.
pub fn image(tag: &str) -> String {
    format!("{}/berth-test/app:{tag}", registry())
}

/// Runs the docker CLI; panics with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Ids of the containers of `instance` (and `service`), in any state.
pub fn containers(instance: &str, service: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "ps".to_owned(),
        "-aq".to_owned(),
        "--no-trunc".to_owned(),
        "--filter".to_owned(),
        format!("label=berth.instance={instance}"),
    ];
    if let Some(s) = service {
        args.push("--filter".into());
        args.push(format!("label=berth.service={s}"));
    }
    let out = Command::new("docker").args(&args).output().expect("run docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Polls `cond` every 100ms until it holds or `timeout` passes; panics
/// with `what` on timeout.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker inspect -f FORMAT ID`.
pub fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

/// GETs `http://127.0.0.1:PORT/PATH` with a short timeout; None on error.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

/// The host port Docker published for container port 8000 of `id`.
pub fn host_port(id: &str) -> u16 {
    let p = inspect(id, "{{(index (index .NetworkSettings.Ports \"8000/tcp\") 0).HostPort}}");
    p.parse()
        .unwrap_or_else(|_| panic!("no published port 8000 on {id}: {p:?}"))
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

/// Runs `berthctl` with `--host` and `--tls-dir` set for `agent`.
pub fn berthctl(pki: &Pki, host: &str, args: &[&str]) -> Output {
    Command::new(bin("berthctl"))
        .arg("--host")
        .arg(host)
        .arg("--tls-dir")
        .arg(pki.tls_dir())
        .args(args)
        .env_remove("BERTH_HOST")
        .env_remove("BERTH_TLS_DIR")
        .env_remove("BERTH_CERT")
        .output()
        .expect("run berthctl")
}

/// stdout of a successful command; panics with stderr otherwise.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a failed command; panics if it succeeded.
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "command should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

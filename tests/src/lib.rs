//! Shared harness for the end-to-end tests: real `berth-agent` processes on
//! `127.0.0.1:0` with freshly minted certificates, driven by the real
//! `berthctl` binary.
//!
//! Every test gets its own temp dir (certs, config, state, logs) and its own
//! agent; dropping an [`Agent`] kills its process, so tests run in parallel
//! and leave nothing behind.

mod agent;
mod docker;
pub mod dockerproxy;
pub mod nginx;
mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use agent::{Agent, agent_config};
pub use docker::{containers, docker, host_port, image, inspect, registry};
pub use pki::Pki;

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

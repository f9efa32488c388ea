//! Shared harness for the end-to-end tests: real `berth-agent` processes on
//! `127.0.0.1:0` with freshly minted certificates, driven by the real
//! `berthctl` binary.
//!
//! Every test gets its own temp dir (certs, config, state, logs) and its own
//! agent; dropping an [`Agent`] kills its process, so tests run in parallel
//! and leave nothing behind. A [`Fleet`] is many agents sharing one PKI.
//!
//! One of each helper lives here: specs are built with [`Spec`] and sent
//! with [`apply`]; [`ps`], [`history`] and [`service`] read berthctl's JSON;
//! [`containers`], [`running`], [`one_running`] and [`only_container`]
//! look at what Docker runs; [`free_port`] and [`rss_kib`] ask the OS;
//! [`flood`] opens a connection flood; [`benchjson`] records a bench's
//! figures for the summary table; [`AuthRegistry`] is a registry that
//! wants a password.

mod agent;
mod authregistry;
pub mod benchjson;
mod docker;
pub mod dockerproxy;
pub mod fleet;
pub mod flood;
pub mod nginx;
mod os;
mod pki;
mod procs;
mod runbook;
mod spec;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use agent::{Agent, agent_config, agent_config_with_prometheus};
pub use authregistry::AuthRegistry;
pub use docker::{
    containers, docker, env_of, host_port, image, inspect, network_of, one_running, only_container, registry, running,
    try_inspect,
};
pub use fleet::{Fleet, Host, Member};
pub use os::{free_port, rss_kib, status_field};
pub use pki::Pki;
pub use procs::{Events, Proc, Running};
pub use runbook::Runbook;
use serde_json::Value;
pub use spec::{Spec, TomlValue};

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

/// A name no other test run uses.
pub fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("berth-test-{what}-{}-{nanos:x}", std::process::id())
}

/// GETs `http://127.0.0.1:PORT/PATH` with a short timeout; None on error.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at(([127, 0, 0, 1], port).into(), path)
}

/// Like [`http_get`], from any address (a container's own).
pub fn http_get_at(to: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

/// `berthctl --host HOST --tls-dir TLS`, with none of berthctl's
/// environment variables from the caller's shell.
pub fn berthctl_command(pki: &Pki, host: &str) -> Command {
    let mut cmd = berthctl_bare(pki);
    cmd.arg("--host").arg(host);
    cmd
}

/// `berthctl --tls-dir TLS`, no host, none of berthctl's environment
/// variables from the caller's shell.
fn berthctl_bare(pki: &Pki) -> Command {
    let mut cmd = Command::new(bin("berthctl"));
    cmd.arg("--tls-dir")
        .arg(pki.tls_dir())
        .env_remove("BERTH_HOST")
        .env_remove("BERTH_TLS_DIR")
        .env_remove("BERTH_CERT")
        .env_remove("BERTH_INVENTORY");
    cmd
}

/// Runs `berthctl` with `--host` and `--tls-dir` set for `agent`.
pub fn berthctl(pki: &Pki, host: &str, args: &[&str]) -> Output {
    berthctl_command(pki, host).args(args).output().expect("run berthctl")
}

/// Writes `spec` as `NAME.toml` in the test dir and runs `berthctl apply -f` on it.
pub fn apply(pki: &Pki, addr: &str, spec: &Spec) -> Output {
    let path = spec.write_in(pki.dir.path());
    berthctl(pki, addr, &["apply", "-f", &path.to_string_lossy()])
}

/// `berthctl apply -f SPEC` against `addr`, running beside the test (a
/// deploy held on its gate while the test looks on); its output discarded.
pub fn apply_in_background(pki: &Pki, addr: &str, spec: &Spec) -> std::process::Child {
    let path = spec.write_in(pki.dir.path());
    berthctl_command(pki, addr)
        .args(["apply", "-f"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn deploy")
}

/// Writes `text` as `check.toml` in the test dir and runs
/// `berth-agent check-config` on it.
pub fn check_config(pki: &Pki, text: &str) -> Output {
    let path = pki.path("check.toml");
    std::fs::write(&path, text).expect("write check.toml");
    Command::new(bin("berth-agent"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check-config")
}

/// stdout of a successful command parsed as JSON; panics otherwise.
pub fn json(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `berthctl ps -o json` of the agent at `addr`.
pub fn ps(pki: &Pki, addr: &str) -> Value {
    json(&berthctl(pki, addr, &["ps", "-o", "json"]))
}

/// `berthctl history SERVICE -o json`, newest revision first.
pub fn history(pki: &Pki, addr: &str, service: &str) -> Vec<Value> {
    json(&berthctl(pki, addr, &["history", service, "-o", "json"]))
        .as_array()
        .cloned()
        .expect("history is an array")
}

/// A service in `ps` or `metrics` JSON (`name` or `service`), if it is there yet.
pub fn find_service<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == name || s["name"] == name))
}

/// A service in `ps` or `metrics` JSON; panics when it is not there.
pub fn service<'a>(v: &'a Value, name: &str) -> &'a Value {
    find_service(v, name).unwrap_or_else(|| panic!("{name} not in {v}"))
}

/// The middle value of `values` (the upper one of an even count); the
/// default (zero) when there are none.
pub fn median<T: Copy + PartialOrd + Default>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or_default()
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

/// A berthctl client of the agent at `addr` using `cert`'s certificate,
/// for tests that call the gRPC API directly.
pub fn rpc_as(pki: &Pki, addr: &str, cert: &str) -> berthctl::client::Agent {
    let files = berthctl::client::TlsFiles::resolve(&pki.tls_dir(), Some(cert)).expect("tls files");
    berthctl::client::Agent::new(addr.parse().expect("agent address"), files)
}

/// A current-thread runtime for a test's direct gRPC calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

//! berthctl through the real binary, with nothing reading its output: it
//! must end quietly with exit 0 (as `berthctl ps | head -1` needs), where
//! Rust's `println!` would panic ("failed printing to stdout: Broken
//! pipe", exit 101).
//!
//! The reader end of the pipe is closed before berthctl starts, so its
//! first write meets a closed pipe, every time.

use std::process::{Command, Output, Stdio};

/// Runs berthctl with `args` and a stdout pipe nobody reads.
fn run_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run berthctl")
}

#[test]
fn a_closed_stdout_ends_berthctl_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let out = run_into_closed_pipe(&["certs", "init", "--dir", dir_arg]);
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stderr).as_ref()),
        (Some(0), ""),
        "berthctl certs init into a closed pipe"
    );
    // The work was done; only its report had no reader.
    assert!(dir.path().join("ca.pem").exists() && dir.path().join("ca-key.pem").exists());
}

#[test]
fn help_into_a_closed_stdout_ends_quietly() {
    let out = run_into_closed_pipe(&["certs", "--help"]);
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stderr).as_ref()),
        (Some(0), "")
    );
}

#[test]
fn a_real_failure_still_fails_with_a_closed_stdout() {
    // No CA in an empty dir: the error goes to stderr, exit 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = dir.path().to_str().expect("utf-8 path");
    let out = run_into_closed_pipe(&[
        "certs", "issue", "client", "--dir", dir_arg, "--name", "alice", "--role", "operator",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("berthctl: certs: "), "{err}");
}

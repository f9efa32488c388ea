//! A deploy on a host whose `state_dir` fills up, against a real agent and
//! Docker: the state_dir is a small tmpfs, filled to the last byte at two
//! moments of a deploy.
//!
//! - Before the deploy: the new revision cannot be recorded, so nothing on
//!   the host changes and the deploy is refused with the disk's own words.
//! - While the new container waits in its health gate (the old one is
//!   already stopped: the recreate strategy): the gate passes, the revision
//!   cannot be made active, so the new container goes and the old one
//!   serves again; one container runs, the state still says the old
//!   revision, no temp file is left, and the audit record of the failure is
//!   written as soon as the disk has room.
//!
//! Needs root (mount -t tmpfs), as the whole suite does for Docker.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_tests::{
    Agent, Pki, Spec, agent_config, apply_in_background, berthctl, berthctl_command, containers, docker, fails, image,
    ok, ps, running, service, wait_until,
};

const T: Duration = Duration::from_secs(60);

/// A tmpfs mounted on a directory for the test's length.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed (the test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }

    /// Fills the file system to the last byte; returns the filler.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        // dd stops with ENOSPC, which is the point.
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .args(["bs=64k"])
            .stderr(Stdio::null())
            .status();
        let avail = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        let avail = String::from_utf8_lossy(&avail.stdout);
        assert!(
            avail.lines().nth(1).is_some_and(|l| l.trim() == "0"),
            "not full: {avail}"
        );
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A gate the test opens: healthy only once /tmp/ready exists in the
/// container, so the test decides when a deploy's gate passes.
fn gated(tag: &str) -> Spec {
    Spec::new("web", tag)
        .key("ports", ["8000"])
        .health_exec(&[
            "sh",
            "-c",
            "test -e /tmp/ready && wget -q -O- http://127.0.0.1:8000/health",
        ])
        .set("deploy", "health_deadline", "60s")
}

fn open_gate(id: &str) {
    docker(&["exec", id, "touch", "/tmp/ready"]);
}

/// The one running container of web, once there is exactly one.
fn the_running(pki: &Pki) -> String {
    let mut ids = Vec::new();
    wait_until(T, "exactly one running container of web", || {
        ids = running(&pki.instance, "web");
        ids.len() == 1
    });
    ids.remove(0)
}

#[test]
fn a_full_state_dir_never_leaves_the_service_without_a_container() {
    let pki = Pki::new();
    let state = Tmpfs::mount(&pki.dir.path().join("state"), "4m");
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));

    // Revision 1, its gate opened by hand.
    let first = apply_in_background(&pki, &agent.addr, &gated("v1"));
    let mut v1 = Vec::new();
    wait_until(T, "revision 1's container to start", || {
        v1 = running(&pki.instance, "web");
        v1.len() == 1
    });
    open_gate(&v1[0]);
    let status = first.wait_with_output().expect("apply ends").status;
    assert!(status.success(), "revision 1 deployed");
    let v1 = the_running(&pki);

    // Full before the deploy: refused, nothing touched.
    let filler = state.fill();
    let err = fails(&berthctl(
        &pki,
        &agent.addr,
        &["deploy", "web", "--image", &image("v2")],
    ));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(the_running(&pki), v1, "the old container still serves");
    std::fs::remove_file(&filler).expect("free");

    // Full while revision 2 waits in its gate, after the old one stopped.
    let deploy = berthctl_command(&pki, &agent.addr)
        .args(["deploy", "web", "--image", &image("v2")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deploy");
    let mut v2 = String::new();
    wait_until(T, "revision 2's container to start", || {
        v2 = running(&pki.instance, "web")
            .into_iter()
            .find(|id| *id != v1)
            .unwrap_or_default();
        !v2.is_empty()
    });
    let filler = state.fill();
    open_gate(&v2);
    let out = deploy.wait_with_output().expect("deploy ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the deploy failed: {said}");
    assert!(said.contains("cannot record revision 2 as active"), "{said}");
    assert!(said.contains("No space left on device"), "{said}");

    assert_eq!(the_running(&pki), v1, "the old container serves again");
    assert_eq!(
        containers(&pki.instance, Some("web")),
        vec![v1.clone()],
        "the new one is gone"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&state.0)
        .expect("state dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let web = service(&ps(&pki, &agent.addr), "web").clone();
    assert_eq!(web["revision"], 1, "{web}");

    // With room again, the next record brings the held one with it, and the
    // chain is whole.
    std::fs::remove_file(&filler).expect("free");
    // Any audited call writes the held record first: a reveal is one.
    ok(&berthctl(&pki, &agent.addr, &["env", "get", "web", "--reveal"]));
    let audit = ok(&berthctl(&pki, &agent.addr, &["audit"]));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("deploy") && l.contains("cannot record revision 2")),
        "{audit}"
    );
    ok(&berthctl(&pki, &agent.addr, &["audit", "--verify"]));
    drop(agent);
}

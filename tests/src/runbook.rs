//! The deploy people run by hand today, as the benchmarks' peer: a shell
//! script that pulls the image, stops and removes the old container, runs
//! the new one on a fixed host port and curls it until it is healthy. The
//! container is removed on drop.

use std::process::Command;

/// One hand-deployed service: a container on `127.0.0.1:PORT`.
pub struct Runbook {
    container: String,
    script: String,
}

impl Runbook {
    /// A runbook for container port 8000 on host port `port`, healthy when
    /// `health_path` answers.
    pub fn new(port: u16, health_path: &str) -> Runbook {
        let container = format!("berth-bench-runbook-{}", std::process::id());
        let script = format!(
            r#"set -e
docker pull -q "$1" >/dev/null
docker stop -t 2 {container} >/dev/null 2>&1 || true
docker rm {container} >/dev/null 2>&1 || true
docker run -d --name {container} --label berth.bench=true -p 127.0.0.1:{port}:8000 "$1" >/dev/null
until curl -fsS -o /dev/null http://127.0.0.1:{port}{health_path}; do sleep 0.05; done"#
        );
        Runbook { container, script }
    }

    /// Deploys `image` (`bash -c SCRIPT runbook IMAGE`); panics with the
    /// script's stderr when it fails.
    pub fn deploy(&self, image: &str) {
        let out = Command::new("bash")
            .args(["-c", &self.script, "runbook", image])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "runbook failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Runbook {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.container]).output();
    }
}

//! A registry that wants a password: Debian's `docker-registry` with
//! htpasswd auth on its own free port and its own storage (a temp dir),
//! started by the test and killed when dropped, beside the open test
//! registry it never touches. The password is changed by rewriting its
//! htpasswd file, which the registry re-reads when it changes.
//!
//! Images get in with `docker push` under a private `DOCKER_CONFIG`, so the
//! login never reaches the user's `~/.docker/config.json`; the local tag is
//! removed right after, so an agent must pull them. Needs `docker-registry`
//! and `htpasswd` (apache2-utils), both installed by scripts/test-env.sh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{docker, free_port, image, wait_until};

/// A running authenticated registry.
pub struct AuthRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    user: String,
    dir: tempfile::TempDir,
    child: Child,
    pushed: Vec<String>,
}

impl AuthRegistry {
    /// Starts one where `user` logs in with `password`.
    pub fn start(user: &str, password: &str) -> AuthRegistry {
        for (program, package) in [
            ("/usr/bin/docker-registry", "docker-registry"),
            ("/usr/bin/htpasswd", "apache2-utils"),
        ] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install {package} (scripts/test-env.sh does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-authreg-")
            .tempdir()
            .expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let d = dir.path().display();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n\
                 http:\n  addr: {addr}\n  secret: berth-test-authreg-not-a-secret\n\
                 auth:\n  htpasswd:\n    realm: berth-test\n    path: {d}/htpasswd\n"
            ),
        )
        .expect("write registry config");
        let reg = AuthRegistry {
            addr,
            user: user.to_owned(),
            child: Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("registry.log")).expect("log"))
                .spawn()
                .expect("start docker-registry"),
            dir,
            pushed: Vec::new(),
        };
        reg.set_password(password);
        let url = format!("http://{}/v2/", reg.addr);
        wait_until(Duration::from_secs(30), "the authenticated registry to answer", || {
            status_of(&url, None) == "401"
        });
        reg
    }

    /// Changes the user's password (rewrites the htpasswd file).
    pub fn set_password(&self, password: &str) {
        let out = Command::new("/usr/bin/htpasswd")
            .args(["-B", "-b", "-c"])
            .arg(self.dir.path().join("htpasswd"))
            .args([&self.user, password])
            .output()
            .expect("run htpasswd");
        assert!(
            out.status.success(),
            "htpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = format!("http://{}/v2/", self.addr);
        let login = format!("{}:{password}", self.user);
        wait_until(Duration::from_secs(30), "the registry to take the new password", || {
            status_of(&url, Some(&login)) == "200"
        });
    }

    /// Copies the test image `tag` in (as `ADDR/berth-test/app:TAG`, logged
    /// in with `password`) and returns that reference, absent locally.
    pub fn push(&mut self, tag: &str, password: &str) -> String {
        let target = format!("{}/berth-test/app:{tag}", self.addr);
        docker(&["tag", &image(tag), &target]);
        let cli = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = Command::new("docker");
            cmd.env("DOCKER_CONFIG", self.docker_config()).args(args);
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("run docker");
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                std::io::Write::write_all(&mut pipe, text.as_bytes()).expect("docker stdin");
            }
            let out = child.wait_with_output().expect("docker");
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        cli(
            &["login", "-u", &self.user, "--password-stdin", &self.addr],
            Some(password),
        );
        cli(&["push", "-q", &target], None);
        docker(&["rmi", &target]);
        self.pushed.push(target.clone());
        target
    }

    /// The registry's own log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where `docker login` for pushes keeps its credentials.
    fn docker_config(&self) -> PathBuf {
        let path = self.dir.path().join("docker-config");
        std::fs::create_dir_all(&path).expect("docker config dir");
        path
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What agents pulled from it; the image stays under its other tag.
        for target in &self.pushed {
            let _ = Command::new("docker")
                .args(["rmi", target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The HTTP status of a GET of `url`, with basic auth `user:password`.
fn status_of(url: &str, login: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--noproxy",
        "*",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
    ]);
    if let Some(login) = login {
        cmd.args(["-u", login]);
    }
    cmd.arg(url)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

//! A real nginx for tests: Debian's binary with its own prefix, config,
//! pid file, logs and temp dirs under a temp dir, listening on unprivileged
//! loopback ports. The agent under test gets `[nginx]` settings pointing at
//! it. Dropping it stops nginx.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running nginx master.
pub struct Nginx {
    /// Its prefix dir (config, logs, temp files).
    pub dir: PathBuf,
    /// Where berth writes site files.
    pub sites: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    /// Starts nginx under `dir/nginx`. Panics with what is missing when nginx is not installed.
    pub fn start(dir: &Path) -> Nginx {
        let dir = dir.join("nginx");
        let sites = dir.join("sites");
        for d in ["sites", "logs", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).expect("nginx dirs");
        }
        let conf = dir.join("nginx.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    include {d}/sites/*.conf;
}}
"#
            ),
        )
        .expect("nginx.conf");
        let nginx = Nginx { dir, sites, conf };
        let out = Command::new(nginx_bin())
            .args(nginx.args())
            .output()
            .unwrap_or_else(|e| panic!("cannot run nginx ({e}); install it (scripts/test-env.sh does)"));
        assert!(
            out.status.success(),
            "nginx failed to start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = nginx.dir.join("nginx.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid.exists() {
            assert!(Instant::now() < deadline, "nginx wrote no pid file");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            self.conf.display().to_string(),
        ]
    }

    /// The agent's `[nginx]` table for this nginx.
    pub fn agent_config(&self) -> String {
        let quote = |v: Vec<String>| v.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
        let bin = nginx_bin();
        let mut test = vec![bin.clone()];
        test.extend(self.args());
        test.push("-t".into());
        let mut reload = vec![bin];
        reload.extend(self.args());
        reload.extend(["-s".into(), "reload".into()]);
        format!(
            "[nginx]\nsites_dir = {:?}\ntest_command = [{}]\nreload_command = [{}]\n",
            self.sites.display().to_string(),
            quote(test),
            quote(reload)
        )
    }

    /// The site file berth writes for `service`.
    pub fn site(&self, service: &str) -> PathBuf {
        self.sites.join(format!("berth-{service}.conf"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(nginx_bin())
            .args(self.args())
            .args(["-s", "stop"])
            .output();
    }
}

fn nginx_bin() -> String {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    "nginx".to_owned()
}

/// One GET through nginx with a Host header; Ok((status, body)).
pub fn get(port: u16, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

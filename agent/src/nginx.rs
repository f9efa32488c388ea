//! The nginx site in front of a proxied service.
//!
//! Owns rendering one site file per service (`sites_dir/berth-NAME.conf`),
//! and swapping it in safely as separate steps: [`render`] → [`Sites::install`]
//! (write the candidate atomically, run the configured test command, and on
//! failure put the previous file back before anything reloads, so the
//! running nginx never sees a bad config) → reload. The reload command is
//! nginx's graceful one: old workers finish their requests. Nothing here
//! decides *when* to switch; deploys and the reconciler do. The test and
//! reload commands run as child processes (at most 30 s each) on the
//! caller's task; no task of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::config::NginxConfig;
use berth_core::spec::{Proxy, ServiceSpec};

/// Longest a test or reload command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Marks files berth owns, so nothing else in the sites dir is touched.
const HEADER: &str = "# Managed by berth-agent. Hand edits are reverted; change the service spec instead.";

/// A site could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    /// nginx refused the configuration; carries nginx's own words.
    #[error("nginx rejected the site for {service}: {output}")]
    Rejected {
        /// The service.
        service: String,
        /// What the test command printed.
        output: String,
    },
    /// The reload command failed.
    #[error("nginx reload failed: {0}")]
    Reload(String),
    /// A command could not be run at all.
    #[error("cannot run {command:?}: {message}")]
    Command {
        /// The command.
        command: Vec<String>,
        /// Why.
        message: String,
    },
    /// Reading or writing a site file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Renders the site for `spec` sending traffic to `upstream`; in
/// `maintenance` mode every location, health paths included, answers 503
/// with a short page instead (so a load balancer drains the host), while
/// the container keeps running.
pub fn render(spec: &ServiceSpec, proxy: &Proxy, upstream: SocketAddr, maintenance: bool) -> String {
    let name = spec.name.as_str();
    // The name as it is: every site shares nginx's `http` block, so two
    // services must never map to one upstream (`a-b` and `a_b` did when
    // `-` and `.` became `_`), and a service name holds only characters
    // an upstream name may (`[a-z0-9_.-]`).
    let upstream_name = format!("berth_{name}");
    let tls = proxy.tls_cert.as_ref().zip(proxy.tls_key.as_ref());
    let mut out = String::new();
    out.push_str(HEADER);
    out.push('\n');
    out.push_str(&format!("# service {name}\n"));
    out.push_str(&format!(
        "upstream {upstream_name} {{\n    server {upstream} max_fails=0;\n    keepalive 16;\n}}\n\n"
    ));
    out.push_str("server {\n");
    for port in &proxy.listen {
        // With TLS files every port but 80 speaks TLS; 80 stays plain for
        // load balancers and redirects.
        let ssl = if tls.is_some() && *port != 80 { " ssl" } else { "" };
        out.push_str(&format!("    listen {port}{ssl};\n"));
    }
    out.push_str(&format!("    server_name {};\n", proxy.server_names.join(" ")));
    if let Some((cert, key)) = tls {
        out.push_str(&format!("    ssl_certificate {};\n", cert.display()));
        out.push_str(&format!("    ssl_certificate_key {};\n", key.display()));
    }
    let proxy_block = |extra: &str| {
        format!(
            "        proxy_pass http://{upstream_name};\n\
             \x20       proxy_http_version 1.1;\n\
             \x20       proxy_set_header Connection \"\";\n\
             \x20       proxy_set_header Host $host;\n\
             \x20       proxy_set_header X-Real-IP $remote_addr;\n\
             \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20       proxy_connect_timeout {}s;\n\
             \x20       proxy_read_timeout {}s;\n{extra}",
            proxy.connect_timeout.as_std().as_secs().max(1),
            proxy.read_timeout.as_std().as_secs().max(1),
        )
    };
    let body = |extra: &str| {
        if maintenance {
            // The service name is a spec name: letters, digits, `.`, `_`
            // and `-` only, nothing nginx's string syntax or HTML reads.
            format!(
                "        default_type text/html;\n\
                 \x20       add_header Retry-After 60 always;\n\
                 \x20       return 503 \"<!doctype html><title>503 Maintenance</title>\
                 <h1>{name} is down for maintenance</h1><p>Please try again shortly.</p>\\n\";\n{extra}"
            )
        } else {
            proxy_block(extra)
        }
    };
    for path in &proxy.health_paths {
        // Heartbeats reach the app as they are and stay out of the access log.
        out.push_str(&format!(
            "\n    location = {path} {{\n{}        access_log off;\n    }}\n",
            body("")
        ));
    }
    out.push_str(&format!("\n    location / {{\n{}    }}\n", body("")));
    out.push_str("}\n");
    out
}

/// The sites berth manages in nginx's include dir.
#[derive(Debug, Clone)]
pub struct Sites {
    config: NginxConfig,
}

impl Sites {
    /// Sites under `config.sites_dir`, tested and reloaded with its commands.
    pub fn new(config: NginxConfig) -> Self {
        Sites { config }
    }

    /// The site file of a service.
    pub fn path(&self, service: &str) -> PathBuf {
        self.config.sites_dir.join(format!("berth-{service}.conf"))
    }

    /// Services that have a berth site file (ours: named berth-*.conf and
    /// starting with our header).
    pub fn managed(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.config.sites_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let service = file.strip_prefix("berth-")?.strip_suffix(".conf")?.to_owned();
                let head = std::fs::read_to_string(e.path()).ok()?;
                head.starts_with(HEADER).then_some(service)
            })
            .collect()
    }

    /// The current content of a service's site file, if any.
    pub fn current(&self, service: &str) -> Option<String> {
        std::fs::read_to_string(self.path(service)).ok()
    }

    /// Puts `content` in place for `service` if nginx accepts it, then
    /// reloads. When the test fails the previous file (or none) is restored
    /// and nothing is reloaded. Returns whether anything changed.
    pub async fn install(&self, service: &str, content: &str) -> Result<bool, NginxError> {
        let path = self.path(service);
        let previous = self.current(service);
        if previous.as_deref() == Some(content) {
            return Ok(false);
        }
        write_atomic(&path, content)?;
        if let Err(e) = self.test(service).await {
            restore(&path, previous.as_deref())?;
            return Err(e);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Removes a service's site and reloads. A missing file is fine.
    pub async fn remove(&self, service: &str) -> Result<(), NginxError> {
        let path = self.path(service);
        match std::fs::remove_file(&path) {
            Ok(()) => self.reload().await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NginxError::Io { path, source }),
        }
    }

    /// Runs the configured test command.
    pub async fn test(&self, service: &str) -> Result<(), NginxError> {
        let (ok, output) = run(&self.config.test_command).await?;
        if ok {
            Ok(())
        } else {
            Err(NginxError::Rejected {
                service: service.to_owned(),
                output,
            })
        }
    }

    /// Runs the configured reload command.
    pub async fn reload(&self) -> Result<(), NginxError> {
        let (ok, output) = run(&self.config.reload_command).await?;
        if ok { Ok(()) } else { Err(NginxError::Reload(output)) }
    }
}

async fn run(command: &[String]) -> Result<(bool, String), NginxError> {
    let fail = |message: String| NginxError::Command {
        command: command.to_vec(),
        message,
    };
    let (program, args) = command.split_first().ok_or_else(|| fail("empty command".into()))?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .map_err(|_| fail(format!("no answer within {}s", COMMAND_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    // nginx -t speaks on stderr; keep the lines that say what is wrong.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = text
        .lines()
        .map(|l| l.trim().trim_start_matches("nginx: "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Ok((out.status.success(), text))
}

fn write_atomic(path: &Path, content: &str) -> Result<(), NginxError> {
    let io = |source| NginxError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // The temp name does not end in .conf, so nginx's include glob never
    // picks up a half-written file.
    let tmp = path.with_extension("conf.berth-tmp");
    crate::atomicfile::write(path, &tmp, content.as_bytes(), 0o644)
        .map_err(|(path, source)| NginxError::Io { path, source })
}

fn restore(path: &Path, previous: Option<&str>) -> Result<(), NginxError> {
    match previous {
        Some(content) => write_atomic(path, content),
        None => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NginxError::Io {
                path: path.to_owned(),
                source,
            }),
        },
    }
}

/// "api.example.com:80 -> 172.17.0.3:8000", for `ps`.
pub fn routes(proxy: &Proxy, upstream: SocketAddr) -> Vec<String> {
    let names = proxy.server_names.join(",");
    proxy
        .listen
        .iter()
        .map(|p| format!("{names}:{p} -> {upstream}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ServiceSpec {
        berth_core::spec::parse(&format!(
            "name = \"api\"\nimage = \"app:v1\"\nports = [\"8000\"]\n[proxy]\nserver_names = [\"api.example.com\"]\nlisten = [8080]\n{extra}"
        ))
        .expect("spec")
    }

    #[test]
    fn renders_upstream_headers_and_health_paths() {
        let s = spec("");
        let proxy = s.proxy.clone().expect("proxy");
        let site = render(&s, &proxy, "172.17.0.3:8000".parse().expect("addr"), false);
        assert!(site.starts_with(HEADER), "{site}");
        assert!(site.contains("server 172.17.0.3:8000"), "{site}");
        assert!(site.contains("listen 8080;"), "{site}");
        assert!(site.contains("server_name api.example.com;"), "{site}");
        assert!(site.contains("X-Forwarded-For $proxy_add_x_forwarded_for"), "{site}");
        assert!(site.contains("X-Forwarded-Proto $scheme"), "{site}");
        for p in ["/__lbheartbeat__", "/__heartbeat__", "/__version__"] {
            assert!(site.contains(&format!("location = {p} {{")), "{site}");
        }
        assert!(!site.contains("ssl"), "{site}");
    }

    /// Found by the nginx_site fuzzer: `a.b` and `a_b` rendered the same
    /// upstream name, and nginx refuses a second `upstream` of that name.
    #[test]
    fn services_never_share_an_upstream_name() {
        let addr: SocketAddr = "172.17.0.3:8000".parse().expect("addr");
        let names = ["a.b", "a_b", "a-b", "ab"];
        let upstreams: Vec<String> = names
            .iter()
            .map(|name| {
                let mut s = spec("");
                s.name = name.parse().expect("a service name");
                let proxy = s.proxy.clone().expect("proxy");
                let site = render(&s, &proxy, addr, false);
                let line = site.lines().find(|l| l.starts_with("upstream ")).expect("upstream");
                assert!(site.contains(&format!("proxy_pass http://berth_{name};")), "{site}");
                line.to_owned()
            })
            .collect();
        for (i, u) in upstreams.iter().enumerate() {
            assert!(!upstreams[..i].contains(u), "{u} twice: {upstreams:?}");
        }
    }

    #[test]
    fn maintenance_answers_503_everywhere_and_proxies_nothing() {
        let s = spec("");
        let proxy = s.proxy.clone().expect("proxy");
        let site = render(&s, &proxy, "172.17.0.3:8000".parse().expect("addr"), true);
        assert!(!site.contains("proxy_pass"), "{site}");
        // The three health paths and `/`.
        assert_eq!(site.matches("return 503 ").count(), 4, "{site}");
        assert!(site.contains("api is down for maintenance"), "{site}");
    }

    #[test]
    fn tls_ports_get_ssl_and_80_stays_plain() {
        let s = spec("tls_cert = \"/etc/ssl/a.pem\"\ntls_key = \"/etc/ssl/a.key\"\n").clone();
        let mut proxy = s.proxy.clone().expect("proxy");
        proxy.listen = vec![80, 443];
        let site = render(&s, &proxy, "10.0.0.2:8000".parse().expect("addr"), false);
        assert!(
            site.contains("listen 80;") && site.contains("listen 443 ssl;"),
            "{site}"
        );
        assert!(site.contains("ssl_certificate /etc/ssl/a.pem;"), "{site}");
    }

    #[tokio::test]
    async fn a_rejected_site_restores_the_previous_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sites = Sites::new(NginxConfig {
            sites_dir: dir.path().to_owned(),
            // A stand-in test command: accepts a site only if it says "good".
            test_command: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "grep -q good {}/berth-api.conf || {{ echo 'bad config' >&2; exit 1; }}",
                    dir.path().display()
                ),
            ],
            reload_command: vec!["true".into()],
        });
        assert!(sites.install("api", "good 1").await.expect("first"));
        let err = sites.install("api", "broken").await.expect_err("rejected");
        assert!(err.to_string().contains("bad config"), "{err}");
        assert_eq!(sites.current("api").as_deref(), Some("good 1"));
        assert!(
            !sites.install("api", "good 1").await.expect("same"),
            "unchanged content is a no-op"
        );
        sites.remove("api").await.expect("remove");
        assert!(sites.current("api").is_none());
    }
}

//! Registry logins that expire: running a registry's `password_command` or
//! credential helper when a pull needs its password, and keeping the answer
//! until its `ttl` passes or the registry refuses it.
//!
//! Owns one cache entry per configured registry, each behind its own async
//! mutex, so pulls from one registry run its command once between them and
//! other registries never wait on it. Inputs: the [`RegistryAuth`] list
//! from the config. Outputs: Docker credentials for a pull, and errors that
//! name the registry and the command (its stdout, which holds the secret,
//! never appears in one, nor in a log). A command runs without a shell,
//! with the agent's environment, stdin closed (a helper gets the registry
//! on stdin), and is killed after [`COMMAND_TIMEOUT`]. No task of its own.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;
use tracing::info;

use super::auth::{RegistryAuth, Secret, configured_for, docker_credentials};

/// Longest a password command or helper may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Most characters of a failing command's stderr quoted in its error.
const STDERR_SHOWN: usize = 300;

/// Why a registry's password could not be had.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry}: {source_kind} `{command}` {what}")]
pub struct LoginError {
    /// The registry.
    pub registry: String,
    /// "password_command" or "credential_helper".
    pub source_kind: &'static str,
    /// The command as configured (arguments are not secret: they are in
    /// the world-readable config).
    pub command: String,
    /// What went wrong, never holding what the command printed on stdout.
    pub what: String,
}

/// Credentials for one pull, and whether asking again could change them.
pub struct Login {
    /// For Docker's `X-Registry-Auth`.
    pub credentials: DockerCredentials,
    /// True when they come from a command or helper and were not fetched
    /// just now: a refused pull is worth one more try with fresh ones.
    pub retry_fresh: bool,
}

/// Every configured registry's credentials, fetched when needed.
pub struct Logins {
    registries: Vec<RegistryAuth>,
    /// The last answer of each registry's command, by index.
    cache: Vec<Mutex<Option<Cached>>>,
}

struct Cached {
    username: String,
    secret: String,
    at: Instant,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // RegistryAuth's Debug hides passwords; the cache is never shown.
        f.debug_list().entries(&self.registries).finish()
    }
}

impl Logins {
    /// Logins for `registries`; nothing is run yet.
    pub fn new(registries: Vec<RegistryAuth>) -> Logins {
        let cache = registries.iter().map(|_| Mutex::new(None)).collect();
        Logins { registries, cache }
    }

    /// Credentials for a pull from `registry`: None when none are
    /// configured. `fresh` asks the command or helper again even when its
    /// last answer is still within its ttl (the registry refused it).
    pub async fn credentials(&self, registry: &str, fresh: bool) -> Result<Option<Login>, LoginError> {
        let Some(i) = configured_for(&self.registries, registry) else {
            return Ok(None);
        };
        let (auth, cache) = (&self.registries[i], &self.cache[i]);
        if let Secret::Password(password) = &auth.secret {
            return Ok(Some(Login {
                credentials: docker_credentials(registry, &auth.username, password),
                retry_fresh: false,
            }));
        }
        let mut cached = cache.lock().await;
        if !fresh
            && let Some(c) = cached.as_ref()
            && c.at.elapsed() < auth.ttl
        {
            return Ok(Some(Login {
                credentials: docker_credentials(registry, &c.username, &c.secret),
                retry_fresh: true,
            }));
        }
        let (username, secret) = fetch(auth).await?;
        info!(registry = %auth.registry, "Fetched registry credentials.");
        let credentials = docker_credentials(registry, &username, &secret);
        *cached = Some(Cached {
            username,
            secret,
            at: Instant::now(),
        });
        Ok(Some(Login {
            credentials,
            retry_fresh: false,
        }))
    }
}

/// Runs the command or helper of `auth`: (username, secret).
async fn fetch(auth: &RegistryAuth) -> Result<(String, String), LoginError> {
    let (source_kind, argv, stdin) = match &auth.secret {
        Secret::Command(argv) => ("password_command", argv.clone(), None),
        Secret::Helper(program) => (
            "credential_helper",
            vec![program.clone(), "get".to_owned()],
            Some(format!("{}\n", auth.registry)),
        ),
        Secret::Password(p) => return Ok((auth.username.clone(), p.clone())),
    };
    let err = |what: String| LoginError {
        registry: auth.registry.clone(),
        source_kind,
        command: argv.join(" "),
        what,
    };
    let stdout = run(&argv, stdin.as_deref()).await.map_err(err)?;
    match &auth.secret {
        Secret::Helper(_) => parse_helper(&stdout).map_err(err),
        _ => {
            let password = stdout.lines().next().unwrap_or("").trim().to_owned();
            if password.is_empty() {
                return Err(err("printed no password on its first line".into()));
            }
            Ok((auth.username.clone(), password))
        }
    }
}

/// Runs `argv` and returns its stdout; the error says how it failed, with
/// the start of its stderr (a helper reports on stdout, so for a failure
/// that is quoted instead: a failing helper has no secret to print).
async fn run(argv: &[String], stdin: Option<&str>) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not be started: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A helper that exits without reading is reported by its status.
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("did not finish within {}s", COMMAND_TIMEOUT.as_secs()))?
        .map_err(|e| format!("failed: {e}"))?;
    if !out.status.success() {
        let said = if stdin.is_some() { &out.stdout } else { &out.stderr };
        let said: String = String::from_utf8_lossy(said)
            .trim()
            .chars()
            .take(STDERR_SHOWN)
            .collect();
        return Err(if said.is_empty() {
            format!("failed ({})", out.status)
        } else {
            format!("failed ({}): {said}", out.status)
        });
    }
    String::from_utf8(out.stdout).map_err(|_| "printed something that is not UTF-8".to_owned())
}

/// A credential helper's answer: `{"ServerURL": .., "Username": ..,
/// "Secret": ..}`.
fn parse_helper(stdout: &str) -> Result<(String, String), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    // The error of serde_json could quote the input: say only where.
    let a: Answer = serde_json::from_str(stdout.trim()).map_err(|e| {
        format!(
            "printed no credentials JSON (at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if a.secret.is_empty() {
        return Err("printed credentials without a Secret".into());
    }
    if a.username.is_empty() {
        return Err("printed credentials without a Username".into());
    }
    Ok((a.username, a.secret))
}

/// Whether Docker's pull error says the registry refused the credentials.
pub fn refused(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "401",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.to_string_lossy().into_owned()
    }

    fn command(argv: Vec<String>, ttl: Duration) -> Logins {
        Logins::new(vec![RegistryAuth {
            registry: "r.example.com".into(),
            username: "AWS".into(),
            secret: Secret::Command(argv),
            ttl,
        }])
    }

    #[tokio::test]
    async fn a_command_runs_once_until_fresh_is_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = dir.path().join("count");
        let cmd = script(
            dir.path(),
            "pw",
            &format!("echo x >> {0}; echo \"pw-$(wc -l < {0} | tr -d ' ')\"", count.display()),
        );
        let logins = command(vec![cmd], Duration::from_secs(3600));
        let password = |l: Option<Login>| l.expect("login").credentials.password.expect("password");
        assert_eq!(
            password(logins.credentials("r.example.com", false).await.expect("1")),
            "pw-1"
        );
        let again = logins
            .credentials("r.example.com", false)
            .await
            .expect("2")
            .expect("login");
        assert!(again.retry_fresh);
        assert_eq!(again.credentials.password.as_deref(), Some("pw-1"), "cached");
        assert_eq!(
            password(logins.credentials("r.example.com", true).await.expect("3")),
            "pw-2"
        );
        assert!(
            logins
                .credentials("other.example.com", false)
                .await
                .expect("none")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_failing_command_names_registry_and_command_never_stdout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cmd = script(dir.path(), "pw", "echo leaked-secret; echo 'token expired' >&2; exit 3");
        let logins = command(
            vec![cmd.clone(), "--region".into(), "us-west-2".into()],
            Duration::from_secs(1),
        );
        let e = logins
            .credentials("r.example.com", false)
            .await
            .err()
            .expect("fails")
            .to_string();
        assert!(e.contains("registry r.example.com: password_command"), "{e}");
        assert!(e.contains(&format!("{cmd} --region us-west-2")), "{e}");
        assert!(e.contains("token expired") && !e.contains("leaked-secret"), "{e}");
        let missing = command(vec!["/nonexistent/aws".into()], Duration::from_secs(1));
        let e = missing
            .credentials("r.example.com", false)
            .await
            .err()
            .expect("fails")
            .to_string();
        assert!(e.contains("could not be started"), "{e}");
    }

    #[tokio::test]
    async fn a_helper_gets_the_registry_on_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = script(
            dir.path(),
            "docker-credential-fake",
            r#"read url; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s"}' "$url" "$url""#,
        );
        let logins = Logins::new(vec![RegistryAuth {
            registry: "r.example.com".into(),
            username: String::new(),
            secret: Secret::Helper(helper),
            ttl: Duration::from_secs(60),
        }]);
        let c = logins
            .credentials("r.example.com", false)
            .await
            .expect("ok")
            .expect("login")
            .credentials;
        assert_eq!(c.username.as_deref(), Some("u-r.example.com"));
        assert!(
            parse_helper("not json secret")
                .expect_err("bad")
                .contains("no credentials JSON")
        );
        assert!(!parse_helper("not json secret").expect_err("bad").contains("secret"));
    }

    #[test]
    fn refusals_are_recognised() {
        assert!(refused(
            "Head \"http://r/v2/app/manifests/v1\": no basic auth credentials"
        ));
        assert!(refused("unauthorized: authentication required"));
        assert!(!refused("manifest for r/app:v9 not found: manifest unknown"));
    }
}

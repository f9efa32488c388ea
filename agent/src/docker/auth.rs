//! Registry credentials: where each registry's come from, which registry
//! a pull uses, and Docker's form of them. Pure; the passwords never reach
//! a `Debug` line. Running commands and helpers, and keeping what they
//! hand out, is `logins`.

use std::fmt;
use std::time::Duration;

use berth_core::image::DOCKER_HUB;
use bollard::auth::DockerCredentials;

/// Where a registry's password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Fixed, read from `password_file` at start.
    Password(String),
    /// The first stdout line of this program and arguments
    /// (`password_command`).
    Command(Vec<String>),
    /// A Docker credential helper program, run as `PROGRAM get`.
    Helper(String),
}

/// Credentials for one registry, used for pulls from that registry only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry's `host[:port]` as it appears in image references, e.g.
    /// `registry.example.com` or `127.0.0.1:5000`; `docker.io` for Docker Hub.
    pub registry: String,
    /// User name ("" with a helper, which names its own).
    pub username: String,
    /// Where the password comes from.
    pub secret: Secret,
    /// How long a command's or helper's answer is used.
    pub ttl: Duration,
}

impl fmt::Debug for RegistryAuth {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.secret {
            Secret::Password(_) => "password_file".to_owned(),
            Secret::Command(argv) => format!("password_command {}", argv.join(" ")),
            Secret::Helper(program) => format!("credential_helper {program}"),
        };
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("source", &source)
            .finish()
    }
}

impl RegistryAuth {
    /// The program a `credential_helper` value names: a path as given, a
    /// name as `docker-credential-NAME` (looked up in PATH).
    pub fn helper_program(helper: &str) -> String {
        if helper.contains('/') {
            helper.to_owned()
        } else {
            format!("docker-credential-{helper}")
        }
    }
}

/// Where in `registries` the entry for `registry` is, if there is one.
pub(super) fn configured_for(registries: &[RegistryAuth], registry: &str) -> Option<usize> {
    let wanted = normalize_registry(registry);
    registries
        .iter()
        .position(|r| normalize_registry(&r.registry) == wanted)
}

/// What Docker's `X-Registry-Auth` wants for `registry`: a user name and
/// password, or (`username` "<token>", from a credential helper) an
/// identity token.
pub(super) fn docker_credentials(registry: &str, username: &str, secret: &str) -> DockerCredentials {
    let wanted = normalize_registry(registry);
    let serveraddress = if wanted == DOCKER_HUB {
        // What Docker Hub's auth expects, as `docker login` stores it.
        "https://index.docker.io/v1/".to_owned()
    } else {
        wanted
    };
    if username == "<token>" {
        return DockerCredentials {
            identitytoken: Some(secret.to_owned()),
            serveraddress: Some(serveraddress),
            ..Default::default()
        };
    }
    DockerCredentials {
        username: Some(username.to_owned()),
        password: Some(secret.to_owned()),
        serveraddress: Some(serveraddress),
        ..Default::default()
    }
}

/// A registry name as configured or parsed, reduced to `host[:port]`, with
/// Docker Hub's aliases folded into "docker.io".
fn normalize_registry(registry: &str) -> String {
    let host = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_compared_by_host() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("Registry.Example.com"), "registry.example.com");
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("http://127.0.0.1:5000/"), "127.0.0.1:5000");
    }

    fn password(registry: &str, username: &str, password: &str) -> RegistryAuth {
        RegistryAuth {
            registry: registry.into(),
            username: username.into(),
            secret: Secret::Password(password.into()),
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn credentials_are_chosen_by_the_images_registry() {
        let registries = vec![
            password("registry.example.com", "alice", "secret-a"),
            password("https://index.docker.io/v1/", "hub", "secret-h"),
        ];
        assert_eq!(configured_for(&registries, "Registry.example.com"), Some(0));
        assert_eq!(configured_for(&registries, DOCKER_HUB), Some(1));
        assert!(configured_for(&registries, "127.0.0.1:5000").is_none());
        let c = docker_credentials(DOCKER_HUB, "hub", "secret-h");
        assert_eq!(c.serveraddress.as_deref(), Some("https://index.docker.io/v1/"));
        assert_eq!(c.password.as_deref(), Some("secret-h"));
        let c = docker_credentials("registry.example.com", "alice", "secret-a");
        assert_eq!(c.serveraddress.as_deref(), Some("registry.example.com"));
    }

    #[test]
    fn a_helpers_token_is_an_identity_token() {
        let c = docker_credentials("r.example.com", "<token>", "tok");
        assert_eq!((c.identitytoken.as_deref(), c.username), (Some("tok"), None));
        assert_eq!(RegistryAuth::helper_program("ecr-login"), "docker-credential-ecr-login");
        assert_eq!(RegistryAuth::helper_program("/opt/h"), "/opt/h");
    }

    #[test]
    fn registry_auth_debug_hides_the_password() {
        let shown = format!("{:?}", password("r.example.com", "bob", "hunter2"));
        assert!(shown.contains("bob") && !shown.contains("hunter2"), "{shown}");
    }
}

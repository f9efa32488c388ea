//! Registry credentials: which ones a pull from a given registry uses. Pure;
//! the passwords never reach a `Debug` line.

use std::fmt;

use berth_core::image::DOCKER_HUB;
use bollard::auth::DockerCredentials;

/// Credentials for one registry, used for pulls from that registry only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry's `host[:port]` as it appears in image references, e.g.
    /// `registry.example.com` or `127.0.0.1:5000`; `docker.io` for Docker Hub.
    pub registry: String,
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    // Hand-written so the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The credentials configured for `registry`, if any, as Docker's
/// `X-Registry-Auth` wants them.
pub(super) fn credentials_for(registries: &[RegistryAuth], registry: &str) -> Option<DockerCredentials> {
    let wanted = normalize_registry(registry);
    let auth = registries.iter().find(|r| normalize_registry(&r.registry) == wanted)?;
    let serveraddress = if wanted == DOCKER_HUB {
        // What Docker Hub's auth expects, as `docker login` stores it.
        "https://index.docker.io/v1/".to_owned()
    } else {
        wanted
    };
    Some(DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.clone()),
        serveraddress: Some(serveraddress),
        ..Default::default()
    })
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

    #[test]
    fn credentials_are_chosen_by_the_images_registry() {
        let registries = vec![
            RegistryAuth {
                registry: "registry.example.com".into(),
                username: "alice".into(),
                password: "secret-a".into(),
            },
            RegistryAuth {
                registry: "https://index.docker.io/v1/".into(),
                username: "hub".into(),
                password: "secret-h".into(),
            },
        ];
        let found = credentials_for(&registries, "registry.example.com").expect("credentials for registry.example.com");
        assert_eq!(found.username.as_deref(), Some("alice"));
        assert_eq!(found.serveraddress.as_deref(), Some("registry.example.com"));
        let hub = credentials_for(&registries, DOCKER_HUB).expect("credentials for Docker Hub");
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert_eq!(hub.serveraddress.as_deref(), Some("https://index.docker.io/v1/"));
        assert!(credentials_for(&registries, "127.0.0.1:5000").is_none());
    }

    #[test]
    fn registry_auth_debug_hides_the_password() {
        let auth = RegistryAuth {
            registry: "r.example.com".into(),
            username: "bob".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("bob") && !shown.contains("hunter2"), "{shown}");
    }
}

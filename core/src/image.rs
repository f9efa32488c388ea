//! Docker image references: the one parser agent and berthctl share.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::units::{InvalidValue, deserialize_from_str};

const IMAGE_EXPECTING: &str = "an image reference like registry.example.com/app:1.4.3";

/// A Docker image reference: `[host[:port]/]path[:tag][@sha256:<64 hex>]`.
///
/// Checked by the grammar of Docker's reference package: the registry host is
/// the first component when it has a `.` or `:` or is `localhost`; path
/// components are lowercase letters and digits separated by `.`, `_`, `__` or
/// dashes; a tag is up to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or
/// `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Registry and path without tag or digest:
    /// `registry.example.com/contextgraph` for
    /// `registry.example.com/contextgraph:1.4.3`.
    pub fn repository(&self) -> &str {
        split_image(&self.0).0
    }

    /// The tag; `latest` when none is written. When there is a
    /// [digest](Self::digest), Docker pulls by the digest and the tag is only
    /// a label.
    pub fn tag(&self) -> &str {
        split_image(&self.0).1.unwrap_or("latest")
    }

    /// The digest, `sha256:<64 hex>`, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        split_image(&self.0).2
    }

    /// The registry the image comes from: the first path component when
    /// Docker's rule makes it a host (see [`is_registry_component`]), else
    /// Docker Hub (`docker.io`).
    pub fn registry(&self) -> &str {
        match self.repository().split_once('/') {
            Some((first, _)) if is_registry_component(first) => first,
            _ => DOCKER_HUB,
        }
    }

    /// What to ask Docker to pull: the name and the tag or digest. A
    /// reference without a tag pulls `latest` (Docker would otherwise pull
    /// every tag).
    pub fn pull_target(&self) -> (&str, &str) {
        match self.0.split_once('@') {
            Some((name, digest)) => (name, digest),
            None => (self.repository(), self.tag()),
        }
    }
}

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// Docker's rule (its reference package) for telling a registry host from
/// a path component: a first component with a `.` or `:`, `localhost`, or
/// any uppercase letter (path components are lowercase) is a host.
fn is_registry_component(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// Splits a reference into repository, tag and digest. A `:` is a tag's only
/// after the last `/`; before it, it belongs to a registry's port.
fn split_image(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (name_tag, digest) = match s.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (s, None),
    };
    let last_part = name_tag.rfind('/').map_or(0, |i| i + 1);
    match name_tag[last_part..].rfind(':') {
        Some(colon) => {
            let colon = last_part + colon;
            (&name_tag[..colon], Some(&name_tag[colon + 1..]), digest)
        }
        None => (name_tag, None, digest),
    }
}

/// Checks a reference; the error says which part is wrong.
fn check_image(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    let (repository, tag, digest) = split_image(s);
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("a digest is sha256: and 64 lowercase hex digits");
        }
    }
    if let Some(tag) = tag {
        let first_ok = tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || tag.len() > 128 {
            return Err("a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'");
        }
    }
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters");
    }
    let mut components: Vec<&str> = repository.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if is_registry_component(first) {
            if !is_registry_host(first) {
                return Err("the registry is a host name or IP address with an optional :port");
            }
            components.remove(0);
        }
    }
    if !components.iter().all(|c| is_path_component(c)) {
        return Err(
            "the repository is lowercase letters and digits, in parts separated by '/' and \
             joined within a part by '.', '_', '__' or '-'",
        );
    }
    Ok(())
}

/// `host[:port]`, where host is a DNS name, an IPv4 address or `[IPv6]`.
fn is_registry_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    port_ok && ((host.is_empty() && s.starts_with('[')) || host.split('.').all(label_ok))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn is_path_component(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &s[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for ImageRef {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match check_image(s) {
            Ok(()) => Ok(Self(s.to_owned())),
            Err(reason) => Err(InvalidValue::new(format!("expected {IMAGE_EXPECTING} ({reason})"), s)),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, IMAGE_EXPECTING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let parts = |s: &str| {
            s.parse::<ImageRef>().map(|r| {
                (
                    r.repository().to_owned(),
                    r.tag().to_owned(),
                    r.digest().map(str::to_owned),
                )
            })
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        let some = |r: &str, t: &str, d: Option<&str>| Ok((r.to_owned(), t.to_owned(), d.map(str::to_owned)));
        assert_eq!(parts("busybox"), some("busybox", "latest", None));
        assert_eq!(parts("library/busybox:1.36"), some("library/busybox", "1.36", None));
        assert_eq!(parts("localhost:5000/app"), some("localhost:5000/app", "latest", None));
        assert_eq!(
            parts("localhost:5000/team/app:v1.2_rc-3"),
            some("localhost:5000/team/app", "v1.2_rc-3", None)
        );
        assert_eq!(parts("127.0.0.1:5000/app:1"), some("127.0.0.1:5000/app", "1", None));
        assert_eq!(parts("[::1]:5000/app:1"), some("[::1]:5000/app", "1", None));
        assert_eq!(
            parts("Registry.Example.com/a__b/c--d.e:x"),
            some("Registry.Example.com/a__b/c--d.e", "x", None)
        );
        assert_eq!(parts(&format!("app@{digest}")), some("app", "latest", Some(&digest)));
        assert_eq!(
            parts(&format!("r.io/app:1@{digest}")),
            some("r.io/app", "1", Some(&digest))
        );
        for bad in [
            "",
            "Busybox",
            "app:",
            "app:-x",
            "app:.x",
            "a/b/",
            "/a",
            "a//b",
            "a_-b",
            "a...b",
            "-a",
            "a-",
            "r.io:port/app",
            "bad_host.io/app",
            "app@sha256:abc",
            "app@md5:0000",
            "app:tag:tag",
            "app name",
            "UPPER",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} should not parse");
        }
        assert!(format!("app:{}", "t".repeat(128)).parse::<ImageRef>().is_ok());
        assert!(format!("app:{}", "t".repeat(129)).parse::<ImageRef>().is_err());
    }

    #[test]
    fn registry_follows_dockers_rule() {
        let registry = |s: &str| s.parse::<ImageRef>().map(|r| r.registry().to_owned());
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(registry("127.0.0.1:5000/berth-test/app:v1"), ok("127.0.0.1:5000"));
        assert_eq!(registry("registry.example.com/app:1.4.3"), ok("registry.example.com"));
        assert_eq!(registry("localhost/app"), ok("localhost"));
        assert_eq!(registry("localhost:5000/app"), ok("localhost:5000"));
        // An uppercase first component is a host to Docker, and so here.
        assert_eq!(registry("Registry/app"), ok("Registry"));
        assert_eq!(registry("library/busybox:latest"), ok("docker.io"));
        assert_eq!(registry("busybox"), ok("docker.io"));
        assert_eq!(registry("busybox:1.36"), ok("docker.io"));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(registry(&format!("myorg/app@{digest}")), ok("docker.io"));
    }

    #[test]
    fn untagged_references_pull_latest_only() {
        let target = |s: &str| {
            s.parse::<ImageRef>()
                .map(|r| (r.pull_target().0.to_owned(), r.pull_target().1.to_owned()))
        };
        let ok = |a: &str, b: &str| Ok((a.to_owned(), b.to_owned()));
        assert_eq!(target("busybox"), ok("busybox", "latest"));
        assert_eq!(
            target("127.0.0.1:5000/berth-test/app"),
            ok("127.0.0.1:5000/berth-test/app", "latest")
        );
        assert_eq!(
            target("127.0.0.1:5000/berth-test/app:v1"),
            ok("127.0.0.1:5000/berth-test/app", "v1")
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            target(&format!("registry.example.com/app@{digest}")),
            ok("registry.example.com/app", &digest)
        );
        assert_eq!(target("localhost:5000/app"), ok("localhost:5000/app", "latest"));
    }
}

//! Mounts: `HOST_PATH:CONTAINER_PATH[:ro]` binds a host directory or file,
//! `NAME:CONTAINER_PATH[:ro]` mounts a named volume berth creates.

use std::fmt;
use std::path::{Component, Path};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{InvalidValue, deserialize_from_str};

const VOLUME_EXPECTING: &str = "a mount like /srv/data:/data, cache:/cache or /etc/ssl/certs:/etc/ssl/certs:ro";

/// One entry of `volumes`, as `docker run -v` takes it.
///
/// `/data/piper:/data` binds an absolute host path (no `..`),
/// `cache:/cache` mounts the named volume `cache`, and a trailing `:ro`
/// (or `:rw`, the default) sets the access. Displays and serializes in that
/// form, leaving out `:rw`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeMount {
    /// What is mounted.
    pub source: VolumeSource,
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VolumeSource {
    /// An absolute path on the host.
    Bind(String),
    /// A named Docker volume: letters, digits, `_`, `.` and `-`, starting
    /// with a letter or digit.
    Named(String),
}

impl VolumeMount {
    /// The named volume's name, if it is one.
    pub fn volume_name(&self) -> Option<&str> {
        match &self.source {
            VolumeSource::Named(name) => Some(name),
            VolumeSource::Bind(_) => None,
        }
    }

    /// The source as Docker's `Binds` entry writes it (a path or a name).
    pub fn source_str(&self) -> &str {
        match &self.source {
            VolumeSource::Bind(path) | VolumeSource::Named(path) => path,
        }
    }
}

/// True for an absolute path without `.` or `..` parts, made of UTF-8 with
/// no `:` (Docker's separator) and no NUL.
pub(crate) fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains([':', '\0', ','])
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.split('/').any(|part| part == "." || part == "..")
}

/// A Docker volume or network name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// 64 characters.
pub(crate) fn is_docker_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn parse_volume(s: &str) -> Result<VolumeMount, String> {
    let mut parts: Vec<&str> = s.split(':').collect();
    let read_only = match parts.as_slice() {
        [_, _, "ro"] => true,
        [_, _, "rw"] | [_, _] => false,
        [_, _, mode] => return Err(format!("mode {mode:?} is not ro or rw")),
        _ => return Err(format!("expected {VOLUME_EXPECTING}")),
    };
    parts.truncate(2);
    let (source, target) = (parts[0], parts[1]);
    if !is_clean_absolute(target) || target == "/" {
        return Err(format!(
            "container path {target:?} must be an absolute path other than / without . or .."
        ));
    }
    let source = if source.starts_with('/') {
        if !is_clean_absolute(source) {
            return Err(format!("host path {source:?} must be an absolute path without . or .."));
        }
        VolumeSource::Bind(source.to_owned())
    } else if is_docker_name(source) {
        VolumeSource::Named(source.to_owned())
    } else {
        return Err(format!(
            "{source:?} is neither an absolute host path nor a volume name (letters, digits, _ . -)"
        ));
    };
    Ok(VolumeMount {
        source,
        target: target.to_owned(),
        read_only,
    })
}

impl FromStr for VolumeMount {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        parse_volume(s).map_err(|why| InvalidValue::new(why, s))
    }
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source_str(), self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl Serialize for VolumeMount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VolumeMount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, VOLUME_EXPECTING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_named_volumes_and_modes_parse_and_print_back() {
        for (text, shown) in [
            ("/data/piper:/data", "/data/piper:/data"),
            ("cache:/cache", "cache:/cache"),
            ("/etc/ssl/certs:/etc/ssl/certs:ro", "/etc/ssl/certs:/etc/ssl/certs:ro"),
            ("cache:/cache:rw", "cache:/cache"),
        ] {
            let m: VolumeMount = text.parse().expect(text);
            assert_eq!(m.to_string(), shown);
        }
        let m: VolumeMount = "cache:/c:ro".parse().expect("named");
        assert_eq!(m.volume_name(), Some("cache"));
        assert!(m.read_only);
        let b: VolumeMount = "/srv:/srv".parse().expect("bind");
        assert_eq!(b.source, VolumeSource::Bind("/srv".into()));
    }

    #[test]
    fn escapes_relative_paths_and_bad_modes_are_refused() {
        for (text, why) in [
            ("/data/../etc:/data", "host path"),
            ("/data:/x/../y", "container path"),
            ("/data:relative", "container path"),
            ("/data:/", "container path"),
            ("./data:/data", "neither"),
            ("data", "expected"),
            ("a:/b:rx", "\"rx\""),
            ("a:/b:ro:x", "expected"),
        ] {
            let e = text.parse::<VolumeMount>().expect_err(text);
            assert!(e.expected().contains(why), "{text}: {}", e.expected());
            assert_eq!(e.value(), text);
        }
    }
}

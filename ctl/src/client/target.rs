//! The agent's address as the user wrote it.
//!
//! Owns parsing `--host` (`HOST`, `HOST:PORT`, `[V6]:PORT`, with or without
//! `https://`) into a [`Target`] and printing it back. Input: a string;
//! output: a `Target` or a message that says what form is expected. Pure: no
//! I/O, nothing to shut down.

use std::fmt;
use std::net::IpAddr;

/// The agent's default gRPC port.
pub const DEFAULT_PORT: u16 = 7443;

/// An agent address as the user wrote it: `HOST`, `HOST:PORT`, `[V6]:PORT`,
/// optionally with `https://`. `http://` is kept so we can tell the user
/// that agents speak mutual TLS only, after the agent has refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// True when the user asked for `http://`.
    pub plaintext: bool,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (plaintext, rest) = if let Some(r) = s.strip_prefix("http://") {
            (true, r)
        } else {
            (false, s.strip_prefix("https://").unwrap_or(s))
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(format!(
                "{s:?}: expected HOST or HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after an IPv6 address"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => parse_port(p, s)?,
                None if tail.is_empty() => DEFAULT_PORT,
                None => return Err(format!("{s:?}: expected [IPv6]:PORT")),
            };
            (h.to_owned(), port)
        } else if rest.parse::<IpAddr>().is_ok() {
            (rest.to_owned(), DEFAULT_PORT)
        } else if let Some((h, p)) = rest.rsplit_once(':') {
            (h.to_owned(), parse_port(p, s)?)
        } else {
            (rest.to_owned(), DEFAULT_PORT)
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "{s:?}: expected HOST or HOST:PORT, e.g. 10.0.0.5:{DEFAULT_PORT}"
            ));
        }
        Ok(Target { host, port, plaintext })
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{whole:?}: {p:?} is not a port (1-65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_default_port() {
        let t: Target = "10.0.0.5".parse().expect("ok");
        assert_eq!(
            (t.host.as_str(), t.port, t.plaintext),
            ("10.0.0.5", DEFAULT_PORT, false)
        );
        let t: Target = "https://h.example:9000/".parse().expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("h.example", 9000));
        let t: Target = "[::1]:7000".parse().expect("ok");
        assert_eq!((t.host.as_str(), t.port), ("::1", 7000));
        assert_eq!(t.to_string(), "[::1]:7000");
        let t: Target = "::1".parse().expect("ok");
        assert_eq!(t.port, DEFAULT_PORT);
        let t: Target = "http://h:1".parse().expect("ok");
        assert!(t.plaintext);
        assert!("h:0".parse::<Target>().is_err());
        assert!(
            "h:http"
                .parse::<Target>()
                .expect_err("not a port")
                .contains("not a port")
        );
        assert!("".parse::<Target>().is_err());
    }
}

//! Published ports: `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{InvalidValue, deserialize_from_str};

const PORT_EXPECTING: &str = "a port mapping like 8000, 8080:8000 or 127.0.0.1:8080:8000/udp";

/// A published port, written `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`.
///
/// `8000`, `8080:8000`, `127.0.0.1:8080:8000`, `127.0.0.1::8000` (address
/// pinned, port picked by Docker), `[::1]:8080:8000`, `53/udp`. Displays and
/// serializes in that form, leaving out `/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The host address to bind; `None` binds all of them.
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` lets Docker pick a free one.
    pub host_port: Option<u16>,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`, as Docker writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl PortMapping {
    /// True when both pin the same host port and protocol on addresses that
    /// overlap (no address or an unspecified one overlaps every address).
    pub fn collides_with(&self, other: &PortMapping) -> bool {
        let any = |ip: Option<IpAddr>| ip.is_none_or(|ip| ip.is_unspecified());
        self.host_port.is_some()
            && self.host_port == other.host_port
            && self.protocol == other.protocol
            && (any(self.host_ip) || any(other.host_ip) || self.host_ip == other.host_ip)
    }
}

fn parse_port_mapping(s: &str) -> Option<PortMapping> {
    let (address, protocol) = match s.rsplit_once('/') {
        Some((address, protocol)) => match protocol.to_ascii_lowercase().as_str() {
            "tcp" => (address, Protocol::Tcp),
            "udp" => (address, Protocol::Udp),
            _ => return None,
        },
        None => (s, Protocol::Tcp),
    };
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok().filter(|&p| p != 0)
    };
    let (host, container) = match address.rsplit_once(':') {
        Some((host, container)) => (Some(host), container),
        None => (None, address),
    };
    let container_port = port(container)?;
    let (host_ip, host_port) = match host {
        None => (None, None),
        Some(host) => {
            // The last ':' separates the host port; an IPv6 address before it
            // is in brackets, so its own colons do not confuse this.
            let (ip, host_port) = match host.rsplit_once(':') {
                Some((ip, host_port)) => (Some(parse_host_ip(ip)?), host_port),
                None => (None, host),
            };
            let host_port = match host_port {
                // "127.0.0.1::8000" pins the address only; ":8000" is a typo.
                "" if ip.is_some() => None,
                _ => Some(port(host_port)?),
            };
            (ip, host_port)
        }
    };
    Some(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

/// An IPv4 address, or an IPv6 one in brackets.
fn parse_host_ip(s: &str) -> Option<IpAddr> {
    match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => s.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

impl FromStr for PortMapping {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        parse_port_mapping(s).ok_or_else(|| InvalidValue::new(format!("expected {PORT_EXPECTING}"), s))
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        match self.host_port {
            Some(port) => write!(f, "{port}:")?,
            None if self.host_ip.is_some() => f.write_str(":")?,
            None => {}
        }
        write!(f, "{}", self.container_port)?;
        match self.protocol {
            Protocol::Tcp => Ok(()),
            Protocol::Udp => f.write_str("/udp"),
        }
    }
}

impl Serialize for PortMapping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_from_str(deserializer, PORT_EXPECTING)
    }
}

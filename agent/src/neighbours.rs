//! The host's neighbour table (ARP for IPv4, NDP for IPv6), as far as a
//! started container needs it: an entry the kernel is still resolving, or
//! gave up on, for the container's address is given the container's MAC
//! right after the start.
//!
//! Why: while a container is down, the host has no entry for its address
//! (it goes with the container's network endpoint), and whatever keeps
//! sending to the address (nginx, docker-proxy for a published port, a
//! health probe) leaves one INCOMPLETE, later FAILED. The kernel asks again
//! only every `retrans_time_ms` (a second by default), and what it queued on
//! the entry meanwhile (a connection's SYN) waits with it, so a container
//! restarted at the same address gets its first packet up to a second after
//! it could answer: on the test machine, 700 ms of the 1.3 s a crash took
//! to heal under Docker's own `--restart always`. Filling the entry in sends
//! the queued packets at once. It is set STALE, so the kernel still
//! confirms the address on its next use; entries in any other state, and
//! those of other addresses, are left alone.
//!
//! One rtnetlink socket per call: a dump of the table, then one replace per
//! entry filled in. The calls take microseconds but block; callers run them
//! on tokio's blocking pool.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable, Parseable,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourHeader, NeighbourMessage, NeighbourState,
};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// rtnetlink's neighbour message types (linux/rtnetlink.h).
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

/// An entry of the table with no link-layer address yet (incomplete) or
/// none found (failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub ifindex: u32,
    pub addr: IpAddr,
}

/// The table's unresolved entries, IPv4 and IPv6.
pub fn unresolved() -> io::Result<Vec<Unresolved>> {
    let mut rtnl = Rtnl::open()?;
    let seq = rtnl.send(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, NeighbourMessage::default())?;
    let mut found = Vec::new();
    rtnl.replies(seq, |entry| found.extend(unresolved_entry(&entry)))?;
    Ok(found)
}

/// Gives each of `entries` the link-layer address `mac`, STALE, which sends
/// what the kernel queued on it.
pub fn resolve(entries: &[Unresolved], mac: [u8; 6]) -> io::Result<()> {
    let mut rtnl = Rtnl::open()?;
    for entry in entries {
        let seq = rtnl.send(
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE,
            filled_in(entry, mac),
        )?;
        rtnl.replies(seq, |_| {})?;
    }
    Ok(())
}

/// The replace request for `entry`: its address, now at `mac`.
fn filled_in(entry: &Unresolved, mac: [u8; 6]) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header = NeighbourHeader {
        family: family_of(entry.addr),
        ifindex: entry.ifindex,
        state: NeighbourState::Stale,
        ..NeighbourHeader::default()
    };
    message.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::from(entry.addr)),
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
    ];
    message
}

/// `entry` as an [`Unresolved`], if it is one.
fn unresolved_entry(entry: &NeighbourMessage) -> Option<Unresolved> {
    if !matches!(entry.header.state, NeighbourState::Incomplete | NeighbourState::Failed) {
        return None;
    }
    let addr = entry.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })?;
    Some(Unresolved {
        ifindex: entry.header.ifindex,
        addr,
    })
}

fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A neighbour request or reply: the only rtnetlink messages this module
/// sends or reads, so only their parser is linked in (the crate's
/// all-messages enum would bring every rtnetlink family's).
#[derive(Debug)]
struct Neighbour {
    kind: u16,
    message: NeighbourMessage,
}

impl NetlinkSerializable for Neighbour {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        self.message.buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        self.message.emit(buffer);
    }
}

impl NetlinkDeserializable for Neighbour {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            kind: header.message_type,
            message: NeighbourMessage::parse(payload)?,
        })
    }
}

/// One rtnetlink socket, connected to the kernel.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends one request; returns its sequence number.
    fn send(&mut self, kind: u16, flags: u16, message: NeighbourMessage) -> io::Result<u32> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(Neighbour { kind, message }));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Reads the replies to request `seq`, handing each entry to `each`,
    /// until the dump ends or the kernel acknowledges (or refuses) it.
    fn replies(&mut self, seq: u32, mut each: impl FnMut(NeighbourMessage)) -> io::Result<()> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at < buf.len() {
                let packet = NetlinkMessage::<Neighbour>::deserialize(&buf[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink reply: {e}")))?;
                let len = usize::try_from(packet.header.length).unwrap_or(usize::MAX);
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "rtnetlink reply of length 0",
                    ));
                }
                // Messages in one datagram are 4-byte aligned.
                at = at.saturating_add(len.next_multiple_of(4));
                if packet.header.sequence_number != seq {
                    continue;
                }
                match packet.payload {
                    NetlinkPayload::InnerMessage(n) => each(n.message),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(()),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    // Noop, Overrun, and kinds a later crate version adds.
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn entry(state: NeighbourState, dst: Option<NeighbourAddress>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex: 7,
            state,
            ..NeighbourHeader::default()
        };
        m.attributes = dst.into_iter().map(NeighbourAttribute::Destination).collect();
        m
    }

    #[test]
    fn only_incomplete_and_failed_entries_are_unresolved() {
        let ip = Ipv4Addr::new(172, 17, 0, 2);
        let want = Some(Unresolved {
            ifindex: 7,
            addr: IpAddr::V4(ip),
        });
        for state in [NeighbourState::Incomplete, NeighbourState::Failed] {
            assert_eq!(unresolved_entry(&entry(state, Some(NeighbourAddress::Inet(ip)))), want);
        }
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
            NeighbourState::Noarp,
        ] {
            assert_eq!(unresolved_entry(&entry(state, Some(NeighbourAddress::Inet(ip)))), None);
        }
        // No destination: nothing to match an address against.
        assert_eq!(unresolved_entry(&entry(NeighbourState::Failed, None)), None);
    }

    #[test]
    fn a_fill_in_request_round_trips_through_the_wire_format() {
        let entry = Unresolved {
            ifindex: 7,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        };
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x09];
        let m = filled_in(&entry, mac);
        assert_eq!(m.header.state, NeighbourState::Stale);
        assert_eq!(m.header.family, AddressFamily::Inet);
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(Neighbour {
                kind: RTM_NEWNEIGH,
                message: m.clone(),
            }),
        );
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        let back = NetlinkMessage::<Neighbour>::deserialize(&buf).expect("parses");
        assert_eq!(back.header.message_type, RTM_NEWNEIGH);
        match back.payload {
            NetlinkPayload::InnerMessage(n) => {
                assert_eq!(n.message, m);
                assert!(
                    n.message
                        .attributes
                        .contains(&NeighbourAttribute::LinkLayerAddress(mac.to_vec()))
                );
            }
            other => panic!("not a neighbour message: {other:?}"),
        }
    }

    /// Against the running kernel: a dump parses to the end.
    #[test]
    fn the_hosts_table_dumps() {
        unresolved().expect("a neighbour dump of this host");
    }
}

//! The `/proc/net/dev` format, read three ways: the host's interfaces
//! ([`super::host`]), a container's own file ([`super::cgroup`]) and the
//! host ends of containers' veth pairs ([`super::veth`]).

/// The interfaces a `/proc/net/dev` lists (its two header lines skipped)
/// whose name `keep` accepts: name, bytes received, bytes sent. The
/// counters of the others are not parsed (the host part of a pass splits
/// one file between the host's interfaces and the veths of containers). A
/// line that does not parse is left out.
pub fn interfaces(text: &str, keep: impl Fn(&str) -> bool) -> impl Iterator<Item = (&str, u64, u64)> {
    text.lines().skip(2).filter_map(move |line| {
        let (name, counters) = line.split_once(':')?;
        let name = name.trim();
        if !keep(name) {
            return None;
        }
        let mut fields = counters.split_ascii_whitespace();
        let rx = fields.next()?.parse().ok()?;
        let tx = fields.nth(7)?.parse().ok()?;
        Some((name, rx, tx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_byte_counters_and_skips_what_does_not_parse() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
  eth0:    1736      18    0    0    0     0          0         0      942       9    0    0    0     0       0          0
 short: 1 2 3
   bad: x 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0
no colon here
";
        let found: Vec<_> = interfaces(text, |_| true).collect();
        assert_eq!(found, [("lo", 500, 500), ("eth0", 1736, 942)]);
        assert_eq!(interfaces("", |_| true).count(), 0);
    }
}

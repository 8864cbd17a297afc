//! Longest-prefix match over IPv4 and IPv6 networks: one hash map per
//! prefix length present, probed from the longest length down.
//!
//! ```text
//! 10.1.2.3 --> /32? --> /24? --> /16 hit --> value
//! ```
//!
//! Real indicator sets and inventories use a handful of lengths (/32, /24,
//! /16, ...), so a lookup is a few hash probes, with no allocation.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

type Map<V> = HashMap<u128, V, foldhash::fast::RandomState>;

/// Networks of one family, by prefix length.
#[derive(Debug)]
struct Family<V> {
    /// Prefix lengths present, longest first, each with its networks.
    by_len: Vec<(u8, Map<V>)>,
}

impl<V> Default for Family<V> {
    fn default() -> Self {
        Self { by_len: Vec::new() }
    }
}

impl<V> Family<V> {
    fn insert(&mut self, bits: u128, len: u8, width: u8, value: V) -> bool {
        let key = mask(bits, len, width);
        let slot = match self.by_len.iter().position(|(l, _)| *l == len) {
            Some(i) => i,
            None => {
                let at = self.by_len.iter().position(|(l, _)| *l < len);
                let at = at.unwrap_or(self.by_len.len());
                self.by_len.insert(at, (len, Map::default()));
                at
            }
        };
        match self.by_len.get_mut(slot) {
            Some((_, map)) => {
                let fresh = !map.contains_key(&key);
                if fresh {
                    map.insert(key, value);
                }
                fresh
            }
            None => false,
        }
    }

    fn longest(&self, bits: u128, width: u8) -> Option<(u8, &V)> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&mask(bits, *len, width)).map(|v| (*len, v)))
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }
}

/// `bits` (the low `width` bits hold the address) with all but the first
/// `len` bits cleared.
fn mask(bits: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let drop = u32::from(width.saturating_sub(len));
    (bits >> drop) << drop
}

/// A longest-prefix index of networks to values.
#[derive(Debug)]
pub struct Prefixes<V> {
    v4: Family<V>,
    v6: Family<V>,
}

impl<V> Default for Prefixes<V> {
    fn default() -> Self {
        Self {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

impl<V> Prefixes<V> {
    /// Adds `net`; returns false (and keeps the first value) when the same
    /// network is present already.
    pub fn insert(&mut self, net: IpNet, value: V) -> bool {
        match net {
            IpNet::V4(n) => self.v4.insert(
                u128::from(u32::from(n.network())),
                n.prefix_len(),
                32,
                value,
            ),
            IpNet::V6(n) => self
                .v6
                .insert(u128::from(n.network()), n.prefix_len(), 128, value),
        }
    }

    /// The value of the longest network holding `ip`, with its prefix length.
    pub fn longest(&self, ip: IpAddr) -> Option<(u8, &V)> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.longest(u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => self.v6.longest(u128::from(v6), 128),
        }
    }

    /// Networks held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when no network is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn the_longest_prefix_wins_in_both_families() {
        let mut p = Prefixes::default();
        for (net, v) in [
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.3/32", 3),
            ("0.0.0.0/0", 0),
            ("2001:db8::/32", 6),
            ("2001:db8:1::/48", 7),
        ] {
            assert!(p.insert(net.parse().expect("a network"), v));
        }
        assert!(
            !p.insert("10.0.0.0/8".parse().expect("net"), 9),
            "kept once"
        );
        assert_eq!(p.longest(ip("10.1.2.3")), Some((32, &3)));
        assert_eq!(p.longest(ip("10.1.2.4")), Some((16, &2)));
        assert_eq!(p.longest(ip("10.9.9.9")), Some((8, &1)));
        assert_eq!(p.longest(ip("11.0.0.0")), Some((0, &0)));
        assert_eq!(p.longest(ip("::ffff:10.1.2.3")), Some((32, &3)), "mapped");
        assert_eq!(p.longest(ip("2001:db8:1::5")), Some((48, &7)));
        assert_eq!(p.longest(ip("2001:db8:2::5")), Some((32, &6)));
        assert_eq!(p.longest(ip("2001:db9::1")), None);
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn network_edges() {
        let mut p = Prefixes::default();
        p.insert("192.168.4.0/22".parse().expect("net"), ());
        assert!(p.longest(ip("192.168.4.0")).is_some());
        assert!(p.longest(ip("192.168.7.255")).is_some());
        assert!(p.longest(ip("192.168.8.0")).is_none());
        assert!(p.longest(ip("192.168.3.255")).is_none());
    }
}

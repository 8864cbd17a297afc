//! One canonical key per address, and the rules that decide which addresses
//! get which lookup.
//!
//! Every textual form of an address folds to one [`IpAddr`]: IPv6 with or
//! without leading zeros or `::` compression, in brackets, with a zone id;
//! IPv4-mapped IPv6 becomes IPv4. The `IpAddr` is the cache key everywhere,
//! and its `Display` form (RFC 5952 for IPv6) is the key in Redis.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Which addresses a lookup applies to: plain data of the configuration.
pub use crate::config::Scope;

/// Parses one field value into its canonical address, or `None` when the
/// value is not an address (a hostname in DNS `answers`, `-`, garbage).
///
/// Accepted forms: dotted IPv4, any RFC 4291 IPv6 text form, either wrapped
/// in `[...]`, optionally with a `%zone` suffix (stripped), and surrounding
/// ASCII whitespace. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) folds to IPv4.
pub fn canonical(text: &str) -> Option<IpAddr> {
    let mut s = text.trim_ascii();
    if let Some(inner) = s.strip_prefix('[') {
        s = inner.strip_suffix(']')?;
    }
    // The longest IPv6 text form with an embedded IPv4 is 45 bytes; anything
    // much longer is not an address and need not reach the parser.
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Some(pos) = s.bytes().position(|b| b == b'%') {
        // A zone id only makes sense on IPv6; `1.2.3.4%eth0` is not an address.
        if !s[..pos].contains(':') {
            return None;
        }
        s = &s[..pos];
    }
    let ip: IpAddr = s.parse().ok()?;
    Some(ip.to_canonical())
}

/// [`canonical`] for a field value's raw bytes. A plain dotted-quad IPv4
/// address, the common case by far, is read directly; everything else goes
/// through [`canonical`], with the same result.
pub fn canonical_bytes(raw: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(raw) {
        return Some(IpAddr::V4(v4));
    }
    std::str::from_utf8(raw).ok().and_then(canonical)
}

/// Reads exactly `a.b.c.d` in decimal with no leading zeros, as std does;
/// `None` for anything else, even what [`canonical`] accepts.
fn dotted_quad(raw: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for &c in raw {
        match c {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return None;
                }
                value = value * 10 + u16::from(c - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 => {
                *octets.get_mut(n)? = u8::try_from(value).ok()?;
                n += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if n != 3 || digits == 0 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Why an address is outside a lookup's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A private, loopback, link-local, CGNAT, ULA, multicast or otherwise
    /// non-global address, and the scope is `public`.
    Private,
    /// A global address, and the scope is `private`.
    Public,
    /// The address is inside one of the configured `skip_cidrs`.
    Cidr,
}

impl Skip {
    /// The fixed label written as provenance and used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Private => "skipped_private",
            Skip::Public => "skipped_public",
            Skip::Cidr => "skipped_cidr",
        }
    }
}

/// A lookup's locality rule: a scope plus CIDRs to skip.
#[derive(Debug, Clone, Default)]
pub struct Locality {
    scope: Scope,
    skip: Vec<IpNet>,
}

impl Locality {
    /// Builds a rule; `skip` CIDRs apply whatever the scope.
    pub fn new(scope: Scope, skip: Vec<IpNet>) -> Self {
        Self { scope, skip }
    }

    /// `Ok(())` when the address should be looked up, else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Skip> {
        match self.scope {
            Scope::All => {}
            Scope::Public if is_internal(ip) => return Err(Skip::Private),
            Scope::Private if !is_internal(ip) => return Err(Skip::Public),
            Scope::Public | Scope::Private => {}
        }
        if self.skip.iter().any(|net| net.contains(&ip)) {
            return Err(Skip::Cidr);
        }
        Ok(())
    }
}

/// True for addresses that have no public identity: RFC 1918, loopback,
/// link-local, CGNAT (RFC 6598), ULA, multicast, unspecified, broadcast,
/// documentation-free special ranges such as benchmarking and reserved.
///
/// Documentation ranges (192.0.2.0/24, 2001:db8::/32, ...) are deliberately
/// *not* internal: test fixtures and demos use them as stand-ins for public
/// addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT.
        || (a == 100 && (b & 0xc0) == 64)
        // 0.0.0.0/8 "this network", 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved.
        || a == 0
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10 link-local.
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn every_form_of_one_ipv6_address_is_one_key() {
        let want = ip("2001:db8::1428:57ab");
        for form in [
            "2001:0db8:0000:0000:0000:0000:1428:57ab",
            "2001:0db8:0:0::1428:57ab",
            "2001:db8::1428:57ab",
            "[2001:db8::1428:57ab]",
            "2001:DB8::1428:57AB",
            "fe80::1%eth0",
            " 2001:db8::1428:57ab\t",
            "[2001:db8::1428:57ab%3]",
        ]
        .iter()
        .filter(|f| !f.starts_with("fe80"))
        {
            assert_eq!(canonical(form), Some(want), "{form}");
        }
        assert_eq!(canonical("fe80::1%eth0"), Some(ip("fe80::1")));
    }

    #[test]
    fn ipv4_mapped_folds_to_ipv4() {
        assert_eq!(canonical("::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(canonical("::ffff:c000:0201"), Some(ip("192.0.2.1")));
        assert_eq!(canonical("[::ffff:10.0.0.1]"), Some(ip("10.0.0.1")));
    }

    #[test]
    fn non_addresses_are_none() {
        for s in [
            "",
            "-",
            "(empty)",
            "ise.wrccdc.cpp.edu",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "256.1.1.1",
            "1.2.3.4%eth0",
            "[1.2.3.4",
            "::g",
            "1.2.3.4:80",
            "[2001:db8::1]:443",
        ] {
            assert_eq!(canonical(s), None, "{s:?}");
        }
        assert_eq!(canonical(&"1".repeat(10_000)), None);
    }

    #[test]
    fn internal_ranges() {
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip(s)), "{s} is internal");
        }
        for s in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "81.2.69.142",
            "2001:db8::1",
            "2a00:1450::1",
            "192.0.2.1",
        ] {
            assert!(!is_internal(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn locality_rules() {
        let public = Locality::new(Scope::Public, vec![]);
        assert_eq!(public.check(ip("10.0.0.1")), Err(Skip::Private));
        assert_eq!(public.check(ip("8.8.8.8")), Ok(()));
        let private = Locality::new(Scope::Private, vec![]);
        assert_eq!(private.check(ip("8.8.8.8")), Err(Skip::Public));
        assert_eq!(private.check(ip("10.0.0.1")), Ok(()));
        let cidr = Locality::new(
            Scope::All,
            vec![
                "8.8.8.0/24".parse().expect("net"),
                "2001:db8::/32".parse().expect("net"),
            ],
        );
        assert_eq!(cidr.check(ip("8.8.8.8")), Err(Skip::Cidr));
        assert_eq!(cidr.check(ip("2001:db8::5")), Err(Skip::Cidr));
        assert_eq!(cidr.check(ip("8.8.4.4")), Ok(()));
    }

    #[test]
    fn the_byte_reader_takes_only_strict_dotted_quads_directly() {
        for s in [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            "1.2.3.4.5",
            " 1.2.3.4",
            "[1.2.3.4]",
            "0001.2.3.4",
            "",
            ".",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(canonical_bytes(s.as_bytes()), canonical(s), "{s:?}");
        }
        assert_eq!(dotted_quad(b"01.2.3.4"), None);
        assert_eq!(dotted_quad(b" 1.2.3.4"), None, "left to canonical");
    }

    proptest! {
        #[test]
        fn any_v6_text_form_gives_the_same_key(segs in prop::array::uniform8(any::<u16>())) {
            let v6 = Ipv6Addr::from(segs);
            let want = IpAddr::V6(v6).to_canonical();
            let full = segs.iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":");
            let short = segs.iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":");
            prop_assert_eq!(canonical(&full), Some(want));
            prop_assert_eq!(canonical(&short), Some(want));
            prop_assert_eq!(canonical(&v6.to_string()), Some(want));
            prop_assert_eq!(canonical(&format!("[{v6}]")), Some(want));
            prop_assert_eq!(canonical(&format!("{v6}%zone1")), Some(want));
            prop_assert_eq!(canonical(&full.to_uppercase()), Some(want));
        }

        #[test]
        fn any_v4_in_any_form_gives_the_same_key(octets in prop::array::uniform4(any::<u8>())) {
            let v4 = Ipv4Addr::from(octets);
            let want = IpAddr::V4(v4);
            prop_assert_eq!(canonical(&v4.to_string()), Some(want));
            prop_assert_eq!(canonical(&format!("::ffff:{v4}")), Some(want));
            prop_assert_eq!(canonical(&format!("[::ffff:{v4}]")), Some(want));
            prop_assert_eq!(canonical(&v4.to_ipv6_mapped().to_string()), Some(want));
        }

        #[test]
        fn the_byte_reader_agrees_with_canonical(s in "([0-9]{0,4}\\.){0,5}[0-9]{0,4}|[0-9a-f:.%\\[\\] ]{0,24}|.{0,40}") {
            prop_assert_eq!(canonical_bytes(s.as_bytes()), canonical(&s));
        }

        #[test]
        fn the_byte_reader_reads_every_v4_address(octets in prop::array::uniform4(any::<u8>())) {
            let v4 = Ipv4Addr::from(octets);
            prop_assert_eq!(canonical_bytes(v4.to_string().as_bytes()), Some(IpAddr::V4(v4)));
        }

        #[test]
        fn canonical_is_idempotent_and_never_panics(s in ".{0,80}") {
            if let Some(ip) = canonical(&s) {
                prop_assert_eq!(canonical(&ip.to_string()), Some(ip));
            }
        }
    }
}

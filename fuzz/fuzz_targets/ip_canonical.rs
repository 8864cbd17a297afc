//! `ip::canonical` on arbitrary text: it never panics, an address it accepts
//! is already canonical (no IPv4-mapped IPv6), and its text form reads back
//! as the same address.

#![no_main]

use std::net::IpAddr;

use enricher::ip::{canonical, is_internal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(ip) = canonical(&text) else {
        return;
    };
    if let IpAddr::V6(v6) = ip {
        assert!(v6.to_ipv4_mapped().is_none(), "{text:?} kept a mapped form");
    }
    assert_eq!(
        canonical(&ip.to_string()),
        Some(ip),
        "{text:?} does not round trip"
    );
    assert_eq!(canonical(&format!("[{ip}]")), Some(ip));
    let _ = is_internal(ip);
});

//! The demo GeoIP databases: a City and an ASN database covering the
//! synthetic public address space of [`crate::synth`], written fresh on every
//! run (nothing licensed is copied).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use test_support::mmdb::{self, CityRecord};

use test_support::zeek::Rng;

/// One demo network: where it is and who runs it.
struct Block {
    net: &'static str,
    iso: &'static str,
    country: &'static str,
    city: &'static str,
    location: (f64, f64, &'static str),
    asn: u32,
    org: &'static str,
}

/// Public networks of the synthetic space. AS numbers are from the ranges
/// reserved for documentation (RFC 5398); organisations are made up.
const BLOCKS: [Block; 10] = [
    block(
        "45.0.0.0/10",
        "US",
        "United States",
        "Ashburn",
        (39.04, -77.49, "America/New_York"),
        64496,
        "Demo Cloud Inc",
    ),
    block(
        "81.0.0.0/10",
        "GB",
        "United Kingdom",
        "London",
        (51.51, -0.13, "Europe/London"),
        64497,
        "Demo Hosting Ltd",
    ),
    block(
        "89.128.0.0/10",
        "SE",
        "Sweden",
        "Stockholm",
        (59.33, 18.07, "Europe/Stockholm"),
        64498,
        "Demo Bredband AB",
    ),
    block(
        "95.0.0.0/10",
        "DE",
        "Germany",
        "Frankfurt am Main",
        (50.11, 8.68, "Europe/Berlin"),
        64499,
        "Demo Transit GmbH",
    ),
    block(
        "103.0.0.0/10",
        "JP",
        "Japan",
        "Tokyo",
        (35.69, 139.69, "Asia/Tokyo"),
        64500,
        "Demo Networks KK",
    ),
    block(
        "177.0.0.0/10",
        "BR",
        "Brazil",
        "Sao Paulo",
        (-23.55, -46.63, "America/Sao_Paulo"),
        64501,
        "Demo Telecom SA",
    ),
    block(
        "41.0.0.0/10",
        "ZA",
        "South Africa",
        "Johannesburg",
        (-26.20, 28.05, "Africa/Johannesburg"),
        64502,
        "Demo Fibre Pty",
    ),
    block(
        "2600::/16",
        "US",
        "United States",
        "Seattle",
        (47.61, -122.33, "America/Los_Angeles"),
        65536,
        "Demo IPv6 Cloud Inc",
    ),
    block(
        "2a00::/16",
        "DE",
        "Germany",
        "Berlin",
        (52.52, 13.40, "Europe/Berlin"),
        65537,
        "Demo IPv6 GmbH",
    ),
    block(
        "2400::/16",
        "JP",
        "Japan",
        "Osaka",
        (34.69, 135.50, "Asia/Tokyo"),
        65538,
        "Demo IPv6 KK",
    ),
];

#[allow(clippy::too_many_arguments)]
const fn block(
    net: &'static str,
    iso: &'static str,
    country: &'static str,
    city: &'static str,
    location: (f64, f64, &'static str),
    asn: u32,
    org: &'static str,
) -> Block {
    Block {
        net,
        iso,
        country,
        city,
        location,
        asn,
        org,
    }
}

/// Build time written to the demo databases (2026-01-01).
pub const BUILD_EPOCH: u64 = 1_767_225_600;

fn nets(v6: bool) -> impl Iterator<Item = IpNet> {
    BLOCKS
        .iter()
        .map(|b| b.net.parse::<IpNet>().expect("demo networks are valid"))
        .filter(move |n| matches!(n, IpNet::V6(_)) == v6)
}

/// A random address in one of the IPv4 demo networks.
pub(crate) fn random_v4(rng: &mut Rng) -> IpAddr {
    let all: Vec<IpNet> = nets(false).collect();
    let net = all[(rng.next_u64() % all.len() as u64) as usize];
    let IpNet::V4(net) = net else {
        unreachable!("filtered to IPv4")
    };
    let host_bits = 32 - u32::from(net.prefix_len());
    let host = (rng.next_u64() as u32) & ((1u32 << host_bits) - 1);
    // Avoid .0 and .255 only for looks.
    let base = u32::from(net.network()) | host;
    IpAddr::V4(Ipv4Addr::from(base | 1))
}

/// A random address in one of the IPv6 demo networks.
pub(crate) fn random_v6(rng: &mut Rng) -> IpAddr {
    let all: Vec<IpNet> = nets(true).collect();
    let net = all[(rng.next_u64() % all.len() as u64) as usize];
    let IpNet::V6(net) = net else {
        unreachable!("filtered to IPv6")
    };
    let host_bits = 128 - u32::from(net.prefix_len());
    let host = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()))
        & ((1u128 << host_bits) - 1);
    IpAddr::V6(Ipv6Addr::from(u128::from(net.network()) | host))
}

/// Whether the demo databases know `ip`.
pub fn covers(ip: IpAddr) -> bool {
    country(ip).is_some()
}

/// The ISO country code the demo City database gives `ip`, if it knows it.
pub fn country(ip: IpAddr) -> Option<&'static str> {
    BLOCKS
        .iter()
        .find(|b| b.net.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)))
        .map(|b| b.iso)
}

/// The paths of the written databases.
#[derive(Debug, Clone)]
pub struct Databases {
    /// GeoIP2-City layout.
    pub city: PathBuf,
    /// GeoLite2-ASN layout.
    pub asn: PathBuf,
}

/// Writes `demo-city.mmdb` and `demo-asn.mmdb` into `dir`.
///
/// # Errors
///
/// When a file cannot be written.
pub fn write(dir: &Path) -> std::io::Result<Databases> {
    let city: Vec<(IpNet, CityRecord)> = BLOCKS
        .iter()
        .map(|b| {
            let (lat, lon, tz) = b.location;
            (
                b.net.parse().expect("demo networks are valid"),
                CityRecord::new(b.iso, b.country, Some(b.city)).with_location(lat, lon, tz),
            )
        })
        .collect();
    let asn: Vec<(IpNet, u32, &str)> = BLOCKS
        .iter()
        .map(|b| {
            (
                b.net.parse().expect("demo networks are valid"),
                b.asn,
                b.org,
            )
        })
        .collect();
    let dbs = Databases {
        city: dir.join("demo-city.mmdb"),
        asn: dir.join("demo-asn.mmdb"),
    };
    mmdb::write_atomically(&dbs.city, &mmdb::city_db_bytes(&city, BUILD_EPOCH))?;
    mmdb::write_atomically(&dbs.asn, &mmdb::asn_db_bytes(&asn, BUILD_EPOCH))?;
    Ok(dbs)
}

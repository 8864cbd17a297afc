//! Real MaxMind DB (`.mmdb`) files in the GeoIP2 layouts, written with `mmdb-writer`.
//!
//! Databases are IPv6 trees with IPv4 under `::/96` plus the `::ffff:0:0/96`, 6to4 and
//! Teredo aliases, languages `["en"]` and a description (maxminddb's `verify()` rejects
//! an empty one). Records are built from typed serde structs so numbers keep their MMDB
//! types (`u32` geoname ids and AS numbers, `f64` coordinates), as real databases have.
//!
//! [`standard_city`] and [`standard_asn`] are the shared fixture; [`truncated`],
//! [`garbage`] and [`corrupt_metadata`] make files that do not open, [`corrupt_data`]
//! one that opens but fails `verify()`, for reload tests.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;

/// One location in a City or Country database.
#[derive(Clone, Debug, PartialEq)]
pub struct CityRecord {
    /// ISO 3166-1 alpha-2 country code, e.g. `"GB"`.
    pub country_iso: String,
    /// English country name, e.g. `"United Kingdom"`.
    pub country_name: String,
    /// Two-letter continent code (`"EU"`, `"NA"`, ...); empty leaves the continent out.
    pub continent_code: String,
    /// English city name.
    pub city: Option<String>,
    /// ISO 3166-2 subdivision code without the country prefix, e.g. `"ENG"`.
    pub subdivision_iso: Option<String>,
    /// Latitude in degrees.
    pub latitude: Option<f64>,
    /// Longitude in degrees.
    pub longitude: Option<f64>,
    /// IANA time zone, e.g. `"Europe/London"`.
    pub time_zone: Option<String>,
    /// Postal code.
    pub postal: Option<String>,
}

impl CityRecord {
    /// A record with a country, an optional city, and the continent guessed from the
    /// country code (see [`continent_of`]); everything else absent.
    pub fn new(country_iso: &str, country_name: &str, city: Option<&str>) -> Self {
        Self {
            country_iso: country_iso.to_owned(),
            country_name: country_name.to_owned(),
            continent_code: continent_of(country_iso).to_owned(),
            city: city.map(str::to_owned),
            subdivision_iso: None,
            latitude: None,
            longitude: None,
            time_zone: None,
            postal: None,
        }
    }

    /// Sets the subdivision ISO code.
    #[must_use]
    pub fn with_subdivision(mut self, iso: &str) -> Self {
        self.subdivision_iso = Some(iso.to_owned());
        self
    }

    /// Sets latitude, longitude and time zone.
    #[must_use]
    pub fn with_location(mut self, latitude: f64, longitude: f64, time_zone: &str) -> Self {
        self.latitude = Some(latitude);
        self.longitude = Some(longitude);
        self.time_zone = Some(time_zone.to_owned());
        self
    }

    /// Sets the postal code.
    #[must_use]
    pub fn with_postal(mut self, postal: &str) -> Self {
        self.postal = Some(postal.to_owned());
        self
    }
}

/// The continent code for a handful of country codes used in tests, `""` for others.
///
/// `EU` for European countries, `NA` for US/CA/MX, `SA`, `AS` (JP, CN, IN, ...), `OC`
/// (AU, NZ) and `AF` for a few common ones each.
pub fn continent_of(country_iso: &str) -> &'static str {
    match country_iso.to_ascii_uppercase().as_str() {
        "GB" | "SE" | "DE" | "FR" | "NL" | "IE" | "ES" | "IT" | "PL" | "NO" | "FI" | "DK"
        | "BE" | "AT" | "CH" | "PT" | "CZ" | "RU" | "UA" => "EU",
        "US" | "CA" | "MX" => "NA",
        "BR" | "AR" | "CL" | "CO" => "SA",
        "JP" | "CN" | "KR" | "IN" | "SG" | "HK" | "TW" | "ID" | "IL" => "AS",
        "AU" | "NZ" => "OC",
        "ZA" | "EG" | "NG" | "KE" => "AF",
        _ => "",
    }
}

fn continent_name(code: &str) -> &'static str {
    match code {
        "EU" => "Europe",
        "NA" => "North America",
        "SA" => "South America",
        "AS" => "Asia",
        "OC" => "Oceania",
        "AF" => "Africa",
        "AN" => "Antarctica",
        _ => "",
    }
}

/// GeoNames ids of the fixture's countries; others get a made-up id from the code.
fn country_geoname_id(iso: &str) -> u32 {
    match iso {
        "GB" => 2_635_167,
        "SE" => 2_661_886,
        "US" => 6_252_001,
        "JP" => 1_861_060,
        "AU" => 2_077_456,
        _ => iso
            .bytes()
            .fold(9_000_000, |id, byte| id * 31 % 10_000_000 + u32::from(byte)),
    }
}

// The GeoIP2 layout, as typed structs (absent parts are left out, not written as null).

#[derive(Serialize)]
struct Names<'a> {
    en: &'a str,
}

#[derive(Serialize)]
struct Continent<'a> {
    code: &'a str,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Country<'a> {
    iso_code: &'a str,
    names: Names<'a>,
    geoname_id: u32,
}

#[derive(Serialize)]
struct City<'a> {
    names: Names<'a>,
}

#[derive(Serialize)]
struct Subdivision<'a> {
    iso_code: &'a str,
}

#[derive(Serialize)]
struct Location<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    latitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    longitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_zone: Option<&'a str>,
}

#[derive(Serialize)]
struct Postal<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct CityDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    continent: Option<Continent<'a>>,
    country: Country<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<City<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Subdivision<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postal: Option<Postal<'a>>,
}

#[derive(Serialize)]
struct CountryDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    continent: Option<Continent<'a>>,
    country: Country<'a>,
}

#[derive(Serialize)]
struct AsnDoc<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
}

fn continent(record: &CityRecord) -> Option<Continent<'_>> {
    (!record.continent_code.is_empty()).then(|| Continent {
        code: &record.continent_code,
        names: Names {
            en: continent_name(&record.continent_code),
        },
    })
}

fn country(record: &CityRecord) -> Country<'_> {
    Country {
        iso_code: &record.country_iso,
        names: Names {
            en: &record.country_name,
        },
        geoname_id: country_geoname_id(&record.country_iso),
    }
}

fn city_doc(record: &CityRecord) -> CityDoc<'_> {
    let has_location =
        record.latitude.is_some() || record.longitude.is_some() || record.time_zone.is_some();
    CityDoc {
        continent: continent(record),
        country: country(record),
        city: record.city.as_deref().map(|en| City {
            names: Names { en },
        }),
        subdivisions: record
            .subdivision_iso
            .as_deref()
            .map(|iso_code| Subdivision { iso_code })
            .into_iter()
            .collect(),
        location: has_location.then_some(Location {
            latitude: record.latitude,
            longitude: record.longitude,
            time_zone: record.time_zone.as_deref(),
        }),
        postal: record.postal.as_deref().map(|code| Postal { code }),
    }
}

fn writer(database_type: &str, description: &str, build_epoch: u64) -> Writer {
    Writer::builder(database_type)
        .description(&[("en", description)])
        .languages(["en"])
        .build_epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(build_epoch))
        .build()
}

fn finish(writer: &Writer) -> Vec<u8> {
    writer.to_bytes().expect("serialising an .mmdb fixture")
}

/// A `GeoIP2-City` database with these networks, built at `build_epoch` (Unix seconds,
/// written to the metadata so tests can tell two builds apart).
///
/// Each record is `{"continent":{"code","names":{"en"}}, "country":{"iso_code",
/// "names":{"en"},"geoname_id"}, "city":{"names":{"en"}}, "subdivisions":[{"iso_code"}],
/// "location":{"latitude","longitude","time_zone"}, "postal":{"code"}}`, leaving out
/// absent parts. Later entries win where networks overlap.
///
/// # Panics
///
/// If a network cannot be inserted (it cannot happen in an IPv6 tree).
pub fn city_db_bytes(entries: &[(IpNet, CityRecord)], build_epoch: u64) -> Vec<u8> {
    let mut writer = writer(
        "GeoIP2-City",
        "test-support GeoIP2 City fixture",
        build_epoch,
    );
    for (net, record) in entries {
        writer
            .insert(*net, &city_doc(record))
            .expect("inserting a City record");
    }
    finish(&writer)
}

/// A `GeoIP2-Country` database: like [`city_db_bytes`] but each record has only
/// `continent` and `country`.
///
/// # Panics
///
/// If a network cannot be inserted (it cannot happen in an IPv6 tree).
pub fn country_db_bytes(entries: &[(IpNet, CityRecord)], build_epoch: u64) -> Vec<u8> {
    let mut writer = writer(
        "GeoIP2-Country",
        "test-support GeoIP2 Country fixture",
        build_epoch,
    );
    for (net, record) in entries {
        let doc = CountryDoc {
            continent: continent(record),
            country: country(record),
        };
        writer
            .insert(*net, &doc)
            .expect("inserting a Country record");
    }
    finish(&writer)
}

/// A `GeoLite2-ASN` database of `(network, AS number, organisation)` with records
/// `{"autonomous_system_number": u32, "autonomous_system_organization": str}`.
///
/// # Panics
///
/// If a network cannot be inserted (it cannot happen in an IPv6 tree).
pub fn asn_db_bytes(entries: &[(IpNet, u32, &str)], build_epoch: u64) -> Vec<u8> {
    let mut writer = writer(
        "GeoLite2-ASN",
        "test-support GeoLite2 ASN fixture",
        build_epoch,
    );
    for (net, number, organisation) in entries {
        let doc = AsnDoc {
            autonomous_system_number: *number,
            autonomous_system_organization: organisation,
        };
        writer.insert(*net, &doc).expect("inserting an ASN record");
    }
    finish(&writer)
}

/// A database of any type (`GeoIP2-Anonymous-IP`, `GeoIP2-ISP`, a custom
/// `Acme-Networks`, ...) holding `entries` as they serialise: build records
/// from typed structs (or `serde_json` values whose numbers are meant as
/// 64-bit integers) so numbers keep the MMDB types real databases use.
///
/// # Panics
///
/// If a network cannot be inserted (it cannot happen in an IPv6 tree).
pub fn db_bytes<T: Serialize>(
    database_type: &str,
    entries: &[(IpNet, T)],
    build_epoch: u64,
) -> Vec<u8> {
    let mut writer = writer(database_type, "test-support fixture", build_epoch);
    for (net, record) in entries {
        writer.insert(*net, record).expect("inserting a record");
    }
    finish(&writer)
}

/// Replaces `path` the way geoipupdate does: writes a temporary file in the same
/// directory, syncs it, and renames it over `path`, so a reader never sees a partly
/// written file and a watcher sees one rename.
///
/// # Errors
///
/// Any I/O error creating, writing or renaming the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".mmdb-update-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

fn net(text: &str) -> IpNet {
    text.parse().expect("fixture networks are valid")
}

/// The shared City fixture (also good for [`country_db_bytes`]):
///
/// | network          | country                 | city        | extra                                     |
/// |------------------|-------------------------|-------------|-------------------------------------------|
/// | `81.2.69.0/24`   | GB United Kingdom, EU   | London      | ENG, 51.5142/-0.0931, Europe/London, EC1A |
/// | `89.160.20.0/24` | SE Sweden, EU           | Linköping   | E, 58.4167/15.6167, Europe/Stockholm (non-ASCII city on purpose) |
/// | `2001:db8::/32`  | US United States, NA    | Test City   | none                                      |
/// | `1.128.0.0/11`   | AU Australia, OC        | none        | none (a country without a city)           |
/// | `8.8.8.0/24`     | US United States, NA    | none        | none                                      |
/// | `203.0.113.0/24` | JP Japan, AS            | Tokyo       | 13, 35.6893/139.6899, Asia/Tokyo          |
///
/// Addresses outside these networks (e.g. `192.0.2.1`, `198.51.100.1`) are not found.
pub fn standard_city() -> Vec<(IpNet, CityRecord)> {
    vec![
        (
            net("81.2.69.0/24"),
            CityRecord::new("GB", "United Kingdom", Some("London"))
                .with_subdivision("ENG")
                .with_location(51.5142, -0.0931, "Europe/London")
                .with_postal("EC1A"),
        ),
        (
            net("89.160.20.0/24"),
            CityRecord::new("SE", "Sweden", Some("Linköping"))
                .with_subdivision("E")
                .with_location(58.4167, 15.6167, "Europe/Stockholm"),
        ),
        (
            net("2001:db8::/32"),
            CityRecord::new("US", "United States", Some("Test City")),
        ),
        (
            net("1.128.0.0/11"),
            CityRecord::new("AU", "Australia", None),
        ),
        (
            net("8.8.8.0/24"),
            CityRecord::new("US", "United States", None),
        ),
        (
            net("203.0.113.0/24"),
            CityRecord::new("JP", "Japan", Some("Tokyo"))
                .with_subdivision("13")
                .with_location(35.6893, 139.6899, "Asia/Tokyo"),
        ),
    ]
}

/// The shared ASN fixture:
///
/// | network          | AS      | organisation                                        |
/// |------------------|---------|-----------------------------------------------------|
/// | `1.128.0.0/11`   | 1221    | `Telstra Pty Ltd`                                   |
/// | `8.8.8.0/24`     | 15169   | `Google LLC`                                        |
/// | `89.160.20.0/24` | 29518   | `Bredband2 AB`                                      |
/// | `203.0.113.0/24` | 64500   | `Example "Quoted" Org` (a quote, to test JSON escaping) |
///
/// `81.2.69.0/24` and `2001:db8::/32` have City data but no ASN on purpose.
pub fn standard_asn() -> Vec<(IpNet, u32, &'static str)> {
    vec![
        (net("1.128.0.0/11"), 1221, "Telstra Pty Ltd"),
        (net("8.8.8.0/24"), 15169, "Google LLC"),
        (net("89.160.20.0/24"), 29518, "Bredband2 AB"),
        (net("203.0.113.0/24"), 64500, "Example \"Quoted\" Org"),
    ]
}

/// The marker that starts the metadata section; readers search for its last
/// occurrence.
const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

fn marker_position(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(METADATA_MARKER.len())
        .rposition(|window| window == METADATA_MARKER)
}

/// The database cut in the middle of its data section, like a download that stopped
/// early: the metadata is gone, so opening it fails.
///
/// For bytes that are not a readable database, the first half.
pub fn truncated(bytes: &[u8]) -> Vec<u8> {
    let cut = match (
        maxminddb::Reader::from_source(bytes),
        marker_position(bytes),
    ) {
        (Ok(reader), Some(marker)) => {
            let data_start = data_section_start(reader.metadata()).min(marker);
            data_start + (marker - data_start) / 2
        }
        _ => bytes.len() / 2,
    };
    bytes[..cut].to_vec()
}

/// The database with its data section overwritten by `0xff` bytes but tree and
/// metadata intact: it opens (`Reader::from_source` succeeds) but `verify()` fails and
/// lookups that find data fail to decode, like a file damaged on disk.
///
/// For bytes that are not a readable database, a copy of them.
pub fn corrupt_data(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let (Ok(reader), Some(marker)) = (
        maxminddb::Reader::from_source(bytes),
        marker_position(bytes),
    ) {
        let data_start = data_section_start(reader.metadata()).min(marker);
        out[data_start..marker].fill(0xff);
    }
    out
}

/// Where the data section starts: after `node_count` nodes of two records each and the
/// 16-byte zero separator.
fn data_section_start(metadata: &maxminddb::Metadata) -> usize {
    let tree_bytes = u64::from(metadata.node_count) * u64::from(metadata.record_size) / 4;
    usize::try_from(tree_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(16)
}

/// `len` bytes of deterministic noise (no metadata marker), as if a non-database file
/// had been dropped in place.
pub fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            // xorshift64*: cheap, reproducible, and never produces the marker by chance
            // in practice.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes()[0]
        })
        .collect()
}

/// The database with every metadata marker overwritten, so readers find no metadata
/// and refuse to open it. The length is unchanged.
pub fn corrupt_metadata(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    while let Some(position) = marker_position(&out) {
        out[position..position + METADATA_MARKER.len()].copy_from_slice(b"\0\0\0NotMaxMind!");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use maxminddb::{Reader, geoip2};

    use super::*;

    const EPOCH: u64 = 1_700_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    fn city_reader() -> Reader<Vec<u8>> {
        Reader::from_source(city_db_bytes(&standard_city(), EPOCH)).expect("City db opens")
    }

    #[test]
    fn city_metadata() {
        let reader = city_reader();
        reader.verify().expect("City db verifies");
        let metadata = reader.metadata();
        assert_eq!(metadata.database_type, "GeoIP2-City");
        assert_eq!(metadata.build_epoch, EPOCH);
        assert_eq!(metadata.ip_version, 6);
        assert_eq!(metadata.languages, vec!["en".to_owned()]);
        assert_eq!(metadata.binary_format_major_version, 2);
        assert!(!metadata.description.is_empty());
    }

    #[test]
    fn city_records_decode_as_geoip2_city() {
        let reader = city_reader();
        let london: geoip2::City<'_> = reader
            .lookup(ip("81.2.69.142"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("London has data");
        assert_eq!(london.continent.code, Some("EU"));
        assert_eq!(london.continent.names.english, Some("Europe"));
        assert_eq!(london.country.iso_code, Some("GB"));
        assert_eq!(london.country.names.english, Some("United Kingdom"));
        assert_eq!(london.country.geoname_id, Some(2_635_167));
        assert_eq!(london.city.names.english, Some("London"));
        assert_eq!(london.subdivisions.len(), 1);
        assert_eq!(london.subdivisions[0].iso_code, Some("ENG"));
        assert_eq!(london.location.latitude, Some(51.5142));
        assert_eq!(london.location.longitude, Some(-0.0931));
        assert_eq!(london.location.time_zone, Some("Europe/London"));
        assert_eq!(london.postal.code, Some("EC1A"));

        let linkoping: geoip2::City<'_> = reader
            .lookup(ip("89.160.20.112"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("Linköping has data");
        assert_eq!(linkoping.city.names.english, Some("Linköping"));
        assert_eq!(linkoping.country.iso_code, Some("SE"));

        let v6: geoip2::City<'_> = reader
            .lookup(ip("2001:db8::1"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("2001:db8::/32 has data");
        assert_eq!(v6.country.iso_code, Some("US"));
        assert_eq!(v6.city.names.english, Some("Test City"));
        assert!(v6.subdivisions.is_empty());
        assert_eq!(v6.location.latitude, None);
        assert_eq!(v6.postal.code, None);

        let country_only: geoip2::City<'_> = reader
            .lookup(ip("1.130.0.1"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("1.128.0.0/11 has data");
        assert_eq!(country_only.country.iso_code, Some("AU"));
        assert_eq!(country_only.continent.code, Some("OC"));
        assert_eq!(country_only.city.names.english, None);

        let result = reader.lookup(ip("192.0.2.1")).expect("lookup");
        assert!(!result.has_data());
    }

    #[test]
    fn ipv4_aliases_reach_ipv4_data() {
        let reader = city_reader();
        for alias in ["::ffff:81.2.69.142", "2002:5102:458e::1"] {
            let city: geoip2::City<'_> = reader
                .lookup(ip(alias))
                .expect("lookup")
                .decode()
                .expect("decode")
                .unwrap_or_else(|| panic!("{alias} should alias 81.2.69.142"));
            assert_eq!(city.city.names.english, Some("London"), "{alias}");
        }
    }

    #[test]
    fn decode_path_reads_single_fields() {
        let reader = city_reader();
        let result = reader.lookup(ip("203.0.113.9")).expect("lookup");
        let iso: Option<&str> = result
            .decode_path(&maxminddb::path!["country", "iso_code"])
            .expect("decode_path");
        assert_eq!(iso, Some("JP"));
        let city: Option<&str> = result
            .decode_path(&maxminddb::path!["city", "names", "en"])
            .expect("decode_path");
        assert_eq!(city, Some("Tokyo"));
    }

    #[test]
    fn asn_records_decode_as_geoip2_asn() {
        let reader = Reader::from_source(asn_db_bytes(&standard_asn(), EPOCH)).expect("ASN db");
        reader.verify().expect("ASN db verifies");
        assert_eq!(reader.metadata().database_type, "GeoLite2-ASN");
        let cases = [
            ("1.128.0.1", 1221, "Telstra Pty Ltd"),
            ("8.8.8.8", 15169, "Google LLC"),
            ("89.160.20.112", 29518, "Bredband2 AB"),
            ("203.0.113.1", 64500, "Example \"Quoted\" Org"),
        ];
        for (address, number, organisation) in cases {
            let asn: geoip2::Asn<'_> = reader
                .lookup(ip(address))
                .expect("lookup")
                .decode()
                .expect("decode as geoip2::Asn (u32 number)")
                .unwrap_or_else(|| panic!("{address} has an ASN"));
            assert_eq!(asn.autonomous_system_number, Some(number));
            assert_eq!(asn.autonomous_system_organization, Some(organisation));
        }
        assert!(!reader.lookup(ip("81.2.69.142")).expect("lookup").has_data());
    }

    #[test]
    fn country_records_decode_as_geoip2_country() {
        let reader =
            Reader::from_source(country_db_bytes(&standard_city(), EPOCH)).expect("Country db");
        reader.verify().expect("Country db verifies");
        assert_eq!(reader.metadata().database_type, "GeoIP2-Country");
        let country: geoip2::Country<'_> = reader
            .lookup(ip("89.160.20.1"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("Sweden has data");
        assert_eq!(country.country.iso_code, Some("SE"));
        assert_eq!(country.continent.code, Some("EU"));
        let city: Option<&str> = reader
            .lookup(ip("89.160.20.1"))
            .expect("lookup")
            .decode_path(&maxminddb::path!["city", "names", "en"])
            .expect("decode_path");
        assert_eq!(city, None, "a Country db has no city");
    }

    #[test]
    fn unknown_continent_is_left_out() {
        let entries = [(net("192.0.2.0/24"), CityRecord::new("ZZ", "Nowhere", None))];
        let reader = Reader::from_source(city_db_bytes(&entries, EPOCH)).expect("City db");
        let city: geoip2::City<'_> = reader
            .lookup(ip("192.0.2.1"))
            .expect("lookup")
            .decode()
            .expect("decode")
            .expect("data");
        assert_eq!(city.continent.code, None);
        assert_eq!(city.country.iso_code, Some("ZZ"));
    }

    #[test]
    fn write_atomically_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("GeoLite2-City.mmdb");
        write_atomically(&path, &city_db_bytes(&standard_city(), 1)).expect("first write");
        let first = Reader::open_readfile(&path).expect("opens");
        assert_eq!(first.metadata().build_epoch, 1);

        write_atomically(&path, &city_db_bytes(&standard_city(), 2)).expect("second write");
        assert_eq!(
            Reader::open_readfile(&path)
                .expect("opens")
                .metadata()
                .build_epoch,
            2
        );
        // The old reader keeps its own copy; no temporary files are left behind.
        assert_eq!(first.metadata().build_epoch, 1);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("GeoLite2-City.mmdb")]);
    }

    #[test]
    fn corrupt_variants_do_not_open() {
        let good = city_db_bytes(&standard_city(), EPOCH);

        let cut = truncated(&good);
        assert!(cut.len() < good.len() && cut.len() > good.len() / 4);
        assert!(Reader::from_source(cut).is_err(), "truncated");

        let noise = garbage(4096);
        assert_eq!(noise, garbage(4096), "deterministic");
        assert!(Reader::from_source(noise).is_err(), "garbage");
        assert!(Reader::from_source(garbage(0)).is_err(), "empty");

        let no_metadata = corrupt_metadata(&good);
        assert_eq!(no_metadata.len(), good.len());
        assert!(Reader::from_source(no_metadata).is_err(), "no metadata");

        let damaged = Reader::from_source(corrupt_data(&good)).expect("damaged data still opens");
        assert!(damaged.verify().is_err(), "damaged data fails verify()");
        let lookup = damaged
            .lookup(ip("81.2.69.142"))
            .expect("the tree is intact");
        assert!(
            lookup.decode::<geoip2::City<'_>>().is_err(),
            "damaged data fails to decode"
        );

        let asn = asn_db_bytes(&standard_asn(), EPOCH);
        assert!(Reader::from_source(truncated(&asn)).is_err());
        assert!(Reader::from_source(corrupt_metadata(&asn)).is_err());
    }
}

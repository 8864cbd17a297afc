//! What a database holds and how one attribute is read out of it.
//!
//! ```text
//! metadata.database_type --> DbKind --> supported attributes (`--geoip`: all)
//! config attributes      --> [Field] (built once per database)
//! lookup result --decode_path per Field--> FragmentBuilder
//! ```
//!
//! Only the wanted attributes are decoded, each with `decode_path`, so a
//! lookup never builds a whole record. ISP, connection-type, domain and
//! anonymity attributes are read at the top level (GeoIP2-ISP, -Domain,
//! -Connection-Type, -Anonymous-IP, DB-IP's ISP) and, when absent there,
//! under `traits` (GeoIP2-Enterprise, DB-IP's `compat=Enterprise` files).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use maxminddb::{LookupResult, MaxMindDbError, PathElement};

use crate::config::CustomName;
use crate::splice::{Attr, FragmentBuilder};

/// The kinds of database the enricher reads, from a file's `database_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbKind {
    /// City or Country (GeoIP2/GeoLite2/DB-IP, Enterprise): country, city, location, ...
    City,
    /// ASN (GeoLite2-ASN, DB-IP ASN): AS number and organisation.
    Asn,
    /// ISP (GeoIP2-ISP, DB-IP ISP): ISP, organisation, AS, mobile codes.
    Isp,
    /// DB-IP's Location-ISP: the City and ISP attributes in one file.
    CityIsp,
    /// GeoIP2-Anonymous-IP: VPN, hosting, proxy and Tor flags.
    AnonymousIp,
    /// GeoIP2-Connection-Type.
    ConnectionType,
    /// GeoIP2-Domain: the owner's second-level domain.
    Domain,
    /// Any other type: read only through attribute paths.
    Custom,
}

const CITY: &[Attr] = &[
    Attr::Country,
    Attr::CountryName,
    Attr::Continent,
    Attr::City,
    Attr::Subdivision,
    Attr::SubdivisionName,
    Attr::Location,
    Attr::Timezone,
    Attr::Postal,
];
const COUNTRY: &[Attr] = &[Attr::Country, Attr::CountryName, Attr::Continent];
const ASN: &[Attr] = &[Attr::Asn, Attr::Org];
const ISP: &[Attr] = &[
    Attr::Asn,
    Attr::Org,
    Attr::Isp,
    Attr::Organization,
    Attr::MobileCountryCode,
    Attr::MobileNetworkCode,
];
/// DB-IP's Location-ISP: a City database and an ISP one in one file, with
/// the connection type.
const CITY_ISP: &[Attr] =
    &concat::<{ CITY.len() + ISP.len() + 1 }>(&[CITY, ISP, &[Attr::ConnectionType]]);
const ANONYMOUS: &[Attr] = &[
    Attr::IsAnonymous,
    Attr::IsAnonymousVpn,
    Attr::IsHostingProvider,
    Attr::IsPublicProxy,
    Attr::IsResidentialProxy,
    Attr::IsTorExitNode,
];

/// The attribute lists `parts`, one after the other; `N` is their total
/// length (a wrong one fails the build).
const fn concat<const N: usize>(parts: &[&[Attr]]) -> [Attr; N] {
    let mut out = [Attr::Country; N];
    let (mut i, mut n) = (0, 0);
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "N is not the total length of the parts");
    out
}

impl DbKind {
    /// The kind of a database by its metadata's `database_type`
    /// (`GeoIP2-City`, `DBIP-ASN-Lite (compat=GeoLite2-ASN)`, ...).
    pub fn of(database_type: &str) -> Self {
        let t = database_type.to_ascii_lowercase();
        let has = |s: &str| t.contains(s);
        if has("anonymous") {
            DbKind::AnonymousIp
        } else if has("connection") {
            DbKind::ConnectionType
        } else if has("domain") {
            DbKind::Domain
        } else if has("isp") && (has("location") || has("city")) {
            DbKind::CityIsp
        } else if has("isp") {
            DbKind::Isp
        } else if has("asn") {
            DbKind::Asn
        } else if has("city") || has("country") || has("location") || has("enterprise") {
            DbKind::City
        } else {
            DbKind::Custom
        }
    }

    /// The metric label and config name.
    pub fn label(self) -> &'static str {
        match self {
            DbKind::City => "city",
            DbKind::Asn => "asn",
            DbKind::Isp => "isp",
            DbKind::CityIsp => "city_isp",
            DbKind::AnonymousIp => "anonymous_ip",
            DbKind::ConnectionType => "connection_type",
            DbKind::Domain => "domain",
            DbKind::Custom => "custom",
        }
    }

    /// Whether a file of this kind may serve where `expected` is asked
    /// for (`geoip.asn` takes an ISP database, which has the AS fields).
    pub fn serves(self, expected: DbKind) -> bool {
        self == expected
            || matches!(
                (expected, self),
                (DbKind::City, DbKind::CityIsp)
                    | (DbKind::Asn, DbKind::Isp)
                    | (DbKind::Asn, DbKind::CityIsp)
            )
    }

    /// Every attribute a database of this kind and type holds.
    pub fn supported(self, database_type: &str) -> &'static [Attr] {
        let t = database_type.to_ascii_lowercase();
        match self {
            DbKind::City if t.contains("country") && !t.contains("city") => COUNTRY,
            DbKind::City => CITY,
            DbKind::Asn => ASN,
            DbKind::Isp => ISP,
            DbKind::CityIsp => CITY_ISP,
            DbKind::AnonymousIp => ANONYMOUS,
            DbKind::ConnectionType => &[Attr::ConnectionType],
            DbKind::Domain => &[Attr::Domain],
            DbKind::Custom => &[],
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Which database answers a built-in attribute, for `geoip.city` and
/// `geoip.asn` (`None`: not one they hold).
pub fn attr_kind(attr: Attr) -> Option<DbKind> {
    if CITY.contains(&attr) {
        Some(DbKind::City)
    } else if ASN.contains(&attr) {
        Some(DbKind::Asn)
    } else {
        None
    }
}

/// One segment of a custom attribute's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Key(Box<str>),
    Index(usize),
}

/// One attribute of one database, as it is read.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field {
    /// A built-in attribute at its known path.
    Builtin(Attr),
    /// A custom attribute: any value at a dotted path, written as JSON.
    Custom { attr: Attr, path: Box<[Segment]> },
}

impl Field {
    /// A custom attribute `name` read at the dotted `path` (a numeric
    /// segment indexes a list).
    pub(super) fn custom(name: &str, path: &str) -> Self {
        let path = path
            .split('.')
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(s.into()),
            })
            .collect();
        Field::Custom {
            attr: Attr::Custom(CustomName(intern(name))),
            path,
        }
    }
}

/// Output names of custom attributes live as long as the process; each
/// distinct name is stored once, however often a configuration is loaded.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Longest JSON a custom attribute may write, in bytes; a larger value
/// (a whole sub-tree by mistake) is left out.
pub const MAX_CUSTOM_JSON: usize = 4096;

/// Options of the decoding that depend on the output naming.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Style {
    /// Write `subdivision` as ECS's `region_iso_code` wants it: `GB-ENG`.
    pub(super) region_with_country: bool,
}

use PathElement::{Index, Key};

/// Reads a string at `path`, else at `traits.<last>` when `traits` is set.
fn str_at<'a>(
    found: &LookupResult<'a, Vec<u8>>,
    path: &[PathElement<'_>],
    traits: bool,
) -> Result<Option<&'a str>, MaxMindDbError> {
    let value = found.decode_path::<&str>(path)?;
    match (value, traits, path) {
        (None, true, [Key(name)]) => found.decode_path::<&str>(&[Key("traits"), Key(name)]),
        _ => Ok(value),
    }
}

/// Decodes `fields` from one lookup result into `out`.
pub(super) fn decode(
    found: &LookupResult<'_, Vec<u8>>,
    fields: &[Field],
    style: Style,
    out: &mut FragmentBuilder,
) -> Result<(), MaxMindDbError> {
    for field in fields {
        let attr = match field {
            Field::Builtin(attr) => *attr,
            Field::Custom { attr, path } => {
                let path: Vec<PathElement<'_>> = path
                    .iter()
                    .map(|s| match s {
                        Segment::Key(k) => Key(k),
                        Segment::Index(i) => Index(*i),
                    })
                    .collect();
                if let Some(value) = found.decode_path::<serde_json::Value>(&path)? {
                    out.json(*attr, &value, MAX_CUSTOM_JSON);
                }
                continue;
            }
        };
        let path: &[PathElement<'_>] = match attr {
            Attr::Country => &[Key("country"), Key("iso_code")],
            Attr::CountryName => &[Key("country"), Key("names"), Key("en")],
            Attr::Continent => &[Key("continent"), Key("code")],
            Attr::City => &[Key("city"), Key("names"), Key("en")],
            Attr::SubdivisionName => &[Key("subdivisions"), Index(0), Key("names"), Key("en")],
            Attr::Subdivision => {
                let code =
                    found.decode_path::<&str>(&[Key("subdivisions"), Index(0), Key("iso_code")])?;
                let country = match style.region_with_country {
                    true => found.decode_path::<&str>(&[Key("country"), Key("iso_code")])?,
                    false => None,
                };
                match (code, country) {
                    (Some(code), Some(country)) => out.str(attr, &format!("{country}-{code}")),
                    (Some(code), None) => out.str(attr, code),
                    _ => {}
                }
                continue;
            }
            Attr::Timezone => &[Key("location"), Key("time_zone")],
            Attr::Postal => &[Key("postal"), Key("code")],
            Attr::Location => {
                let lat = found.decode_path::<f64>(&[Key("location"), Key("latitude")])?;
                let lon = found.decode_path::<f64>(&[Key("location"), Key("longitude")])?;
                if let (Some(lat), Some(lon)) = (lat, lon) {
                    out.location(lat, lon);
                }
                continue;
            }
            Attr::Asn => {
                let mut asn = found.decode_path::<u32>(&[Key("autonomous_system_number")])?;
                if asn.is_none() {
                    asn = found
                        .decode_path::<u32>(&[Key("traits"), Key("autonomous_system_number")])?;
                }
                if let Some(asn) = asn {
                    out.uint(attr, u64::from(asn));
                }
                continue;
            }
            Attr::Org => &[Key("autonomous_system_organization")],
            Attr::Isp => &[Key("isp")],
            Attr::Organization => &[Key("organization")],
            Attr::MobileCountryCode => &[Key("mobile_country_code")],
            Attr::MobileNetworkCode => &[Key("mobile_network_code")],
            Attr::ConnectionType => &[Key("connection_type")],
            Attr::Domain => &[Key("domain")],
            Attr::IsAnonymous
            | Attr::IsAnonymousVpn
            | Attr::IsHostingProvider
            | Attr::IsPublicProxy
            | Attr::IsResidentialProxy
            | Attr::IsTorExitNode => {
                let name = attr.name();
                let mut flag = found.decode_path::<bool>(&[Key(name)])?;
                if flag.is_none() {
                    flag = found.decode_path::<bool>(&[Key("traits"), Key(name)])?;
                }
                if let Some(flag) = flag {
                    out.bool(attr, flag);
                }
                continue;
            }
            _ => continue,
        };
        // ISP-like fields may sit under `traits` (Enterprise layouts).
        let traits = !matches!(
            attr,
            Attr::Country
                | Attr::CountryName
                | Attr::Continent
                | Attr::City
                | Attr::SubdivisionName
                | Attr::Timezone
                | Attr::Postal
        );
        if let Some(value) = str_at(found, path, traits)? {
            out.str(attr, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_database_type() {
        for (t, kind) in [
            ("GeoIP2-City", DbKind::City),
            ("GeoLite2-Country", DbKind::City),
            ("DBIP-City-Lite", DbKind::City),
            ("DBIP-Country-Lite", DbKind::City),
            ("GeoIP2-Enterprise", DbKind::City),
            ("GeoLite2-ASN", DbKind::Asn),
            ("DBIP-ASN-Lite (compat=GeoLite2-ASN)", DbKind::Asn),
            ("GeoIP2-ISP", DbKind::Isp),
            ("DBIP-ISP (compat=Enterprise)", DbKind::Isp),
            ("DBIP-Location-ISP (compat=Enterprise)", DbKind::CityIsp),
            ("GeoIP2-Anonymous-IP", DbKind::AnonymousIp),
            ("GeoIP2-Connection-Type", DbKind::ConnectionType),
            ("GeoIP2-Domain", DbKind::Domain),
            ("Acme-Internal-Networks", DbKind::Custom),
        ] {
            assert_eq!(DbKind::of(t), kind, "{t}");
        }
        assert!(DbKind::Isp.serves(DbKind::Asn));
        assert!(!DbKind::Asn.serves(DbKind::City));
        assert_eq!(DbKind::City.supported("GeoLite2-Country"), COUNTRY);
        assert_eq!(DbKind::City.supported("GeoIP2-City"), CITY);
    }

    #[test]
    fn custom_paths_index_lists_and_names_are_interned() {
        let Field::Custom { attr, path } = Field::custom("owner", "owners.0.name") else {
            panic!("a custom field");
        };
        assert_eq!(attr, Attr::Custom(CustomName("owner")));
        assert_eq!(
            &path[..],
            [
                Segment::Key("owners".into()),
                Segment::Index(0),
                Segment::Key("name".into())
            ]
        );
        assert!(std::ptr::eq(intern("site-x"), intern("site-x")));
    }
}

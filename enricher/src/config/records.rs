//! `[input]`, `[fields]`, `[output]` and `[pipe]`: how records are read,
//! which of their fields hold addresses, and how the enrichment is written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// `[input]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Largest record accepted, in bytes; larger ones are rejected (`too_large`).
    pub max_record_bytes: usize,
    /// Deepest JSON nesting accepted; deeper records are rejected (`too_deep`).
    pub max_depth: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            max_record_bytes: 1 << 20,
            max_depth: 64,
        }
    }
}

impl InputConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive("input.max_record_bytes", self.max_record_bytes as u64)?;
        positive("input.max_depth", self.max_depth as u64)
    }
}

/// `[fields]`: which fields hold addresses, per log type. The enricher
/// takes it as it is (`enrich::FieldMap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldsConfig {
    /// The key that names a record's log type (Zeek's `_path`; TSV input takes it from `#path`).
    pub type_key: String,
    /// Fields holding addresses, for log types without their own list. Dotted
    /// paths match both `{"id.orig_h":..}` and `{"id":{"orig_h":..}}`.
    pub default: Vec<String>,
    /// Fields per log type (`dns = ["id.orig_h", "id.resp_h", "answers"]`); replaces `default` for that type.
    pub by_type: BTreeMap<String, Vec<String>>,
    /// Fields holding a list of addresses, written as `<field><nested_suffix>: [{"ip":..,..}]`.
    pub arrays: Vec<String>,
}

impl Default for FieldsConfig {
    fn default() -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self {
            type_key: "_path".into(),
            default: strings(&["id.orig_h", "id.resp_h", "srcip", "dstip"]),
            // Zeek's DNS log lists resolved addresses in `answers`.
            by_type: BTreeMap::from([(
                "dns".to_string(),
                strings(&["id.orig_h", "id.resp_h", "answers"]),
            )]),
            arrays: strings(&["answers"]),
        }
    }
}

impl FieldsConfig {
    /// Names only: how many fields the enricher can track is its own rule
    /// (`enrich::check_fields`).
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.type_key.is_empty() {
            return Err(ConfigError::new("fields.type_key", "must not be empty"));
        }
        for (t, fields) in &self.by_type {
            if fields.iter().any(|f| f.is_empty()) {
                return Err(ConfigError::new(
                    format!("fields.by_type.{t}"),
                    "field names must not be empty",
                ));
            }
        }
        if self.default.iter().any(|f| f.is_empty()) {
            return Err(ConfigError::new(
                "fields.default",
                "field names must not be empty",
            ));
        }
        Ok(())
    }
}

/// The output name of a custom database's attribute, stored once for the
/// life of the process (names come from the configuration, a handful).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomName(pub &'static str);
/// `[domains]`: fields holding host names, homogenised and split by the
/// Public Suffix List into `<field>_domain`, `<field>_registered_domain`,
/// `<field>_top_level_domain` and `<field>_subdomain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainsConfig {
    /// Fields holding a host name (not a URL), in any log type; dotted paths as in `[fields]`. Empty turns domains off.
    pub fields: Vec<String>,
    /// Fields whose names are written right to left (`.com.example`); they need not be listed in `fields` too.
    pub reversed_fields: Vec<String>,
    /// A newer `public_suffix_list.dat` to use instead of the list compiled in; replaced files are read again (`domains.reload_interval_ms`).
    pub public_suffix_list: Option<PathBuf>,
    /// How often `domains.public_suffix_list` is checked for a replacement, in milliseconds (0: never).
    pub reload_interval_ms: u64,
    /// Also write `<field>_ptr_registered_domain` next to each PTR name the worker obtained.
    pub ptr_registered_domain: bool,
    /// Names (and URLs) whose parts the in-process cache keeps.
    pub cache_entries: u64,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self {
            // Zeek: dns `query`, ssl `server_name`, http `host`.
            fields: strings(&["query", "server_name", "host"]),
            reversed_fields: Vec::new(),
            public_suffix_list: None,
            reload_interval_ms: 30_000,
            ptr_registered_domain: true,
            cache_entries: 100_000,
        }
    }
}

impl DomainsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (key, fields) in [
            ("domains.fields", &self.fields),
            ("domains.reversed_fields", &self.reversed_fields),
        ] {
            if fields.iter().any(|f| f.is_empty()) {
                return Err(ConfigError::new(key, "field names must not be empty"));
            }
        }
        if let Some(f) = self
            .reversed_fields
            .iter()
            .find(|f| self.fields.contains(f))
        {
            return Err(ConfigError::new(
                "domains.reversed_fields",
                format!("{f} is also in domains.fields: a field is read one way"),
            ));
        }
        positive("domains.cache_entries", self.cache_entries)
    }
}

/// `[urls]`: fields holding URLs, split by a WHATWG URL parser into
/// `<field>_scheme`, `_host`, `_port`, `_path`, `_query`, `_extension` and
/// `_registered_domain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlsConfig {
    /// Fields holding an absolute URL (Zeek http `referrer`). Empty turns them off.
    pub fields: Vec<String>,
    /// Fields holding a path, read as `http://<host field><path>`: `{ uri = "host" }` for Zeek http.
    pub with_host: BTreeMap<String, String>,
}

impl Default for UrlsConfig {
    fn default() -> Self {
        Self {
            fields: vec!["referrer".into()],
            with_host: BTreeMap::from([("uri".to_string(), "host".to_string())]),
        }
    }
}

impl UrlsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.fields.iter().any(|f| f.is_empty()) {
            return Err(ConfigError::new(
                "urls.fields",
                "field names must not be empty",
            ));
        }
        if self
            .with_host
            .iter()
            .any(|(path, host)| path.is_empty() || host.is_empty())
        {
            return Err(ConfigError::new(
                "urls.with_host",
                "field names must not be empty",
            ));
        }
        Ok(())
    }
}

/// One attribute an enrichment can carry. Its [`Attr::name`] is the suffix of
/// the output member (`<field>_<name>` in flat naming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Attr {
    /// ISO 3166-1 alpha-2 country code, from the City or Country database.
    Country,
    /// Country name in English.
    CountryName,
    /// Continent code (`EU`, `NA`, ...).
    Continent,
    /// City name in English.
    City,
    /// ISO code of the first subdivision (state, region).
    Subdivision,
    /// English name of the first subdivision.
    SubdivisionName,
    /// `{"lat":..,"lon":..}`, the shape Elasticsearch maps as a `geo_point`.
    Location,
    /// IANA time zone.
    Timezone,
    /// Postal code.
    Postal,
    /// Autonomous system number, from the ASN database.
    Asn,
    /// Autonomous system organisation.
    Org,
    /// Internet service provider's name, from an ISP database.
    Isp,
    /// The organisation the address is assigned to, from an ISP database.
    Organization,
    /// Mobile country code (MCC), from an ISP database.
    MobileCountryCode,
    /// Mobile network code (MNC), from an ISP database.
    MobileNetworkCode,
    /// An anonymous network of any kind, from an Anonymous-IP database.
    IsAnonymous,
    /// A VPN provider's address.
    IsAnonymousVpn,
    /// A hosting or VPN provider's address.
    IsHostingProvider,
    /// A public proxy.
    IsPublicProxy,
    /// A residential proxy.
    IsResidentialProxy,
    /// A Tor exit node.
    IsTorExitNode,
    /// `Cable/DSL`, `Cellular`, `Corporate` or `Satellite`, from a
    /// Connection-Type database.
    ConnectionType,
    /// The second-level domain of the address's owner, from a Domain database.
    Domain,
    /// A custom database's attribute, by its output name
    /// (`geoip.databases[].attributes`). Not a `geoip.attributes` value.
    #[serde(skip)]
    Custom(CustomName),
    /// Reverse DNS name (PTR), sanitised.
    Ptr,
    /// Provenance: why the GeoIP attributes are missing.
    GeoStatus,
    /// Provenance: build time of the GeoIP database that answered.
    GeoBuild,
    /// Provenance: why the PTR is missing.
    PtrStatus,
    /// Provenance: which tier answered the PTR (`l1`, `l2`, `dns`).
    Tier,
    /// A host name, homogenised (`[domains]`); written as `<field>_domain`.
    #[serde(skip)]
    HostName,
    /// Its registered domain (eTLD+1), from the Public Suffix List.
    #[serde(skip)]
    RegisteredDomain,
    /// Its public suffix.
    #[serde(skip)]
    TopLevelDomain,
    /// What precedes the registered domain.
    #[serde(skip)]
    Subdomain,
    /// Provenance: why a name has no parts (`invalid`).
    #[serde(skip)]
    DomainStatus,
    /// The registered domain of the PTR name.
    #[serde(skip)]
    PtrRegisteredDomain,
    /// A URL's scheme (`[urls]`).
    #[serde(skip)]
    Scheme,
    /// A URL's host.
    #[serde(skip)]
    Host,
    /// A URL's port, when not its scheme's default.
    #[serde(skip)]
    Port,
    /// A URL's path.
    #[serde(skip)]
    Path,
    /// A URL's query, without the `?`.
    #[serde(skip)]
    Query,
    /// The extension of a URL's last path segment.
    #[serde(skip)]
    Extension,
}

impl Attr {
    /// The member-name suffix written to output.
    pub fn name(self) -> &'static str {
        match self {
            Attr::Country => "country",
            Attr::CountryName => "country_name",
            Attr::Continent => "continent",
            Attr::City => "city",
            Attr::Subdivision => "subdivision",
            Attr::SubdivisionName => "subdivision_name",
            Attr::Location => "location",
            Attr::Timezone => "timezone",
            Attr::Postal => "postal",
            Attr::Asn => "asn",
            Attr::Org => "org",
            Attr::Isp => "isp",
            Attr::Organization => "organization",
            Attr::MobileCountryCode => "mobile_country_code",
            Attr::MobileNetworkCode => "mobile_network_code",
            Attr::IsAnonymous => "is_anonymous",
            Attr::IsAnonymousVpn => "is_anonymous_vpn",
            Attr::IsHostingProvider => "is_hosting_provider",
            Attr::IsPublicProxy => "is_public_proxy",
            Attr::IsResidentialProxy => "is_residential_proxy",
            Attr::IsTorExitNode => "is_tor_exit_node",
            Attr::ConnectionType => "connection_type",
            Attr::Domain => "domain",
            Attr::Custom(name) => name.0,
            Attr::Ptr => "ptr",
            Attr::GeoStatus => "geo_status",
            Attr::GeoBuild => "geo_build",
            Attr::PtrStatus => "ptr_status",
            Attr::Tier => "tier",
            Attr::HostName => "domain",
            Attr::RegisteredDomain => "registered_domain",
            Attr::TopLevelDomain => "top_level_domain",
            Attr::Subdomain => "subdomain",
            Attr::DomainStatus => "domain_status",
            Attr::PtrRegisteredDomain => "ptr_registered_domain",
            Attr::Scheme => "scheme",
            Attr::Host => "host",
            Attr::Port => "port",
            Attr::Path => "path",
            Attr::Query => "query",
            Attr::Extension => "extension",
        }
    }
}

/// How enrichment members are named in output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// `"<field><separator><attr>": value` as top-level members
    /// (`"id.resp_h_country":"US"`), the shape most dashboards expect.
    Flat,
    /// One object per address: `"<field><suffix>": {"country":"US", ...}`.
    Nested,
    /// Elastic Common Schema: dotted keys under the field's ECS object
    /// (`"destination.geo.country_iso_code":"US"`, see `output.ecs_fields`);
    /// what ECS has no field for stays in flat naming.
    Ecs,
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// `flat` (`"id.resp_h_country":"US"`), `nested`
    /// (`"id.resp_h_enr":{"country":"US"}`) or `ecs`
    /// (`"destination.geo.country_iso_code":"US"`) (`--naming`).
    pub naming: Naming,
    /// With `naming = "ecs"`: the ECS object each address field's enrichment
    /// goes under (`"id.resp_h" = "destination"`); a list field (`answers`)
    /// is written as that ECS field, a list of its addresses. Fields not named
    /// here keep flat naming.
    pub ecs_fields: BTreeMap<String, String>,
    /// With `naming = "ecs"`: the ECS key of each `[domains]` field's
    /// homogenised name (`query = "dns.question.name"`); its registered
    /// domain, top-level domain and subdomain go under the key's object
    /// (`dns.question`, `url` for `url.domain`, `destination` for
    /// `tls.client.server_name`) unless a PTR name already writes there.
    pub ecs_domain_fields: BTreeMap<String, String>,
    /// With `naming = "ecs"`: the ECS object of each `[urls]` field's parts
    /// (`uri = "url"`: `url.scheme`, `url.path`, `url.query`, ...).
    pub ecs_url_fields: BTreeMap<String, String>,
    /// Between field and attribute in flat naming.
    pub separator: String,
    /// Appended to the field name for nested objects and address lists.
    pub nested_suffix: String,
    /// Also write `<field>_tier` (l1, l2, dns, local), `<field>_geo_build`,
    /// and `<field>_geo_status` / `<field>_ptr_status` saying why a value
    /// is missing (`--provenance`).
    pub provenance: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            naming: Naming::Flat,
            separator: "_".into(),
            nested_suffix: "_enr".into(),
            ecs_fields: [
                ("id.orig_h", "source"),
                ("id.resp_h", "destination"),
                ("srcip", "source"),
                ("dstip", "destination"),
                ("answers", "dns.resolved_ip"),
            ]
            .into_iter()
            .map(|(f, p)| (f.to_string(), p.to_string()))
            .collect(),
            ecs_domain_fields: [
                ("query", "dns.question.name"),
                ("host", "url.domain"),
                ("server_name", "tls.client.server_name"),
            ]
            .into_iter()
            .map(|(f, p)| (f.to_string(), p.to_string()))
            .collect(),
            ecs_url_fields: BTreeMap::from([("uri".to_string(), "url".to_string())]),
            provenance: false,
        }
    }
}

impl OutputConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.separator.is_empty() {
            return Err(ConfigError::new("output.separator", "must not be empty"));
        }
        if self.nested_suffix.is_empty() {
            return Err(ConfigError::new(
                "output.nested_suffix",
                "must not be empty",
            ));
        }
        for (key, map) in [
            ("ecs_fields", &self.ecs_fields),
            ("ecs_domain_fields", &self.ecs_domain_fields),
            ("ecs_url_fields", &self.ecs_url_fields),
        ] {
            if let Some((field, _)) = map.iter().find(|(_, p)| p.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("output.{key}.{field}"),
                    "the ECS name must not be empty",
                ));
            }
        }
        Ok(())
    }
}

/// `[pipe]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipeConfig {
    /// Records in flight at once (waiting for lookups); output stays in
    /// input order (`--concurrency`).
    pub concurrency: usize,
    /// Where rejected records go (JSON lines with file, line, reason and the
    /// original bytes). Unset: standard error (`--reject`).
    pub reject: Option<PathBuf>,
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            concurrency: 4_096,
            reject: None,
        }
    }
}

impl PipeConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive("pipe.concurrency", self.concurrency as u64)
    }
}

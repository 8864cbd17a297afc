//! `[geoip]`, `[dns]`, `[cache]` and `[redis]`: the lookups behind an
//! address and the two cache tiers in front of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Attr, ConfigError, positive};

/// A week, the longest any DNS outcome stays cached.
const WEEK_SECS: u64 = 7 * 86_400;

/// Which addresses a lookup applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every address.
    #[default]
    All,
    /// Only global (public) addresses: the usual choice for GeoIP.
    Public,
    /// Only internal addresses: PTR for internal hosts only, say.
    Private,
}

/// `[geoip]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoIpConfig {
    /// City or Country database (`GeoIP2-City.mmdb`, `GeoLite2-Country.mmdb`,
    /// DB-IP's equivalent). Unset: no location attributes (`--geoip-city`).
    pub city: Option<PathBuf>,
    /// ASN database (`GeoLite2-ASN.mmdb`, `GeoIP2-ISP.mmdb`). Unset: no
    /// `asn`/`org` (`--geoip-asn`).
    pub asn: Option<PathBuf>,
    /// Attributes written from `geoip.city` and `geoip.asn`, and the only
    /// ones decoded: any of `country`, `country_name`, `continent`, `city`,
    /// `subdivision`, `subdivision_name`, `location` (`{"lat":..,"lon":..}`),
    /// `timezone`, `postal` (City database), `asn`, `org` (ASN database).
    pub attributes: Vec<Attr>,
    /// More databases of any type, each `{ path = "...", attributes = [...] }`
    /// (`--geoip PATH`, repeatable). The type comes from the file's metadata:
    /// City/Country, ASN, ISP, Anonymous-IP, Connection-Type, Domain (MaxMind's
    /// or DB-IP's). No `attributes`: all its type supports. A custom
    /// database maps output names to paths into its records,
    /// `attributes = { owner = "owner.name", site = "site" }`.
    pub databases: Vec<GeoIpDatabase>,
    /// Which addresses get GeoIP: `all`, `public` or `private`.
    pub scope: Scope,
    /// Addresses in these CIDRs get no GeoIP, whatever the scope.
    pub skip_cidrs: Vec<IpNet>,
    /// How often the files are checked for a replacement, in milliseconds (0: never).
    pub reload_interval_ms: u64,
    /// Run a full integrity check of a database before using it.
    pub verify: bool,
}

impl Default for GeoIpConfig {
    fn default() -> Self {
        Self {
            city: None,
            asn: None,
            attributes: vec![Attr::Country, Attr::City, Attr::Asn, Attr::Org],
            databases: Vec::new(),
            scope: Scope::Public,
            skip_cidrs: Vec::new(),
            reload_interval_ms: 30_000,
            verify: true,
        }
    }
}

/// One entry of `geoip.databases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpDatabase {
    /// The `.mmdb` file.
    pub path: PathBuf,
    /// What to write: a list of attribute names of the database's type
    /// (empty: all of them), or, for any database, a map from output name
    /// to a dotted path into its records (`{ owner = "owner.name" }`;
    /// a numeric segment indexes a list).
    #[serde(default)]
    pub attributes: DbAttributes,
}

/// The attributes of one `geoip.databases` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DbAttributes {
    /// Attributes of the database's own type; empty: all of them.
    Names(Vec<Attr>),
    /// Output name -> dotted path into the record (a custom database).
    Paths(BTreeMap<String, String>),
}

impl Default for DbAttributes {
    fn default() -> Self {
        DbAttributes::Names(Vec::new())
    }
}

impl GeoIpConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (i, db) in self.databases.iter().enumerate() {
            if db.path.as_os_str().is_empty() {
                return Err(ConfigError::new(
                    format!("geoip.databases[{i}].path"),
                    "must not be empty",
                ));
            }
            let DbAttributes::Paths(paths) = &db.attributes else {
                continue;
            };
            if paths.is_empty() {
                return Err(ConfigError::new(
                    format!("geoip.databases[{i}].attributes"),
                    "an empty map writes nothing; leave it out for all the type's attributes",
                ));
            }
            for (name, path) in paths {
                let key = || format!("geoip.databases[{i}].attributes.{name}");
                let safe = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
                if name.is_empty() || !name.chars().all(safe) {
                    return Err(ConfigError::new(
                        key(),
                        "an output name is letters, digits, `_`, `.` and `-`",
                    ));
                }
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(ConfigError::new(
                        key(),
                        format!("{path:?} is not a dotted path (`owner.name`)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[dns]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Look up PTR names at all (`--no-dns` turns it off).
    pub enabled: bool,
    /// Upstream nameservers as `host:port`; empty: the system's
    /// (`/etc/resolv.conf`) (`--dns-server`, repeatable).
    pub servers: Vec<SocketAddr>,
    /// Time to wait for one answer, in milliseconds.
    pub timeout_ms: u64,
    /// Retries after a timeout or SERVFAIL, each another query upstream (0
    /// sends exactly one; at most 5).
    pub retries: usize,
    /// Queries in flight per upstream, at most.
    pub max_in_flight: usize,
    /// Queries per second per upstream, at most.
    pub qps: u32,
    /// Queries allowed at once after a quiet spell, per upstream.
    pub burst: u32,
    /// Longest a lookup waits for budget before the record goes on without its PTR (`over_budget`), in milliseconds.
    pub budget_wait_ms: u64,
    /// Which addresses get a PTR lookup: `all`, `public` or `private`.
    pub scope: Scope,
    /// Addresses in these CIDRs get no PTR lookup, whatever the scope.
    pub skip_cidrs: Vec<IpNet>,
    /// Floor for a positive answer's TTL, in seconds.
    pub min_ttl_secs: u64,
    /// Ceiling for a positive answer's TTL, and for any entry read back from
    /// Redis (which is shared), in seconds.
    pub max_ttl_secs: u64,
    /// How long NXDOMAIN (and empty answers) stay cached, in seconds.
    pub nxdomain_ttl_secs: u64,
    /// How long SERVFAIL (and invalid answers, other errors) stay cached, in seconds.
    pub servfail_ttl_secs: u64,
    /// How long a timeout stays cached, in seconds.
    pub timeout_ttl_secs: u64,
    /// How long `over_budget` stays cached (in this process only), in seconds.
    pub over_budget_ttl_secs: u64,
    /// Longest hostname accepted, in bytes; longer answers count as `invalid`.
    pub max_name_len: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            servers: Vec::new(),
            timeout_ms: 1_000,
            retries: 0,
            max_in_flight: 64,
            qps: 100,
            burst: 50,
            budget_wait_ms: 50,
            scope: Scope::All,
            skip_cidrs: Vec::new(),
            min_ttl_secs: 300,
            max_ttl_secs: 86_400,
            nxdomain_ttl_secs: 3_600,
            servfail_ttl_secs: 300,
            timeout_ttl_secs: 120,
            over_budget_ttl_secs: 1,
            max_name_len: 253,
        }
    }
}

impl DnsConfig {
    /// Only when DNS is on: a section that is off may hold anything.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        positive("dns.timeout_ms", self.timeout_ms)?;
        positive("dns.qps", u64::from(self.qps))?;
        positive("dns.burst", u64::from(self.burst))?;
        positive("dns.max_in_flight", self.max_in_flight as u64)?;
        if self.retries > 5 {
            return Err(ConfigError::new(
                "dns.retries",
                "at most 5 (each retry is another query upstream)",
            ));
        }
        if self.min_ttl_secs > self.max_ttl_secs {
            return Err(ConfigError::new(
                "dns.min_ttl_secs",
                format!(
                    "{} is above dns.max_ttl_secs ({})",
                    self.min_ttl_secs, self.max_ttl_secs
                ),
            ));
        }
        if self.max_ttl_secs > WEEK_SECS {
            return Err(ConfigError::new(
                "dns.max_ttl_secs",
                "at most 604800 (a week)",
            ));
        }
        if !(16..=253).contains(&self.max_name_len) {
            return Err(ConfigError::new(
                "dns.max_name_len",
                "must be between 16 and 253",
            ));
        }
        for (key, v) in [
            ("dns.nxdomain_ttl_secs", self.nxdomain_ttl_secs),
            ("dns.servfail_ttl_secs", self.servfail_ttl_secs),
            ("dns.timeout_ttl_secs", self.timeout_ttl_secs),
            ("dns.over_budget_ttl_secs", self.over_budget_ttl_secs),
        ] {
            if v > WEEK_SECS {
                return Err(ConfigError::new(key, "at most 604800 (a week)"));
            }
        }
        Ok(())
    }
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 bound in entries (addresses), used when `l1_max_bytes` is 0.
    pub l1_max_entries: u64,
    /// L1 bound in bytes of cached enrichment; 0 bounds by entries instead.
    pub l1_max_bytes: u64,
    /// Longest a record waits for its lookups, in milliseconds; after that it
    /// is written without the PTR (`timeout`) while the lookup goes on.
    pub lookup_deadline_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            l1_max_entries: 1_000_000,
            l1_max_bytes: 0,
            lookup_deadline_ms: 1_500,
        }
    }
}

impl CacheConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive("cache.lookup_deadline_ms", self.lookup_deadline_ms)?;
        if self.l1_max_bytes == 0 {
            positive("cache.l1_max_entries", self.l1_max_entries)?;
        }
        Ok(())
    }
}

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS.
    /// Empty: no shared cache (`--redis-url`).
    pub url: String,
    /// Password, used instead of the URL's (no URL escaping needed); for
    /// example `"${file:/run/secrets/redis-password}"`.
    pub password: Option<String>,
    /// PEM file of the CA certificate(s) that signed the server's
    /// certificate, for `rediss://`; trusted instead of the system's roots.
    /// Read when the worker starts, not by `check-config` (it may exist only
    /// where the worker runs).
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key the enricher writes.
    pub key_prefix: String,
    /// Longest wait for one batched read or write, in milliseconds.
    pub timeout_ms: u64,
    /// Consecutive failures that open the circuit (Redis is then skipped).
    pub failure_threshold: u32,
    /// How long the circuit stays open before Redis is tried again, in milliseconds.
    pub open_ms: u64,
    /// Most keys in one `MGET` or write pipeline.
    pub max_batch: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            password: None,
            tls_ca_file: None,
            key_prefix: "enr:ptr:".into(),
            timeout_ms: 50,
            failure_threshold: 3,
            open_ms: 2_000,
            max_batch: 512,
        }
    }
}

impl RedisConfig {
    /// Only when a URL is set. Whether the URL makes a client is the Redis
    /// client's own rule, checked where the runtime is built.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.url.is_empty() {
            return Ok(());
        }
        let scheme = self.url.split("://").next().unwrap_or_default();
        if !["redis", "rediss", "redis+unix", "unix"].contains(&scheme) || !self.url.contains("://")
        {
            return Err(ConfigError::new(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        // The CA file itself is read when the worker starts (it may exist
        // only where the worker runs, like the GeoIP databases).
        if self.tls_ca_file.is_some() && scheme != "rediss" {
            return Err(ConfigError::new(
                "redis.tls_ca_file",
                "is set but redis.url does not start with rediss://",
            ));
        }
        positive("redis.timeout_ms", self.timeout_ms)?;
        positive("redis.failure_threshold", u64::from(self.failure_threshold))?;
        positive("redis.max_batch", self.max_batch as u64)
    }
}

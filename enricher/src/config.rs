//! The one typed configuration: defaults, then a TOML file, then flags.
//!
//! Every field's doc comment is the user's reference (the README's table is
//! written from it). Unknown keys are rejected, and [`Config::validate`]
//! checks what types cannot (ranges, cross-field rules). Every error names
//! its key: the binary prints it on one line and exits with code 64.
//! String values may reference `${VARIABLE}` and `${file:/path}`, resolved
//! at load ([`interpolate`]); secrets are masked wherever a configuration is shown.

mod env;
mod interpolate;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::dns::{DnsOptions, TtlPolicy};
use crate::enrich::{EnrichOptions, FieldMap, MAX_FIELDS};
use crate::geoip::{GeoIpOptions, attr_kind};
use crate::ip::{Locality, Scope};
use crate::output::{Attr, Naming};
use crate::record::json::Limits;
use crate::secrets::{Secrets, mask_quoted};
pub use crate::secrets::{is_secret_key, is_secret_property, mask_secrets};

/// A configuration error, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct ConfigError {
    /// The dotted key (`dns.qps`), or `file` for a file that cannot be read.
    pub key: String,
    /// What is wrong, in one line.
    pub problem: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into().replace('\n', " "),
        }
    }
}

/// The whole configuration. `Debug` shows it as [`Config::to_masked_toml`]
/// does, so a configuration that reaches a log carries no secret.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How records are read.
    pub input: InputConfig,
    /// Which fields hold addresses.
    pub fields: FieldsConfig,
    /// How enrichment is written.
    pub output: OutputConfig,
    /// GeoIP databases.
    pub geoip: GeoIpConfig,
    /// Reverse DNS.
    pub dns: DnsConfig,
    /// The in-process cache and the per-record lookup deadline.
    pub cache: CacheConfig,
    /// The shared Redis cache.
    pub redis: RedisConfig,
    /// `enricher pipe` only.
    pub pipe: PipeConfig,
    /// `enricher run`: the Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// `enricher run`: flow control, commits, shutdown, telemetry.
    pub worker: WorkerConfig,
    /// Values read through `${file:...}`, masked wherever the config is shown.
    #[serde(skip)]
    secrets: Secrets,
}

/// Compression of produced records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: cheap on CPU, the default.
    Lz4,
    /// Zstandard: smaller, more CPU.
    Zstd,
    /// Snappy.
    Snappy,
    /// Gzip.
    Gzip,
}

impl Compression {
    /// librdkafka's `compression.type` value.
    pub fn librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]` (`--brokers`).
    pub brokers: String,
    /// Consumer group id; every worker of one topic shares it (`--group`).
    pub group_id: String,
    /// The topic to enrich (`--input-topic`).
    pub input_topic: String,
    /// Where enriched records go; default `<input_topic>_enr` (`--output-topic`).
    pub output_topic: Option<String>,
    /// Where records that cannot be parsed go, with the reason in headers;
    /// default `<input_topic>_dlq` (`--dlq-topic`).
    pub dlq_topic: Option<String>,
    /// Compression of produced records: `lz4`, `zstd`, `snappy`, `gzip` or `none`.
    pub compression: Compression,
    /// librdkafka's idempotent producer. Off by default: its in-flight cap
    /// (bundled librdkafka 2.12) busy-waits on a broker slower than the
    /// producer, a core burnt per worker (docs/decisions.md). Off, the
    /// producer sends one request at a time per broker
    /// (`max.in.flight.requests.per.connection = 1`), so records keep their
    /// order through retries, and a retry may write a record twice, which
    /// at-least-once delivery allows anyway.
    pub idempotence: bool,
    /// librdkafka properties for both consumer and producer, passed as they
    /// are (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `ssl.ca.location`, ...). See librdkafka's CONFIGURATION.md.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    pub producer_properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "enricher".into(),
            input_topic: String::new(),
            output_topic: None,
            dlq_topic: None,
            compression: Compression::Lz4,
            idempotence: false,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The output topic, defaulted from the input topic.
    pub fn output_topic(&self) -> String {
        self.output_topic
            .clone()
            .unwrap_or_else(|| format!("{}_enr", self.input_topic))
    }

    /// The dead-letter topic, defaulted from the input topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}_dlq", self.input_topic))
    }
}

/// `[worker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Records of one partition taken but not yet produced, at most; the
    /// partition is paused at this bound and resumed at half of it.
    pub max_in_flight_per_partition: usize,
    /// Records taken but not yet produced, across partitions, at most. With
    /// a broker that takes L seconds to acknowledge a produce request, the
    /// worker moves at most this many / L records a second; the default is
    /// librdkafka's own producer queue bound.
    pub max_in_flight: usize,
    /// How often offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// On a rebalance, how long revoked partitions may drain their in-flight
    /// records before their offsets are committed and they are released, in milliseconds.
    pub drain_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long in-flight records may take before the
    /// final commit and exit, in milliseconds. The Kubernetes termination
    /// grace period should be a few seconds longer.
    pub shutdown_grace_ms: u64,
    /// Failed deliveries are sent again after this delay (milliseconds),
    /// doubled while they keep failing, with jitter.
    pub resend_backoff_ms: u64,
    /// The longest delay between resends of failed deliveries (milliseconds).
    pub resend_backoff_max_ms: u64,
    /// Produce each partition's records in input order, to the same
    /// partition number of the output topic. Records that wait for lookups
    /// then hold up the records behind them.
    pub preserve_order: bool,
    /// Copy records to the output topic unchanged: no parsing, no lookups,
    /// no dead letters. The load test's ceiling, and a bypass while a
    /// dependency is being repaired.
    pub passthrough: bool,
    /// Threads that enrich and produce, fed by the consumer thread in
    /// batches (each partition always to the same thread). 0: enrich on the
    /// consumer thread itself.
    pub enrich_threads: usize,
    /// Bind address of `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`).
    pub metrics_addr: SocketAddr,
    /// How often librdkafka reports statistics (high watermarks, broker state), in milliseconds.
    pub stats_interval_ms: u64,
    /// How often each partition logs its progress, in seconds (0: never).
    pub progress_log_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_partition: 25_000,
            max_in_flight: 100_000,
            commit_interval_ms: 1_000,
            drain_timeout_ms: 10_000,
            shutdown_grace_ms: 25_000,
            resend_backoff_ms: 100,
            resend_backoff_max_ms: 10_000,
            preserve_order: false,
            passthrough: false,
            enrich_threads: 1,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9102)),
            stats_interval_ms: 5_000,
            progress_log_secs: 10,
        }
    }
}

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

/// `[fields]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        let map = FieldMap::default();
        Self {
            type_key: map.type_key,
            default: map.default,
            by_type: map.by_type,
            arrays: map.arrays,
        }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// `flat` (`"id.resp_h_country":"US"`) or `nested` (`"id.resp_h_enr":{"country":"US"}`).
    pub naming: Naming,
    /// Between field and attribute in flat naming.
    pub separator: String,
    /// Appended to the field name for nested objects and address lists.
    pub nested_suffix: String,
    /// Also write `<field>_tier` (l1, l2, dns, local), `<field>_geo_build`,
    /// and `<field>_geo_status` / `<field>_ptr_status` saying why a value is missing.
    pub provenance: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            naming: Naming::Flat,
            separator: "_".into(),
            nested_suffix: "_enr".into(),
            provenance: false,
        }
    }
}

/// `[geoip]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoIpConfig {
    /// City or Country database (`GeoIP2-City.mmdb`, `GeoLite2-Country.mmdb`, DB-IP's equivalent). Unset: no location attributes.
    pub city: Option<PathBuf>,
    /// ASN database (`GeoLite2-ASN.mmdb`). Unset: no `asn`/`org`.
    pub asn: Option<PathBuf>,
    /// Attributes written: any of country, country_name, continent, city,
    /// subdivision, location, timezone, postal (City database), asn, org (ASN database).
    pub attributes: Vec<Attr>,
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
            scope: Scope::Public,
            skip_cidrs: Vec::new(),
            reload_interval_ms: 30_000,
            verify: true,
        }
    }
}

/// `[dns]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Look up PTR names at all.
    pub enabled: bool,
    /// Upstream nameservers as `host:port`; empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Time to wait for one answer, in milliseconds.
    pub timeout_ms: u64,
    /// Retries after a timeout or SERVFAIL (0 sends exactly one query).
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
    /// Ceiling for a positive answer's TTL, in seconds.
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
        let o = DnsOptions::default();
        let t = TtlPolicy::default();
        Self {
            enabled: true,
            servers: o.servers,
            timeout_ms: o.timeout.as_millis() as u64,
            retries: o.retries,
            max_in_flight: o.max_in_flight,
            qps: o.qps,
            burst: o.burst,
            budget_wait_ms: o.budget_wait.as_millis() as u64,
            scope: Scope::All,
            skip_cidrs: Vec::new(),
            min_ttl_secs: t.min.as_secs(),
            max_ttl_secs: t.max.as_secs(),
            nxdomain_ttl_secs: t.nxdomain.as_secs(),
            servfail_ttl_secs: t.servfail.as_secs(),
            timeout_ttl_secs: t.timeout.as_secs(),
            over_budget_ttl_secs: t.over_budget.as_secs(),
            max_name_len: o.max_name_len,
        }
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

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://` for TLS. Empty: no shared cache.
    pub url: String,
    /// Password, used instead of the URL's (no URL escaping needed); for
    /// example `"${file:/run/secrets/redis-password}"`.
    pub password: Option<String>,
    /// PEM file of the CA certificate(s) that signed the server's
    /// certificate, for `rediss://`; trusted instead of the system's roots.
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

/// `[pipe]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipeConfig {
    /// Records in flight at once (waiting for lookups); output stays in input order.
    pub concurrency: usize,
    /// Where rejected records go (JSON lines with file, line, reason and the
    /// original bytes). Unset: standard error.
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

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }

    /// Loads defaults, then the file (if any), then `ENRICHER_<SECTION>__<KEY>`
    /// variables from `env` (`ENRICHER_KAFKA__BROKERS=b1:9092`,
    /// `ENRICHER_DNS__QPS=50`; a value is read as TOML when it parses as a
    /// TOML value, else as a string). Variables without `__` are not config
    /// keys (`ENRICHER_LOG`). Then `${VARIABLE}` (from `env`) and
    /// `${file:/path}` references in string values are resolved.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = env.into_iter().collect();
        // Sorted, so that a variable that breaks the file fails the same way every time.
        let mut overrides: Vec<(&String, &String)> = env.iter().collect();
        overrides.sort();
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
            })?,
            None => String::new(),
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("file", e.message().to_string()))?;
        let mut secrets = Secrets::default();
        for (name, value) in overrides {
            let Some(rest) = name.strip_prefix("ENRICHER_") else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let key = path.join(".");
            let expected = env::expected(&path);
            if is_secret_key(&key) {
                secrets.remember(value.clone());
            }
            let mut below = path.clone();
            below.push(String::new());
            let strings = env::expected(&below) == env::Expected::Text;
            let parsed = env::value(&key, value, expected, strings)
                .map_err(|problem| ConfigError::new(key.clone(), format!("{name}: {problem}")))?;
            let mut node = &mut table;
            for (i, segment) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    node.insert(segment.clone(), parsed.clone());
                    break;
                }
                let entry = node
                    .entry(segment.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                node = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::new(
                            key,
                            format!("{name}: {} is not a section", path[..=i].join(".")),
                        ));
                    }
                };
            }
        }
        interpolate::table(&mut table, &env, &mut secrets)?;
        let mut config = Self::from_toml(&table.to_string()).map_err(|e| ConfigError {
            problem: secrets.mask(&e.problem),
            ..e
        })?;
        config.secrets = secrets;
        Ok(config)
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("file", e.message().to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let mut problem = e.into_inner().message().to_string();
            if is_secret_key(&key) {
                problem = mask_quoted(&problem);
            }
            ConfigError::new(if key == "." { "file".into() } else { key }, problem)
        })
    }

    /// Checks ranges and cross-field rules. No error shows a value read
    /// from a `${file:...}` reference.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|e| ConfigError {
            problem: self.secrets.mask(&e.problem),
            ..e
        })
    }

    fn check(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("input.max_record_bytes", self.input.max_record_bytes as u64)?;
        positive("input.max_depth", self.input.max_depth as u64)?;
        if self.fields.type_key.is_empty() {
            return Err(ConfigError::new("fields.type_key", "must not be empty"));
        }
        let mut all: Vec<&String> = self.fields.default.iter().collect();
        for (t, fields) in &self.fields.by_type {
            if fields.iter().any(|f| f.is_empty()) {
                return Err(ConfigError::new(
                    format!("fields.by_type.{t}"),
                    "field names must not be empty",
                ));
            }
            all.extend(fields);
        }
        if self.fields.default.iter().any(|f| f.is_empty()) {
            return Err(ConfigError::new(
                "fields.default",
                "field names must not be empty",
            ));
        }
        all.sort();
        all.dedup();
        if all.len() > MAX_FIELDS {
            return Err(ConfigError::new(
                "fields",
                format!(
                    "{} distinct IP fields named; at most {MAX_FIELDS}",
                    all.len()
                ),
            ));
        }
        if self.output.separator.is_empty() {
            return Err(ConfigError::new("output.separator", "must not be empty"));
        }
        if self.output.nested_suffix.is_empty() {
            return Err(ConfigError::new(
                "output.nested_suffix",
                "must not be empty",
            ));
        }
        for attr in &self.geoip.attributes {
            if attr_kind(*attr).is_none() {
                return Err(ConfigError::new(
                    "geoip.attributes",
                    format!("{:?} is not a GeoIP attribute", attr.name()),
                ));
            }
        }
        let d = &self.dns;
        if d.enabled {
            positive("dns.timeout_ms", d.timeout_ms)?;
            positive("dns.qps", u64::from(d.qps))?;
            positive("dns.burst", u64::from(d.burst))?;
            positive("dns.max_in_flight", d.max_in_flight as u64)?;
            if d.retries > 5 {
                return Err(ConfigError::new(
                    "dns.retries",
                    "at most 5 (each retry is another query upstream)",
                ));
            }
            if d.min_ttl_secs > d.max_ttl_secs {
                return Err(ConfigError::new(
                    "dns.min_ttl_secs",
                    format!(
                        "{} is above dns.max_ttl_secs ({})",
                        d.min_ttl_secs, d.max_ttl_secs
                    ),
                ));
            }
            if d.max_ttl_secs > 7 * 86_400 {
                return Err(ConfigError::new(
                    "dns.max_ttl_secs",
                    "at most 604800 (a week)",
                ));
            }
            if !(16..=253).contains(&d.max_name_len) {
                return Err(ConfigError::new(
                    "dns.max_name_len",
                    "must be between 16 and 253",
                ));
            }
            for (key, v) in [
                ("dns.nxdomain_ttl_secs", d.nxdomain_ttl_secs),
                ("dns.servfail_ttl_secs", d.servfail_ttl_secs),
                ("dns.timeout_ttl_secs", d.timeout_ttl_secs),
                ("dns.over_budget_ttl_secs", d.over_budget_ttl_secs),
            ] {
                if v > 7 * 86_400 {
                    return Err(ConfigError::new(key, "at most 604800 (a week)"));
                }
            }
        }
        positive("cache.lookup_deadline_ms", self.cache.lookup_deadline_ms)?;
        if self.cache.l1_max_bytes == 0 {
            positive("cache.l1_max_entries", self.cache.l1_max_entries)?;
        }
        if !self.redis.url.is_empty() {
            let scheme = self.redis.url.split("://").next().unwrap_or_default();
            if !["redis", "rediss", "redis+unix", "unix"].contains(&scheme)
                || !self.redis.url.contains("://")
            {
                return Err(ConfigError::new(
                    "redis.url",
                    "must start with redis://, rediss:// or unix://",
                ));
            }
            // The CA file itself is read when the worker starts (it may exist
            // only where the worker runs, like the GeoIP databases).
            if self.redis.tls_ca_file.is_some() && scheme != "rediss" {
                return Err(ConfigError::new(
                    "redis.tls_ca_file",
                    "is set but redis.url does not start with rediss://",
                ));
            }
            if let Some(opts) = self.redis_options() {
                let opts = crate::cache::RedisOptions {
                    tls_ca_file: None,
                    ..opts
                };
                crate::cache::client(&opts)
                    .map_err(|e| ConfigError::new(e.key(), mask_secrets(&e.to_string())))?;
            }
            positive("redis.timeout_ms", self.redis.timeout_ms)?;
            positive(
                "redis.failure_threshold",
                u64::from(self.redis.failure_threshold),
            )?;
            positive("redis.max_batch", self.redis.max_batch as u64)?;
        }
        positive("pipe.concurrency", self.pipe.concurrency as u64)?;
        let w = &self.worker;
        positive(
            "worker.max_in_flight_per_partition",
            w.max_in_flight_per_partition as u64,
        )?;
        positive("worker.max_in_flight", w.max_in_flight as u64)?;
        positive("worker.commit_interval_ms", w.commit_interval_ms)?;
        if w.enrich_threads > MAX_ENRICH_THREADS {
            return Err(ConfigError::new(
                "worker.enrich_threads",
                format!("must be at most {MAX_ENRICH_THREADS}"),
            ));
        }
        positive("worker.stats_interval_ms", w.stats_interval_ms)?;
        for (section, props) in [
            ("kafka.properties", &self.kafka.properties),
            ("kafka.consumer_properties", &self.kafka.consumer_properties),
            ("kafka.producer_properties", &self.kafka.producer_properties),
        ] {
            for key in props.keys() {
                if RESERVED_PROPERTIES.contains(&key.as_str()) {
                    return Err(ConfigError::new(
                        format!("{section}.{key}"),
                        "is set by the worker itself (at-least-once needs it); use the matching kafka key",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks what `enricher run` needs on top of [`Config::validate`].
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        self.validate()?;
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::new("kafka.brokers", "must not be empty"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(ConfigError::new("kafka.group_id", "must not be empty"));
        }
        if self.kafka.input_topic.trim().is_empty() {
            return Err(ConfigError::new(
                "kafka.input_topic",
                "must be set (--input-topic)",
            ));
        }
        let output = self.kafka.output_topic();
        if output == self.kafka.input_topic {
            return Err(ConfigError::new(
                "kafka.output_topic",
                "must differ from the input topic",
            ));
        }
        if self.kafka.dlq_topic() == self.kafka.input_topic || self.kafka.dlq_topic() == output {
            return Err(ConfigError::new(
                "kafka.dlq_topic",
                "must differ from the input and output topics",
            ));
        }
        if self.worker.max_in_flight_per_partition > self.worker.max_in_flight {
            return Err(ConfigError::new(
                "worker.max_in_flight_per_partition",
                "is above worker.max_in_flight",
            ));
        }
        Ok(())
    }

    /// The enrichment core's options.
    pub fn enrich_options(&self) -> EnrichOptions {
        EnrichOptions {
            fields: FieldMap {
                type_key: self.fields.type_key.clone(),
                default: self.fields.default.clone(),
                by_type: self.fields.by_type.clone(),
                arrays: self.fields.arrays.clone(),
            },
            naming: self.output.naming.clone(),
            separator: self.output.separator.clone(),
            nested_suffix: self.output.nested_suffix.clone(),
            provenance: self.output.provenance,
            geo_attrs: self.geoip.attributes.clone(),
            geo_scope: Locality::new(self.geoip.scope, self.geoip.skip_cidrs.clone()),
            dns_scope: Locality::new(self.dns.scope, self.dns.skip_cidrs.clone()),
            ttl: TtlPolicy {
                min: Duration::from_secs(self.dns.min_ttl_secs),
                max: Duration::from_secs(self.dns.max_ttl_secs),
                nxdomain: Duration::from_secs(self.dns.nxdomain_ttl_secs),
                servfail: Duration::from_secs(self.dns.servfail_ttl_secs),
                timeout: Duration::from_secs(self.dns.timeout_ttl_secs),
                over_budget: Duration::from_secs(self.dns.over_budget_ttl_secs),
            },
            l1_max_entries: self.cache.l1_max_entries,
            l1_max_bytes: self.cache.l1_max_bytes,
            lookup_deadline: Duration::from_millis(self.cache.lookup_deadline_ms),
            limits: Limits {
                max_depth: self.input.max_depth,
                max_bytes: self.input.max_record_bytes,
            },
        }
    }

    /// The GeoIP options.
    pub fn geoip_options(&self) -> GeoIpOptions {
        GeoIpOptions {
            city: self.geoip.city.clone(),
            asn: self.geoip.asn.clone(),
            attrs: self.geoip.attributes.clone(),
            verify: self.geoip.verify,
        }
    }

    /// The DNS options.
    pub fn dns_options(&self) -> DnsOptions {
        DnsOptions {
            servers: self.dns.servers.clone(),
            timeout: Duration::from_millis(self.dns.timeout_ms),
            retries: self.dns.retries,
            max_in_flight: self.dns.max_in_flight,
            qps: self.dns.qps,
            burst: self.dns.burst,
            budget_wait: Duration::from_millis(self.dns.budget_wait_ms),
            max_name_len: self.dns.max_name_len,
        }
    }

    /// The Redis options, when a URL is set.
    pub fn redis_options(&self) -> Option<crate::cache::RedisOptions> {
        (!self.redis.url.is_empty()).then(|| crate::cache::RedisOptions {
            url: self.redis.url.clone(),
            key_prefix: self.redis.key_prefix.clone(),
            timeout: Duration::from_millis(self.redis.timeout_ms),
            failure_threshold: self.redis.failure_threshold,
            open_for: Duration::from_millis(self.redis.open_ms),
            max_batch: self.redis.max_batch,
            password: self.redis.password.clone(),
            tls_ca_file: self.redis.tls_ca_file.clone(),
            max_name_len: self.dns.max_name_len,
            max_ttl: Duration::from_secs(self.dns.max_ttl_secs),
        })
    }

    /// The effective configuration as TOML, with secrets masked: passwords
    /// (in the Redis URL, `redis.password`, secret librdkafka properties) and
    /// every value read from a `${file:...}` reference, wherever it went.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.redis.url = mask_secrets(&shown.redis.url);
        if shown.redis.password.is_some() {
            shown.redis.password = Some("***".into());
        }
        for props in [
            &mut shown.kafka.properties,
            &mut shown.kafka.consumer_properties,
            &mut shown.kafka.producer_properties,
        ] {
            for (k, v) in props.iter_mut() {
                if is_secret_property(k) {
                    *v = "***".into();
                }
            }
        }
        let rendered = if self.secrets.is_empty() {
            toml::to_string_pretty(&shown)
        } else {
            toml::Value::try_from(&shown).and_then(|mut value| {
                self.secrets.mask_value(&mut value);
                // Back through the struct for its key order; a masked value
                // that no longer parses (an address read from a file) keeps
                // the table's sorted order.
                match value.clone().try_into::<Config>() {
                    Ok(masked) => toml::to_string_pretty(&masked),
                    Err(_) => toml::to_string_pretty(&value),
                }
            })
        };
        rendered.unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_masked_toml())
    }
}

/// The most enrichment threads a worker may run (`worker.enrich_threads`).
pub const MAX_ENRICH_THREADS: usize = 64;

/// librdkafka properties the worker sets itself; overriding them would
/// break at-least-once delivery or the worker's own bookkeeping.
pub const RESERVED_PROPERTIES: [&str; 6] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
    "enable.idempotence",
    "statistics.interval.ms",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("[dns]\ntimeout_ms = \"soon\"\n").expect_err("wrong type");
        assert_eq!(e.key, "dns.timeout_ms");
        let e = Config::from_toml("[dns]\nqpss = 3\n").expect_err("unknown key");
        assert_eq!(e.key, "dns.qpss");
        let e = Config::from_toml("[nope]\n").expect_err("unknown section");
        assert_eq!(e.key, "nope");
        let e = Config::from_toml("[geoip]\nattributes = [\"shoe_size\"]\n").expect_err("bad attr");
        assert!(e.key.starts_with("geoip.attributes"), "{e}");
        let e =
            Config::from_toml("[dns]\nservers = [\"not an address\"]\n").expect_err("bad server");
        assert!(e.key.starts_with("dns.servers"), "{e}");
        let c = Config::from_toml("[dns]\nmin_ttl_secs = 10\nmax_ttl_secs = 5\n").expect("parses");
        assert_eq!(
            c.validate().expect_err("min above max").key,
            "dns.min_ttl_secs"
        );
        let c = Config::from_toml("[redis]\nurl = \"http://x\"\n").expect("parses");
        assert_eq!(c.validate().expect_err("bad scheme").key, "redis.url");
        let c = Config::from_toml("[geoip]\nattributes = [\"ptr\"]\n").expect("parses");
        assert_eq!(
            c.validate().expect_err("ptr is not geo").key,
            "geoip.attributes"
        );
        let c = Config::from_toml("[worker]\nenrich_threads = 65\n").expect("parses");
        let e = c.validate().expect_err("too many threads");
        assert_eq!(e.key, "worker.enrich_threads");
        assert!(e.to_string().contains("at most 64"), "{e}");
        let e = Config::from_toml("not toml [").expect_err("syntax");
        assert_eq!(e.key, "file");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::from_toml(
            r#"
            [fields]
            default = ["src", "dst"]
            by_type.dns = ["id.orig_h", "answers"]
            [output]
            naming = "nested"
            provenance = true
            [geoip]
            attributes = ["country", "location", "asn"]
            skip_cidrs = ["192.0.2.0/24"]
            [dns]
            servers = ["127.0.0.1:5353"]
            scope = "private"
            [redis]
            url = "redis://:secret@127.0.0.1:6379/0"
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.output.naming, Naming::Nested);
        assert_eq!(c.fields.by_type["dns"], ["id.orig_h", "answers"]);
        assert_eq!(c.dns.scope, Scope::Private);
        let shown = c.to_masked_toml();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains(":***@127.0.0.1"), "{shown}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("enricher-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[kafka]\nbrokers = \"a:1\"\ninput_topic = \"bro_conn\"\n[dns]\nqps = 5\n",
        )
        .expect("write");
        let env = [
            ("ENRICHER_KAFKA__BROKERS".to_string(), "b:2".to_string()),
            ("ENRICHER_DNS__QPS".to_string(), "7".to_string()),
            (
                "ENRICHER_KAFKA__PROPERTIES__SASL.PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
            ("ENRICHER_LOG".to_string(), "debug".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::load(Some(&file), env).expect("loads");
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.kafka.input_topic, "bro_conn");
        assert_eq!(c.kafka.output_topic(), "bro_conn_enr");
        assert_eq!(c.kafka.dlq_topic(), "bro_conn_dlq");
        assert_eq!(c.dns.qps, 7);
        assert_eq!(c.kafka.properties["sasl.password"], "s3cret");
        assert!(!c.to_masked_toml().contains("s3cret"));
        c.validate_run().expect("valid");
        let e = Config::load(
            None,
            [("ENRICHER_DNS__QPS".to_string(), "many".to_string())],
        )
        .expect_err("bad");
        assert_eq!(e.key, "dns.qps");
        let e = Config::load(
            None,
            [(
                "ENRICHER_KAFKA__PROPERTIES__ENABLE.AUTO.COMMIT".to_string(),
                "true".to_string(),
            )],
        )
        .expect("parses")
        .validate()
        .expect_err("reserved");
        assert_eq!(e.key, "kafka.properties.enable.auto.commit");
        assert_eq!(
            Config::default().validate_run().expect_err("no topic").key,
            "kafka.input_topic"
        );
    }

    #[test]
    fn secrets_come_from_files_and_the_environment_and_stay_masked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sasl = dir.path().join("sasl-password");
        std::fs::write(&sasl, "file-s3cret-1\n").expect("write");
        let redis = dir.path().join("redis-password");
        std::fs::write(&redis, "p@ss/w:rd\n").expect("write");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                r#"
                [kafka]
                brokers = "${{BROKERS}}"
                input_topic = "bro_conn"
                [kafka.properties]
                "security.protocol" = "SASL_SSL"
                "sasl.username" = "${{SASL_USER}}"
                "sasl.password" = "${{file:{}}}"
                "sasl.oauthbearer.config" = "principal=${{file:{}}}"
                [redis]
                url = "redis://:${{REDIS_URL_PASSWORD}}@redis:6379/0"
                password = "${{file:{}}}"
                key_prefix = "literal:$${{not_a_reference}}"
                "#,
                sasl.display(),
                sasl.display(),
                redis.display()
            ),
        )
        .expect("write");
        let env = [
            ("BROKERS", "k1:9093,k2:9093"),
            ("SASL_USER", "enricher"),
            ("REDIS_URL_PASSWORD", "env-s3cret-2"),
            ("ENRICHER_DNS__ENABLED", "false"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::load(Some(&file), env).expect("loads");
        c.validate_run().expect("valid");
        assert_eq!(c.kafka.brokers, "k1:9093,k2:9093");
        assert_eq!(c.kafka.properties["sasl.username"], "enricher");
        assert_eq!(c.kafka.properties["sasl.password"], "file-s3cret-1");
        assert_eq!(
            c.kafka.properties["sasl.oauthbearer.config"],
            "principal=file-s3cret-1"
        );
        assert_eq!(c.redis.url, "redis://:env-s3cret-2@redis:6379/0");
        assert_eq!(c.redis.password.as_deref(), Some("p@ss/w:rd"));
        assert_eq!(c.redis.key_prefix, "literal:${not_a_reference}");
        assert!(!c.dns.enabled);
        let shown = c.to_masked_toml();
        for secret in ["file-s3cret-1", "env-s3cret-2", "p@ss/w:rd"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("k1:9093,k2:9093"), "{shown}");
        assert!(shown.contains("\"principal=***\""), "{shown}");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("p@ss"),
            "{debug}"
        );
        assert!(shown.contains("redis://:***@redis:6379/0"), "{shown}");
        // The masked output is itself a valid config, in the usual order.
        Config::from_toml(&shown).expect("masked output parses");
        let sections: Vec<&str> = shown.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(sections[..2], ["[input]", "[fields]"], "{shown}");
    }

    #[test]
    fn a_reference_that_cannot_be_resolved_names_the_key() {
        let e = Config::load(
            None,
            [(
                "ENRICHER_KAFKA__PROPERTIES__SASL.PASSWORD".to_string(),
                "${NOT_SET_HERE}".to_string(),
            )],
        )
        .expect_err("unset");
        assert_eq!(e.key, "kafka.properties.sasl.password");
        assert!(e.problem.contains("NOT_SET_HERE"), "{e}");
        let e = Config::load(
            None,
            [(
                "ENRICHER_REDIS__PASSWORD".to_string(),
                "${file:/nonexistent/redis-password}".to_string(),
            )],
        )
        .expect_err("unreadable");
        assert_eq!(e.key, "redis.password");
        assert!(e.problem.contains("/nonexistent/redis-password"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn errors_never_show_a_value_read_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("s");
        std::fs::write(&secret, "hunter2-secret\n").expect("write");
        let reference = format!("${{file:{}}}", secret.display());
        let e = Config::load(None, [("ENRICHER_DNS__QPS".to_string(), reference.clone())])
            .expect_err("a string is not a number");
        assert_eq!(e.key, "dns.qps");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = Config::load(
            None,
            [(
                "ENRICHER_REDIS__URL".to_string(),
                format!("http://{reference}@h"),
            )],
        )
        .expect("parses");
        let e = c.validate().expect_err("bad scheme");
        assert_eq!(e.key, "redis.url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn redis_tls_ca_file_needs_rediss_and_a_readable_pem() {
        let client_error = |c: &Config| {
            let opts = c.redis_options().expect("a URL is set");
            crate::cache::client(&opts).expect_err("refused")
        };
        let mut c = Config::default();
        c.redis.url = "redis://127.0.0.1:6379/".into();
        c.redis.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(
            c.validate().expect_err("not rediss").key,
            "redis.tls_ca_file"
        );
        c.redis.url = "rediss://127.0.0.1:6379/".into();
        // Checked where the worker starts, not by check-config.
        c.validate().expect("the file is not read by validate");
        let e = client_error(&c);
        assert_eq!(e.key(), "redis.tls_ca_file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().expect("temp dir");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        c.redis.tls_ca_file = Some(not_pem);
        assert_eq!(client_error(&c).key(), "redis.tls_ca_file");
        c.redis.tls_ca_file = None;
        c.redis.password = Some("pw".into());
        c.validate()
            .expect("rediss:// with the system roots and a password");
        assert!(c.to_masked_toml().contains("password = \"***\""));
    }

    #[test]
    fn environment_values_are_read_by_the_type_the_key_expects() {
        let load =
            |name: &str, value: &str| Config::load(None, [(name.to_string(), value.to_string())]);
        for text in ["123456", "true", "1979-05-27T07:32:00Z", "\"q\"", "{a=1}"] {
            let c = load("ENRICHER_REDIS__PASSWORD", text).expect(text);
            assert_eq!(c.redis.password.as_deref(), Some(text));
        }
        let c = load("ENRICHER_KAFKA__INPUT_TOPIC", "2024").expect("a topic");
        assert_eq!(c.kafka.input_topic, "2024");
        let c = load("ENRICHER_DNS__QPS", "70").expect("a number");
        assert_eq!(c.dns.qps, 70);
        let c = load("ENRICHER_FIELDS__DEFAULT", "[\"a\", \"b\"]").expect("a list");
        assert_eq!(c.fields.default, ["a", "b"]);
        let c = load(
            "ENRICHER_KAFKA__PRODUCER_PROPERTIES",
            "{\"linger.ms\" = 5, \"acks\" = \"all\"}",
        )
        .expect("an inline table");
        assert_eq!(c.kafka.producer_properties["linger.ms"], "5");
        let e = load("ENRICHER_KAFKA__PRODUCER_PROPERTIES", "linger.ms=5").expect_err("no table");
        assert_eq!(e.key, "kafka.producer_properties");
        assert!(e.problem.contains("__<KEY>"), "{e}");
        let e = load("ENRICHER_KAFKA__NO_SUCH_KEY", "1").expect_err("unknown");
        assert_eq!(e.key, "kafka.no_such_key");
    }

    #[test]
    fn an_error_about_a_secret_names_the_key_and_never_the_value() {
        let e = Config::from_toml("[redis]\npassword = 123456\n").expect_err("a number");
        assert_eq!(e.key, "redis.password");
        assert!(!e.to_string().contains("123456"), "{e}");
        assert!(e.problem.contains("`***`"), "{e}");
        let e = Config::from_toml("[kafka.properties]\n\"sasl.password\" = true\n")
            .expect_err("a boolean");
        assert!(!e.problem.contains("true"), "{e}");
        // A secret set through the environment is masked in any error.
        let e = Config::load(
            None,
            [
                ("ENRICHER_REDIS__PASSWORD".to_string(), "pw-9f3".to_string()),
                (
                    "ENRICHER_REDIS__URL".to_string(),
                    "http://pw-9f3@h".to_string(),
                ),
            ],
        )
        .expect("loads")
        .validate()
        .expect_err("bad scheme");
        assert!(!e.to_string().contains("pw-9f3"), "{e}");
    }
}

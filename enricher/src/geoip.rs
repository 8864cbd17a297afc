//! GeoIP from MaxMind DB files of every kind (City/Country, ASN, ISP,
//! Anonymous-IP, Connection-Type, Domain, DB-IP's equivalents, and custom
//! files read through attribute paths), with hot reload.
//!
//! ```text
//! geoip.city / geoip.asn / geoip.databases --> DbSpec --open+check--> Db
//! lookup(ip) --> each Db: tree walk --> decode only its Fields --> FragmentBuilder
//! watcher   --> file replaced? --open+check (same kind)--> swap, generation += 1
//! ```
//!
//! Each database lives behind an [`ArcSwap`]: lookups load the current reader
//! without a lock, and a reload builds and checks the replacement off the hot
//! path before swapping it in. A replacement that fails its checks (it does
//! not open, its metadata is not sane, a probe lookup fails, or `verify`
//! finds corruption) is rejected with an error log and a metric, and the old
//! database keeps serving. Each successful swap bumps a generation number so
//! cached enrichments built from the old database are rebuilt.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use maxminddb::Reader;

use crate::config::{DbAttributes, GeoIpConfig};
use crate::metrics as m;
use crate::reload::{Stamp, stamp};
use crate::splice::{Attr, FragmentBuilder};

mod decode;
pub(crate) use decode::intern;
pub use decode::{DbKind, MAX_CUSTOM_JSON, attr_kind};
use decode::{Field, Style};

/// Why a database cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoIpError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The config key that names the database.
        key: String,
        /// The database path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid MaxMind DB, or a check failed.
    #[error("{path} is not a usable {what} database: {reason}")]
    Invalid {
        /// The config key that names the database.
        key: String,
        /// The database path.
        path: PathBuf,
        /// The kind asked for (`city`, `asn`) or found.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl GeoIpError {
    /// The config key that names the database at fault (`geoip.city`,
    /// `geoip.databases[1]`).
    pub fn key(&self) -> &str {
        match self {
            GeoIpError::Io { key, .. } | GeoIpError::Invalid { key, .. } => key,
        }
    }
}

/// Addresses looked up to prove a fresh database decodes. Misses are fine;
/// decoding errors are not.
const PROBES: [IpAddr; 4] = [
    IpAddr::V4(std::net::Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(std::net::Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(std::net::Ipv4Addr::new(81, 2, 69, 142)),
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888,
    )),
];

/// Which attributes one database writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// These built-in attributes (those of `geoip.attributes` for
    /// `geoip.city` and `geoip.asn`); each must be one the type holds.
    Only(Vec<Attr>),
    /// Every attribute the database's type holds (`--geoip PATH`).
    All,
    /// Output name -> dotted path into the record (a custom database).
    Paths(Vec<(String, String)>),
}

/// One database to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSpec {
    /// The config key that names it, for errors.
    pub key: String,
    /// The `.mmdb` file.
    pub path: PathBuf,
    /// The kind the key asks for (`geoip.city`: City); `None` takes the
    /// file's own type.
    pub expect: Option<DbKind>,
    /// What to write.
    pub want: Want,
}

/// A database that passed its checks.
struct Loaded {
    reader: Reader<Vec<u8>>,
    build_epoch: u64,
    /// The build time in RFC 3339, for provenance.
    build_time: Box<str>,
}

/// How a database was first opened; a replacement must match.
struct Shape {
    kind: DbKind,
    fields: Vec<Field>,
}

impl Loaded {
    /// Opens and checks `spec.path`. `shape` is the first load's, for a
    /// reload (the replacement must be of the same kind); `None` works it
    /// out from the file and the spec.
    fn open(
        spec: &DbSpec,
        shape: Option<&Shape>,
        style: Style,
        verify: bool,
    ) -> Result<(Self, Option<Shape>), GeoIpError> {
        let what = shape
            .map(|s| s.kind)
            .or(spec.expect)
            .map_or("GeoIP", DbKind::label);
        let invalid = |reason: String| GeoIpError::Invalid {
            key: spec.key.clone(),
            path: spec.path.clone(),
            what,
            reason,
        };
        let bytes = std::fs::read(&spec.path).map_err(|source| GeoIpError::Io {
            key: spec.key.clone(),
            path: spec.path.clone(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|e| invalid(e.to_string()))?;
        let meta = reader.metadata();
        if meta.binary_format_major_version != 2 {
            return Err(invalid(format!(
                "binary format version {} (expected 2)",
                meta.binary_format_major_version
            )));
        }
        if meta.node_count == 0 || ![24, 28, 32].contains(&meta.record_size) {
            return Err(invalid(format!(
                "{} nodes with {}-bit records",
                meta.node_count, meta.record_size
            )));
        }
        let kind = DbKind::of(&meta.database_type);
        let fresh = match shape {
            Some(shape) if shape.kind != kind => {
                return Err(invalid(format!(
                    "its type is {:?}, a {} database, not {}",
                    meta.database_type, kind, shape.kind
                )));
            }
            Some(_) => None,
            None => {
                if let Some(expect) = spec.expect
                    && !kind.serves(expect)
                {
                    return Err(invalid(format!("its type is {:?}", meta.database_type)));
                }
                let supported = kind.supported(&meta.database_type);
                let fields = match &spec.want {
                    Want::Only(attrs) => {
                        // `geoip.city` may be a Country database: its city
                        // attributes are then simply absent, as they always were.
                        let unheld = attrs.iter().find(|a| !supported.contains(a));
                        if let (None, Some(a)) = (spec.expect, unheld) {
                            return Err(invalid(format!(
                                "its type {:?} has no {:?} attribute",
                                meta.database_type,
                                a.name()
                            )));
                        }
                        attrs.iter().map(|a| Field::Builtin(*a)).collect()
                    }
                    Want::All if kind == DbKind::Custom => {
                        return Err(invalid(format!(
                            "its type {:?} is not one the enricher knows; \
                             name its attributes as paths (`{{ owner = \"owner.name\" }}`)",
                            meta.database_type
                        )));
                    }
                    Want::All => supported.iter().map(|a| Field::Builtin(*a)).collect(),
                    Want::Paths(paths) => paths
                        .iter()
                        .map(|(name, path)| Field::custom(name, path))
                        .collect(),
                };
                Some(Shape { kind, fields })
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if meta.build_epoch == 0 || meta.build_epoch > now + 86_400 {
            return Err(invalid(format!(
                "build time {} is not plausible",
                meta.build_epoch
            )));
        }
        if verify {
            reader
                .verify()
                .map_err(|e| invalid(format!("verify failed: {e}")))?;
        }
        let build_epoch = meta.build_epoch;
        let loaded = Loaded {
            reader,
            build_epoch,
            build_time: rfc3339(build_epoch).into(),
        };
        let fields = match (&fresh, shape) {
            (Some(s), _) | (None, Some(s)) => &s.fields[..],
            (None, None) => &[],
        };
        let mut scratch = FragmentBuilder::default();
        for probe in PROBES {
            loaded
                .decode(probe, fields, style, &mut scratch)
                .map_err(|e| invalid(format!("probe lookup of {probe} failed: {e}")))?;
        }
        Ok((loaded, fresh))
    }

    /// Decodes only the wanted attributes. `Ok(false)` when the database has
    /// no record for the address.
    fn decode(
        &self,
        ip: IpAddr,
        fields: &[Field],
        style: Style,
        out: &mut FragmentBuilder,
    ) -> Result<bool, maxminddb::MaxMindDbError> {
        let found = self.reader.lookup(ip)?;
        if !found.has_data() {
            return Ok(false);
        }
        decode::decode(&found, fields, style, out)?;
        Ok(true)
    }
}

struct Db {
    spec: DbSpec,
    shape: Shape,
    /// The metric label: the kind, or a custom file's stem.
    label: String,
    current: ArcSwap<Loaded>,
    seen: Mutex<Option<Stamp>>,
}

/// What a lookup found, for provenance and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoStatus {
    /// At least one database had a record.
    Found,
    /// No database had a record for the address.
    NoRecord,
    /// No database is configured.
    NoDatabase,
    /// A database returned a decoding error (corrupt record).
    Error,
}

impl GeoStatus {
    /// The fixed provenance and metric label.
    pub fn label(self) -> &'static str {
        match self {
            GeoStatus::Found => "found",
            GeoStatus::NoRecord => "no_record",
            GeoStatus::NoDatabase => "no_database",
            GeoStatus::Error => "error",
        }
    }
}

/// Settings for [`GeoIp::open`].
#[derive(Debug, Clone, Default)]
pub struct GeoIpOptions {
    /// City or Country database path (`geoip.city`).
    pub city: Option<PathBuf>,
    /// ASN database path (`geoip.asn`).
    pub asn: Option<PathBuf>,
    /// Attributes to write from `city` and `asn`; they decode only these.
    pub attrs: Vec<Attr>,
    /// More databases (`geoip.databases`).
    pub databases: Vec<DbSpec>,
    /// Run the reader's full `verify()` when a database is opened.
    pub verify: bool,
    /// Write `subdivision` with its country, `GB-ENG`, as ECS's
    /// `region_iso_code` has it.
    pub region_with_country: bool,
}

impl GeoIpOptions {
    /// The databases and attributes of `[geoip]`.
    pub fn from_config(geoip: &GeoIpConfig) -> Self {
        let databases = geoip
            .databases
            .iter()
            .enumerate()
            .map(|(i, db)| DbSpec {
                key: format!("geoip.databases[{i}]"),
                path: db.path.clone(),
                expect: None,
                want: match &db.attributes {
                    DbAttributes::Names(names) if names.is_empty() => Want::All,
                    DbAttributes::Names(names) => Want::Only(names.clone()),
                    DbAttributes::Paths(paths) => {
                        Want::Paths(paths.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    }
                },
            })
            .collect();
        Self {
            city: geoip.city.clone(),
            asn: geoip.asn.clone(),
            attrs: geoip.attributes.clone(),
            databases,
            verify: geoip.verify,
            region_with_country: false,
        }
    }

    /// Every database to open: `city`, `asn`, then `databases`.
    fn specs(&self) -> Vec<DbSpec> {
        let legacy = [
            ("geoip.city", DbKind::City, &self.city),
            ("geoip.asn", DbKind::Asn, &self.asn),
        ];
        let mut specs: Vec<DbSpec> = legacy
            .into_iter()
            .filter_map(|(key, kind, path)| {
                let path = path.as_ref()?;
                Some(DbSpec {
                    key: key.into(),
                    path: path.clone(),
                    expect: Some(kind),
                    want: Want::Only(
                        self.attrs
                            .iter()
                            .copied()
                            .filter(|a| attr_kind(*a) == Some(kind))
                            .collect(),
                    ),
                })
            })
            .collect();
        specs.extend(self.databases.iter().cloned());
        specs
    }
}

/// Checks that every attribute of `geoip.attributes` comes from a GeoIP
/// database, without opening one; the problem, for the key `geoip.attributes`.
pub fn check_attributes(attrs: &[Attr]) -> Result<(), String> {
    match attrs.iter().find(|a| attr_kind(**a).is_none()) {
        Some(attr) => Err(format!(
            "{:?} is not an attribute of geoip.city or geoip.asn (name it under geoip.databases)",
            attr.name()
        )),
        None => Ok(()),
    }
}

/// The GeoIP databases in use.
pub struct GeoIp {
    dbs: Vec<Db>,
    generation: AtomicU64,
    verify: bool,
    style: Style,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field(
                "dbs",
                &self.dbs.iter().map(|d| &d.spec.path).collect::<Vec<_>>(),
            )
            .field("generation", &self.generation())
            .finish()
    }
}

impl GeoIp {
    /// Opens and checks the configured databases. A database that fails its
    /// checks at start is an error: the worker must not run on bad data.
    pub fn open(opts: &GeoIpOptions) -> Result<Self, GeoIpError> {
        let style = Style {
            region_with_country: opts.region_with_country,
        };
        let mut dbs: Vec<Db> = Vec::new();
        for spec in opts.specs() {
            let seen = stamp(&spec.path);
            let (loaded, shape) = Loaded::open(&spec, None, style, opts.verify)?;
            let Some(shape) = shape else { continue };
            let mut label = match shape.kind {
                DbKind::Custom => spec
                    .path
                    .file_stem()
                    .map_or_else(|| "custom".into(), |s| s.to_string_lossy().into_owned()),
                kind => kind.label().to_string(),
            };
            if dbs.iter().any(|d| d.label == label) {
                label = format!("{label}_{}", dbs.len());
            }
            dbs.push(Db {
                spec,
                shape,
                label,
                current: ArcSwap::from_pointee(loaded),
                seen: Mutex::new(seen),
            });
        }
        let geo = Self {
            dbs,
            generation: AtomicU64::new(1),
            verify: opts.verify,
            style,
        };
        geo.publish_gauges();
        Ok(geo)
    }

    /// A GeoIP with no database: every lookup is `NoDatabase`.
    pub fn empty() -> Self {
        Self {
            dbs: Vec::new(),
            generation: AtomicU64::new(1),
            verify: false,
            style: Style::default(),
        }
    }

    /// True when at least one database is configured.
    pub fn is_configured(&self) -> bool {
        !self.dbs.is_empty()
    }

    /// Changes on every successful reload; cached enrichments carry the
    /// generation they were built from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Looks the address up in every database, appending the wanted
    /// attributes (and, with `provenance`, the build time) to `out`.
    pub fn lookup(&self, ip: IpAddr, provenance: bool, out: &mut FragmentBuilder) -> GeoStatus {
        if self.dbs.is_empty() {
            return GeoStatus::NoDatabase;
        }
        let mut status = GeoStatus::NoRecord;
        let mut build: Option<Arc<Loaded>> = None;
        for db in &self.dbs {
            let loaded = db.current.load_full();
            match loaded.decode(ip, &db.shape.fields, self.style, out) {
                Ok(true) => {
                    if status != GeoStatus::Error {
                        status = GeoStatus::Found;
                    }
                    if build.is_none() {
                        build = Some(loaded);
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(db = %db.label, %ip, %error, "GeoIP record failed to decode");
                    status = GeoStatus::Error;
                }
            }
        }
        if provenance && let Some(loaded) = build {
            out.str(Attr::GeoBuild, &loaded.build_time);
        }
        status
    }

    /// Checks every database file for a replacement and reloads those that
    /// changed. Returns how many were swapped in. Blocking: run it on a
    /// blocking thread (see [`GeoIp::spawn_watcher`]).
    pub fn reload_changed(&self) -> usize {
        let mut swapped = 0;
        for db in &self.dbs {
            let now = stamp(&db.spec.path);
            {
                let mut seen = db.seen.lock().unwrap_or_else(|p| p.into_inner());
                if now.is_none() || *seen == now {
                    continue;
                }
                // Remember the stamp even if the load fails, so a bad file is
                // reported once, not at every check; a further change retries.
                *seen = now;
            }
            match Loaded::open(&db.spec, Some(&db.shape), self.style, self.verify) {
                Ok((loaded, _)) => {
                    tracing::info!(
                        db = %db.label,
                        path = %db.spec.path.display(),
                        build_epoch = loaded.build_epoch,
                        "GeoIP database reloaded"
                    );
                    db.current.store(Arc::new(loaded));
                    metrics::counter!(m::GEOIP_RELOADS, "db" => db.label.clone(), "result" => "ok")
                        .increment(1);
                    swapped += 1;
                }
                Err(error) => {
                    tracing::error!(
                        db = %db.label,
                        %error,
                        "GeoIP database replacement rejected; the previous one keeps serving"
                    );
                    metrics::counter!(m::GEOIP_RELOADS, "db" => db.label.clone(), "result" => "rejected")
                        .increment(1);
                }
            }
        }
        if swapped > 0 {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.publish_gauges();
        swapped
    }

    /// Build time (Unix seconds) of each database in use, by its metric
    /// label (`city`, `asn`, `anonymous_ip`, a custom file's stem).
    pub fn builds(&self) -> Vec<(&str, u64)> {
        self.dbs
            .iter()
            .map(|db| (db.label.as_str(), db.current.load().build_epoch))
            .collect()
    }

    /// Sets the build-time and age gauges of each database in use. Called
    /// on the exporter's interval, so a gauge that does not change stays
    /// exported.
    pub fn publish_gauges(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        for (label, build) in self.builds() {
            metrics::gauge!(m::GEOIP_BUILD, "db" => label.to_string()).set(build as f64);
            metrics::gauge!(m::GEOIP_AGE, "db" => label.to_string()).set(now - build as f64);
        }
    }

    /// Polls the files every `interval` on a blocking thread and reloads
    /// replaced ones; ends when the returned handle is aborted or dropped
    /// with the runtime.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let geo = Arc::clone(self);
        crate::reload::spawn_poller(interval, move || geo.reload_changed())
    }
}

/// Formats Unix seconds as RFC 3339 UTC, without a date crate.
pub(crate) fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_521_911_720), "2018-03-24T17:15:20Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }
}

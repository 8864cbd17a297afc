//! GeoIP from MaxMind DB files (GeoIP2/GeoLite2 City or Country, and ASN),
//! with hot reload.
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use maxminddb::{PathElement, Reader};

use crate::config::GeoIpConfig;
use crate::metrics as m;
use crate::splice::{Attr, FragmentBuilder};

/// Why a database cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoIpError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The database path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid MaxMind DB, or a check failed.
    #[error("{path} is not a usable {kind} database: {reason}")]
    Invalid {
        /// The database path.
        path: PathBuf,
        /// `city` or `asn`.
        kind: DbKind,
        /// What is wrong with it.
        reason: String,
    },
}

/// The two kinds of database the enricher reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// City or Country (GeoIP2/GeoLite2/DB-IP): country, city, location, ...
    City,
    /// ASN (GeoLite2-ASN, GeoIP2-ISP): AS number and organisation.
    Asn,
}

impl DbKind {
    /// The metric label and config name.
    pub fn label(self) -> &'static str {
        match self {
            DbKind::City => "city",
            DbKind::Asn => "asn",
        }
    }

    fn accepts(self, database_type: &str) -> bool {
        let t = database_type.to_ascii_lowercase();
        match self {
            DbKind::City => t.contains("city") || t.contains("country") || t.contains("enterprise"),
            DbKind::Asn => t.contains("asn") || t.contains("isp"),
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
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

/// A database that passed its checks.
struct Loaded {
    reader: Reader<Vec<u8>>,
    build_epoch: u64,
    /// The build time in RFC 3339, for provenance.
    build_time: Box<str>,
}

impl Loaded {
    fn open(path: &Path, kind: DbKind, attrs: &[Attr], verify: bool) -> Result<Self, GeoIpError> {
        let invalid = |reason: String| GeoIpError::Invalid {
            path: path.to_owned(),
            kind,
            reason,
        };
        let bytes = std::fs::read(path).map_err(|source| GeoIpError::Io {
            path: path.to_owned(),
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
        if !kind.accepts(&meta.database_type) {
            return Err(invalid(format!("its type is {:?}", meta.database_type)));
        }
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
        let mut scratch = FragmentBuilder::default();
        for probe in PROBES {
            loaded
                .decode(kind, probe, attrs, &mut scratch)
                .map_err(|e| invalid(format!("probe lookup of {probe} failed: {e}")))?;
        }
        Ok(loaded)
    }

    /// Decodes only the wanted attributes. `Ok(false)` when the database has
    /// no record for the address.
    fn decode(
        &self,
        kind: DbKind,
        ip: IpAddr,
        attrs: &[Attr],
        out: &mut FragmentBuilder,
    ) -> Result<bool, maxminddb::MaxMindDbError> {
        let found = self.reader.lookup(ip)?;
        if !found.has_data() {
            return Ok(false);
        }
        use PathElement::{Index, Key};
        for &attr in attrs {
            let path: &[PathElement<'_>] = match (kind, attr) {
                (DbKind::City, Attr::Country) => &[Key("country"), Key("iso_code")],
                (DbKind::City, Attr::CountryName) => &[Key("country"), Key("names"), Key("en")],
                (DbKind::City, Attr::Continent) => &[Key("continent"), Key("code")],
                (DbKind::City, Attr::City) => &[Key("city"), Key("names"), Key("en")],
                (DbKind::City, Attr::Subdivision) => {
                    &[Key("subdivisions"), Index(0), Key("iso_code")]
                }
                (DbKind::City, Attr::Timezone) => &[Key("location"), Key("time_zone")],
                (DbKind::City, Attr::Postal) => &[Key("postal"), Key("code")],
                (DbKind::City, Attr::Location) => {
                    let lat = found.decode_path::<f64>(&[Key("location"), Key("latitude")])?;
                    let lon = found.decode_path::<f64>(&[Key("location"), Key("longitude")])?;
                    if let (Some(lat), Some(lon)) = (lat, lon) {
                        out.location(lat, lon);
                    }
                    continue;
                }
                (DbKind::Asn, Attr::Asn) => {
                    if let Some(asn) =
                        found.decode_path::<u32>(&[Key("autonomous_system_number")])?
                    {
                        out.uint(Attr::Asn, u64::from(asn));
                    }
                    continue;
                }
                (DbKind::Asn, Attr::Org) => &[Key("autonomous_system_organization")],
                _ => continue,
            };
            if let Some(value) = found.decode_path::<&str>(path)? {
                out.str(attr, value);
            }
        }
        Ok(true)
    }
}

/// Identity of a file on disk, to notice a replacement without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

struct Db {
    kind: DbKind,
    path: PathBuf,
    attrs: Vec<Attr>,
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
    /// City or Country database path.
    pub city: Option<PathBuf>,
    /// ASN database path.
    pub asn: Option<PathBuf>,
    /// Attributes to write; the databases decode only these.
    pub attrs: Vec<Attr>,
    /// Run the reader's full `verify()` when a database is opened.
    pub verify: bool,
}

impl GeoIpOptions {
    /// The databases and attributes of `[geoip]`.
    pub fn from_config(geoip: &GeoIpConfig) -> Self {
        Self {
            city: geoip.city.clone(),
            asn: geoip.asn.clone(),
            attrs: geoip.attributes.clone(),
            verify: geoip.verify,
        }
    }
}

/// Checks that every attribute of `geoip.attributes` comes from a GeoIP
/// database, without opening one; the problem, for the key `geoip.attributes`.
pub fn check_attributes(attrs: &[Attr]) -> Result<(), String> {
    match attrs.iter().find(|a| attr_kind(**a).is_none()) {
        Some(attr) => Err(format!("{:?} is not a GeoIP attribute", attr.name())),
        None => Ok(()),
    }
}

/// The GeoIP databases in use.
pub struct GeoIp {
    dbs: Vec<Db>,
    generation: AtomicU64,
    verify: bool,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("dbs", &self.dbs.iter().map(|d| &d.path).collect::<Vec<_>>())
            .field("generation", &self.generation())
            .finish()
    }
}

impl GeoIp {
    /// Opens and checks the configured databases. A database that fails its
    /// checks at start is an error: the worker must not run on bad data.
    pub fn open(opts: &GeoIpOptions) -> Result<Self, GeoIpError> {
        let mut dbs = Vec::new();
        for (kind, path) in [(DbKind::City, &opts.city), (DbKind::Asn, &opts.asn)] {
            let Some(path) = path else { continue };
            let attrs: Vec<Attr> = opts
                .attrs
                .iter()
                .copied()
                .filter(|a| attr_kind(*a) == Some(kind))
                .collect();
            let seen = stamp(path);
            let loaded = Loaded::open(path, kind, &attrs, opts.verify)?;
            dbs.push(Db {
                kind,
                path: path.clone(),
                attrs,
                current: ArcSwap::from_pointee(loaded),
                seen: Mutex::new(seen),
            });
        }
        let geo = Self {
            dbs,
            generation: AtomicU64::new(1),
            verify: opts.verify,
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
            match loaded.decode(db.kind, ip, &db.attrs, out) {
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
                    tracing::warn!(db = db.kind.label(), %ip, %error, "GeoIP record failed to decode");
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
            let now = stamp(&db.path);
            {
                let mut seen = db.seen.lock().unwrap_or_else(|p| p.into_inner());
                if now.is_none() || *seen == now {
                    continue;
                }
                // Remember the stamp even if the load fails, so a bad file is
                // reported once, not at every check; a further change retries.
                *seen = now;
            }
            match Loaded::open(&db.path, db.kind, &db.attrs, self.verify) {
                Ok(loaded) => {
                    tracing::info!(
                        db = db.kind.label(),
                        path = %db.path.display(),
                        build_epoch = loaded.build_epoch,
                        "GeoIP database reloaded"
                    );
                    db.current.store(Arc::new(loaded));
                    metrics::counter!(m::GEOIP_RELOADS, "db" => db.kind.label(), "result" => "ok")
                        .increment(1);
                    swapped += 1;
                }
                Err(error) => {
                    tracing::error!(
                        db = db.kind.label(),
                        %error,
                        "GeoIP database replacement rejected; the previous one keeps serving"
                    );
                    metrics::counter!(m::GEOIP_RELOADS, "db" => db.kind.label(), "result" => "rejected").increment(1);
                }
            }
        }
        if swapped > 0 {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.publish_gauges();
        swapped
    }

    /// Build time (Unix seconds) of each database in use, by kind.
    pub fn builds(&self) -> Vec<(DbKind, u64)> {
        self.dbs
            .iter()
            .map(|db| (db.kind, db.current.load().build_epoch))
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
        for (kind, build) in self.builds() {
            metrics::gauge!(m::GEOIP_BUILD, "db" => kind.label()).set(build as f64);
            metrics::gauge!(m::GEOIP_AGE, "db" => kind.label()).set(now - build as f64);
        }
    }

    /// Polls the files every `interval` on a blocking thread and reloads
    /// replaced ones; ends when the returned handle is aborted or dropped
    /// with the runtime.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let geo = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let geo = Arc::clone(&geo);
                if tokio::task::spawn_blocking(move || geo.reload_changed())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }
}

/// Which database answers an attribute.
pub fn attr_kind(attr: Attr) -> Option<DbKind> {
    match attr {
        Attr::Country
        | Attr::CountryName
        | Attr::Continent
        | Attr::City
        | Attr::Subdivision
        | Attr::Location
        | Attr::Timezone
        | Attr::Postal => Some(DbKind::City),
        Attr::Asn | Attr::Org => Some(DbKind::Asn),
        Attr::Ptr | Attr::GeoStatus | Attr::GeoBuild | Attr::PtrStatus | Attr::Tier => None,
        // `[domains]` and `[urls]` attributes; never in `geoip.attributes`.
        _ => None,
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

    #[test]
    fn kinds_accept_their_database_types() {
        assert!(DbKind::City.accepts("GeoIP2-City"));
        assert!(DbKind::City.accepts("GeoLite2-Country"));
        assert!(DbKind::City.accepts("DBIP-City-Lite"));
        assert!(DbKind::Asn.accepts("GeoLite2-ASN"));
        assert!(DbKind::Asn.accepts("GeoIP2-ISP"));
        assert!(!DbKind::Asn.accepts("GeoIP2-City"));
    }
}

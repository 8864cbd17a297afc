//! The enrichment of one record: find its addresses, resolve each through
//! L1 -> L2 -> lookups, splice the result into the original bytes.
//!
//! Two entry points share one path. [`Enricher::enrich_cached`] is
//! synchronous and finishes a record when every address is already in L1 (the
//! steady state); it allocates nothing once the caller's [`Scratch`] and
//! output buffer have grown; a long-lived [`Scratch::with_front`] puts a small
//! per-thread front before L1 (see `front`). [`Enricher::enrich`] is the
//! general, async path:
//! misses become one shared fill per address (concurrent misses for one
//! address wait on the same fill), and the record waits for them at most
//! `lookup_deadline`; after that it is written without the PTR, marked
//! `timeout`, while the fill goes on and warms the cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use crate::cache::{L2Read, RedisCache};
use crate::config::{Config, DomainsConfig, UrlsConfig};
use crate::dns::{Dns, PtrOutcome, TtlPolicy};
use crate::geoip::{GeoIp, GeoStatus};
use crate::ip::{Locality, Skip, canonical, canonical_bytes};
use crate::metrics as m;
use crate::record::json::{self, Limits};
use crate::record::{FoundKind, RecordError, Scan, Wanted};
use crate::splice::{Attr, EcsMap, Fragment, FragmentBuilder, Naming, Splicer};
use crate::stats::Stats;

mod domains;
mod front;
use domains::{Domains, Named};
mod matches;
mod watch;
use front::Front;
pub use matches::Lists;
use matches::{Hashes, RowKey};
pub use watch::{ListsWatcher, Reloaded};

/// Which fields hold addresses, per log type: `[fields]`, taken as it is.
pub use crate::config::FieldsConfig as FieldMap;

/// Everything the enrichment core needs to know, built from the config.
#[derive(Debug, Clone)]
pub struct EnrichOptions {
    /// Which fields hold addresses.
    pub fields: FieldMap,
    /// Flat or nested member names.
    pub naming: Naming,
    /// Between field and attribute in flat naming (`id.resp_h` `_` `country`).
    pub separator: String,
    /// Appended to the field for nested objects and address lists.
    pub nested_suffix: String,
    /// With ECS naming: the ECS object of each address field.
    pub ecs_fields: std::collections::BTreeMap<String, String>,
    /// With ECS naming: the ECS key of each name field's homogenised name.
    pub ecs_domain_fields: std::collections::BTreeMap<String, String>,
    /// With ECS naming: the ECS object of each URL field's parts.
    pub ecs_url_fields: std::collections::BTreeMap<String, String>,
    /// Write provenance: the answering tier, the GeoIP build, why a value is missing.
    pub provenance: bool,
    /// The GeoIP attributes to write.
    pub geo_attrs: Vec<Attr>,
    /// Which addresses get GeoIP.
    pub geo_scope: Locality,
    /// Which addresses get a PTR lookup.
    pub dns_scope: Locality,
    /// Cache lifetime by DNS outcome.
    pub ttl: TtlPolicy,
    /// L1 bound in entries (when `l1_max_bytes` is 0).
    pub l1_max_entries: u64,
    /// L1 bound in bytes; 0 bounds by entries instead.
    pub l1_max_bytes: u64,
    /// Longest a record waits for its lookups.
    pub lookup_deadline: Duration,
    /// Record size and nesting limits.
    pub limits: Limits,
    /// Which fields hold host names, and the Public Suffix List.
    pub domains: DomainsConfig,
    /// Which fields hold URLs.
    pub urls: UrlsConfig,
    /// Which fields hold file hashes, matched against hash indicators
    /// (none unless indicator files are set).
    pub hash_fields: Vec<String>,
}

impl Default for EnrichOptions {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

impl EnrichOptions {
    /// The core's options from the sections it reads: `[input]`, `[fields]`,
    /// `[output]`, the scopes and TTLs of `[geoip]` and `[dns]`, and `[cache]`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            fields: config.fields.clone(),
            naming: config.output.naming.clone(),
            separator: config.output.separator.clone(),
            nested_suffix: config.output.nested_suffix.clone(),
            ecs_fields: config.output.ecs_fields.clone(),
            ecs_domain_fields: config.output.ecs_domain_fields.clone(),
            ecs_url_fields: config.output.ecs_url_fields.clone(),
            provenance: config.output.provenance,
            geo_attrs: config.geoip.attributes.clone(),
            geo_scope: Locality::new(config.geoip.scope, config.geoip.skip_cidrs.clone()),
            dns_scope: Locality::new(config.dns.scope, config.dns.skip_cidrs.clone()),
            ttl: TtlPolicy::from_config(&config.dns),
            l1_max_entries: config.cache.l1_max_entries,
            l1_max_bytes: config.cache.l1_max_bytes,
            lookup_deadline: Duration::from_millis(config.cache.lookup_deadline_ms),
            limits: Limits {
                max_depth: config.input.max_depth,
                max_bytes: config.input.max_record_bytes,
            },
            domains: config.domains.clone(),
            urls: config.urls.clone(),
            hash_fields: if config.intel.files.is_empty() {
                Vec::new()
            } else {
                config.intel.hash_fields.clone()
            },
        }
    }
}

/// Where an address's PTR came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The in-process cache.
    L1,
    /// Redis.
    L2,
    /// An upstream query.
    Dns,
    /// No PTR lookup applies (DNS off or the address out of scope).
    Local,
}

impl Tier {
    /// The provenance label.
    pub fn label(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
            Tier::Dns => "dns",
            Tier::Local => "local",
        }
    }

    fn json(self) -> &'static [u8] {
        match self {
            Tier::L1 => b"\"l1\"",
            Tier::L2 => b"\"l2\"",
            Tier::Dns => b"\"dns\"",
            Tier::Local => b"\"local\"",
        }
    }
}

/// The PTR side of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PtrState {
    Outcome(PtrOutcome),
    Skipped(Skip),
}

/// One address's enrichment as cached in L1.
#[derive(Debug)]
struct Entry {
    geo_gen: u64,
    fragment: Fragment,
    ptr: Option<PtrState>,
    source: Tier,
    expires: Instant,
}

type Fill = Shared<BoxFuture<'static, Arc<Entry>>>;

/// Whether [`Enricher::enrich_cached`] finished the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The enriched record is in the output buffer.
    Done,
    /// An address missed L1: call [`Enricher::enrich`].
    Pending,
}

struct Unique {
    ip: IpAddr,
    entry: Option<Arc<Entry>>,
    tier: Tier,
}

/// Per-task buffers, reused from record to record.
#[derive(Default)]
pub struct Scratch {
    scan: Scan,
    /// (field, index into `unique`) in document order.
    hits: Vec<(u16, u16)>,
    unique: Vec<Unique>,
    text: String,
    not_an_address: u64,
    /// A per-thread front for L1, for a scratch that lives as long as its
    /// thread (see [`Scratch::with_front`]).
    front: Option<Front<IpAddr, Arc<Entry>>>,
    /// A per-thread front for the parts of host names, with it.
    name_front: Option<domains::NameFront>,
    /// (field, parts) of the name and URL fields, in document order.
    names: Vec<(u16, Arc<Named>)>,
    /// A URL put together from a path and a host field.
    joined: String,
    /// Whether the last record written matched an indicator.
    matched: bool,
    /// The `_intel` list and table values being written.
    intel: Vec<u8>,
    /// The values of the hash fields of the record being written.
    hashes: Hashes,
}

impl Scratch {
    /// Buffers with a small private front for L1 (384 KiB) and one for
    /// host names' parts (128 KiB), for the one
    /// long-lived scratch of a thread that calls [`Enricher::enrich_cached`]
    /// for every record. A per-record task's scratch does without.
    pub fn with_front() -> Self {
        Self {
            front: Some(Front::new(front::SLOTS)),
            name_front: Some(Front::new(domains::NAME_FRONT_SLOTS)),
            ..Self::default()
        }
    }

    /// Whether the record last written with this scratch matched an
    /// indicator (`enricher pipe --only-matches`).
    pub fn matched(&self) -> bool {
        self.matched
    }
}

/// The enrichment core. Shared by every task of a process.
pub struct Enricher {
    opts: EnrichOptions,
    wanted: Wanted,
    default_mask: u64,
    type_masks: HashMap<Box<str>, u64>,
    array_mask: u64,
    /// Wanted fields below this index hold addresses.
    ip_fields: usize,
    domains: Domains,
    /// Whether the wanted field of each index holds hashes.
    hash_fields: Vec<bool>,
    splicer: Splicer,
    geo: Arc<GeoIp>,
    dns: Option<Arc<Dns>>,
    l2: Option<RedisCache>,
    l1: moka::sync::Cache<IpAddr, Arc<Entry>, foldhash::fast::RandomState>,
    inflight: Mutex<HashMap<IpAddr, Fill>>,
    stats: Arc<Stats>,
    lists: arc_swap::ArcSwapOption<Lists>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("fields", &self.wanted.paths())
            .field("geo", &self.geo)
            .field("dns", &self.dns)
            .field("l2", &self.l2)
            .finish_non_exhaustive()
    }
}

/// At most this many distinct IP fields across all log types (a bit mask).
pub const MAX_FIELDS: usize = 64;

/// Checks that the enricher can track `fields` (at most [`MAX_FIELDS`]
/// distinct ones), without building it; the problem, for the key `fields`.
pub fn check_fields(fields: &FieldMap) -> Result<(), String> {
    field_paths(fields).map(drop)
}

/// Every field named for addresses, once each, in the order first named.
fn field_paths(fields: &FieldMap) -> Result<Vec<String>, String> {
    let mut paths: Vec<String> = Vec::new();
    let mut add = |field: &String| {
        if !paths.contains(field) {
            paths.push(field.clone());
        }
    };
    fields.default.iter().for_each(&mut add);
    fields.by_type.values().flatten().for_each(&mut add);
    if paths.len() > MAX_FIELDS {
        return Err(format!(
            "{} distinct IP fields named; at most {MAX_FIELDS}",
            paths.len()
        ));
    }
    Ok(paths)
}

struct EntryExpiry;

impl moka::Expiry<IpAddr, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &IpAddr,
        value: &Arc<Entry>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _: &IpAddr,
        value: &Arc<Entry>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(Instant::now()))
    }
}

impl Enricher {
    /// Builds the core. `dns: None` turns PTR lookups off; `l2: None` runs
    /// without Redis. Fails when more than [`MAX_FIELDS`] fields are named.
    pub fn new(
        opts: EnrichOptions,
        geo: Arc<GeoIp>,
        dns: Option<Arc<Dns>>,
        l2: Option<RedisCache>,
    ) -> Result<Arc<Self>, String> {
        let mut paths = field_paths(&opts.fields)?;
        let ip_fields = paths.len();
        paths.extend(domains::paths(&opts.domains, &opts.urls));
        paths.extend(opts.hash_fields.iter().cloned());
        let wanted = Wanted::new(&opts.fields.type_key, &paths);
        let hash_fields = wanted
            .paths()
            .iter()
            .map(|p| opts.hash_fields.contains(p))
            .collect();
        let domains = Domains::new(&opts.domains, &opts.urls, opts.provenance, wanted.paths())?;
        let mask_of = |fields: &[String]| {
            fields
                .iter()
                .filter_map(|f| wanted.index_of(f))
                .fold(0u64, |mask, i| mask | (1 << i))
        };
        let default_mask = mask_of(&opts.fields.default);
        let type_masks = opts
            .fields
            .by_type
            .iter()
            .map(|(t, fields)| (t.as_str().into(), mask_of(fields)))
            .collect();
        let array_mask = mask_of(&opts.fields.arrays);
        let splicer = Splicer::new(
            wanted.paths(),
            opts.naming.clone(),
            &opts.separator,
            &opts.nested_suffix,
        )
        .with_ecs(
            wanted.paths(),
            &EcsMap {
                addresses: &opts.ecs_fields,
                names: &opts.ecs_domain_fields,
                urls: &opts.ecs_url_fields,
                ptr: dns.is_some(),
            },
        );
        // foldhash: keyed per process (addresses in logs are attacker-chosen),
        // and several times cheaper than SipHash on a 17-byte key.
        let hasher = foldhash::fast::RandomState::default();
        let l1 = if opts.l1_max_bytes > 0 {
            moka::sync::Cache::builder()
                .max_capacity(opts.l1_max_bytes)
                .weigher(|_: &IpAddr, e: &Arc<Entry>| {
                    u32::try_from(e.fragment.weight() + 96).unwrap_or(u32::MAX)
                })
                .expire_after(EntryExpiry)
                .build_with_hasher(hasher)
        } else {
            moka::sync::Cache::builder()
                .max_capacity(opts.l1_max_entries)
                .expire_after(EntryExpiry)
                .build_with_hasher(hasher)
        };
        Ok(Arc::new(Self {
            opts,
            wanted,
            default_mask,
            type_masks,
            array_mask,
            ip_fields,
            domains,
            hash_fields,
            splicer,
            geo,
            dns,
            l2,
            l1,
            inflight: Mutex::new(HashMap::new()),
            stats: Arc::new(Stats::default()),
            lists: arc_swap::ArcSwapOption::empty(),
        }))
    }

    /// Reads `domains.public_suffix_list` again if its file was replaced;
    /// a file that is not a list is rejected and the list in use keeps
    /// serving. Blocking. Returns whether a new list is in use.
    pub fn reload_public_suffix_list(&self) -> bool {
        self.domains.reload_suffixes()
    }

    /// Checks `domains.public_suffix_list` for a replacement every
    /// `interval` on a blocking thread; ends when the handle is aborted or
    /// dropped with the runtime.
    pub fn spawn_suffix_watcher(
        self: &Arc<Self>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let enricher = Arc::clone(self);
        crate::reload::spawn_poller(interval, move || enricher.reload_public_suffix_list())
    }

    /// Puts indicator sets and tables in use (or none), atomically: a
    /// record is matched against the old lists or the new, never a mix.
    pub fn set_lists(&self, lists: Option<Lists>) {
        if let Some(l) = &lists {
            l.publish_gauges();
        }
        self.lists.store(lists.map(Arc::new));
    }

    /// The indicator set and tables in use, if any.
    pub fn lists_in_use(&self) -> Option<Arc<Lists>> {
        self.lists.load_full()
    }

    /// [`Lists::new`] with this enricher's field names and separator.
    pub fn lists(
        &self,
        set: Arc<crate::intel::IntelSet>,
        tables: Vec<Arc<crate::intel::Table>>,
        member: &str,
    ) -> Lists {
        Lists::new(
            set,
            tables,
            member,
            self.wanted.paths(),
            &self.opts.separator,
        )
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The GeoIP databases in use.
    pub fn geoip(&self) -> &Arc<GeoIp> {
        &self.geo
    }

    /// The DNS resolver, when PTR lookups are on.
    pub fn dns(&self) -> Option<&Arc<Dns>> {
        self.dns.as_ref()
    }

    /// Sets the gauges of the parts below (DNS budget and in-flight, GeoIP
    /// build and age, the Redis circuit), so that none goes stale.
    pub fn publish_gauges(&self) {
        self.geo.publish_gauges();
        if let Some(lists) = &*self.lists.load() {
            lists.publish_gauges();
        }
        if let Some(dns) = &self.dns {
            dns.publish_gauges();
        }
        if let Some(l2) = &self.l2 {
            l2.publish_gauges();
        }
    }

    /// Entries and weighted size of L1 (moka updates these lazily).
    pub fn l1_size(&self) -> (u64, u64) {
        self.l1.run_pending_tasks();
        (self.l1.entry_count(), self.l1.weighted_size())
    }

    /// Enriches `input` into `out` (appended) if every address is in L1.
    /// On `Pending`, `out` is unchanged and nothing was counted.
    pub fn enrich_cached(
        &self,
        input: &[u8],
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Result<Ready, RecordError> {
        self.collect(input, s)?;
        let generation = self.geo.generation();
        // The clock is read only for the front: moka keeps its own.
        let now = s.front.is_some().then(Instant::now);
        for i in 0..s.unique.len() {
            let ip = s.unique[i].ip;
            let entry = match (s.front.as_mut(), now) {
                (Some(front), Some(now)) => front.get_or_load(
                    &ip,
                    now,
                    |e| e.geo_gen == generation && now < e.expires,
                    || self.l1_get(ip, generation),
                ),
                _ => self.l1_get(ip, generation),
            };
            let Some(entry) = entry else {
                return Ok(Ready::Pending);
            };
            s.unique[i].entry = Some(entry);
            s.unique[i].tier = Tier::L1;
        }
        self.stats.l1_hits.add(s.unique.len() as u64);
        self.write(input, s, out);
        Ok(Ready::Done)
    }

    /// Enriches `input` into `out` (appended), looking up what L1 lacks.
    /// Waits at most `lookup_deadline` for lookups.
    pub async fn enrich(
        self: &Arc<Self>,
        input: &[u8],
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        self.collect(input, s)?;
        let now = Instant::now();
        let generation = self.geo.generation();
        let mut fills = Vec::new();
        for (i, unique) in s.unique.iter_mut().enumerate() {
            match self.l1_get(unique.ip, generation) {
                Some(entry) => {
                    self.stats.l1_hits.inc();
                    unique.entry = Some(entry);
                    unique.tier = Tier::L1;
                }
                None => {
                    self.stats.l1_misses.inc();
                    fills.push((i, self.fill(unique.ip)));
                }
            }
        }
        if !fills.is_empty() {
            let deadline = now + self.opts.lookup_deadline;
            let waits = fills
                .into_iter()
                .map(|(i, fill)| async move { (i, tokio::time::timeout_at(deadline, fill).await) });
            for (i, result) in futures::future::join_all(waits).await {
                let unique = &mut s.unique[i];
                let entry = match result {
                    Ok(entry) => entry,
                    Err(_) => {
                        self.stats.deadline_hit.inc();
                        self.entry_for(
                            unique.ip,
                            Some(PtrState::Outcome(PtrOutcome::Timeout)),
                            Tier::Dns,
                            now,
                        )
                    }
                };
                unique.tier = entry.source;
                unique.entry = Some(entry);
            }
        }
        self.write(input, s, out);
        Ok(())
    }

    /// Scans the record and gathers its distinct addresses.
    fn collect(&self, input: &[u8], s: &mut Scratch) -> Result<(), RecordError> {
        s.hits.clear();
        s.unique.clear();
        s.not_an_address = 0;
        s.names.clear();
        json::scan(input, &self.wanted, &self.opts.limits, &mut s.scan)?;
        if self.domains.any() {
            let found = &s.scan.found;
            self.domains.collect(
                input,
                found,
                &mut s.names,
                s.name_front.as_mut(),
                &mut s.text,
                &mut s.joined,
            );
        }
        let mask = match s.scan.log_type {
            Some((start, end, escaped)) if !self.type_masks.is_empty() => {
                let raw = input.get(start as usize..end as usize).unwrap_or_default();
                let name = if escaped {
                    json::unescape_into(raw, &mut s.text);
                    Some(s.text.as_str())
                } else {
                    std::str::from_utf8(raw).ok()
                };
                name.and_then(|n| self.type_masks.get(n))
                    .copied()
                    .unwrap_or(self.default_mask)
            }
            _ => self.default_mask,
        };
        let mut seen = 0u64;
        for found in &s.scan.found {
            if usize::from(found.field) >= self.ip_fields {
                continue;
            }
            let bit = 1u64 << found.field;
            if mask & bit == 0 || (seen & bit != 0 && self.array_mask & bit == 0) {
                continue;
            }
            seen |= bit;
            let FoundKind::Str {
                start,
                end,
                escaped,
            } = found.kind
            else {
                self.stats.not_an_address.inc();
                continue;
            };
            let raw = input.get(start as usize..end as usize).unwrap_or_default();
            let ip = if escaped {
                json::unescape_into(raw, &mut s.text)
                    .then(|| canonical(&s.text))
                    .flatten()
            } else {
                canonical_bytes(raw)
            };
            let Some(ip) = ip else {
                s.not_an_address += 1;
                continue;
            };
            let index = match s.unique.iter().position(|u| u.ip == ip) {
                Some(index) => index,
                None => {
                    s.unique.push(Unique {
                        ip,
                        entry: None,
                        tier: Tier::L1,
                    });
                    s.unique.len() - 1
                }
            };
            s.hits.push((found.field, index as u16));
        }
        Ok(())
    }

    fn write(&self, input: &[u8], s: &mut Scratch, out: &mut Vec<u8>) {
        let empty = Fragment::default();
        let mut splice = self.splicer.begin(input, s.scan.close, s.scan.members, out);
        let mut arrays_seen = 0u64;
        let provenance = self.opts.provenance;
        let lists = self.lists.load();
        // Nested naming: table rows go in each field's object (a buffer per
        // record, only with tables and nested naming).
        let rows = (self.opts.naming == Naming::Nested)
            .then(|| lists.as_deref().filter(|l| l.has_tables()))
            .flatten();
        let mut row_buf = Vec::new();
        let mut row_members = Vec::new();
        for &(field, index) in &s.hits {
            let bit = 1u64 << field;
            if self.array_mask & bit != 0 {
                arrays_seen |= bit;
                continue;
            }
            let unique = &s.unique[index as usize];
            let fragment = unique.entry.as_ref().map_or(&empty, |e| &e.fragment);
            let tier = provenance.then(|| unique.tier.json());
            if let Some(lists) = rows {
                row_buf.clear();
                row_members.clear();
                lists.row_members(RowKey::Ip(unique.ip), &mut row_buf, &mut row_members);
                let extra: Vec<(Attr, &[u8])> = tier
                    .map(|t| (Attr::Tier, t))
                    .into_iter()
                    .chain(
                        row_members
                            .iter()
                            .map(|(a, r)| (*a, row_buf.get(r.clone()).unwrap_or_default())),
                    )
                    .collect();
                splice.field(field as usize, fragment, &extra);
            } else if let Some(tier) = tier {
                splice.field(field as usize, fragment, &[(Attr::Tier, tier)]);
            } else {
                splice.field(field as usize, fragment, &[]);
            }
        }
        while arrays_seen != 0 {
            let field = arrays_seen.trailing_zeros() as u16;
            arrays_seen &= arrays_seen - 1;
            let unique = &s.unique;
            let items = s.hits.iter().filter(|(f, _)| *f == field).map(|&(_, i)| {
                let u = &unique[i as usize];
                let fragment = u.entry.as_ref().map_or(&empty, |e| &e.fragment);
                (u.ip, fragment, provenance.then(|| u.tier.json()))
            });
            splice.array(field as usize, items);
        }
        for (field, named) in &s.names {
            if let Some(lists) = rows {
                row_buf.clear();
                row_members.clear();
                lists.row_members(RowKey::Name(&named.key), &mut row_buf, &mut row_members);
                let extra: Vec<(Attr, &[u8])> = row_members
                    .iter()
                    .map(|(a, r)| (*a, row_buf.get(r.clone()).unwrap_or_default()))
                    .collect();
                splice.field(usize::from(*field), &named.fragment, &extra);
            } else {
                splice.field(usize::from(*field), &named.fragment, &[]);
            }
            if named.invalid {
                let path = self.wanted.paths().get(usize::from(*field));
                metrics::counter!(m::NOT_A_DOMAIN, "field" => path.cloned().unwrap_or_default())
                    .increment(1);
            }
        }
        s.matched = false;
        if let Some(lists) = &*lists {
            s.hashes.clear();
            if lists.set().has(crate::intel::Kind::Hash) {
                s.hashes
                    .collect(input, &s.scan.found, &self.hash_fields, &mut s.text);
            }
            let unique = &s.unique;
            let array_mask = self.array_mask;
            let hits = s.hits.iter().map(|&(field, i)| {
                let u = &unique[i as usize];
                let ptr = match u.entry.as_ref().and_then(|e| e.ptr.as_ref()) {
                    Some(PtrState::Outcome(PtrOutcome::Name { name, .. })) => Some(&**name),
                    _ => None,
                };
                (field as usize, u.ip, ptr, array_mask & (1 << field) != 0)
            });
            let names = s.names.iter().map(|(f, n)| (usize::from(*f), &n.key));
            if rows.is_none() {
                lists.write_tables(hits.clone(), names.clone(), &mut splice, &mut s.intel);
            }
            s.matched = lists.write(
                hits,
                names,
                s.hashes.iter(),
                self.wanted.paths(),
                &mut splice,
                &mut s.intel,
            );
        }
        splice.finish();
        self.stats.enriched.inc();
        // Counted here, once per record written, not in `collect`, which runs
        // twice for a record that misses L1.
        if s.not_an_address > 0 {
            self.stats.not_an_address.add(s.not_an_address);
        }
    }

    /// An entry from L1; moka drops expired entries itself (see [`EntryExpiry`]),
    /// so the hot path reads no clock of its own.
    fn l1_get(&self, ip: IpAddr, generation: u64) -> Option<Arc<Entry>> {
        let entry = self.l1.get(&ip)?;
        if entry.geo_gen == generation {
            return Some(entry);
        }
        // The GeoIP database was replaced: rebuild the GeoIP half, keep the PTR.
        let fresh = Arc::new(Entry {
            geo_gen: generation,
            fragment: self.fragment(ip, entry.ptr.as_ref()),
            ptr: entry.ptr.clone(),
            source: entry.source,
            expires: entry.expires,
        });
        self.l1.insert(ip, Arc::clone(&fresh));
        Some(fresh)
    }

    /// The one fill in flight for `ip`, started if there is none.
    fn fill(self: &Arc<Self>, ip: IpAddr) -> Fill {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fill) = inflight.get(&ip) {
            return fill.clone();
        }
        // Spawned, so the lookup completes and warms the cache even when every
        // record waiting for it has given up. The lock is held until the fill
        // is registered, so the task cannot deregister it first.
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.lookup(ip).await });
        let this = Arc::clone(self);
        let fill = async move {
            match task.await {
                Ok(entry) => entry,
                Err(_) => {
                    this.inflight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&ip);
                    this.entry_for(
                        ip,
                        Some(PtrState::Outcome(PtrOutcome::Error)),
                        Tier::Local,
                        Instant::now(),
                    )
                }
            }
        }
        .boxed()
        .shared();
        inflight.insert(ip, fill.clone());
        fill
    }

    /// L2 then DNS for one address; caches the result in L1 (and L2).
    async fn lookup(self: Arc<Self>, ip: IpAddr) -> Arc<Entry> {
        let policy = &self.opts.ttl;
        let (ptr, source, ttl) = match &self.dns {
            None => (None, Tier::Local, policy.max),
            Some(dns) => match self.opts.dns_scope.check(ip) {
                Err(skip) => (Some(PtrState::Skipped(skip)), Tier::Local, policy.max),
                Ok(()) => {
                    let read = match &self.l2 {
                        Some(l2) => l2.get(ip).await,
                        None => L2Read::Unavailable,
                    };
                    match read {
                        L2Read::Hit(outcome, remaining) => {
                            self.stats.l2_hits.inc();
                            (Some(PtrState::Outcome(outcome)), Tier::L2, remaining)
                        }
                        read => {
                            if self.l2.is_some() {
                                match read {
                                    L2Read::Miss => self.stats.l2_misses.inc(),
                                    _ => self.stats.l2_unavailable.inc(),
                                }
                            }
                            let outcome = dns.lookup(ip).await;
                            self.stats.dns(outcome.label()).inc();
                            let ttl = policy.ttl(&outcome);
                            if let Some(l2) = &self.l2 {
                                l2.put(ip, outcome.clone(), ttl);
                            }
                            (Some(PtrState::Outcome(outcome)), Tier::Dns, ttl)
                        }
                    }
                }
            },
        };
        let now = Instant::now();
        let entry = self.entry_for(ip, ptr, source, now + ttl);
        if !ttl.is_zero() {
            self.l1.insert(ip, Arc::clone(&entry));
        }
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
        entry
    }

    fn entry_for(
        &self,
        ip: IpAddr,
        ptr: Option<PtrState>,
        source: Tier,
        expires: Instant,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            geo_gen: self.geo.generation(),
            fragment: self.fragment(ip, ptr.as_ref()),
            ptr,
            source,
            expires,
        })
    }

    fn fragment(&self, ip: IpAddr, ptr: Option<&PtrState>) -> Fragment {
        let provenance = self.opts.provenance;
        let mut b = FragmentBuilder::default();
        match self.opts.geo_scope.check(ip) {
            Err(skip) => {
                if provenance && self.geo.is_configured() {
                    b.str(Attr::GeoStatus, skip.label());
                }
            }
            Ok(()) => {
                let started = std::time::Instant::now();
                let status = self.geo.lookup(ip, provenance, &mut b);
                metrics::histogram!(m::LOOKUP_SECONDS, "kind" => "geoip")
                    .record(started.elapsed().as_secs_f64());
                if provenance && status != GeoStatus::Found {
                    b.str(Attr::GeoStatus, status.label());
                }
            }
        }
        match ptr {
            Some(PtrState::Outcome(PtrOutcome::Name { name, .. })) => {
                b.str(Attr::Ptr, name);
                self.domains.ptr(name, &mut b);
            }
            Some(PtrState::Outcome(other)) if provenance => b.str(Attr::PtrStatus, other.label()),
            Some(PtrState::Skipped(skip)) if provenance => b.str(Attr::PtrStatus, skip.label()),
            _ => {}
        }
        b.build()
    }
}

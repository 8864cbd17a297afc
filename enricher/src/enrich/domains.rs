//! The domain and URL side of a record: which scanned fields hold names or
//! URLs, their parts as ready-to-splice fragments, cached per value.
//!
//! ```text
//! scan.found --(role of the field)--> name / reversed name / URL / path + host field
//!                                          |
//!            moka, per kind: value -> Arc<Named> --miss--> domain::homogenise + Psl::parts
//!                                          |                 or domain::url_parts
//!                                          v
//!                      (field, fragment, match key) in the scratch; the writer
//!                      splices the fragment and matches the key (see `matches`)
//! ```
//!
//! Names repeat far more than addresses (a few thousand names make most of a
//! DNS log), so a value is homogenised and split once per cache lifetime.
//! A replaced `domains.public_suffix_list` is swapped in whole and empties
//! the caches; parts computed with the old list meanwhile are not kept.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::front::Front;
use crate::config::{DomainsConfig, UrlsConfig};
use crate::domain::{self, Psl};
use crate::intel::url_key;
use crate::metrics as m;
use crate::record::json;
use crate::record::{Found, FoundKind};
use crate::reload::{Stamp, stamp};
use crate::splice::{Attr, Fragment, FragmentBuilder};

/// What a scanned field holds, for this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not a name nor a URL.
    None,
    /// A host name.
    Name,
    /// A host name written right to left.
    Reversed,
    /// An absolute URL.
    Url,
    /// A path, read with the host in the field of this index.
    WithHost(u16),
}

/// The parts of one value, ready to splice.
#[derive(Debug)]
pub(super) struct Named {
    /// The members to write (a status only, for an invalid value with provenance).
    pub(super) fragment: Fragment,
    /// The value is not a name (or URL): counted once per record written.
    pub(super) invalid: bool,
    /// The form indicators and tables are matched in.
    pub(super) key: Key,
}

/// The form a value is matched against indicators and tables in, worked
/// out once per cached value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    /// Nothing to match (not a string, not a name).
    None,
    /// A homogenised host name: domain indicators, domain-keyed tables.
    Name(Box<str>),
    /// A URL in the form URL indicators are kept in (`intel::url_key`).
    Url(Box<str>),
}

type Cache = moka::sync::Cache<Box<str>, Arc<Named>, foldhash::fast::RandomState>;

/// A thread's front for the parts of host names: a hit in moka costs more
/// than the rest of a name's enrichment (see `front`). Each value carries
/// the generation of the public suffix list it was computed with.
pub(super) type NameFront = Front<String, (u64, Arc<Named>)>;

/// Slots in a thread's name front: 2,048 of about 64 bytes.
pub(super) const NAME_FRONT_SLOTS: usize = 2048;

/// Names and URLs of every record; shared by the enricher's tasks.
pub(super) struct Domains {
    psl: ArcSwap<Psl>,
    /// `domains.public_suffix_list` and the stamp of the copy in use.
    psl_file: Option<(PathBuf, Mutex<Option<Stamp>>)>,
    /// Changes whenever a list is swapped in: parts computed with an older
    /// list are not kept in the caches.
    generation: AtomicU64,
    provenance: bool,
    ptr: bool,
    /// The role of each wanted field, by index.
    roles: Vec<Role>,
    names: Cache,
    reversed: Cache,
    urls: Cache,
    /// A non-string value.
    other: Arc<Named>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains")
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Every field `[domains]` and `[urls]` read, host fields included.
pub(super) fn paths(domains: &DomainsConfig, urls: &UrlsConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = domains
        .fields
        .iter()
        .chain(&domains.reversed_fields)
        .chain(&urls.fields)
        .chain(urls.with_host.iter().flat_map(|(p, h)| [p, h]));
    for path in all {
        if !out.contains(path) {
            out.push(path.clone());
        }
    }
    out
}

impl Domains {
    /// Builds the caches and the roles of `wanted`'s paths.
    pub(super) fn new(
        domains: &DomainsConfig,
        urls: &UrlsConfig,
        provenance: bool,
        wanted: &[String],
    ) -> Result<Self, String> {
        let psl = match &domains.public_suffix_list {
            Some(path) => Psl::from_file(path).map_err(|e| e.to_string())?,
            None => Psl::Builtin,
        };
        let index = |p: &String| wanted.iter().position(|w| w == p);
        let roles = wanted
            .iter()
            .map(|p| {
                if domains.fields.contains(p) {
                    Role::Name
                } else if domains.reversed_fields.contains(p) {
                    Role::Reversed
                } else if urls.fields.contains(p) {
                    Role::Url
                } else if let Some(host) = urls.with_host.get(p).and_then(index) {
                    Role::WithHost(u16::try_from(host).unwrap_or(u16::MAX))
                } else {
                    Role::None
                }
            })
            .collect();
        let cache = || {
            moka::sync::Cache::builder()
                .max_capacity(domains.cache_entries)
                .build_with_hasher(foldhash::fast::RandomState::default())
        };
        let mut b = FragmentBuilder::default();
        if provenance {
            b.str(Attr::DomainStatus, "invalid");
        }
        let psl_file = domains
            .public_suffix_list
            .as_ref()
            .map(|path| (path.clone(), Mutex::new(stamp(path))));
        Ok(Self {
            psl: ArcSwap::from_pointee(psl),
            psl_file,
            generation: AtomicU64::new(0),
            provenance,
            ptr: domains.ptr_registered_domain,
            roles,
            names: cache(),
            reversed: cache(),
            urls: cache(),
            other: Arc::new(Named {
                fragment: b.build(),
                invalid: true,
                key: Key::None,
            }),
        })
    }

    /// Whether any field is a name or a URL.
    pub(super) fn any(&self) -> bool {
        self.roles.iter().any(|r| *r != Role::None)
    }

    /// The parts of the first value of each name or URL field of a scanned
    /// record, in document order, into `hits`. `text` and `joined` are
    /// scratch buffers.
    pub(super) fn collect(
        &self,
        input: &[u8],
        found: &[Found],
        hits: &mut Vec<(u16, Arc<Named>)>,
        mut front: Option<&mut NameFront>,
        text: &mut String,
        joined: &mut String,
    ) {
        let mut now = None;
        for f in found {
            let role = self.roles.get(usize::from(f.field)).copied();
            let Some(role) = role.filter(|r| *r != Role::None) else {
                continue;
            };
            if hits.iter().any(|(field, _)| *field == f.field) {
                continue;
            }
            let Some(value) = string(input, f, text) else {
                hits.push((f.field, Arc::clone(&self.other)));
                continue;
            };
            let named = match role {
                Role::Name => match front.as_deref_mut() {
                    Some(front) => {
                        let now = *now.get_or_insert_with(tokio::time::Instant::now);
                        let generation = self.generation.load(Ordering::Acquire);
                        let found = front.get_or_load(
                            value,
                            now,
                            |(g, _)| *g == generation,
                            || Some((generation, self.name(value, false))),
                        );
                        match found {
                            Some((_, named)) => named,
                            None => self.name(value, false),
                        }
                    }
                    None => self.name(value, false),
                },
                Role::Reversed => self.name(value, true),
                Role::Url => self.url(value),
                Role::WithHost(host) => {
                    // Empty unless the host holds an escape: no allocation.
                    let mut unescaped = String::new();
                    let host = found
                        .iter()
                        .find(|h| h.field == host)
                        .and_then(|h| string(input, h, &mut unescaped));
                    joined.clear();
                    match host {
                        Some(host) if value.starts_with('/') => {
                            joined.push_str("http://");
                            joined.push_str(host);
                            joined.push_str(value);
                        }
                        _ => joined.push_str(value),
                    }
                    self.url(joined)
                }
                Role::None => continue,
            };
            hits.push((f.field, named));
        }
    }

    /// The parts of a host name.
    fn name(&self, raw: &str, reversed: bool) -> Arc<Named> {
        let cache = if reversed {
            &self.reversed
        } else {
            &self.names
        };
        if let Some(hit) = cache.get(raw) {
            return hit;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut b = FragmentBuilder::default();
        let mut key = Key::None;
        let invalid = match domain::homogenise(raw, reversed) {
            Ok(name) => {
                b.str(Attr::HostName, &name);
                let psl = self.psl.load();
                let parts = psl.parts(&name);
                for (attr, part) in [
                    (Attr::RegisteredDomain, parts.registered_domain),
                    (Attr::TopLevelDomain, parts.top_level_domain),
                    (Attr::Subdomain, parts.subdomain),
                ] {
                    if let Some(part) = part {
                        b.str(attr, part);
                    }
                }
                key = Key::Name(name.into_boxed_str());
                false
            }
            // An address in a host field is not a broken name.
            Err(domain::NotADomain::Address) => false,
            Err(_) => self.invalid(&mut b),
        };
        self.keep(cache, raw, b, invalid, key, generation)
    }

    /// The parts of an absolute URL.
    fn url(&self, raw: &str) -> Arc<Named> {
        if let Some(hit) = self.urls.get(raw) {
            return hit;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut b = FragmentBuilder::default();
        let invalid = match domain::url_parts(raw, &self.psl.load()) {
            Some(u) => {
                b.str(Attr::Scheme, &u.scheme);
                if let Some(host) = &u.host {
                    b.str(Attr::Host, host);
                }
                if let Some(port) = u.port {
                    b.uint(Attr::Port, u64::from(port));
                }
                b.str(Attr::Path, &u.path);
                for (attr, part) in [
                    (Attr::Query, &u.query),
                    (Attr::Extension, &u.extension),
                    (Attr::RegisteredDomain, &u.registered_domain),
                ] {
                    if let Some(part) = part {
                        b.str(attr, part);
                    }
                }
                false
            }
            None => self.invalid(&mut b),
        };
        let key = url_key(raw).map_or(Key::None, |k| Key::Url(k.into_boxed_str()));
        self.keep(&self.urls, raw, b, invalid, key, generation)
    }

    /// Marks a value that is neither a name nor a URL: `domain_status:
    /// invalid` with provenance on. Returns the value's `invalid` flag.
    fn invalid(&self, b: &mut FragmentBuilder) -> bool {
        if self.provenance {
            b.str(Attr::DomainStatus, "invalid");
        }
        true
    }

    /// Builds a value's parts and keeps them in `cache`, unless the list
    /// they were computed with was replaced meanwhile.
    fn keep(
        &self,
        cache: &Cache,
        raw: &str,
        mut b: FragmentBuilder,
        invalid: bool,
        key: Key,
        generation: u64,
    ) -> Arc<Named> {
        let named = Arc::new(Named {
            fragment: b.build(),
            invalid,
            key,
        });
        if self.generation.load(Ordering::Acquire) == generation {
            cache.insert(raw.into(), Arc::clone(&named));
        }
        named
    }

    /// Reads `domains.public_suffix_list` again if the file was replaced,
    /// and swaps it in when it is a list; the caches are emptied, since
    /// every part may have changed. A file that is not a list is logged and
    /// counted, and the list in use keeps serving. Blocking (it reads the
    /// file). Returns whether a new list was swapped in.
    pub(super) fn reload_suffixes(&self) -> bool {
        let Some((path, seen)) = &self.psl_file else {
            return false;
        };
        let now = stamp(path);
        {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_none() || *seen == now {
                return false;
            }
            // Noted even when the file is rejected: it is reported once,
            // and a further replacement is tried again.
            *seen = now;
        }
        match Psl::from_file(path) {
            Ok(psl) => {
                self.psl.store(Arc::new(psl));
                self.generation.fetch_add(1, Ordering::AcqRel);
                for cache in [&self.names, &self.reversed, &self.urls] {
                    cache.invalidate_all();
                }
                tracing::info!(path = %path.display(), "Public suffix list reloaded");
                metrics::counter!(m::PSL_RELOADS, "result" => "ok").increment(1);
                true
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "Public suffix list replacement rejected; the previous one keeps serving"
                );
                metrics::counter!(m::PSL_RELOADS, "result" => "rejected").increment(1);
                false
            }
        }
    }

    /// Adds the registered domain of a PTR name, when wanted.
    pub(super) fn ptr(&self, name: &str, b: &mut FragmentBuilder) {
        if !self.ptr {
            return;
        }
        if let Ok(name) = domain::homogenise(name, false)
            && let Some(registered) = self.psl.load().parts(&name).registered_domain
        {
            b.str(Attr::PtrRegisteredDomain, registered);
        }
    }
}

/// The string value of a found field, unescaped into `text` when needed.
pub(super) fn string<'a>(input: &'a [u8], f: &Found, text: &'a mut String) -> Option<&'a str> {
    let FoundKind::Str {
        start,
        end,
        escaped,
    } = f.kind
    else {
        return None;
    };
    let raw = input.get(start as usize..end as usize)?;
    if escaped {
        json::unescape_into(raw, text).then_some(text.as_str())
    } else {
        std::str::from_utf8(raw).ok()
    }
}

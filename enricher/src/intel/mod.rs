//! Threat-intelligence indicator sets and enrichment tables, matched
//! against the addresses (and names, URLs, hashes) of every record.
//!
//! ```text
//! files --> parse (Zeek Intel | CSV | plain list) --> IntelSet
//!             addresses: exact map + longest-prefix subnets (prefix)
//!             domains:   exact map, probed for the name and each parent
//!             URLs, hashes: exact map of the homogenised form
//! record value --> IntelSet::{ip, domain, url, hash} --> &Indicator
//!              --> write_match: {"indicator","type","field","source","desc"}
//!
//! CSV table --> Table (key column: address, CIDR or domain)
//! address --> Table::ip --> the longest matching row's attributes
//! ```
//!
//! A leaf: it knows nothing of records, caches or Kafka. A set is
//! immutable once built; a reload builds a new one and swaps it in whole.

mod parse;
mod prefix;
mod table;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;

pub use self::parse::{Entry, Format, Skipped, detect, domain_key, guess, hash_key, url_key};
pub use self::prefix::Prefixes;
pub use self::table::Table;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What an indicator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One address (`Intel::ADDR`).
    Addr,
    /// A network (`Intel::SUBNET`).
    Subnet,
    /// A domain, matching its subdomains too (`Intel::DOMAIN`).
    Domain,
    /// A URL (`Intel::URL`).
    Url,
    /// A file hash, MD5, SHA-1, SHA-256 or SHA-512 (`Intel::FILE_HASH`).
    Hash,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 5] = [
        Kind::Addr,
        Kind::Subnet,
        Kind::Domain,
        Kind::Url,
        Kind::Hash,
    ];

    /// The fixed label, written as `type` and used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Addr => "addr",
            Kind::Subnet => "subnet",
            Kind::Domain => "domain",
            Kind::Url => "url",
            Kind::Hash => "hash",
        }
    }
}

/// An indicator file or table that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntelError {
    /// The file cannot be read.
    #[error("{file}: {error}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        error: std::io::Error,
    },
    /// A line of the file is not valid.
    #[error("{file} line {line}: {problem}")]
    Line {
        /// The file.
        file: String,
        /// The line, from 1.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
}

impl IntelError {
    /// The fixed metric label.
    pub fn label(&self) -> &'static str {
        match self {
            IntelError::Io { .. } => "io",
            IntelError::Line { .. } => "invalid",
        }
    }
}

/// One indicator of a set.
#[derive(Debug)]
pub struct Indicator {
    indicator: Box<str>,
    kind: Kind,
    source: Arc<str>,
    desc: Arc<str>,
    meta: Box<[(Box<str>, Box<str>)]>,
}

impl Indicator {
    /// The indicator as written in its file.
    pub fn indicator(&self) -> &str {
        &self.indicator
    }

    /// What it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where it comes from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// What it means, possibly empty.
    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// Further columns of its file, by name.
    pub fn meta(&self) -> &[(Box<str>, Box<str>)] {
        &self.meta
    }

    /// Appends `{"indicator":..,"type":..,"field":..,"source":..,"desc":..}`
    /// (and `"meta":{..}` when the file had more columns) to `out`.
    pub fn write_json(&self, field: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"indicator\":");
        json_str(out, &self.indicator);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.kind.label().as_bytes());
        out.extend_from_slice(b"\",\"field\":");
        json_str(out, field);
        out.extend_from_slice(b",\"source\":");
        json_str(out, &self.source);
        out.extend_from_slice(b",\"desc\":");
        json_str(out, &self.desc);
        if !self.meta.is_empty() {
            out.extend_from_slice(b",\"meta\":{");
            for (i, (k, v)) in self.meta.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, k);
                out.push(b':');
                json_str(out, v);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
}

/// Writes `s` as a JSON string.
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// An indicator set, indexed for lookups. Immutable once built.
#[derive(Debug, Default)]
pub struct IntelSet {
    indicators: Vec<Indicator>,
    addrs: Map<IpAddr, u32>,
    subnets: Prefixes<u32>,
    domains: Map<Box<str>, u32>,
    urls: Map<Box<str>, u32>,
    hashes: Map<Box<str>, u32>,
    counts: [u64; 5],
    skipped: u64,
    duplicates: u64,
    files: Vec<PathBuf>,
    newest: Option<SystemTime>,
}

/// Builds an [`IntelSet`] from entries, interning repeated sources and
/// descriptions.
#[derive(Debug, Default)]
pub struct Builder {
    set: IntelSet,
    strings: Map<Box<str>, Arc<str>>,
}

impl Builder {
    fn intern(&mut self, s: String) -> Arc<str> {
        if let Some(a) = self.strings.get(s.as_str()) {
            return Arc::clone(a);
        }
        let a: Arc<str> = s.as_str().into();
        self.strings.insert(s.into_boxed_str(), Arc::clone(&a));
        a
    }

    /// Adds one entry; a second indicator of the same value and type is
    /// counted and dropped (the first file named wins).
    pub fn add(&mut self, e: Entry) {
        let at = u32::try_from(self.set.indicators.len()).unwrap_or(u32::MAX);
        let set = &mut self.set;
        let fresh = match e.kind {
            Kind::Addr => match e.indicator.parse::<IpAddr>() {
                Ok(ip) => insert(&mut set.addrs, ip.to_canonical(), at),
                Err(_) => false,
            },
            Kind::Subnet => {
                let net = e
                    .indicator
                    .parse::<IpNet>()
                    .or_else(|_| e.indicator.parse::<IpAddr>().map(IpNet::from));
                match net {
                    Ok(net) => set.subnets.insert(canonical_net(net).trunc(), at),
                    Err(_) => false,
                }
            }
            Kind::Domain => match domain_key(&e.indicator) {
                Some(k) => insert(&mut set.domains, k.into_owned().into_boxed_str(), at),
                None => false,
            },
            Kind::Url => match url_key(&e.indicator) {
                Some(k) => insert(&mut set.urls, k.into_boxed_str(), at),
                None => false,
            },
            Kind::Hash => insert(&mut set.hashes, hash_key(&e.indicator).into_boxed_str(), at),
        };
        if !fresh {
            self.set.duplicates += 1;
            return;
        }
        self.set.counts[e.kind as usize] += 1;
        let source = self.intern(e.source);
        let desc = self.intern(e.desc);
        let meta = e
            .meta
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        self.set.indicators.push(Indicator {
            indicator: e.indicator.into_boxed_str(),
            kind: e.kind,
            source,
            desc,
            meta,
        });
    }

    /// Reads one file into the set.
    pub fn file(&mut self, path: &Path) -> Result<(), IntelError> {
        let name = path.display().to_string();
        let io = |error| IntelError::Io {
            file: name.clone(),
            error,
        };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let skipped = parse::parse(&name, &text, &mut |e| self.add(e))?;
        self.set.skipped += skipped.other_types;
        self.set.files.push(path.to_path_buf());
        self.set.newest = self.set.newest.max(modified);
        Ok(())
    }

    /// The finished set.
    pub fn build(mut self) -> IntelSet {
        self.set.indicators.shrink_to_fit();
        self.set
    }
}

fn insert<K: std::hash::Hash + Eq>(map: &mut Map<K, u32>, key: K, at: u32) -> bool {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(at);
            true
        }
    }
}

/// An IPv4-mapped IPv6 network as IPv4, as addresses are matched.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && let Some(v4) = n.network().to_ipv4_mapped()
        && n.prefix_len() >= 96
    {
        return IpNet::V4(
            ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).unwrap_or_else(|_| v4.into()),
        );
    }
    net
}

impl IntelSet {
    /// Reads and indexes `files`, in order; the first error stops it.
    pub fn load(files: &[PathBuf]) -> Result<Self, IntelError> {
        let mut b = Builder::default();
        for f in files {
            b.file(f)?;
        }
        Ok(b.build())
    }

    /// True when the set holds no indicator.
    pub fn is_empty(&self) -> bool {
        self.indicators.is_empty()
    }

    /// Indicators held.
    pub fn len(&self) -> usize {
        self.indicators.len()
    }

    /// Indicators held, by kind.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind as usize]
    }

    /// Rows skipped because their type is not matched here.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Indicators dropped because the same value and type came earlier.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The files read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The newest modification time among the files, the set's age.
    pub fn newest(&self) -> Option<SystemTime> {
        self.newest
    }

    fn get(&self, at: u32) -> Option<&Indicator> {
        self.indicators.get(at as usize)
    }

    /// The indicators matching an address: the address itself, then the
    /// longest subnet holding it.
    pub fn ip(&self, ip: IpAddr) -> [Option<&Indicator>; 2] {
        if self.indicators.is_empty() {
            return [None, None];
        }
        let ip = ip.to_canonical();
        let exact = if self.addrs.is_empty() {
            None
        } else {
            self.addrs.get(&ip).and_then(|&i| self.get(i))
        };
        let subnet = if self.subnets.is_empty() {
            None
        } else {
            self.subnets.longest(ip).and_then(|(_, &i)| self.get(i))
        };
        [exact, subnet]
    }

    /// The indicator for `name` or its nearest listed parent domain.
    pub fn domain(&self, name: &str) -> Option<&Indicator> {
        if self.domains.is_empty() {
            return None;
        }
        let key = domain_key(name)?;
        let mut rest: &str = &key;
        loop {
            if let Some(&i) = self.domains.get(rest) {
                return self.get(i);
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// The indicator for a URL, compared in its homogenised form.
    pub fn url(&self, url: &str) -> Option<&Indicator> {
        if self.urls.is_empty() {
            return None;
        }
        self.urls
            .get(url_key(url)?.as_str())
            .and_then(|&i| self.get(i))
    }

    /// The indicator for a URL already in its homogenised form
    /// ([`url_key`]), as the enricher caches it per value.
    pub fn url_by_key(&self, key: &str) -> Option<&Indicator> {
        if self.urls.is_empty() {
            return None;
        }
        self.urls.get(key).and_then(|&i| self.get(i))
    }

    /// Whether the set holds indicators of this kind.
    pub fn has(&self, kind: Kind) -> bool {
        self.counts[kind as usize] > 0
    }

    /// The indicator for a hash, compared in lowercase.
    pub fn hash(&self, hash: &str) -> Option<&Indicator> {
        if self.hashes.is_empty() {
            return None;
        }
        let hash = hash.trim();
        let found = if hash.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hashes.get(hash.to_ascii_lowercase().as_str())
        } else {
            self.hashes.get(hash)
        };
        found.and_then(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, name: &str) -> IntelSet {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        IntelSet::load(&[path]).expect("loads")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn addresses_match_exactly_and_by_longest_subnet() {
        let s = set(
            "10.1.2.3\n10.0.0.0/8\n10.1.0.0/16\n2001:db8::/32\n2001:db8::1\n::ffff:192.0.2.0/120\n",
            "list.txt",
        );
        let labels = |a: &str| -> Vec<String> {
            s.ip(ip(a))
                .iter()
                .flatten()
                .map(|i| i.indicator().to_string())
                .collect()
        };
        assert_eq!(labels("10.1.2.3"), ["10.1.2.3", "10.1.0.0/16"]);
        assert_eq!(labels("10.1.255.255"), ["10.1.0.0/16"]);
        assert_eq!(labels("10.2.0.0"), ["10.0.0.0/8"]);
        assert!(labels("11.0.0.0").is_empty());
        assert_eq!(labels("2001:db8::1"), ["2001:db8::1", "2001:db8::/32"]);
        assert_eq!(labels("2001:0db8:0:0::2"), ["2001:db8::/32"]);
        assert_eq!(labels("::ffff:10.1.2.3"), ["10.1.2.3", "10.1.0.0/16"]);
        assert_eq!(
            labels("192.0.2.77"),
            ["::ffff:192.0.2.0/120"],
            "mapped network"
        );
        assert_eq!(s.count(Kind::Addr), 2);
        assert_eq!(s.count(Kind::Subnet), 4);
    }

    #[test]
    fn domains_match_their_subdomains_not_their_parents() {
        let s = set("evil.example\nsub.bad.example\n", "d.txt");
        let m = |n: &str| s.domain(n).map(|i| i.indicator().to_string());
        assert_eq!(m("evil.example").as_deref(), Some("evil.example"));
        assert_eq!(m("A.B.Evil.Example.").as_deref(), Some("evil.example"));
        assert_eq!(m("x.sub.bad.example").as_deref(), Some("sub.bad.example"));
        assert_eq!(
            m("bad.example"),
            None,
            "a parent of an indicator is no match"
        );
        assert_eq!(m("notevil.example"), None, "label boundaries");
        assert_eq!(m("example"), None);
        assert_eq!(m(""), None);
    }

    #[test]
    fn urls_and_hashes() {
        let s = set(
            "indicator,type,source,desc\nhttp://Evil.Example/login,url,f,phish\nABCDEF0123456789ABCDEF0123456789,md5,f,x\n",
            "f.csv",
        );
        assert!(s.url("https://evil.example:443/login#top").is_some());
        assert!(s.url("evil.example/login").is_some());
        assert!(
            s.url("evil.example/Login").is_none(),
            "paths are case-sensitive"
        );
        assert!(s.hash("abcdef0123456789abcdef0123456789").is_some());
        assert!(s.hash("ABCDEF0123456789ABCDEF0123456789").is_some());
        assert!(s.hash("abcdef").is_none());
    }

    #[test]
    fn the_first_of_duplicates_wins_and_json_is_written() {
        let s = set(
            "indicator,type,source,desc,tlp\n1.2.3.4,addr,a,\"first \"\"one\"\"\",amber\n1.2.3.4,addr,b,second,\n",
            "f.csv",
        );
        assert_eq!(s.duplicates(), 1);
        let [Some(hit), None] = s.ip(ip("1.2.3.4")) else {
            panic!("one exact match");
        };
        let mut out = Vec::new();
        hit.write_json("id.resp_h", &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"indicator":"1.2.3.4","type":"addr","field":"id.resp_h","source":"a","desc":"first \"one\"","meta":{"tlp":"amber"}}"#
        );
    }

    #[test]
    fn a_corrupt_or_missing_file_names_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = dir.path().join("good.txt");
        let bad = dir.path().join("bad.txt");
        std::fs::write(&good, "1.2.3.4\n").expect("write");
        std::fs::write(&bad, "1.2.3.4\n\n# ok\n???\n").expect("write");
        let e = IntelSet::load(&[good.clone(), bad.clone()]).expect_err("bad line");
        assert_eq!(e.label(), "invalid");
        assert!(
            e.to_string()
                .starts_with(&format!("{} line 4: ", bad.display())),
            "{e}"
        );
        let e = IntelSet::load(&[dir.path().join("none.txt")]).expect_err("missing");
        assert_eq!(e.label(), "io");
        assert!(e.to_string().contains("none.txt"), "{e}");
        let empty = IntelSet::load(&[]).expect("no files");
        assert!(empty.is_empty());
        assert!(empty.ip(ip("1.2.3.4")).iter().all(Option::is_none));
    }
}

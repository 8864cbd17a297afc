//! Synthetic Zeek `conn`, `dns` and `ssl` records over an address space of a
//! chosen size and shape, so cache behaviour can be studied at any scale.
//!
//! Addresses are drawn from one pool of `addresses` distinct addresses with a
//! Zipf skew (rank `k` drawn with weight `1 / k^s`), as real traffic is: a few
//! hosts in most records and a long tail. Public addresses come from the
//! demo GeoIP database's networks ([`crate::geo`]), so every one of them has
//! a country and an ASN; private ones come from RFC 1918 and `fd00::/8`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use test_support::zeek::{self, CIPHERS, DOMAINS, Rng, SERVICES, Val};

use crate::geo;

/// The shape of a synthetic data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Records to make.
    pub records: usize,
    /// Distinct addresses in the pool.
    pub addresses: usize,
    /// Zipf exponent: 0 is uniform; about 1 is typical of network traffic.
    pub zipf: f64,
    /// Share of the pool that is IPv6, in `[0, 1]`.
    pub ipv6_share: f64,
    /// Share of the pool that is private (RFC 1918, `fd00::/8`), in `[0, 1]`.
    pub private_share: f64,
    /// Relative weights of `conn`, `dns` and `ssl` records.
    pub weights: [u32; 3],
    /// Seed of everything random: the same spec makes the same records.
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            records: 100_000,
            addresses: 5_000,
            zipf: 1.0,
            ipv6_share: 0.1,
            private_share: 0.3,
            weights: [6, 3, 1],
            seed: 0x5eed_2024_0e71_c4e5,
        }
    }
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Zeek log type (`conn`, `dns`, `ssl`).
    pub path: &'static str,
    /// The record as Zeek's JSON writer writes it.
    pub json: String,
    /// The record's `ts`, in seconds.
    pub ts: f64,
    /// Whether it holds a public address, which the demo database always answers.
    pub expect_geo: bool,
}

/// The log types [`generate`] makes, in [`Spec::weights`] order.
pub const PATHS: [&str; 3] = ["conn", "dns", "ssl"];

/// Makes `spec.records` records in time order.
pub fn generate(spec: &Spec) -> Vec<Generated> {
    let mut rng = Rng(spec.seed);
    let pool = Pool::new(spec, &mut rng);
    let mut maker = Generator {
        pool: &pool,
        rng: &mut rng,
        ts_micros: 1_700_000_000_000_000,
    };
    let total: u32 = spec.weights.iter().sum::<u32>().max(1);
    (0..spec.records)
        .map(|_| {
            let pick = (maker.rng.next_u64() % u64::from(total)) as u32;
            let record = if pick < spec.weights[0] {
                maker.conn()
            } else if pick < spec.weights[0] + spec.weights[1] {
                maker.dns()
            } else {
                maker.ssl()
            };
            Generated {
                path: record.path,
                json: record.to_json(),
                ts: record.ts_micros as f64 / 1e6,
                expect_geo: record.public,
            }
        })
        .collect()
}

/// Writes records as Zeek TSV logs would be: a header block per log type,
/// then its rows. Records of each type keep their order.
pub fn to_tsv(spec: &Spec) -> Vec<(&'static str, String)> {
    let mut rng = Rng(spec.seed);
    let pool = Pool::new(spec, &mut rng);
    let mut maker = Generator {
        pool: &pool,
        rng: &mut rng,
        ts_micros: 1_700_000_000_000_000,
    };
    let total: u32 = spec.weights.iter().sum::<u32>().max(1);
    let mut logs: Vec<(&'static str, String)> = Vec::new();
    for _ in 0..spec.records {
        let pick = (maker.rng.next_u64() % u64::from(total)) as u32;
        let record = if pick < spec.weights[0] {
            maker.conn()
        } else if pick < spec.weights[0] + spec.weights[1] {
            maker.dns()
        } else {
            maker.ssl()
        };
        let index = match logs.iter().position(|(path, _)| *path == record.path) {
            Some(i) => i,
            None => {
                logs.push((record.path, record.tsv_header()));
                logs.len() - 1
            }
        };
        logs[index].1.push_str(&record.to_tsv());
        logs[index].1.push('\n');
    }
    logs
}

/// The address pool, in popularity order, with the Zipf CDF to draw from it.
struct Pool {
    addrs: Vec<IpAddr>,
    public: Vec<bool>,
    cdf: Vec<f64>,
    resolvers: [IpAddr; 2],
}

impl Pool {
    fn new(spec: &Spec, rng: &mut Rng) -> Self {
        let n = spec.addresses.max(1);
        let mut seen = HashSet::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        let mut public = Vec::with_capacity(n);
        while addrs.len() < n {
            let private = rng.chance(spec.private_share);
            let v6 = rng.chance(spec.ipv6_share);
            let ip = match (private, v6) {
                (true, false) => {
                    if rng.chance(0.7) {
                        IpAddr::V4(Ipv4Addr::from(
                            0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff),
                        ))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(
                            0xc0a8_0000 | (rng.next_u64() as u32 & 0xffff),
                        ))
                    }
                }
                (true, true) => {
                    let low =
                        u128::from(rng.next_u64()) | (u128::from(rng.next_u64() & 0xffff) << 64);
                    IpAddr::V6(Ipv6Addr::from((0xfd12_3456_789a_u128 << 80) | low))
                }
                (false, false) => geo::random_v4(rng),
                (false, true) => geo::random_v6(rng),
            };
            if seen.insert(ip) {
                addrs.push(ip);
                public.push(!private);
            }
        }
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(spec.zipf);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self {
            addrs,
            public,
            cdf,
            resolvers: [
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)),
                IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
            ],
        }
    }

    /// An address by Zipf rank, and whether it is public.
    fn draw(&self, rng: &mut Rng) -> (IpAddr, bool) {
        let u = rng.unit();
        let i = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.addrs.len() - 1);
        (self.addrs[i], self.public[i])
    }
}

/// A synthetic record with what the generator knows about it.
struct Record {
    zeek: zeek::Record,
    ts_micros: u64,
    public: bool,
}

impl std::ops::Deref for Record {
    type Target = zeek::Record;

    fn deref(&self) -> &zeek::Record {
        &self.zeek
    }
}

impl std::ops::DerefMut for Record {
    fn deref_mut(&mut self) -> &mut zeek::Record {
        &mut self.zeek
    }
}

/// Makes records in time order.
struct Generator<'a> {
    pool: &'a Pool,
    rng: &'a mut Rng,
    ts_micros: u64,
}

impl Generator<'_> {
    /// A record with the next timestamp, a fresh Zeek uid, and the connection's 4-tuple.
    fn start(
        &mut self,
        path: &'static str,
        orig: (IpAddr, bool),
        resp: (IpAddr, bool),
        resp_p: u16,
    ) -> Record {
        const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        self.ts_micros += self.rng.range(10, 2_000);
        let uid: String = std::iter::once('C')
            .chain((0..17).map(|_| char::from(self.rng.pick(BASE62))))
            .collect();
        let mut r = Record {
            zeek: zeek::Record::new(path),
            ts_micros: self.ts_micros,
            public: orig.1 || resp.1,
        };
        r.num(
            "ts",
            "time",
            format!(
                "{}.{:06}",
                self.ts_micros / 1_000_000,
                self.ts_micros % 1_000_000
            ),
        );
        r.str("uid", "string", uid);
        r.str("id.orig_h", "addr", orig.0.to_string());
        r.num("id.orig_p", "port", self.rng.range(32_768, 61_000));
        r.str("id.resp_h", "addr", resp.0.to_string());
        r.num("id.resp_p", "port", resp_p);
        r
    }

    fn conn(&mut self) -> Record {
        let (orig, resp) = (self.pool.draw(self.rng), self.pool.draw(self.rng));
        let (proto, port, service) = self.rng.pick(&SERVICES);
        let mut r = self.start("conn", orig, resp, port);
        zeek::conn_fields(&mut r, self.rng, proto, service, (!orig.1, !resp.1));
        r
    }

    /// A lookup through a resolver: most answers are a CNAME then one to three
    /// addresses from the pool; a few are NXDOMAIN, with no answers at all.
    fn dns(&mut self) -> Record {
        let orig = self.pool.draw(self.rng);
        let resolver = (self.rng.pick(&self.pool.resolvers), false);
        let mut r = self.start("dns", orig, resolver, 53);
        let aaaa = self.rng.chance(0.2);
        let nxdomain = self.rng.chance(0.08);
        let query = if nxdomain {
            "wpad.example.invalid"
        } else {
            self.rng.pick(&DOMAINS)
        };
        zeek::dns_fields(&mut r, self.rng, query, aaaa, nxdomain);
        let (mut answers, mut ttls) = (Vec::new(), Vec::new());
        if !nxdomain && self.rng.chance(0.6) {
            answers.push(format!("edge-{}.cdn.example.net", self.rng.range(1, 9)));
            ttls.push("300.0");
        }
        let wanted = if nxdomain {
            0
        } else {
            self.rng.range(1, 4) as usize
        };
        let mut addresses: Vec<IpAddr> = Vec::new();
        for _ in 0..wanted * 3 {
            if addresses.len() == wanted {
                break;
            }
            let (ip, public) = self.pool.draw(self.rng);
            if !addresses.contains(&ip) {
                addresses.push(ip);
                r.public |= public;
            }
        }
        answers.extend(addresses.iter().map(IpAddr::to_string));
        ttls.extend(addresses.iter().map(|_| "60.0"));
        let list = |items: Vec<Val>| {
            if nxdomain {
                Val::Unset
            } else {
                Val::List(items)
            }
        };
        r.set(
            "answers",
            "vector[string]",
            list(answers.into_iter().map(Val::Str).collect()),
        );
        r.set(
            "TTLs",
            "vector[interval]",
            list(ttls.iter().map(|t| Val::Num((*t).into())).collect()),
        );
        r.flag("rejected", false);
        r
    }

    fn ssl(&mut self) -> Record {
        let (orig, resp) = (self.pool.draw(self.rng), self.pool.draw(self.rng));
        let mut r = self.start("ssl", orig, resp, 443);
        let tls13 = self.rng.chance(0.7);
        r.str("version", "string", if tls13 { "TLSv13" } else { "TLSv12" });
        r.str("cipher", "string", self.rng.pick(&CIPHERS));
        r.str("curve", "string", "x25519");
        r.str("server_name", "string", self.rng.pick(&DOMAINS));
        r.flag("resumed", self.rng.chance(0.3));
        r.flag("established", true);
        r.str(
            "ssl_history",
            "string",
            if tls13 { "CsiI" } else { "CsxknGIi" },
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_makes_the_same_valid_records() {
        let spec = Spec {
            records: 2_000,
            addresses: 300,
            ..Spec::default()
        };
        let a = generate(&spec);
        assert_eq!(a, generate(&spec));
        for r in &a {
            let v: serde_json::Value = serde_json::from_str(&r.json).expect("valid JSON");
            assert_eq!(v["_path"], r.path);
        }
        let paths: HashSet<&str> = a.iter().map(|r| r.path).collect();
        assert_eq!(paths.len(), 3);
    }

    #[test]
    fn the_pool_has_the_asked_size_and_shape_and_zipf_skews_draws() {
        let spec = Spec {
            addresses: 10_000,
            ipv6_share: 0.25,
            private_share: 0.4,
            zipf: 1.1,
            ..Spec::default()
        };
        let mut rng = Rng(7);
        let pool = Pool::new(&spec, &mut rng);
        assert_eq!(pool.addrs.len(), 10_000);
        let v6 = pool.addrs.iter().filter(|a| a.is_ipv6()).count() as f64 / 10_000.0;
        let private = pool.public.iter().filter(|p| !**p).count() as f64 / 10_000.0;
        assert!((v6 - 0.25).abs() < 0.03, "{v6}");
        assert!((private - 0.4).abs() < 0.03, "{private}");
        for (ip, public) in pool.addrs.iter().zip(&pool.public) {
            assert_eq!(*public, geo::covers(*ip), "{ip}");
        }
        let top = (0..10_000)
            .filter(|_| pool.draw(&mut rng).0 == pool.addrs[0])
            .count();
        assert!(top > 500, "rank 1 drawn {top} times in 10,000");
    }

    #[test]
    fn tsv_logs_convert_to_the_same_records_as_json() {
        let spec = Spec {
            records: 300,
            addresses: 50,
            ..Spec::default()
        };
        let json = generate(&spec);
        let mut from_tsv = Vec::new();
        for (_, text) in to_tsv(&spec) {
            let mut reader = enricher::record::tsv::TsvReader::new();
            let mut out = Vec::new();
            for line in text.lines() {
                if reader.line(line.as_bytes(), &mut out).expect("valid TSV")
                    == enricher::record::tsv::TsvLine::Row
                {
                    from_tsv.push(serde_json::from_slice::<serde_json::Value>(&out).expect("JSON"));
                }
            }
        }
        assert_eq!(from_tsv.len(), json.len());
        let first_conn = json
            .iter()
            .find(|r| r.path == "conn")
            .expect("a conn record");
        let expected: serde_json::Value = serde_json::from_str(&first_conn.json).expect("JSON");
        assert!(from_tsv.contains(&expected));
    }
}

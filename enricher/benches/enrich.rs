//! Per-record cost of the enrichment core on one core: parse (scan), the
//! whole warm-cache path (scan + L1 lookups + splice), and the splice alone.
//!
//! Records are shaped like Zeek `ssl` and `dns` logs. By default they are
//! synthesised here; set `ZEEK_LOGS_DIR=../shared/data/zeek/json` to use
//! recorded ones (read, never copied). Target: at most 1.5 µs per record
//! with a warm cache, and `enrich_warm` at most 0.5 µs above
//! `enrich_warm_no_domains` for a DNS record (its `query` enrichment).

#![allow(missing_docs, clippy::unwrap_used)]

use std::io::BufRead;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enricher::config::Config;
use enricher::enrich::{Enricher, Ready, Scratch};
use enricher::record::json::{Limits, scan};
use enricher::record::{Scan, Wanted};
use enricher::splice::{Attr, FragmentBuilder, Naming, Splicer};
use test_support::mmdb;

const SSL: &str = r#"{"_path":"ssl","_write_ts":"2018-03-24T17:15:20.629574Z","ts":"2018-03-24T17:15:20.615923Z","uid":"CmC9kY1X0u9nP78KZc","id.orig_h":"10.164.94.120","id.orig_p":39611,"id.resp_h":"RESP","id.resp_p":443,"version":"TLSv10","cipher":"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA","curve":"secp256r1","resumed":false,"established":true,"ssl_history":"CsxknGIi","cert_chain_fps":["b2dafbcdbc75210672f137f27ce882ccb799887631655d4f11191d5a678e44fe"],"client_cert_chain_fps":[],"validation_status":"unable to get local issuer certificate"}"#;
const DNS: &str = r#"{"_path":"dns","_write_ts":"2018-03-24T17:15:20.866586Z","ts":"2018-03-24T17:15:20.865716Z","uid":"CqKst53mF3det3eDV9","id.orig_h":"10.47.1.100","id.orig_p":41772,"id.resp_h":"RESP","id.resp_p":53,"proto":"udp","trans_id":36329,"rtt":0.0008699893951416016,"query":"ise.wrccdc.org","qclass":1,"qclass_name":"C_INTERNET","qtype":1,"qtype_name":"A","rcode":0,"rcode_name":"NOERROR","AA":false,"TC":false,"RD":true,"RA":true,"Z":0,"answers":["ise.wrccdc.cpp.edu","134.71.3.16"],"TTLs":[2230.0,41830.0],"rejected":false}"#;

/// 1,000 records of one shape, over a few hundred distinct addresses.
fn records(kind: &str) -> Vec<Vec<u8>> {
    if let Ok(dir) = std::env::var("ZEEK_LOGS_DIR") {
        let path = std::path::Path::new(&dir).join(format!("{kind}.json.gz"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
        return reader
            .split(b'\n')
            .take(1_000)
            .map(|l| l.unwrap())
            .collect();
    }
    let template = if kind == "ssl" { SSL } else { DNS };
    (0..1_000)
        .map(|i| {
            let resp = match i % 4 {
                0 => format!("81.2.69.{}", i % 200),
                1 => format!("89.160.20.{}", i % 150),
                2 => format!("203.0.113.{}", i % 100),
                _ => format!("2001:db8::{:x}", i % 50),
            };
            // A few hundred names, as in a DNS log.
            let query = format!("host{}.site{}.example.co.uk", i % 40, i % 7);
            template
                .replace("RESP", &resp)
                .replace("ise.wrccdc.org", &query)
                .into_bytes()
        })
        .collect()
}

/// The core as configured by default (`domains` on) or with `[domains]` and
/// `[urls]` off.
fn enricher(rt: &tokio::runtime::Runtime, domains: bool) -> (Arc<Enricher>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    mmdb::write_atomically(
        &city,
        &mmdb::city_db_bytes(&mmdb::standard_city(), 1_700_000_000),
    )
    .unwrap();
    mmdb::write_atomically(
        &asn,
        &mmdb::asn_db_bytes(&mmdb::standard_asn(), 1_700_000_000),
    )
    .unwrap();
    let mut c = Config::default();
    c.geoip.city = Some(city);
    c.geoip.asn = Some(asn);
    c.geoip.reload_interval_ms = 0;
    c.dns.enabled = false;
    c.fields.by_type.insert(
        "dns".into(),
        ["id.orig_h", "id.resp_h", "answers"]
            .map(String::from)
            .to_vec(),
    );
    if !domains {
        c.domains.fields.clear();
        c.domains.ptr_registered_domain = false;
        c.urls.fields.clear();
        c.urls.with_host.clear();
    }
    let core = rt.block_on(async { enricher::core::build(&c).unwrap() });
    (core.enricher.clone(), dir)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (without_domains, _dir2) = enricher(&rt, false);
    let (enricher, _dir) = enricher(&rt, true);
    for kind in ["ssl", "dns"] {
        let records = records(kind);
        let bytes: usize = records.iter().map(Vec::len).sum();
        // Warm L1 (and the name caches).
        rt.block_on(async {
            let mut s = Scratch::default();
            let mut out = Vec::new();
            for r in &records {
                for e in [&enricher, &without_domains] {
                    out.clear();
                    e.enrich(r, &mut s, &mut out).await.unwrap();
                }
            }
        });
        let mut group = c.benchmark_group(kind);
        group.throughput(Throughput::Elements(records.len() as u64));
        let wanted = Wanted::new(
            "_path",
            &["id.orig_h", "id.resp_h", "srcip", "dstip", "answers"],
        );
        let limits = Limits::default();
        group.bench_function("parse", |b| {
            let mut s = Scan::default();
            b.iter(|| {
                for r in &records {
                    scan(r, &wanted, &limits, &mut s).unwrap();
                }
            })
        });
        group.bench_function("enrich_warm", |b| {
            // As a worker's enrichment lane: with the per-thread front.
            let mut s = Scratch::with_front();
            let mut out = Vec::with_capacity(bytes * 2);
            b.iter(|| {
                out.clear();
                for r in &records {
                    let ready = enricher.enrich_cached(r, &mut s, &mut out).unwrap();
                    debug_assert_eq!(ready, Ready::Done);
                }
            })
        });
        // The same, with `[domains]` and `[urls]` off: the difference is the
        // cost of the query-domain enrichment.
        group.bench_function("enrich_warm_no_domains", |b| {
            let mut s = Scratch::with_front();
            let mut out = Vec::with_capacity(bytes * 2);
            b.iter(|| {
                out.clear();
                for r in &records {
                    let ready = without_domains.enrich_cached(r, &mut s, &mut out).unwrap();
                    debug_assert_eq!(ready, Ready::Done);
                }
            })
        });
        group.bench_function("splice", |b| {
            let splicer = Splicer::new(&["id.orig_h", "id.resp_h"], Naming::Flat, "_", "_enr");
            let mut fb = FragmentBuilder::default();
            fb.str(Attr::Country, "GB");
            fb.str(Attr::City, "London");
            fb.uint(Attr::Asn, 64500);
            fb.str(Attr::Org, "Example Org");
            let fragment = fb.build();
            let mut out = Vec::with_capacity(bytes * 2);
            b.iter(|| {
                out.clear();
                for r in &records {
                    let mut s = splicer.begin(r, r.len() - 1, 10, &mut out);
                    s.field(1, &fragment, &[]);
                    s.finish();
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

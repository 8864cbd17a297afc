//! Threat intelligence at scale: loading one million mixed indicators, and
//! what matching them adds to a warm record (same records, same warm L1,
//! with and without the set): conn records (addresses), and a mix of conn,
//! dns (`query`), http (`host` + `uri`, `referrer`) and files (`md5`,
//! `sha1`, `sha256`) records, about 2% of them matching. Without the set,
//! the worker reads no hash field (as without `intel.files`). Targets: load
//! under 3 s and 300 MB; at most 0.3 µs added per record.
//!
//! `cargo bench -p enricher --bench intel`

#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enricher::config::Config;
use enricher::enrich::{EnrichOptions, Enricher, Ready, Scratch};
use enricher::geoip::GeoIp;
use enricher::intel::IntelSet;

const CONN: &str = r#"{"_path":"conn","ts":1700000000.5,"uid":"C1","id.orig_h":"ORIG","id.orig_p":1234,"id.resp_h":"RESP","id.resp_p":443,"proto":"tcp","service":"ssl","duration":0.25,"orig_bytes":512,"resp_bytes":4096,"conn_state":"SF"}"#;

/// One million indicators: a Zeek file of addresses and subnets of several
/// lengths, a CSV of domains and URLs, a plain list of hashes.
fn write_million(dir: &Path) -> Vec<PathBuf> {
    let zeek = dir.join("a.intel");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&zeek).unwrap());
    writeln!(
        f,
        "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc"
    )
    .unwrap();
    for i in 0u32..400_000 {
        let [a, b, c, d] = (0x0b00_0000u32 + i * 7).to_be_bytes();
        writeln!(f, "{a}.{b}.{c}.{d}\tIntel::ADDR\tfeed{}\tC2 node", i % 7).unwrap();
    }
    for i in 0u32..100_000 {
        let [a, b, c, _] = (0x3000_0000u32 + (i << 8)).to_be_bytes();
        let len = [24, 22, 20, 16][i as usize % 4];
        writeln!(f, "{a}.{b}.{c}.0/{len}\tIntel::SUBNET\tranges\tbad range").unwrap();
    }
    for i in 0u32..50_000 {
        writeln!(f, "2001:db8:{:x}::/48\tIntel::SUBNET\tranges\tv6", i).unwrap();
    }
    drop(f);
    let csv = dir.join("b.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(f, "indicator,type,source,desc").unwrap();
    for i in 0..250_000 {
        writeln!(f, "bad{i}.example.net,domain,dfeed,phishing").unwrap();
    }
    for i in 0..100_000 {
        writeln!(f, "http://evil{i}.example.org/p/{i},url,ufeed,drop").unwrap();
    }
    drop(f);
    let hashes = dir.join("c.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&hashes).unwrap());
    for i in 0u64..100_000 {
        writeln!(
            f,
            "{:064x}",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
        .unwrap();
    }
    drop(f);
    vec![zeek, csv, hashes]
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn records() -> Vec<Vec<u8>> {
    (0..1_000)
        .map(|i| {
            CONN.replace("ORIG", &format!("10.1.{}.{}", i % 8, i % 250))
                .replace("RESP", &format!("81.2.{}.{}", i % 16, i % 200))
                .into_bytes()
        })
        .collect()
}

/// Conn, dns, http and files records in turn; every fiftieth four match
/// indicators of `write_million` (a domain, a URL, a hash; conn does not).
fn mixed_records() -> Vec<Vec<u8>> {
    (0..1_000u64)
        .map(|i| {
            let hit = (i / 4) % 50 == 0;
            let orig = format!("10.1.{}.{}", i % 8, i % 250);
            let resp = format!("81.2.{}.{}", i % 16, i % 200);
            let common = format!(r#""ts":1700000000.5,"uid":"C{i}","id.orig_h":"{orig}","id.orig_p":1234,"id.resp_h":"{resp}","id.resp_p":443"#);
            let r = match i % 4 {
                0 => format!(r#"{{"_path":"conn",{common},"proto":"tcp","service":"ssl","duration":0.25,"conn_state":"SF"}}"#),
                1 => {
                    let query = if hit {
                        format!("www.bad{i}.example.net")
                    } else {
                        format!("host{}.corp.example.com", i % 300)
                    };
                    format!(r#"{{"_path":"dns",{common},"proto":"udp","trans_id":1234,"query":"{query}","qtype_name":"A","rcode_name":"NOERROR"}}"#)
                }
                2 => {
                    let (host, uri) = if hit {
                        (format!("evil{i}.example.org"), format!("/p/{i}"))
                    } else {
                        (format!("cdn{}.example.com", i % 200), format!("/static/{}.js", i % 500))
                    };
                    format!(r#"{{"_path":"http",{common},"method":"GET","host":"{host}","uri":"{uri}","referrer":"https://www.example.com/","status_code":200}}"#)
                }
                _ => {
                    let n = if hit { i } else { 1_000_000 + i };
                    let sha256 = format!("{:064x}", u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    format!(r#"{{"_path":"files",{common},"fuid":"F{i}","mime_type":"application/pdf","md5":"{:032x}","sha1":"{:040x}","sha256":"{sha256}"}}"#, n + 7, n + 11)
                }
            };
            r.into_bytes()
        })
        .collect()
}

/// An enricher without DNS or GeoIP; `hashes` reads the hash fields, as a
/// worker with `intel.files` does.
fn enricher(hashes: bool) -> Arc<Enricher> {
    let mut c = Config::default();
    c.dns.enabled = false;
    let mut opts = EnrichOptions::from_config(&c);
    if hashes {
        opts.hash_fields = c.intel.hash_fields.clone();
    }
    Enricher::new(opts, Arc::new(GeoIp::empty()), None, None).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let files = write_million(dir.path());
    let before = resident_bytes();
    let started = Instant::now();
    let set = Arc::new(IntelSet::load(&files).unwrap());
    let took = started.elapsed();
    let grew = resident_bytes().saturating_sub(before);
    eprintln!(
        "intel: {} indicators loaded in {:.2} s, resident memory +{} MB",
        set.len(),
        took.as_secs_f64(),
        grew / 1_000_000
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let conn = records();
    let mixed = mixed_records();
    let mut group = c.benchmark_group("intel");
    group.throughput(Throughput::Elements(conn.len() as u64));
    for (name, records, lists) in [
        ("warm_record_without_intel", &conn, false),
        ("warm_record_1m_indicators", &conn, true),
        ("mixed_warm_record_without_intel", &mixed, false),
        ("mixed_warm_record_1m_indicators", &mixed, true),
    ] {
        let e = enricher(lists);
        if lists {
            e.set_lists(Some(e.lists(Arc::clone(&set), Vec::new(), "_intel")));
        }
        let mut scratch = Scratch::with_front();
        let mut out = Vec::with_capacity(1 << 20);
        // Warm L1 and the name caches.
        let mut matched = 0;
        rt.block_on(async {
            for r in records {
                e.enrich(r, &mut scratch, &mut out).await.unwrap();
                matched += usize::from(scratch.matched());
            }
        });
        eprintln!(
            "intel: {name}: {matched} of {} records matched",
            records.len()
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for r in records {
                    let ready = e.enrich_cached(r, &mut scratch, &mut out).unwrap();
                    assert_eq!(ready, Ready::Done);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The whole synchronous-then-async enrichment of one record on arbitrary
//! bytes (`Enricher::enrich_cached`, then `Enricher::enrich` on a miss):
//! it never panics, and an enriched record is the original members, byte for
//! byte, followed by enrichment members only.
//!
//! Four set-ups, picked by the input's length so each input always meets the
//! same one: the standard City and ASN fixtures (written once to a temporary
//! directory) or no database; flat or nested naming; provenance on or off.

#![no_main]

use std::sync::{Arc, LazyLock};

use enricher::enrich::{EnrichOptions, Enricher, Ready, Scratch};
use enricher::geoip::{GeoIp, GeoIpOptions};
use enricher::ip::{Locality, Scope};
use enricher::splice::Naming;
use enricher_fuzz::{Parsed, parse};
use libfuzzer_sys::fuzz_target;
use test_support::mmdb;

struct Setup {
    enrichers: Vec<Arc<Enricher>>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    mmdb::write_atomically(
        &city,
        &mmdb::city_db_bytes(&mmdb::standard_city(), 1_700_000_000),
    )
    .expect("write city");
    mmdb::write_atomically(
        &asn,
        &mmdb::asn_db_bytes(&mmdb::standard_asn(), 1_700_000_000),
    )
    .expect("write asn");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let enrichers = [
        (true, Naming::Flat, true, Scope::Public),
        (true, Naming::Nested, false, Scope::All),
        (false, Naming::Flat, true, Scope::Public),
        (true, Naming::Flat, false, Scope::All),
    ]
    .into_iter()
    .map(|(dbs, naming, provenance, scope)| {
        let mut opts = EnrichOptions {
            naming,
            provenance,
            geo_scope: Locality::new(scope, Vec::new()),
            l1_max_entries: 10_000,
            ..EnrichOptions::default()
        };
        opts.geo_attrs.extend([
            enricher::splice::Attr::Location,
            enricher::splice::Attr::CountryName,
        ]);
        let geo = if dbs {
            GeoIp::open(&GeoIpOptions {
                city: Some(city.clone()),
                asn: Some(asn.clone()),
                attrs: opts.geo_attrs.clone(),
                verify: true,
                ..GeoIpOptions::default()
            })
            .expect("fixture databases open")
        } else {
            GeoIp::empty()
        };
        let _guard = runtime.enter();
        Enricher::new(opts, Arc::new(geo), None, None).expect("enricher")
    })
    .collect();
    Setup {
        enrichers,
        runtime,
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let setup = &*SETUP;
    let enricher = &setup.enrichers[data.len() % setup.enrichers.len()];
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    match enricher.enrich_cached(data, &mut scratch, &mut out) {
        Ok(Ready::Done) => {}
        Ok(Ready::Pending) => {
            assert!(out.is_empty(), "Pending leaves the output alone");
            setup
                .runtime
                .block_on(enricher.enrich(data, &mut scratch, &mut out))
                .expect("a record that scanned once scans again");
        }
        Err(_) => {
            assert!(out.is_empty(), "a refused record writes nothing");
            return;
        }
    }
    check(data, &out);
});

fn check(data: &[u8], out: &[u8]) {
    let body = out.strip_suffix(b"\n").expect("one line per record");
    let close = data
        .iter()
        .rposition(|&b| b == b'}')
        .expect("a closing brace");
    assert!(out.starts_with(&data[..close]), "original bytes kept");
    let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    assert_eq!(
        lines(body),
        lines(&data[..close]),
        "enrichment adds no line break"
    );
    match (parse(data), parse(body)) {
        (Parsed::Object(before), Parsed::Object(after)) => {
            assert!(after.len() >= before.len());
            assert_eq!(after[..before.len()], before[..], "original members kept");
            for (name, _) in &after[before.len()..] {
                assert!(
                    ["id.orig_h", "id.resp_h", "srcip", "dstip", "answers"]
                        .iter()
                        .any(|f| name.starts_with(f)),
                    "unexpected member {name:?}"
                );
            }
        }
        (before, after) => panic!(
            "{before:?} became {after:?}: {}",
            String::from_utf8_lossy(out)
        ),
    }
}

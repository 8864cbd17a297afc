//! GeoIP from written databases, and hot reload.

use std::time::Duration;

use enricher::enrich::Ready;
use test_support::mmdb::{self, CityRecord};

use super::*;

/// Replaces the City database with one, built a day later, that puts
/// 81.2.69.0/24 in Paris.
fn move_to_paris(dbs: &Dbs) {
    let moved = vec![(
        "81.2.69.0/24".parse().unwrap(),
        CityRecord::new("FR", "France", Some("Paris")),
    )];
    mmdb::write_atomically(
        &dbs.city,
        &mmdb::city_db_bytes(&moved, BUILD_EPOCH + 86_400),
    )
    .unwrap();
}

/// Replaces the City database with one, built a second later, that puts
/// 81.2.69.0/24 in Germany, and waits (at most 10 s) until `generation` says
/// the watcher has loaded it.
async fn move_to_germany(dbs: &Dbs, generation: impl Fn() -> u64) {
    let before = generation();
    let moved = vec![(
        "81.2.69.0/24".parse().unwrap(),
        CityRecord::new("DE", "Germany", None),
    )];
    mmdb::write_atomically(&dbs.city, &mmdb::city_db_bytes(&moved, BUILD_EPOCH + 1)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while generation() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher never loaded the new database"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn enriches_flat_fields_and_skips_private_addresses() {
    let dbs = write_dbs();
    let core = build(&config(&dbs, None, None));
    let v = enrich(&core.enricher, &conn("10.1.2.3", "89.160.20.112")).await;
    assert_eq!(v["id.resp_h_country"], "SE");
    assert_eq!(v["id.resp_h_city"], "Linköping");
    assert_eq!(v["id.resp_h_asn"], 29518);
    assert_eq!(v["id.resp_h_org"], "Bredband2 AB");
    assert_eq!(v["id.resp_h_geo_build"], "2023-11-14T22:13:20Z");
    assert!(v.get("id.orig_h_country").is_none());
    assert_eq!(v["id.orig_h_geo_status"], "skipped_private");
    // A public address the database does not know.
    let v = enrich(&core.enricher, &conn("10.1.2.3", "198.51.100.7")).await;
    assert_eq!(v["id.resp_h_geo_status"], "no_record");
    // JSON escaping of database strings.
    let v = enrich(&core.enricher, &conn("10.1.2.3", "203.0.113.9")).await;
    assert_eq!(v["id.resp_h_org"], "Example \"Quoted\" Org");
}

#[tokio::test]
async fn a_corrupt_database_at_start_is_a_config_error() {
    let dbs = write_dbs();
    for bad in [
        mmdb::garbage(4096),
        mmdb::truncated(&std::fs::read(&dbs.city).unwrap()),
        mmdb::corrupt_metadata(&std::fs::read(&dbs.city).unwrap()),
        mmdb::corrupt_data(&std::fs::read(&dbs.city).unwrap()),
    ] {
        mmdb::write_atomically(&dbs.city, &bad).unwrap();
        let err = core::build(&config(&dbs, None, None)).unwrap_err();
        assert_eq!(err.key, "geoip.city", "{err}");
        assert!(!err.to_string().contains('\n'));
    }
    // An ASN file where the City one belongs.
    std::fs::copy(&dbs.asn, &dbs.city).unwrap();
    let err = core::build(&config(&dbs, None, None)).unwrap_err();
    assert!(err.problem.contains("type"), "{err}");
}

#[tokio::test]
async fn a_corrupt_asn_database_at_start_names_its_key_and_file() {
    let dbs = write_dbs();
    let good = std::fs::read(&dbs.asn).unwrap();
    for bad in [
        mmdb::garbage(4096),
        mmdb::truncated(&good),
        mmdb::corrupt_metadata(&good),
        mmdb::corrupt_data(&good),
    ] {
        mmdb::write_atomically(&dbs.asn, &bad).unwrap();
        let err = core::build(&config(&dbs, None, None)).unwrap_err();
        assert_eq!(err.key, "geoip.asn", "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&path_of(&dbs.asn)) && message.contains("not a usable asn database"),
            "{message}"
        );
    }
}

#[test]
fn a_corrupt_database_stops_the_binary_with_exit_64_and_one_line() {
    let dbs = write_dbs();
    let good = std::fs::read(&dbs.city).unwrap();
    mmdb::write_atomically(&dbs.city, &mmdb::corrupt_data(&good)).unwrap();
    for args in [
        vec!["pipe", "--geoip-city", &path_of(&dbs.city), "--no-dns"],
        vec![
            "run",
            "--geoip-city",
            &path_of(&dbs.city),
            "--no-dns",
            "--input-topic",
            "t",
        ],
    ] {
        let out = super::pipe::run(&args, b"{}\n");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(out.stdout.is_empty(), "nothing read or written");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("geoip.city")
                && stderr.contains(&path_of(&dbs.city))
                && stderr.contains("verify failed"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_corrupt_replacement_is_rejected_and_the_old_database_keeps_serving() {
    let dbs = write_dbs();
    let core = build(&config(&dbs, None, None));
    let geo = core.enricher.geoip().clone();
    let record = conn("10.0.0.1", "81.2.69.142");
    assert_eq!(
        enrich(&core.enricher, &record).await["id.resp_h_country"],
        "GB"
    );
    let good = std::fs::read(&dbs.city).unwrap();
    let good_asn = std::fs::read(&dbs.asn).unwrap();
    // Each check uses an address not looked up before, so the answer comes
    // from the database in use and not from L1.
    for (n, bad) in [
        mmdb::truncated(&good),
        mmdb::garbage(100),
        mmdb::corrupt_data(&good),
        mmdb::corrupt_metadata(&good),
        Vec::new(),
    ]
    .into_iter()
    .enumerate()
    {
        mmdb::write_atomically(&dbs.city, &bad).unwrap();
        assert_eq!(geo.reload_changed(), 0);
        let fresh = conn("10.0.0.1", &format!("81.2.69.{}", 10 + n));
        assert_eq!(
            enrich(&core.enricher, &fresh).await["id.resp_h_city"],
            "London"
        );
    }
    // The ASN database likewise, and a file that is gone is no replacement.
    for (n, bad) in [mmdb::corrupt_data(&good_asn), mmdb::truncated(&good_asn)]
        .into_iter()
        .enumerate()
    {
        mmdb::write_atomically(&dbs.asn, &bad).unwrap();
        assert_eq!(geo.reload_changed(), 0);
        let fresh = conn("10.0.0.1", &format!("89.160.20.{}", 10 + n));
        assert_eq!(
            enrich(&core.enricher, &fresh).await["id.resp_h_org"],
            "Bredband2 AB"
        );
    }
    std::fs::remove_file(&dbs.asn).unwrap();
    assert_eq!(geo.reload_changed(), 0);
    let fresh = conn("10.0.0.1", "89.160.20.20");
    assert_eq!(enrich(&core.enricher, &fresh).await["id.resp_h_asn"], 29518);
    // A good replacement is swapped in, and cached entries are rebuilt from it.
    let generation = geo.generation();
    move_to_paris(&dbs);
    assert_eq!(geo.reload_changed(), 1);
    assert!(geo.generation() > generation);
    let v = enrich(&core.enricher, &record).await;
    assert_eq!(v["id.resp_h_country"], "FR");
    assert_eq!(v["id.resp_h_city"], "Paris");
    assert_eq!(v["id.resp_h_geo_build"], "2023-11-15T22:13:20Z");
}

#[tokio::test]
async fn the_watcher_swaps_a_replaced_file_while_lookups_continue() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.geoip.reload_interval_ms = 20;
    let core = build(&c);
    let geo = core.enricher.geoip().clone();
    let enricher = core.enricher.clone();
    let lookups = tokio::spawn(async move {
        let mut countries = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let v = enrich(&enricher, &conn("10.0.0.1", "81.2.69.142")).await;
            countries.insert(v["id.resp_h_country"].as_str().unwrap().to_string());
            tokio::task::yield_now().await;
        }
        countries
    });
    move_to_germany(&dbs, || geo.generation()).await;
    let countries = lookups.await.unwrap();
    assert!(
        countries.iter().all(|c| c == "GB" || c == "DE"),
        "{countries:?}"
    );
    assert_eq!(
        enrich(&core.enricher, &conn("10.0.0.1", "81.2.69.142")).await["id.resp_h_country"],
        "DE"
    );
}

#[tokio::test]
async fn the_watcher_keeps_serving_through_a_corrupt_file_and_takes_the_next_good_one() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.geoip.reload_interval_ms = 20;
    let core = build(&c);
    let geo = core.enricher.geoip().clone();
    let generation = geo.generation();
    let good = std::fs::read(&dbs.city).unwrap();
    mmdb::write_atomically(&dbs.city, &mmdb::corrupt_data(&good)).unwrap();
    // Fresh addresses over a dozen watcher intervals: the old database answers.
    for n in 0..50 {
        let record = conn("10.0.0.1", &format!("81.2.69.{}", 100 + n));
        assert_eq!(
            enrich(&core.enricher, &record).await["id.resp_h_city"],
            "London"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(geo.generation(), generation, "the corrupt file was refused");
    move_to_germany(&dbs, || geo.generation()).await;
    assert_eq!(
        enrich(&core.enricher, &conn("10.0.0.1", "81.2.69.142")).await["id.resp_h_country"],
        "DE"
    );
}

#[tokio::test]
async fn the_consumer_threads_front_sees_a_replaced_database_at_once() {
    let dbs = write_dbs();
    let core = build(&config(&dbs, None, None));
    let geo = core.enricher.geoip().clone();
    let record = conn("10.0.0.1", "81.2.69.142");
    enrich(&core.enricher, &record).await;
    // The worker's scratch: its front now holds the address.
    let mut scratch = Scratch::with_front();
    let cached = |scratch: &mut Scratch| {
        let mut out = Vec::new();
        let ready = core
            .enricher
            .enrich_cached(record.as_bytes(), scratch, &mut out)
            .unwrap();
        assert_eq!(ready, Ready::Done);
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    assert_eq!(cached(&mut scratch)["id.resp_h_city"], "London");
    assert_eq!(cached(&mut scratch)["id.resp_h_city"], "London");
    move_to_paris(&dbs);
    assert_eq!(geo.reload_changed(), 1);
    // Well within the front's one-second refresh: the generation check
    // sends the read to L1, which rebuilds the entry.
    assert_eq!(cached(&mut scratch)["id.resp_h_city"], "Paris");
}

//! The Redis tier against a real redis-server.

use std::time::Duration;

use enricher::cache::CircuitState;
use test_support::{Answer, Behaviour, DnsServer, RedisServer};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_worker_is_warm_from_redis() {
    let redis = RedisServer::start().unwrap();
    let dns = DnsServer::start(
        Behaviour::default().with_override("10.0.0.9".parse().unwrap(), Answer::NxDomain),
    )
    .await
    .unwrap();
    let dbs = write_dbs();
    let c = config(&dbs, Some(dns.addr()), Some(redis.url()));
    let first = build(&c);
    let addrs: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}")).collect();
    for a in &addrs {
        assert_eq!(
            enrich(&first.enricher, &conn(a, "10.0.0.1")).await["id.orig_h_tier"],
            "dns"
        );
    }
    wait_for("the L2 writes", || dbsize(&redis) == 9).await;
    // The negative answer carries its own TTL into Redis.
    let ttl: u64 = redis
        .command(&["TTL", "enr:ptr:10.0.0.9"])
        .unwrap()
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!((3_590..=3_600).contains(&ttl), "nxdomain TTL {ttl}");
    let queries = dns.queries();
    let second = build(&c);
    for a in &addrs {
        let v = enrich(&second.enricher, &conn(a, "10.0.0.1")).await;
        assert_eq!(v["id.orig_h_tier"], "l2", "{a}");
    }
    assert_eq!(
        enrich(&second.enricher, &conn("10.0.0.9", "10.0.0.1")).await["id.orig_h_ptr_status"],
        "nxdomain"
    );
    assert_eq!(
        dns.queries(),
        queries,
        "the second worker asked DNS nothing"
    );
    assert_eq!(second.enricher.stats().snapshot().cache.l2_hits, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_changes_nothing_but_provenance() {
    let mut redis = RedisServer::start().unwrap();
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let with_redis = build(&config(&dbs, Some(dns.addr()), Some(redis.url())));
    let reference = build(&config(&dbs, Some(dns.addr()), None));
    let records: Vec<String> = (0..60)
        .map(|i| conn(&format!("10.1.0.{}", i % 40), "89.160.20.112"))
        .collect();
    let mut compared = 0;
    for (i, record) in records.iter().enumerate() {
        if i == 20 {
            redis.stop();
        }
        let got = enrich(&with_redis.enricher, record).await;
        let want = enrich(&reference.enricher, record).await;
        assert_eq!(
            without(&got, "_tier"),
            without(&want, "_tier"),
            "record {i}"
        );
        compared += 1;
    }
    assert_eq!(compared, 60);
    assert!(with_redis.enricher.stats().snapshot().cache.l2_unavailable > 0);
    // Fresh addresses while Redis is down: the circuit opens, lookups go on.
    for i in 0..20 {
        let v = enrich(
            &with_redis.enricher,
            &conn(&format!("10.2.0.{i}"), "10.0.0.1"),
        )
        .await;
        assert_eq!(v["id.orig_h_tier"], "dns");
        assert!(v["id.orig_h_ptr"].is_string());
    }
    let l2 = with_redis.enricher.clone();
    // Redis back: the circuit closes by itself and writes land again.
    redis.restart().unwrap();
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        i += 1;
        enrich(
            &l2,
            &conn(&format!("10.3.{}.{}", i / 250, i % 250), "10.0.0.1"),
        )
        .await;
        if dbsize(&redis) > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never used again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_when_redis_is_unreachable_from_the_start() {
    let port = test_support::free_port();
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let mut c = config(
        &dbs,
        Some(dns.addr()),
        Some(format!("redis://127.0.0.1:{port}/")),
    );
    c.redis.failure_threshold = 1;
    let core = build(&c);
    let started = std::time::Instant::now();
    for i in 0..50 {
        let v = enrich(&core.enricher, &conn(&format!("10.4.0.{i}"), "10.0.0.1")).await;
        assert!(v["id.orig_h_ptr"].is_string());
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no stall behind a dead Redis"
    );
    let redis_state = {
        let l2 = enricher::cache::RedisCache::start(enricher::cache::RedisOptions {
            url: format!("redis://127.0.0.1:{port}/"),
            failure_threshold: 1,
            ..Default::default()
        })
        .unwrap();
        let _ = l2.get("10.0.0.1".parse().unwrap()).await;
        l2.state()
    };
    assert_eq!(redis_state, CircuitState::Open);
}

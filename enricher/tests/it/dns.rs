//! Reverse DNS against a real DNS server on loopback.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use enricher::enrich::Ready;
use test_support::{Answer, Behaviour, DnsServer, synth_name};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_lookups_of_one_address_reach_the_server_once() {
    let dns = DnsServer::start(Behaviour::default().with_latency(Duration::from_millis(100)))
        .await
        .unwrap();
    let dbs = write_dbs();
    let core = build(&config(&dbs, Some(dns.addr()), None));
    let record = conn("10.0.0.1", "10.0.0.1");
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let e = core.enricher.clone();
            let record = record.clone();
            tokio::spawn(async move { enrich(&e, &record).await })
        })
        .collect();
    for task in tasks {
        let v = task.await.unwrap();
        assert_eq!(v["id.orig_h_ptr"], "host-10-0-0-1.example.test");
    }
    assert_eq!(dns.queries_for(ip("10.0.0.1")), 1);
    assert_eq!(dns.queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_in_two_seconds_never_holds_a_record_past_the_deadline() {
    let dns = DnsServer::start(Behaviour::default().with_latency(Duration::from_secs(2)))
        .await
        .unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.dns.timeout_ms = 5_000;
    c.cache.lookup_deadline_ms = 200;
    let core = build(&c);
    let started = Instant::now();
    let v = enrich(&core.enricher, &conn("10.0.0.7", "81.2.69.142")).await;
    let waited = started.elapsed();
    // The bound is the configured deadline; the margin only absorbs scheduling.
    assert!(waited < Duration::from_millis(1_200), "held {waited:?}");
    assert_eq!(v["id.orig_h_ptr_status"], "timeout");
    assert_eq!(v["id.resp_h_country"], "GB", "GeoIP is not held up by DNS");
    assert_eq!(core.enricher.stats().deadline_hit.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_marked_and_negative_answers_are_cached() {
    let behaviour = Behaviour::default()
        .with_override(ip("10.0.0.2"), Answer::NxDomain)
        .with_override(ip("10.0.0.3"), Answer::ServFail)
        .with_override(ip("10.0.0.4"), Answer::Silence)
        .with_override(ip("10.0.0.5"), Answer::Name("evil\"name ,\"x\":1".into()))
        .with_override(
            ip("10.0.0.6"),
            Answer::Name(format!("{}.example", "a".repeat(60))),
        );
    let dns = DnsServer::start(behaviour).await.unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.dns.max_name_len = 40;
    let core = build(&c);
    let want = [
        ("10.0.0.1", None, Some("host-10-0-0-1.example.test")),
        ("10.0.0.2", Some("nxdomain"), None),
        ("10.0.0.3", Some("servfail"), None),
        ("10.0.0.4", Some("timeout"), None),
        ("10.0.0.5", Some("invalid"), None),
        ("10.0.0.6", Some("invalid"), None),
    ];
    for round in 0..2 {
        for (addr, status, name) in want {
            let v = enrich(&core.enricher, &conn(addr, "81.2.69.142")).await;
            assert_eq!(v["id.orig_h_ptr_status"].as_str(), status, "{addr}");
            assert_eq!(v["id.orig_h_ptr"].as_str(), name, "{addr}");
            assert_eq!(
                v["id.orig_h_tier"],
                if round == 0 { "dns" } else { "l1" },
                "{addr}"
            );
        }
    }
    // One query per address: failures are cached too.
    for (addr, ..) in want {
        assert_eq!(dns.queries_for(ip(addr)), 1, "{addr}");
    }
    let s = core.enricher.stats().snapshot();
    assert_eq!(
        (
            s.dns.ok,
            s.dns.nxdomain,
            s.dns.servfail,
            s.dns.timeout,
            s.dns.invalid
        ),
        (2, 1, 1, 1, 2),
        "81.2.69.142 has a PTR too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_upstream_queries_and_marks_the_rest_over_budget() {
    let dns = DnsServer::start(Behaviour::default().with_latency(Duration::from_millis(20)))
        .await
        .unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.dns.qps = 20;
    c.dns.burst = 5;
    c.dns.budget_wait_ms = 0;
    let core = build(&c);
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let e = core.enricher.clone();
            tokio::spawn(async move {
                enrich(
                    &e,
                    &conn(&format!("10.9.{}.{}", i / 200, i % 200), "10.0.0.1"),
                )
                .await
            })
        })
        .collect();
    let mut over = 0;
    for task in tasks {
        if task.await.unwrap()["id.orig_h_ptr_status"] == "over_budget" {
            over += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 5.0 + 20.0 * elapsed + 1.0;
    let sent = dns.queries() as f64;
    assert!(
        sent <= allowed,
        "{sent} queries in {elapsed:.2}s, budget allows {allowed:.0}"
    );
    assert!(over >= 150, "{over} records marked over_budget");
    assert_eq!(
        core.enricher.stats().snapshot().dns.over_budget as usize,
        over
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptr_scope_rules_are_separate_from_geoip() {
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.dns.scope = enricher::ip::Scope::Private;
    c.dns.skip_cidrs = vec!["10.99.0.0/16".parse().unwrap()];
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.1.1.1", "81.2.69.142")).await;
    assert_eq!(
        v["id.orig_h_ptr"],
        synth_name(ip("10.1.1.1")).trim_end_matches('.')
    );
    assert_eq!(v["id.resp_h_ptr_status"], "skipped_public");
    assert_eq!(v["id.resp_h_country"], "GB");
    let v = enrich(&core.enricher, &conn("10.99.1.1", "81.2.69.142")).await;
    assert_eq!(v["id.orig_h_ptr_status"], "skipped_cidr");
    assert_eq!(dns.queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_addresses_in_any_form_share_one_lookup() {
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let core = build(&config(&dbs, Some(dns.addr()), None));
    for form in [
        "2001:0db8:0000:0000:0000:0000:1428:57ab",
        "2001:0db8:0:0::1428:57ab",
        "2001:db8::1428:57ab",
        "[2001:db8::1428:57ab]",
    ] {
        let v = enrich(&core.enricher, &conn("10.0.0.1", form)).await;
        assert_eq!(v["id.resp_h_country"], "US", "{form}");
        assert_eq!(
            v["id.resp_h_ptr"],
            synth_name(ip("2001:db8::1428:57ab")).trim_end_matches('.')
        );
        assert_eq!(v["id.resp_h"], form, "the original value is kept");
    }
    assert_eq!(dns.queries_for(ip("2001:db8::1428:57ab")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_receives_one_packet_per_lookup() {
    let dns = DnsServer::start(Behaviour::answering(Answer::Silence))
        .await
        .unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    // Longer than hickory's 333 ms UDP resend interval.
    c.dns.timeout_ms = 1_200;
    c.cache.lookup_deadline_ms = 2_000;
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.0.0.1", "10.0.0.2")).await;
    assert_eq!(v["id.orig_h_ptr_status"], "timeout");
    assert_eq!(dns.queries_for(ip("10.0.0.1")), 1);
    assert_eq!(dns.queries_for(ip("10.0.0.2")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lanes_front_never_serves_an_expired_answer() {
    let behaviour = Behaviour::default().with_override(ip("10.0.0.2"), Answer::NxDomain);
    let dns = DnsServer::start(behaviour).await.unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.dns.nxdomain_ttl_secs = 1;
    let core = build(&c);
    let record = conn("10.0.0.2", "10.0.0.2");
    let filled = Instant::now();
    enrich(&core.enricher, &record).await;
    let mut scratch = Scratch::with_front();
    let mut cached = || {
        let mut out = Vec::new();
        core.enricher
            .enrich_cached(record.as_bytes(), &mut scratch, &mut out)
            .unwrap()
    };
    // Into the front half-way through the answer's one-second life: the
    // front would trust it for another second, the answer only for half.
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(filled.elapsed())).await;
    assert_eq!(cached(), Ready::Done);
    tokio::time::sleep(Duration::from_millis(1_100).saturating_sub(filled.elapsed())).await;
    assert_eq!(cached(), Ready::Pending, "expired, so looked up again");
    enrich(&core.enricher, &record).await;
    assert_eq!(dns.queries_for(ip("10.0.0.2")), 2);
}

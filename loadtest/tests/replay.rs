//! The harness end to end on the embedded mock cluster: synthetic and
//! TSV-recorded logs go through in-process workers and every record is
//! counted at the other end.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use loadtest::cluster::Cluster;
use loadtest::feed::Pace;
use loadtest::run::{self, Plan};
use loadtest::synth::{self, Spec};
use loadtest::{geo, source};
use test_support::{Behaviour, DnsServer};

fn plan<'a>(
    sets: Vec<source::LogSet>,
    config: enricher::config::Config,
    dns: &'a dyn Fn() -> u64,
) -> Plan<'a> {
    Plan {
        sets,
        topic_prefix: "bro_".into(),
        pace: Pace::Rate(5_000.0),
        partitions: Some(3),
        workers_per_topic: 2,
        worker_config: config,
        idle_timeout: Duration::from_secs(30),
        sample_every: Duration::from_millis(250),
        progress: false,
        dns_queries: Some(dns),
    }
}

#[test]
fn a_synthetic_replay_loses_nothing_and_enriches_every_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = geo::write(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = rt
        .block_on(DnsServer::start(
            Behaviour::default().with_mix(loadtest::realistic_dns()),
        ))
        .unwrap();
    let cluster = Cluster::embedded().unwrap();
    let mut config = loadtest::worker_config(&dbs, Some(dns.addr()), None);
    config.dns.qps = 2_000;
    config.dns.burst = 200;
    let spec = Spec {
        records: 6_000,
        addresses: 400,
        ..Spec::default()
    };
    let mut sets = loadtest::sets_of(synth::generate(&spec));
    // One broken record goes to the dead-letter topic, counted, not lost.
    sets[0].push(b"{\"_path\":\"conn\",\"id.orig_h\":".to_vec(), None, false);
    let counter = || dns.queries();
    let (summary, _) = run::execute(&cluster, plan(sets, config, &counter)).unwrap();
    assert_eq!(summary.sent, 6_001);
    assert_eq!(summary.lost, 0, "{}", summary.table());
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(summary.workers, 6);
    for t in &summary.topics {
        assert_eq!(
            t.geo_missing, 0,
            "{}: a public address without a country",
            t.topic
        );
        assert!(t.with_ptr > 0, "{}: some PTR names", t.topic);
    }
    // Six workers, each with its own L1 and no L2: one query per address per worker at most.
    assert!(
        summary.dns.queries > 0 && summary.dns.queries <= 6 * 400,
        "{}",
        summary.dns.queries
    );
    // The ratio itself depends on timing: while an address's first lookup is
    // in flight (20 ms median, longer on a loaded machine) every record
    // carrying it counts an L1 miss, so only its presence is asserted here.
    assert!(
        summary.cache.l1_lookups > 0 && summary.cache.l1_hit_ratio > 0.0,
        "{}",
        summary.table()
    );
    assert!(
        summary
            .sample_record
            .as_deref()
            .is_some_and(|r| r.contains("_country\":"))
    );
    assert!(!summary.timeline.is_empty());
    let svg = dir.path().join("plot.svg");
    loadtest::plot::svg(&svg, "test", &summary.timeline).unwrap();
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn recorded_tsv_logs_replay_as_json_with_their_own_log_types() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = geo::write(dir.path()).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let spec = Spec {
        records: 1_500,
        addresses: 100,
        ..Spec::default()
    };
    for (path, text) in synth::to_tsv(&spec) {
        std::fs::write(logs.join(format!("{path}.log")), text).unwrap();
    }
    let (sets, skipped) = source::load(&[logs]).unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(sets.iter().map(|s| s.records.len()).sum::<usize>(), 1_500);
    let cluster = Cluster::embedded().unwrap();
    let config = loadtest::worker_config(&dbs, None, None);
    let zero = || 0;
    let mut plan = plan(sets, config, &zero);
    plan.pace = Pace::Flat;
    plan.workers_per_topic = 1;
    let (summary, _) = run::execute(&cluster, plan).unwrap();
    assert_eq!(summary.lost, 0, "{}", summary.table());
    assert_eq!(summary.dead_lettered, 0);
    let topics: Vec<&str> = summary.topics.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(topics, ["bro_conn", "bro_dns", "bro_ssl"]);
    assert!(summary.topics.iter().all(|t| t.with_geo > 0));
}

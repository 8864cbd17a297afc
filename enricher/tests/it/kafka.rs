//! The Kafka worker against librdkafka's mock cluster: every record counted
//! by id at the other end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enricher::kafka::{self, Health, RunReport};
use test_support::kafka::{Kafka, MockKafka, count_ids};

use super::*;

/// A worker running in this process on its own thread and runtime.
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    pub(crate) health: Arc<Health>,
    thread: Option<JoinHandle<RunReport>>,
    _core: Core,
    _runtime: tokio::runtime::Runtime,
}

impl Worker {
    pub(crate) fn start(config: &Config) -> Worker {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let core = runtime.block_on(async { core::build(config).unwrap() });
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Health::default());
        let (c, e, h, s, hl) = (
            config.clone(),
            core.enricher.clone(),
            runtime.handle().clone(),
            stop.clone(),
            health.clone(),
        );
        let thread = std::thread::spawn(move || kafka::run(&c, e, h, s, hl).unwrap());
        Worker {
            stop,
            health,
            thread: Some(thread),
            _core: core,
            _runtime: runtime,
        }
    }

    /// SIGTERM's path: drain, commit, leave.
    pub(crate) fn stop(mut self) -> RunReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

pub(crate) fn kafka_config(dbs: &Dbs, kafka: &impl Kafka, topic: &str) -> Config {
    let mut c = config(dbs, None, None);
    c.output.provenance = false;
    c.kafka.brokers = kafka.bootstrap().to_string();
    c.kafka.group_id = format!("g-{topic}");
    c.kafka.input_topic = topic.to_string();
    c.worker.commit_interval_ms = 200;
    c.worker.stats_interval_ms = 500;
    c.worker.shutdown_grace_ms = 5_000;
    c.kafka
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    c.kafka
        .consumer_properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    c
}

pub(crate) fn records(from: u64, to: u64) -> Vec<String> {
    (from..to)
        .map(|id| {
            let resp =
                ["81.2.69.142", "89.160.20.112", "203.0.113.9", "10.0.0.1"][(id % 4) as usize];
            format!(
                r#"{{"_path":"conn","id":{id},"id.orig_h":"10.1.{}.{}","id.resp_h":"{resp}"}}"#,
                id / 250 % 250,
                id % 250
            )
        })
        .collect()
}

pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_clean_run_produces_every_record_once_and_commits_the_high_watermark() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = "bro_conn_clean";
    kafka.create_topic(topic, 3).unwrap();
    kafka.create_topic(&format!("{topic}_enr"), 3).unwrap();
    let dbs = write_dbs();
    let c = kafka_config(&dbs, &kafka, topic);
    let n = 3_000;
    kafka.produce(topic, 3, records(0, n)).unwrap();
    let w = Worker::start(&c);
    let out = kafka
        .read_all(&format!("{topic}_enr"), n as usize, Duration::from_secs(30))
        .unwrap();
    let (ids, dups) = count_ids(&out, "id");
    assert_eq!(ids.len() as u64, n, "every id out");
    assert_eq!(dups, 0);
    let with_country = out
        .iter()
        .filter(|r| r.text().contains("\"id.resp_h_country\":"))
        .count();
    assert_eq!(with_country as u64, n / 4 * 3, "enriched");
    // Keys are kept; records carry no trailing newline.
    assert!(
        out.iter()
            .all(|r| r.key.is_some() && !r.text().ends_with('\n'))
    );
    let high = kafka.high_watermarks(topic, 3).unwrap();
    wait_until("the commits", Duration::from_secs(10), || {
        kafka.committed(&c.kafka.group_id, topic, 3).unwrap() == high
    });
    wait_until("readiness", Duration::from_secs(10), || w.health.ready());
    assert!(w.health.alive());
    let report = w.stop();
    assert_eq!(report.consumed, n);
    assert_eq!(report.produced, n);
    assert_eq!(kafka.committed(&c.kafka.group_id, topic, 3).unwrap(), high);
}

#[test]
fn every_enrich_threads_setting_produces_every_record_once() {
    // 0: enrich on the consumer thread; 2 lanes over 3 partitions: one lane
    // takes two partitions.
    for threads in [0, 2] {
        let kafka = MockKafka::start(1).unwrap();
        let topic = format!("bro_conn_lanes_{threads}");
        kafka.create_topic(&topic, 3).unwrap();
        kafka.create_topic(&format!("{topic}_enr"), 3).unwrap();
        kafka.create_topic(&format!("{topic}_dlq"), 1).unwrap();
        let dbs = write_dbs();
        let mut c = kafka_config(&dbs, &kafka, &topic);
        c.worker.enrich_threads = threads;
        let n = 2_000;
        let mut input = records(0, n);
        input[7] = "{\"id\":7,".to_string();
        kafka.produce(&topic, 3, input).unwrap();
        let w = Worker::start(&c);
        let out = kafka
            .read_all(
                &format!("{topic}_enr"),
                n as usize - 1,
                Duration::from_secs(30),
            )
            .unwrap();
        let (ids, dups) = count_ids(&out, "id");
        assert_eq!(
            ids.len() as u64,
            n - 1,
            "every id out but the broken one ({threads} threads)"
        );
        assert_eq!(dups, 0);
        assert!(!ids.contains(&7));
        let dead = kafka
            .read_all(&format!("{topic}_dlq"), 1, Duration::from_secs(10))
            .unwrap();
        assert_eq!(dead.len(), 1);
        let high = kafka.high_watermarks(&topic, 3).unwrap();
        wait_until("the commits", Duration::from_secs(10), || {
            kafka.committed(&c.kafka.group_id, &topic, 3).unwrap() == high
        });
        let report = w.stop();
        assert_eq!(report.consumed, n);
        assert_eq!(report.produced, n - 1);
        assert_eq!(report.dead_lettered, 1);
    }
}

#[test]
fn poison_records_are_dead_lettered_with_their_reason_and_the_partition_moves_on() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = "bro_conn_poison";
    for t in [topic, "bro_conn_poison_enr", "bro_conn_poison_dlq"] {
        kafka.create_topic(t, 1).unwrap();
    }
    let dbs = write_dbs();
    let mut c = kafka_config(&dbs, &kafka, topic);
    c.input.max_record_bytes = 100_000;
    let mut input: Vec<Vec<u8>> = records(0, 10).into_iter().map(String::into_bytes).collect();
    input.insert(3, b"{\"id\":\"truncated".to_vec());
    input.insert(6, b"\xff\xfe not utf8".to_vec());
    input.insert(
        8,
        format!("{{\"a\":\"{}\"}}", "x".repeat(200_000)).into_bytes(),
    );
    kafka.produce(topic, 1, &input).unwrap();
    let w = Worker::start(&c);
    let dlq = kafka
        .read_all(&format!("{topic}_dlq"), 3, Duration::from_secs(30))
        .unwrap();
    let out = kafka
        .read_all(&format!("{topic}_enr"), 10, Duration::from_secs(30))
        .unwrap();
    assert_eq!(out.len(), 10);
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| r.header("enricher.reason").unwrap())
        .collect();
    assert_eq!(reasons, ["truncated", "invalid_utf8", "too_large"]);
    assert_eq!(
        dlq[0].payload.as_deref(),
        Some(&b"{\"id\":\"truncated"[..]),
        "original bytes"
    );
    assert_eq!(
        dlq[1].header("enricher.source.offset").as_deref(),
        Some("6")
    );
    assert_eq!(
        dlq[1].header("enricher.source.topic").as_deref(),
        Some(topic)
    );
    assert_eq!(
        dlq[1].header("enricher.source.partition").as_deref(),
        Some("0")
    );
    wait_until(
        "the commit past the poison",
        Duration::from_secs(10),
        || {
            kafka
                .committed(&c.kafka.group_id, topic, 1)
                .unwrap()
                .get(&0)
                == Some(&13)
        },
    );
    w.stop();
}

#[test]
fn graceful_shutdown_commits_what_was_produced_and_a_restart_resumes() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = "bro_conn_graceful";
    kafka.create_topic(topic, 2).unwrap();
    kafka.create_topic("bro_conn_graceful_enr", 2).unwrap();
    let dbs = write_dbs();
    let c = kafka_config(&dbs, &kafka, topic);
    kafka.produce(topic, 2, records(0, 2_000)).unwrap();
    let w = Worker::start(&c);
    wait_until("some output", Duration::from_secs(20), || {
        !kafka
            .read_all(&format!("{topic}_enr"), 1, Duration::from_millis(500))
            .unwrap()
            .is_empty()
    });
    kafka.produce(topic, 2, records(2_000, 4_000)).unwrap();
    let first = w.stop();
    let committed: i64 = kafka
        .committed(&c.kafka.group_id, topic, 2)
        .unwrap()
        .values()
        .sum();
    assert_eq!(
        committed as u64, first.produced,
        "committed exactly what was produced"
    );
    let w = Worker::start(&c);
    let out = kafka
        .read_all(&format!("{topic}_enr"), 4_000, Duration::from_secs(30))
        .unwrap();
    let (ids, dups) = count_ids(&out, "id");
    assert_eq!(ids.len(), 4_000);
    assert_eq!(dups, 0, "a graceful stop leaves nothing to redo");
    w.stop();
}

/// A mock cluster with `topic` and its output (two partitions each), and a
/// worker config that looks up PTRs at a loopback DNS server answering after
/// `latency`, with no budget in the way.
struct WithDns {
    kafka: MockKafka,
    dns: test_support::DnsServer,
    config: Config,
    _dbs: Dbs,
    _runtime: tokio::runtime::Runtime,
}

fn with_dns(topic: &str, latency: Duration) -> WithDns {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime
        .block_on(test_support::DnsServer::start(
            test_support::Behaviour::default().with_latency(latency),
        ))
        .unwrap();
    let kafka = MockKafka::start(1).unwrap();
    kafka.create_topic(topic, 2).unwrap();
    kafka.create_topic(&format!("{topic}_enr"), 2).unwrap();
    let dbs = write_dbs();
    let mut config = kafka_config(&dbs, &kafka, topic);
    config.dns.enabled = true;
    config.dns.servers = vec![dns.addr()];
    config.dns.qps = 100_000;
    config.dns.burst = 100_000;
    WithDns {
        kafka,
        dns,
        config,
        _dbs: dbs,
        _runtime: runtime,
    }
}

#[test]
fn preserve_order_keeps_each_partitions_records_in_input_order() {
    let topic = "bro_conn_ordered";
    let mut t = with_dns(topic, Duration::from_millis(20));
    t.config.worker.preserve_order = true;
    // One lane per partition: order holds within each lane.
    t.config.worker.enrich_threads = 2;
    let (kafka, c) = (&t.kafka, &t.config);
    let n = 600;
    // Every 5th record has a fresh address (a 20 ms lookup); the rest hit L1.
    let input: Vec<String> = (0..n)
        .map(|id| {
            let orig = if id % 5 == 0 {
                format!("10.7.{}.{}", id / 250, id % 250)
            } else {
                "10.8.0.1".to_string()
            };
            format!(r#"{{"id":{id},"id.orig_h":"{orig}"}}"#)
        })
        .collect();
    kafka.produce(topic, 2, &input).unwrap();
    let w = Worker::start(c);
    let out = kafka
        .read_all(&format!("{topic}_enr"), n, Duration::from_secs(30))
        .unwrap();
    w.stop();
    assert_eq!(out.len(), n);
    for p in 0..2 {
        let ids: Vec<u64> = out
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| {
                count_ids(std::slice::from_ref(r), "id")
                    .0
                    .into_iter()
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids.len(), n / 2, "same partition number as the input");
        assert!(ids.iter().all(|id| id % 2 == p as u64));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in input order"
        );
    }
    assert!(out.iter().all(|r| r.text().contains("_ptr")));
}

#[test]
fn the_total_in_flight_limit_holds_records_back_and_loses_none() {
    let topic = "bro_conn_bounded";
    let mut t = with_dns(topic, Duration::from_millis(100));
    t.config.dns.max_in_flight = 1_000;
    t.config.worker.max_in_flight = 40;
    t.config.worker.max_in_flight_per_partition = 40;
    let (kafka, dns, c) = (&t.kafka, &t.dns, &t.config);
    // Every record has an address of its own, so each one waits on its own
    // lookup: the queries held at the server are the records in flight.
    let n = 400;
    let input: Vec<String> = (0..n)
        .map(|id| {
            format!(
                r#"{{"id":{id},"id.orig_h":"10.9.{}.{}"}}"#,
                id / 250,
                id % 250
            )
        })
        .collect();
    kafka.produce(topic, 2, &input).unwrap();
    let w = Worker::start(c);
    let out = kafka
        .read_all(&format!("{topic}_enr"), n, Duration::from_secs(60))
        .unwrap();
    let report = w.stop();
    let (ids, dups) = count_ids(&out, "id");
    assert_eq!(ids.len(), n, "every id out");
    assert_eq!(dups, 0);
    assert_eq!(report.consumed, n as u64);
    let peak = dns.peak_in_flight();
    assert!(
        (1..=40).contains(&peak),
        "{peak} lookups at once with 40 records allowed in flight"
    );
    assert!(
        out.iter().all(|r| r.text().contains("_ptr")),
        "every lookup answered"
    );
}

#[test]
fn passthrough_copies_every_record_unchanged_including_bad_ones() {
    let kafka = MockKafka::start(1).unwrap();
    let topic = "bro_conn_passthrough";
    kafka.create_topic(topic, 2).unwrap();
    kafka.create_topic(&format!("{topic}_enr"), 2).unwrap();
    let dbs = write_dbs();
    let mut c = kafka_config(&dbs, &kafka, topic);
    c.worker.passthrough = true;
    let mut input = records(0, 500);
    input.push(r#"{"id":500,"broken"#.to_string());
    kafka.produce(topic, 2, &input).unwrap();
    let w = Worker::start(&c);
    let out = kafka
        .read_all(
            &format!("{topic}_enr"),
            input.len(),
            Duration::from_secs(30),
        )
        .unwrap();
    let report = w.stop();
    assert_eq!(out.len(), input.len());
    let mut texts: Vec<String> = out.iter().map(|r| r.text()).collect();
    texts.sort();
    input.sort();
    assert_eq!(texts, input, "byte for byte, nothing dead-lettered");
    assert_eq!(report.dead_lettered, 0);
}

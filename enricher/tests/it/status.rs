//! `enricher status` against a real broker: lag in records and seconds from
//! committed offsets and record timestamps, dead letters, the exit code.

use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use test_support::kafka::{Kafka, MockKafka};

/// Five records per partition, one a second from `base` (Unix millis).
fn feed(kafka: &MockKafka, topic: &str, partitions: i32, base: i64) {
    let producer = kafka.producer().unwrap();
    for p in 0..partitions {
        for i in 0..5 {
            let payload = format!("{{\"p\":{p},\"i\":{i}}}");
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to(topic)
                        .partition(p)
                        .payload(payload.as_bytes())
                        .timestamp(base + i * 1_000),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn commit(kafka: &MockKafka, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

fn status(kafka: &MockKafka, extra: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(["status", "--brokers", kafka.bootstrap(), "--json"])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text} / {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn status_reads_lag_in_records_and_seconds_dead_letters_and_fails_the_check_when_behind() {
    let kafka = MockKafka::start(1).unwrap();
    for (t, n) in [
        ("st_conn", 2),
        ("st_conn_enr", 2),
        ("st_conn_dlq", 1),
        ("st_lone", 1),
    ] {
        kafka.create_topic(t, n).unwrap();
    }
    let base = 1_700_000_000_000;
    feed(&kafka, "st_conn", 2, base);
    kafka.produce("st_conn_dlq", 1, ["x", "y", "z"]).unwrap();
    // Partition 0 committed up to offset 2 (records 0 and 1 done), partition
    // 1 all the way.
    commit(&kafka, "enricher-st_conn", "st_conn", &[(0, 2), (1, 5)]);

    let (code, json) = status(&kafka, &["--max-lag-secs", "10"]);
    assert_eq!(code, 0, "{json}");
    let topics = json["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1, "only pairs with an _enr topic: {json}");
    let t = &topics[0];
    assert_eq!(t["topic"], "st_conn");
    assert_eq!(t["output"], "st_conn_enr");
    assert_eq!(t["group"], "enricher-st_conn");
    assert_eq!(t["lag_records"], 3);
    assert_eq!(t["dead_letters"], 3);
    // The newest record (offset 4, base + 4 s) minus the newest committed
    // past (offset 1, base + 1 s).
    assert_eq!(t["lag_seconds"], 3.0, "{t}");
    assert_eq!(t["partitions"][1]["lag_seconds"], 0.0, "caught up reads 0");
    assert_eq!(t["partitions"][0]["committed"], 2);
    assert_eq!(t["partitions"][0]["high_watermark"], 5);

    let (code, _) = status(&kafka, &["--max-lag-secs", "2.5"]);
    assert_eq!(code, 1, "over --max-lag-secs");
    let (_, json) = status(&kafka, &["--topics", "st_c"]);
    assert_eq!(
        json["topics"].as_array().unwrap().len(),
        0,
        "the whole name must match"
    );

    commit(&kafka, "enricher-st_conn", "st_conn", &[(0, 5)]);
    let (code, json) = status(&kafka, &["--max-lag-secs", "0"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["topics"][0]["lag_records"], 0);
    assert_eq!(json["topics"][0]["lag_seconds"], 0.0);

    // A topic a shared worker serves: its group is the one that committed.
    for (t, n) in [("st_ntp", 1), ("st_ntp_enr", 1)] {
        kafka.create_topic(t, n).unwrap();
    }
    feed(&kafka, "st_ntp", 1, base);
    commit(&kafka, "enricher-small", "st_ntp", &[(0, 4)]);
    let templates = [
        "--group-template",
        "enricher-{topic}",
        "--group-template",
        "enricher-small",
    ];
    let (_, json) = status(&kafka, &templates);
    let topics = json["topics"].as_array().unwrap();
    let group = |topic: &str| {
        let t = topics.iter().find(|t| t["topic"] == topic).unwrap();
        (t["group"].clone(), t["lag_records"].clone())
    };
    assert_eq!(group("st_conn"), ("enricher-st_conn".into(), 0.into()));
    assert_eq!(group("st_ntp"), ("enricher-small".into(), 1.into()));
}

#[test]
fn status_watch_prints_rates_between_refreshes_and_a_bad_regex_is_a_usage_error() {
    let kafka = MockKafka::start(1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(["status", "--brokers", kafka.bootstrap(), "--topics", "("])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    for t in ["st_dns", "st_dns_enr"] {
        kafka.create_topic(t, 1).unwrap();
    }
    let opts = enricher::status::StatusOptions {
        brokers: kafka.bootstrap().to_string(),
        properties: Default::default(),
        topics: None,
        group_templates: vec!["enricher-{topic}".into()],
        stall_after: Duration::ZERO,
    };
    let mut status = enricher::status::Status::new(opts).unwrap();
    let first = status.refresh().unwrap();
    assert_eq!(
        first.topics[0].in_per_sec, None,
        "no rate before a second refresh"
    );
    feed(&kafka, "st_dns", 1, 1_700_000_000_000);
    let second = status.refresh().unwrap();
    let t = &second.topics[0];
    assert!(t.in_per_sec.is_some_and(|r| r > 0.0), "{t:?}");
    assert_eq!(t.out_per_sec, Some(0.0));
    assert!(
        t.partitions[0].stalled,
        "lag and no commit since the last refresh"
    );
    assert!(second.table().contains("st_dns -> st_dns_enr"));
}

//! The alerts topic (`kafka.intel_topic_template`): a worker given
//! indicator files (`--intel`) produces each record that matched to its
//! input topic's alerts topic as well as to the output, and commits its
//! offset only once both deliveries are acknowledged. Against the mock
//! cluster and tansu: a clean run (every id out, exactly the matched ids in
//! the alerts topic, committed to the end) and a SIGKILL mid-stream with a
//! replacement (nothing lost from either topic); against the mock only, a
//! broker outage that fails alert deliveries (sent again by the worker), and
//! a worker joining and leaving (the revoke and shutdown drains wait for the
//! output delivery behind each alert).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use test_support::kafka::{Kafka, MockKafka, Tansu, count_ids};

use super::chaos::metric;
use super::faults::{
    Feeder, MOCK_JOIN, Proc, every_id_out, sum, topics, wait_committed_to_end, wait_for_output,
    wait_spread, write_run_config,
};
use super::kafka::{Worker, kafka_config, records, wait_until};
use super::*;

/// The one indicator: `records` gives every fourth record (`id % 4 == 2`)
/// this responder.
const INDICATOR: &str = "203.0.113.9";

/// Whether the record with this id matches [`INDICATOR`].
fn matches(id: u64) -> bool {
    id % 4 == 2
}

/// Writes the indicator file next to the fixtures.
fn write_intel(dbs: &Dbs) -> PathBuf {
    let path = dbs.dir.path().join("feed.txt");
    std::fs::write(&path, format!("# test feed\n{INDICATOR}\n")).unwrap();
    path
}

/// Creates the input, output and alerts topics; the alerts topic has one
/// partition, fewer than the input, so alerts are not pinned to theirs.
fn alert_topics(kafka: &impl Kafka, topic: &str, partitions: i32) {
    topics(kafka, topic, partitions);
    kafka.create_topic(&format!("{topic}_intel"), 1).unwrap();
}

/// A worker of `topic` with the indicator file.
fn spawn(name: &str, kafka: &impl Kafka, topic: &str, dbs: &Dbs) -> Proc {
    let config = write_run_config(dbs);
    let intel = write_intel(dbs);
    Proc::spawn_with(
        name,
        kafka,
        topic,
        &config,
        &["--no-dns", "--intel", &path_of(&intel)],
    )
}

/// Reads the whole alerts topic; returns its ids and how many records it
/// holds, after checking that every one of them carries the match.
fn alerts(kafka: &impl Kafka, topic: &str) -> (BTreeSet<u64>, usize) {
    let alerts = format!("{topic}_intel");
    let total = sum(&kafka.high_watermarks(&alerts, 1).unwrap()) as usize;
    let out = kafka
        .read_all(&alerts, total, Duration::from_secs(10))
        .unwrap();
    assert_eq!(out.len(), total, "read the whole alerts topic");
    assert!(
        out.iter().all(|r| r.text().contains("\"_intel\":[")),
        "every alert carries its matches"
    );
    let (ids, _) = count_ids(&out, "id");
    (ids, total)
}

/// Records `0..n` produced, a worker run over them: every id in the output,
/// exactly the matched ids in the alerts topic, committed to the end, and
/// the alerts counted.
fn a_clean_run_alerts_exactly_the_matches(kafka: &impl Kafka, topic: &str, n: u64) {
    let partitions = 2;
    alert_topics(kafka, topic, partitions);
    kafka.produce(topic, partitions, records(0, n)).unwrap();
    let dbs = write_dbs();
    let w = spawn("clean", kafka, topic, &dbs);
    let group = format!("g-{topic}");
    wait_committed_to_end(kafka, &group, topic, partitions);
    let expected: BTreeSet<u64> = (0..n).filter(|&id| matches(id)).collect();
    let label = format!("topic=\"{topic}\"");
    wait_until("the alerts counted", Duration::from_secs(10), || {
        let body = w.get("/metrics").1;
        metric(&body, "enricher_intel_alerts_total", &[&label]) == Some(expected.len() as f64)
    });
    w.stop();
    let dups = every_id_out(kafka, topic, partitions, n, "clean run with alerts");
    assert!(dups.is_empty(), "{} duplicates", dups.len());
    let (ids, total) = alerts(kafka, topic);
    assert_eq!(ids, expected, "exactly the matched ids are alerts");
    assert_eq!(total, expected.len(), "each alert once");
}

/// Every matched id of `0..n` is in the alerts topic, and nothing else;
/// returns how many alerts are repeats.
fn every_alert_out(kafka: &impl Kafka, topic: &str, n: u64, what: &str) -> usize {
    let (ids, total) = alerts(kafka, topic);
    let expected: BTreeSet<u64> = (0..n).filter(|&id| matches(id)).collect();
    let missing: Vec<&u64> = expected.difference(&ids).take(10).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} matched ids missing from the alerts topic, first {missing:?}",
        expected.len() - expected.intersection(&ids).count()
    );
    assert!(
        ids.is_subset(&expected),
        "{what}: only matched records are alerts"
    );
    println!(
        "{what}: {n} fed, {} alerts expected, {total} in the alerts topic",
        expected.len()
    );
    total - ids.len()
}

/// A worker fed in the background, SIGKILLed with records produced and not
/// committed, then replaced: every id comes out of the output topic and
/// every matched id out of the alerts topic (repeats allowed), and no
/// record that did not match is an alert.
fn a_killed_worker_loses_no_alert(kafka: &impl Kafka, topic: &str, n: u64) {
    let partitions = 2;
    alert_topics(kafka, topic, partitions);
    let dbs = write_dbs();
    let group = format!("g-{topic}");
    let feeder = Feeder::start(kafka, topic, partitions, 0..n);
    let first = spawn("doomed", kafka, topic, &dbs);
    let committed = || {
        sum(&kafka
            .committed(&group, topic, partitions)
            .unwrap_or_default())
    };
    let alerted = || {
        sum(&kafka
            .high_watermarks(&format!("{topic}_intel"), 1)
            .unwrap_or_default())
    };
    let out = || {
        sum(&kafka
            .high_watermarks(&format!("{topic}_enr"), partitions)
            .unwrap_or_default())
    };
    wait_until("a commit and some alerts", Duration::from_secs(30), || {
        committed() > 0 && alerted() > 0
    });
    wait_until("uncommitted output", Duration::from_secs(15), || {
        out() > committed()
    });
    first.kill();
    let second = spawn("replacement", kafka, topic, &dbs);
    let fed = feeder.finish();
    wait_committed_to_end(kafka, &group, topic, partitions);
    second.stop();
    every_id_out(kafka, topic, partitions, fed, "SIGKILL with alerts");
    every_alert_out(kafka, topic, fed, "SIGKILL with alerts");
}

#[test]
fn a_clean_run_sends_exactly_the_matched_records_to_the_alerts_topic() {
    let kafka = MockKafka::start(1).unwrap();
    a_clean_run_alerts_exactly_the_matches(&kafka, "malerts", 2_000);
}

#[test]
fn tansu_a_clean_run_sends_exactly_the_matched_records_to_the_alerts_topic() {
    let kafka = Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)");
    a_clean_run_alerts_exactly_the_matches(&kafka, "talerts", 1_000);
}

#[test]
fn a_killed_worker_is_replaced_and_no_alert_or_record_is_lost() {
    let kafka = MockKafka::start(1).unwrap();
    a_killed_worker_loses_no_alert(&kafka, "malertkill", 10_000);
}

#[test]
fn tansu_a_killed_worker_is_replaced_and_no_alert_or_record_is_lost() {
    let kafka = Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)");
    a_killed_worker_loses_no_alert(&kafka, "talertkill", 3_000);
}

/// Deliveries timing out in a broker outage while alerts and outputs are
/// in flight: the worker sends failed alert deliveries again to the alerts
/// topic, and every record and every alert comes out.
#[test]
fn deliveries_that_time_out_in_an_outage_lose_no_alert() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("malertoutage", 2);
    alert_topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let mut c = kafka_config(&dbs, &kafka, topic);
    c.intel.files = vec![write_intel(&dbs)];
    // librdkafka gives up on a record after a second; the worker must not.
    c.kafka
        .producer_properties
        .insert("message.timeout.ms".into(), "1000".into());
    let feeder = Feeder::start(&kafka, topic, partitions, 0..10_000);
    let w = Worker::start(&c);
    wait_for_output(&kafka, topic, partitions);
    // A slow round trip first, so that produce requests are surely in
    // flight when the broker goes down.
    let cluster = kafka.cluster();
    super::faults::outage(cluster);
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &c.kafka.group_id, topic, partitions);
    let report = w.stop();
    println!("delivery timeouts with alerts: {report:?}");
    assert!(report.retried > 0, "the outage failed some deliveries");
    every_id_out(
        &kafka,
        topic,
        partitions,
        n,
        "delivery timeouts with alerts",
    );
    every_alert_out(&kafka, topic, n, "delivery timeouts with alerts");
}

/// A second worker joins mid-stream and leaves again (SIGTERM): the
/// first's revoke drain and the second's shutdown drain wait for the output
/// delivery behind each alert; every record and every alert comes out.
#[test]
fn workers_joining_and_leaving_lose_no_alert() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("malertscale", 4);
    alert_topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let group = format!("g-{topic}");
    let feeder = Feeder::start(&kafka, topic, partitions, 0..20_000);
    let first = spawn("first", &kafka, topic, &dbs);
    wait_for_output(&kafka, topic, partitions);
    let second = spawn("second", &kafka, topic, &dbs);
    wait_spread(&[&first, &second], partitions, MOCK_JOIN);
    std::thread::sleep(Duration::from_secs(1));
    second.stop();
    wait_spread(&[&first], partitions, Duration::from_secs(20));
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    first.stop();
    // Repeats are allowed: the mock refuses the revoked member's last
    // commit while the group rebalances (see faults.rs, scaling), so what
    // it did since its last periodic commit is redone.
    every_id_out(&kafka, topic, partitions, n, "join and leave with alerts");
    every_alert_out(&kafka, topic, n, "join and leave with alerts");
}

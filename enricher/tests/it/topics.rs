//! Many topics in one worker (`kafka.input_topics`), against the mock
//! cluster and against tansu: a pattern picks up a topic created after the
//! worker started (and leaves its own outputs alone), each record goes to
//! its own topic's output with its own log type's fields, and a SIGKILL of
//! a worker of three topics loses no id of any of them.

use std::path::PathBuf;
use std::time::Duration;

use test_support::kafka::{Kafka, MockKafka, Tansu};

use super::chaos::metric;
use super::faults::{
    Feeder, MOCK_JOIN, Proc, every_id_out, sum, topics, wait_committed_to_end,
    write_run_config_with,
};
use super::kafka::wait_until;
use super::*;

/// The worker's config file, its metadata refreshed every second so that
/// a pattern sees a new topic soon.
fn write_config(dbs: &Dbs) -> PathBuf {
    write_config_with(dbs, "")
}

/// As [`write_config`], with `extra` TOML tables appended.
pub(super) fn write_config_with(dbs: &Dbs, extra: &str) -> PathBuf {
    let path = write_run_config_with(dbs, extra);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[kafka.consumer_properties]\n",
        "[kafka.consumer_properties]\n\"topic.metadata.refresh.interval.ms\" = \"1000\"\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// DNS records with ids `from..to`, whose `answers` (a field of the `dns`
/// log type only) hold an address.
fn dns_records(from: u64, to: u64) -> Vec<String> {
    (from..to)
        .map(|id| {
            format!(
                r#"{{"_path":"dns","id":{id},"id.orig_h":"10.2.0.{}","id.resp_h":"10.0.0.1","answers":["81.2.69.142"]}}"#,
                id % 250
            )
        })
        .collect()
}

/// A pattern worker started on one topic; a second topic created and fed
/// afterwards is consumed too, each topic's records go to its own output,
/// and the outputs, which the pattern matches, are never consumed.
fn a_pattern_picks_up_a_new_topic(kafka: &impl Kafka, prefix: &str) {
    let (conn, dns, partitions, n) = (format!("{prefix}_conn"), format!("{prefix}_dns"), 2, 400);
    topics(kafka, &conn, partitions);
    kafka
        .produce(&conn, partitions, super::kafka::records(0, n))
        .unwrap();
    let dbs = write_dbs();
    let config = write_config(&dbs);
    let group = format!("g-{prefix}");
    let w = Proc::spawn_topics("pattern", kafka, &group, &format!("^{prefix}_.*"), &config);
    wait_committed_to_end(kafka, &group, &conn, partitions);
    topics(kafka, &dns, partitions);
    kafka.produce(&dns, partitions, dns_records(0, n)).unwrap();
    wait_committed_to_end(kafka, &group, &dns, partitions);
    let mut body = String::new();
    wait_until(
        "both topics in the metrics",
        Duration::from_secs(10),
        || {
            body = w.get("/metrics").1;
            [&conn, &dns].iter().all(|t| {
                let topic = format!("topic=\"{t}\"");
                metric(&body, "enricher_records_total", &[&topic]) == Some(n as f64)
                    && metric(&body, "acker_consumer_lag_records", &[&topic]) == Some(0.0)
            })
        },
    );
    for t in [&conn, &dns] {
        let labels = [format!("topic=\"{t}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            metric(&body, "enricher_records_received_total", &labels),
            Some(n as f64)
        );
    }
    // The outputs match the pattern and are left alone.
    assert_eq!(
        metric(&body, "enricher_records_received_total", &[]),
        Some(2.0 * n as f64)
    );
    assert!(w.logged(
        "A topic the pattern matches is shaped like an output of this worker; not consumed"
    ));
    w.stop();
    for t in [&conn, &dns] {
        let dups = every_id_out(kafka, t, partitions, n, t);
        assert!(dups.is_empty(), "{t}: {} duplicates", dups.len());
    }
    // Each record had its own log type's fields: answers are a dns field.
    let read = |t: &str| {
        kafka
            .read_all(&format!("{t}_enr"), n as usize, Duration::from_secs(10))
            .unwrap()
    };
    assert!(
        read(&dns)
            .iter()
            .all(|r| r.text().contains("\"answers_enr\":["))
    );
    assert!(
        read(&conn)
            .iter()
            .all(|r| !r.text().contains("answers_enr"))
    );
}

/// A worker of three topics fed in the background, SIGKILLed with records
/// produced and not committed, then replaced: every id of every topic
/// comes out, and only what was not committed repeats.
fn a_killed_worker_of_three_topics_loses_no_id(kafka: &impl Kafka, prefix: &str, n: u64) {
    let partitions = 2;
    let names: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|t| format!("{prefix}_{t}"))
        .collect();
    for t in &names {
        topics(kafka, t, partitions);
    }
    let dbs = write_dbs();
    let config = write_config(&dbs);
    let group = format!("g-{prefix}");
    let list = names.join(",");
    let feeders: Vec<Feeder> = names
        .iter()
        .map(|t| Feeder::start(kafka, t, partitions, 0..n))
        .collect();
    let first = Proc::spawn_topics("doomed", kafka, &group, &list, &config);
    let committed = |t: &str| sum(&kafka.committed(&group, t, partitions).unwrap_or_default());
    let out = |t: &str| {
        sum(&kafka
            .high_watermarks(&format!("{t}_enr"), partitions)
            .unwrap_or_default())
    };
    wait_until("a commit on every topic", Duration::from_secs(30), || {
        names.iter().all(|t| committed(t) > 0)
    });
    wait_until("uncommitted output", Duration::from_secs(15), || {
        names.iter().any(|t| out(t) > committed(t))
    });
    first.kill();
    std::thread::sleep(Duration::from_millis(500));
    let uncommitted: i64 = names.iter().map(|t| out(t) - committed(t)).sum();
    let second = Proc::spawn_topics("replacement", kafka, &group, &list, &config);
    let fed: Vec<u64> = feeders.into_iter().map(Feeder::finish).collect();
    for t in &names {
        wait_committed_to_end(kafka, &group, t, partitions);
    }
    second.stop();
    let mut dups = 0;
    for (t, n) in names.iter().zip(fed) {
        dups += every_id_out(
            kafka,
            t,
            partitions,
            n,
            &format!("SIGKILL of a worker of three topics: {t}"),
        )
        .len();
    }
    println!("{uncommitted} produced and not committed at the kill, {dups} redone");
    assert!(
        dups as i64 <= uncommitted.max(0),
        "{dups} redone, more than the {uncommitted} produced and not committed"
    );
}

#[test]
fn a_pattern_worker_picks_up_a_topic_created_after_it_started() {
    let kafka = MockKafka::start(1).unwrap();
    a_pattern_picks_up_a_new_topic(&kafka, "mpattern");
}

#[test]
fn tansu_a_pattern_worker_picks_up_a_topic_created_after_it_started() {
    let kafka = Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)");
    a_pattern_picks_up_a_new_topic(&kafka, "tpattern");
}

#[test]
fn a_killed_worker_of_three_topics_is_replaced_and_every_id_of_every_topic_comes_out() {
    let kafka = MockKafka::start(1).unwrap();
    a_killed_worker_of_three_topics_loses_no_id(&kafka, "mkill", 15_000);
}

#[test]
fn tansu_a_killed_worker_of_three_topics_is_replaced_and_every_id_of_every_topic_comes_out() {
    let kafka = Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)");
    a_killed_worker_of_three_topics_loses_no_id(&kafka, "tkill", 5_000);
}

#[test]
fn topic_settings_that_do_not_fit_exit_64_naming_the_key() {
    for (args, key) in [
        (vec!["run", "--no-dns"], "kafka.input_topic"),
        (
            vec![
                "run",
                "--no-dns",
                "--input-topic",
                "a",
                "--input-topics",
                "b,c",
            ],
            "kafka.input_topics",
        ),
        (
            vec![
                "run",
                "--no-dns",
                "--input-topics",
                "^bro_.*",
                "--output-topic",
                "out",
            ],
            "kafka.output_topic",
        ),
        (
            vec![
                "run",
                "--no-dns",
                "--input-topics",
                "a,b",
                "--dlq-topic",
                "dead",
            ],
            "kafka.dlq_topic",
        ),
        (
            vec!["run", "--no-dns", "--input-topics", "a,a_enr"],
            "kafka.input_topics",
        ),
        (
            vec!["run", "--no-dns", "--input-topics", "^bro_("],
            "kafka.input_topics",
        ),
    ] {
        let out = super::pipe::run(&args, b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
    }
}

#[test]
fn two_workers_of_three_one_partition_topics_both_get_work() {
    let kafka = MockKafka::start(1).unwrap();
    let names: Vec<String> = ["p", "q", "r"].iter().map(|t| format!("rr_{t}")).collect();
    let n = 300;
    for t in &names {
        topics(&kafka, t, 1);
        kafka.produce(t, 1, super::kafka::records(0, n)).unwrap();
    }
    let dbs = write_dbs();
    let config = write_config(&dbs);
    let (group, list) = ("g-rr", names.join(","));
    let a = Proc::spawn_topics("a", &kafka, group, &list, &config);
    let b = Proc::spawn_topics("b", &kafka, group, &list, &config);
    // Range assignment would give every partition 0 to one of them.
    let received = |p: &Proc| metric(&p.get("/metrics").1, "enricher_records_received_total", &[]);
    wait_until("both workers to have taken records", MOCK_JOIN, || {
        received(&a).is_some_and(|v| v > 0.0) && received(&b).is_some_and(|v| v > 0.0)
    });
    for t in &names {
        wait_committed_to_end(&kafka, group, t, 1);
    }
    a.stop();
    b.stop();
    for t in &names {
        every_id_out(&kafka, t, 1, n, t);
    }
}

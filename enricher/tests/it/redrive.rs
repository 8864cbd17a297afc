//! `enricher redrive` against a real broker (the mock cluster and tansu):
//! dead letters with the worker's headers go back to their source topic,
//! counted by id; a second run moves nothing; a dry run moves nothing; the
//! reason and time filters; parking after the last attempt; and dead
//! letters a real worker of two topics wrote, back after a config fix.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use test_support::kafka::{Kafka, MockKafka, Outgoing, Received, Tansu, count_ids};

/// Dead letters as the worker writes them: the original bytes and key, the
/// reason and the source in headers, then the record's own headers (a
/// `test.seq`, and `enricher.redrive.count` when given).
fn dead_letters(
    kafka: &impl Kafka,
    dlq: &str,
    source: &str,
    ids: std::ops::Range<u64>,
    reason: &str,
    count: Option<u32>,
) {
    let messages: Vec<Outgoing> = ids
        .map(|id| {
            let mut headers = vec![
                ("enricher.reason".to_string(), reason.as_bytes().to_vec()),
                ("enricher.error".into(), b"it broke".to_vec()),
                ("enricher.source.topic".into(), source.as_bytes().to_vec()),
                (
                    "enricher.source.partition".into(),
                    (id % 2).to_string().into_bytes(),
                ),
                ("enricher.source.offset".into(), id.to_string().into_bytes()),
                ("test.seq".into(), id.to_string().into_bytes()),
            ];
            if let Some(c) = count {
                headers.push(("enricher.redrive.count".into(), c.to_string().into_bytes()));
            }
            Outgoing {
                partition: 0,
                key: Some(format!("k{id}").into_bytes()),
                payload: Some(format!("{{\"id\":{id},\"bad\":").into_bytes()),
                headers,
            }
        })
        .collect();
    kafka.produce_messages(dlq, &messages).unwrap();
}

fn redrive(kafka: &impl Kafka, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(["redrive", "--brokers", kafka.bootstrap(), "--json"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The whole topic, read until nothing more came for 3 s (so a test sees
/// records beyond those it expects, too).
fn read(kafka: &impl Kafka, topic: &str) -> Vec<Received> {
    kafka
        .read_all(topic, usize::MAX, Duration::from_secs(3))
        .unwrap()
}

/// 20 dead letters of `t_dlq` from `t`: 0..10 never redriven, 10..15
/// redriven twice (one attempt left), 15..20 redriven three times (parked).
fn every_id_back_once_the_rest_parked_and_a_second_run_moves_nothing(kafka: &impl Kafka, t: &str) {
    let dlq = format!("{t}_dlq");
    let parked = format!("{t}_dlq_parked");
    kafka.create_topic(t, 2).unwrap();
    kafka.create_topic(&dlq, 1).unwrap();
    kafka.create_topic(&parked, 1).unwrap();
    dead_letters(kafka, &dlq, t, 0..10, "syntax", None);
    dead_letters(kafka, &dlq, t, 10..15, "truncated", Some(2));
    dead_letters(kafka, &dlq, t, 15..20, "syntax", Some(3));

    let dry = redrive(kafka, &["--from", &dlq, "--dry-run"]);
    assert_eq!(dry["redriven"], 15, "{dry}");
    assert_eq!(dry["parked"], 5, "{dry}");
    assert_eq!(dry["dry_run"], true);
    let group = format!("enricher-redrive-{dlq}");
    assert_eq!(dry["group"], group.as_str());
    assert!(
        kafka.committed(&group, &dlq, 1).unwrap().is_empty(),
        "a dry run commits nothing"
    );
    assert_eq!(
        kafka.high_watermarks(t, 2).unwrap().values().sum::<i64>(),
        0,
        "a dry run moves nothing"
    );

    let report = redrive(kafka, &["--from", &dlq]);
    assert_eq!(report["read"], 20, "{report}");
    assert_eq!(report["redriven"], 15, "{report}");
    assert_eq!(report["parked"], 5, "{report}");
    assert_eq!(report["complete"], true);
    let moved = report["moved"].as_array().unwrap();
    let find = |reason: &str, to: &str| {
        moved
            .iter()
            .find(|m| m["reason"] == reason && m["to"] == to)
            .map(|m| m["records"].as_u64().unwrap())
    };
    assert_eq!(find("syntax", t), Some(10), "{report}");
    assert_eq!(find("truncated", t), Some(5), "{report}");
    assert_eq!(find("syntax", &parked), Some(5), "{report}");

    let back = read(kafka, t);
    let (ids, dups) = count_ids(&back, "id");
    assert_eq!(ids, (0..15).collect(), "every redriven id once");
    assert_eq!(dups, 0);
    for r in &back {
        let id: u64 = r.header("test.seq").unwrap().parse().unwrap();
        assert_eq!(
            r.text(),
            format!("{{\"id\":{id},\"bad\":"),
            "original bytes"
        );
        assert_eq!(r.key.as_deref(), Some(format!("k{id}").as_bytes()));
        assert_eq!(r.partition as u64, id % 2, "back to its source partition");
        let count = if id < 10 { "1" } else { "3" };
        assert_eq!(r.header("enricher.redrive.count").as_deref(), Some(count));
        assert_eq!(
            r.headers
                .iter()
                .filter(|(k, _)| k == "enricher.redrive.count")
                .count(),
            1
        );
        assert_eq!(r.header("enricher.reason"), None, "own headers only");
        assert_eq!(r.header("enricher.source.topic"), None);
    }
    let parked_records = read(kafka, &parked);
    let (ids, _) = count_ids(&parked_records, "id");
    assert_eq!(ids, (15..20).collect());
    assert!(
        parked_records
            .iter()
            .all(|r| r.header("enricher.reason").as_deref() == Some("syntax")),
        "parked as they were"
    );
    assert_eq!(
        kafka.committed(&group, &dlq, 1).unwrap().get(&0),
        Some(&20),
        "committed after delivery"
    );

    let again = redrive(kafka, &["--from", &dlq]);
    assert_eq!(again["read"], 0, "{again}");
    assert_eq!(again["redriven"], 0, "{again}");
    assert_eq!(read(kafka, t).len(), 15, "a second run moves nothing");
}

#[test]
fn redrive_sends_every_dead_letter_back_once_and_parks_after_the_last_attempt() {
    let kafka = MockKafka::start(1).unwrap();
    every_id_back_once_the_rest_parked_and_a_second_run_moves_nothing(&kafka, "rd_conn");
}

#[test]
fn tansu_redrive_sends_every_dead_letter_back_once_and_parks_after_the_last_attempt() {
    let kafka = Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)");
    every_id_back_once_the_rest_parked_and_a_second_run_moves_nothing(&kafka, "rd_tansu");
}

#[test]
fn redrive_filters_by_reason_and_time_each_reason_in_its_own_group_and_stops_at_max() {
    let kafka = MockKafka::start(1).unwrap();
    let (t, dlq) = ("rf_conn", "rf_conn_dlq");
    kafka.create_topic(t, 2).unwrap();
    kafka.create_topic(dlq, 1).unwrap();
    kafka.create_topic("rf_elsewhere", 1).unwrap();
    dead_letters(&kafka, dlq, t, 0..6, "syntax", None);
    dead_letters(&kafka, dlq, t, 6..10, "truncated", None);

    let report = redrive(&kafka, &["--from", dlq, "--reason", "truncated"]);
    assert_eq!(report["group"], "enricher-redrive-rf_conn_dlq-truncated");
    assert_eq!(report["redriven"], 4, "{report}");
    assert_eq!(report["skipped"], 6, "{report}");
    let (ids, _) = count_ids(&read(&kafka, t), "id");
    assert_eq!(ids, (6..10).collect());

    // Records of the future: nothing yet.
    let report = redrive(&kafka, &["--from", dlq, "--since", "2099-01-01T00:00:00Z"]);
    assert_eq!(report["redriven"], 0, "{report}");
    assert_eq!(report["skipped"], 10, "{report}");
    // Up to an hour ago: nothing, and nothing committed past.
    let report = redrive(
        &kafka,
        &["--from", dlq, "--until", "1h", "--group", "rf-until"],
    );
    assert_eq!(report["read"], 0, "{report}");
    assert!(kafka.committed("rf-until", dlq, 1).unwrap().is_empty());

    // Another reason in its own group; --max stops early, --to elsewhere.
    let report = redrive(
        &kafka,
        &[
            "--from",
            dlq,
            "--reason",
            "syntax",
            "--max",
            "2",
            "--to",
            "rf_elsewhere",
        ],
    );
    assert_eq!(report["redriven"], 2, "{report}");
    assert_eq!(report["complete"], false, "{report}");
    let report = redrive(
        &kafka,
        &["--from", dlq, "--reason", "syntax", "--to", "rf_elsewhere"],
    );
    assert_eq!(report["redriven"], 4, "the rest: {report}");
    let (ids, dups) = count_ids(&read(&kafka, "rf_elsewhere"), "id");
    assert_eq!(ids, (0..6).collect());
    assert_eq!(dups, 0);
}

#[test]
fn redrive_of_a_topic_that_does_not_exist_or_a_bad_time_fails_clearly() {
    let kafka = MockKafka::start(1).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_enricher"))
            .args(["redrive", "--brokers", kafka.bootstrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--from", "rx_dlq", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    let out = run(&["--from", "rx_nothing_dlq"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// Dead letters written by a real worker of two topics (records over
/// `input.max_record_bytes`), redriven after the limit is raised: each goes
/// back to its own source topic and the worker enriches it; every id of
/// both topics comes out once.
fn dead_letters_of_a_worker_come_back_after_a_fix(kafka: &impl Kafka, prefix: &str) {
    use super::faults::{Proc, every_id_out, topics, wait_committed_to_end};
    let (partitions, n, big) = (2, 200, 20);
    let names = [format!("{prefix}_a"), format!("{prefix}_b")];
    let pad = "x".repeat(2_000);
    for t in &names {
        topics(kafka, t, partitions);
        kafka.create_topic(&format!("{t}_dlq"), 1).unwrap();
        let records = super::kafka::records(0, n + big)
            .into_iter()
            .enumerate()
            .map(|(id, r)| {
                if id as u64 >= n {
                    format!("{},\"pad\":\"{pad}\"}}", r.trim_end_matches('}'))
                } else {
                    r
                }
            });
        kafka.produce(t, partitions, records).unwrap();
    }
    let dbs = super::write_dbs();
    let group = format!("g-{prefix}");
    let list = names.join(",");
    let strict = super::topics::write_config_with(&dbs, "[input]\nmax_record_bytes = 1000\n");
    let w = Proc::spawn_topics("strict", kafka, &group, &list, &strict);
    for t in &names {
        wait_committed_to_end(kafka, &group, t, partitions);
    }
    w.stop();
    for t in &names {
        let dlq = format!("{t}_dlq");
        let dead = read(kafka, &dlq);
        assert_eq!(dead.len() as u64, big, "{t}");
        assert!(dead.iter().all(|d| {
            d.header("enricher.source.topic").as_deref() == Some(t.as_str())
                && d.header("enricher.reason").as_deref() == Some("too_large")
        }));
        let report = redrive(kafka, &["--from", &dlq]);
        assert_eq!(report["redriven"], big, "{report}");
    }
    let fixed = super::topics::write_config_with(&dbs, "");
    let w = Proc::spawn_topics("fixed", kafka, &group, &list, &fixed);
    for t in &names {
        wait_committed_to_end(kafka, &group, t, partitions);
    }
    w.stop();
    for t in &names {
        let dups = every_id_out(kafka, t, partitions, n + big, &format!("redriven {t}"));
        assert!(dups.is_empty(), "{t}: {} duplicates", dups.len());
    }
}

#[test]
fn dead_letters_of_a_worker_of_two_topics_come_back_after_a_fix() {
    let kafka = MockKafka::start(1).unwrap();
    dead_letters_of_a_worker_come_back_after_a_fix(&kafka, "rdw");
}

#[test]
fn tansu_dead_letters_of_a_worker_of_two_topics_come_back_after_a_fix() {
    let kafka = Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)");
    dead_letters_of_a_worker_come_back_after_a_fix(&kafka, "rdwt");
}

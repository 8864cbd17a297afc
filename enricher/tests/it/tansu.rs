//! The worker against tansu, an independent Kafka-compatible broker in a
//! process of its own (`test_support::kafka::Tansu`): the mock cluster lives
//! inside librdkafka and answers at once, tansu answers at a real broker's
//! pace. Workers run as `enricher run` processes; every test counts records
//! by id at the other end.
//!
//! tansu is installed by `scripts/tansu.sh` (the test command runs it).

use std::time::{Duration, Instant};

use test_support::kafka::{Kafka, Outgoing, Tansu};

use super::faults::{
    Feeder, Proc, every_id_out, sum, topics, wait_committed_to_end, wait_for_output, wait_spread,
    write_run_config, write_run_config_session,
};
use super::kafka::{records, wait_until};
use super::*;

/// Waits until `n` records are in the output topic. While a worker works
/// through a large backlog, tansu answers offset fetches late (tens of
/// seconds), so these tests watch the output's high watermarks instead.
fn wait_output(kafka: &Tansu, topic: &str, partitions: i32, n: u64) {
    let output = format!("{topic}_enr");
    wait_until("the output", Duration::from_secs(90), || {
        kafka
            .high_watermarks(&output, partitions)
            .is_ok_and(|h| sum(&h) as u64 >= n)
    });
}

/// `n` records spread over the partitions, without keys or headers: with a
/// backlog of tens of thousands of keyed records, tansu 0.6.0 leaves fetch
/// requests unanswered until the client times them out (docs/decisions.md).
///
/// Each record is padded to about the size of a Zeek ssl record (600
/// bytes): the broker's answers slow down with the bytes it is sent.
fn produce_unkeyed(kafka: &Tansu, topic: &str, partitions: i32, n: u64) {
    let pad = "x".repeat(500);
    let messages: Vec<Outgoing> = records(0, n)
        .into_iter()
        .enumerate()
        .map(|(i, r)| Outgoing {
            partition: (i % partitions as usize) as i32,
            payload: Some(format!("{},\"pad\":\"{pad}\"}}", r.trim_end_matches('}')).into_bytes()),
            ..Outgoing::default()
        })
        .collect();
    kafka.produce_messages(topic, &messages).unwrap();
}

fn tansu() -> Tansu {
    Tansu::start().expect("starting tansu (scripts/tansu.sh installs it)")
}

/// The value of one series in a Prometheus text body.
fn metric(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l.contains(labels) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn tansu_a_clean_run_counts_every_id_commits_the_end_and_reads_no_lag() {
    let kafka = tansu();
    let (topic, partitions) = ("tansu_clean", 3);
    topics(&kafka, topic, partitions);
    let n = 3_000;
    kafka.produce(topic, partitions, records(0, n)).unwrap();
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let w = Proc::spawn("clean", &kafka, topic, &config);
    wait_committed_to_end(&kafka, &format!("g-{topic}"), topic, partitions);
    // Caught up and quiet: no lag in records or seconds on any partition,
    // while the last record keeps ageing.
    wait_until(
        "lag 0 in records and seconds",
        Duration::from_secs(15),
        || {
            let (_, body) = w.get("/metrics");
            (0..partitions).all(|p| {
                let labels = format!("partition=\"{p}\"");
                metric(&body, "acker_consumer_lag_records", &labels) == Some(0.0)
                    && metric(&body, "acker_timestamp_diff_seconds", &labels) == Some(0.0)
                    && metric(&body, "acker_committed_record_age_seconds", &labels)
                        .is_some_and(|age| age > 0.0)
            })
        },
    );
    w.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "tansu clean").len();
    assert_eq!(dups, 0);
}

#[test]
fn tansu_dead_letters_carry_the_reason_and_the_original_bytes() {
    let kafka = tansu();
    let (topic, partitions) = ("tansu_dlq", 1);
    topics(&kafka, topic, partitions);
    kafka.create_topic(&format!("{topic}_dlq"), 1).unwrap();
    let mut messages: Vec<Outgoing> = records(0, 10)
        .into_iter()
        .map(|r| Outgoing {
            payload: Some(r.into_bytes()),
            ..Outgoing::default()
        })
        .collect();
    messages.insert(
        5,
        Outgoing {
            key: Some(b"poison".to_vec()),
            payload: Some(b"{\"id\":99, not json".to_vec()),
            headers: vec![("trace".into(), b"t-1".to_vec())],
            ..Outgoing::default()
        },
    );
    kafka.produce_messages(topic, &messages).unwrap();
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let w = Proc::spawn("dlq", &kafka, topic, &config);
    wait_committed_to_end(&kafka, &format!("g-{topic}"), topic, partitions);
    w.stop();
    let dead = kafka
        .read_all(&format!("{topic}_dlq"), 1, Duration::from_secs(10))
        .unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.payload.as_deref(), Some(&b"{\"id\":99, not json"[..]));
    assert_eq!(d.key.as_deref(), Some(&b"poison"[..]));
    assert_eq!(d.header("trace").as_deref(), Some("t-1"));
    assert!(d.header("enricher.reason").is_some_and(|r| !r.is_empty()));
    assert_eq!(d.header("enricher.source.topic").as_deref(), Some(topic));
    assert_eq!(d.header("enricher.source.offset").as_deref(), Some("5"));
    every_id_out(&kafka, topic, partitions, 10, "tansu dlq");
}

#[test]
fn tansu_a_killed_worker_is_replaced_and_only_uncommitted_records_repeat() {
    let kafka = tansu();
    let (topic, partitions) = ("tansu_sigkill", 4);
    topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let group = format!("g-{topic}");
    let feeder = Feeder::start(&kafka, topic, partitions, 0..20_000);
    let first = Proc::spawn("doomed", &kafka, topic, &config);
    wait_for_output(&kafka, topic, partitions);
    wait_until("a commit", Duration::from_secs(20), || {
        sum(&kafka.committed(&group, topic, partitions).unwrap()) > 0
    });
    first.kill();
    std::thread::sleep(Duration::from_millis(500));
    let committed_at_kill = sum(&kafka.committed(&group, topic, partitions).unwrap());
    let output = format!("{topic}_enr");
    let out_at_kill = sum(&kafka.high_watermarks(&output, partitions).unwrap());
    let second = Proc::spawn("replacement", &kafka, topic, &config);
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    second.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "tansu SIGKILL").len();
    println!("tansu SIGKILL: {out_at_kill} out, {committed_at_kill} committed at the kill");
    assert!(
        dups as i64 <= (out_at_kill - committed_at_kill).max(0),
        "{dups} redone, more than the {} produced and not committed",
        out_at_kill - committed_at_kill
    );
}

#[test]
fn tansu_two_worker_processes_share_the_partitions_and_one_drains_on_sigterm() {
    let kafka = tansu();
    let (topic, partitions) = ("tansu_rebalance", 4);
    topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let group = format!("g-{topic}");
    let feeder = Feeder::start(&kafka, topic, partitions, 0..20_000);
    let first = Proc::spawn("first", &kafka, topic, &config);
    wait_spread(&[&first], partitions, Duration::from_secs(30));
    let second = Proc::spawn("second", &kafka, topic, &config);
    wait_spread(&[&first, &second], partitions, Duration::from_secs(40));
    wait_for_output(&kafka, topic, partitions);
    // SIGTERM drains: what it produced is committed before it leaves.
    second.stop();
    wait_spread(&[&first], partitions, Duration::from_secs(40));
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    first.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "tansu rebalance").len();
    println!("tansu rebalance: {n} records, {dups} duplicates");
    assert!(dups as u64 <= n / 4, "{dups} duplicates of {n}");
}

#[test]
fn tansu_a_worker_waiting_on_a_slow_broker_burns_no_cpu() {
    // librdkafka's idempotent producer busy-waits while its requests are in
    // flight to a broker slower than itself: a core per worker, 50-73 µs of
    // CPU per record (docs/decisions.md). tansu is such a broker; the mock
    // cluster with an injected round trip is not. The spin needs a worker
    // faster than the broker: the release worker shows it (through
    // loadtest/peer/broker_cpu.py), this debug one only weakly (0.40 s of
    // broker-thread CPU in 7.3 s with idempotence on, 0.09 s off), so the
    // producer's settings are also held by a unit test in kafka.rs.
    let kafka = tansu();
    let (topic, partitions) = ("tansu_spin", 8);
    topics(&kafka, topic, partitions);
    let n = 100_000;
    produce_unkeyed(&kafka, topic, partitions, n);
    let dbs = write_dbs();
    let config = write_run_config_session(&dbs, "", 30_000);
    let started = Instant::now();
    let w = Proc::spawn("spin", &kafka, topic, &config);
    wait_output(&kafka, topic, partitions, n);
    let wall = started.elapsed().as_secs_f64();
    // librdkafka is built optimised in any profile, so its broker threads'
    // CPU means the same in a debug test as in a release worker.
    let (cpu, brokers) = (w.cpu_secs(), w.threads_cpu_secs("rdk:broker"));
    println!(
        "tansu spin: {cpu:.2} s CPU ({brokers:.2} s in librdkafka's broker threads) in {wall:.2} s, \
         {:.1} µs per record",
        cpu * 1e6 / n as f64
    );
    // Spinning, a broker thread used most of a core for the whole run.
    assert!(
        brokers < 0.25 * wall,
        "{brokers:.2} s of broker-thread CPU in {wall:.2} s"
    );
    // Idle, the delivery-report thread waits: rdkafka's own poll thread
    // spun the last millisecond of every 100 ms call (1% of a core, 50 ms
    // in 5 s); the worker's polls once a second (5 ms).
    let before = w.threads_cpu_secs("producer poll");
    std::thread::sleep(Duration::from_secs(5));
    let idle = w.threads_cpu_secs("producer poll") - before;
    println!("tansu spin: the delivery-report thread idle: {idle:.3} s CPU in 5 s");
    assert!(
        idle < 0.025,
        "{idle:.3} s of delivery-report CPU idle in 5 s"
    );
    w.stop();
    every_id_out(&kafka, topic, partitions, n, "tansu spin");
}

/// The broker goes away mid-run for 5 s (`away` stops or kills it) and
/// comes back on its storage: every id comes out, the worker's CPU while
/// the broker is away and its warning lines stay small.
fn broker_away_mid_run(what: &str, topic: &str, away: impl FnOnce(&Tansu)) {
    let kafka = tansu();
    let partitions = 4;
    topics(&kafka, topic, partitions);
    let n = 30_000;
    produce_unkeyed(&kafka, topic, partitions, n);
    let dbs = write_dbs();
    let config = write_run_config_session(&dbs, "", 30_000);
    let w = Proc::spawn(what, &kafka, topic, &config);
    wait_output(&kafka, topic, partitions, 1);
    let cpu_before = w.cpu_secs();
    let since = Instant::now();
    away(&kafka);
    std::thread::sleep(Duration::from_secs(5));
    let cpu_away = w.cpu_secs() - cpu_before;
    kafka.restart().unwrap();
    let back = Instant::now();
    wait_output(&kafka, topic, partitions, n);
    let recovered = back.elapsed();
    let warnings = w.lines_at("WARN") + w.lines_at("ERROR");
    w.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, what).len();
    println!(
        "{what}: {n} records, 0 lost, {dups} duplicates, {cpu_away:.2} s CPU in {:.1?} away, \
         {warnings} warning lines, all out {recovered:.1?} after the restart",
        back - since
    );
    assert!(warnings < 100, "{what}: {warnings} warning lines");
    assert!(
        cpu_away < 2.5,
        "{what}: {cpu_away:.2} s of CPU with the broker away"
    );
}

#[test]
fn tansu_stopped_gracefully_mid_run_and_restarted_loses_nothing_and_logs_a_few_lines() {
    // On SIGTERM tansu answers the produce requests in flight with errors
    // while it stops: the worker used to send each failed record again at
    // once and log each one (81,512 warnings in 10 s).
    broker_away_mid_run("tansu graceful stop", "tansu_stop", Tansu::stop);
}

#[test]
fn tansu_killed_mid_run_and_restarted_loses_nothing_and_logs_a_few_lines() {
    broker_away_mid_run("tansu SIGKILL", "tansu_kill", Tansu::kill);
}

#[test]
fn tansu_not_there_when_the_worker_starts_then_up_loses_nothing() {
    let kafka = tansu();
    let (topic, partitions) = ("tansu_late", 2);
    topics(&kafka, topic, partitions);
    let n = 5_000;
    produce_unkeyed(&kafka, topic, partitions, n);
    kafka.kill();
    let dbs = write_dbs();
    let config = write_run_config_session(&dbs, "", 30_000);
    let w = Proc::spawn("late", &kafka, topic, &config);
    std::thread::sleep(Duration::from_secs(5));
    let cpu_refused = w.cpu_secs();
    kafka.restart().unwrap();
    let back = Instant::now();
    wait_output(&kafka, topic, partitions, n);
    wait_committed_to_end(&kafka, &format!("g-{topic}"), topic, partitions);
    let warnings = w.lines_at("WARN") + w.lines_at("ERROR");
    println!(
        "tansu late: {n} records, {cpu_refused:.2} s CPU in 5 s refused, {warnings} warning lines, \
         all out {:.1?} after the broker came up",
        back.elapsed()
    );
    w.stop();
    every_id_out(&kafka, topic, partitions, n, "tansu late");
    assert!(warnings < 100, "{warnings} warning lines");
    assert!(cpu_refused < 2.5, "{cpu_refused:.2} s of CPU while refused");
}

#[test]
fn tansu_stopping_during_the_workers_drain_ends_it_within_its_grace_and_loses_nothing() {
    let kafka = tansu();
    let (topic, partitions) = ("tansu_drain", 4);
    topics(&kafka, topic, partitions);
    let n = 30_000;
    produce_unkeyed(&kafka, topic, partitions, n);
    let dbs = write_dbs();
    let config = write_run_config_session(&dbs, "", 30_000);
    let mut w = Proc::spawn("draining", &kafka, topic, &config);
    wait_output(&kafka, topic, partitions, 1);
    let since = Instant::now();
    w.terminate();
    std::thread::sleep(Duration::from_secs(1));
    kafka.stop();
    // shutdown_grace_ms is 5 s in the test config, plus 3 s for the last steps.
    let status = w.wait(Duration::from_secs(15));
    let took = since.elapsed();
    let warnings = w.lines_at("WARN") + w.lines_at("ERROR");
    println!("tansu drain: exited with {status} after {took:.1?}, {warnings} warning lines");
    assert!(took < Duration::from_secs(11), "{took:?}");
    assert!(warnings < 100, "{warnings} warning lines");
    assert!(matches!(status.code(), Some(0 | 75)), "{status}");
    // What it left is read again by the next worker.
    kafka.restart().unwrap();
    let next = Proc::spawn("next", &kafka, topic, &config);
    wait_output(&kafka, topic, partitions, n);
    wait_committed_to_end(&kafka, &format!("g-{topic}"), topic, partitions);
    next.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "tansu drain").len();
    println!("tansu drain: {dups} duplicates");
}

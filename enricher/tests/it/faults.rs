//! The Kafka worker under broker faults and under scaling, against
//! librdkafka's mock cluster: injected request errors, every broker down,
//! slow round trips, then real `enricher run` processes joining, leaving
//! and being killed in one group. Every test counts records by id at the
//! other end: every id must be there, and duplicates are counted and bounded.
//!
//! Records are mostly fed at a steady pace from a thread of their own while
//! the fault happens, so the worker is mid-stream; every topic stays well
//! under the mock's 5 MiB / 100,000 records per partition.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr};
use test_support::kafka::{Kafka, MockKafka, count_ids};

use super::kafka::{Worker, kafka_config, records, wait_until};
use super::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Creates `topic` and its output topic with `partitions` partitions each.
pub(super) fn topics(kafka: &impl Kafka, topic: &str, partitions: i32) {
    kafka.create_topic(topic, partitions).unwrap();
    kafka
        .create_topic(&format!("{topic}_enr"), partitions)
        .unwrap();
}

/// Produces records with the ids of `ids` from a thread of its own, a batch
/// every few tens of milliseconds, by id over the partitions, until stopped
/// or the range is done.
pub(super) struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Feeder {
    pub(super) fn start(
        kafka: &impl Kafka,
        topic: &str,
        partitions: i32,
        ids: Range<u64>,
    ) -> Feeder {
        Feeder::start_batched(kafka, topic, partitions, ids, 50)
    }

    /// As [`Feeder::start`], `batch` records per batch (a batch about every
    /// 40 ms), so a long run stays under the mock's per-partition limits.
    pub(super) fn start_batched(
        kafka: &impl Kafka,
        topic: &str,
        partitions: i32,
        ids: Range<u64>,
        batch: u64,
    ) -> Feeder {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap())
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (topic, flag) = (topic.to_string(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let pause = Duration::from_millis(40);
            let mut next = ids.start;
            while !flag.load(Ordering::Relaxed) && next < ids.end {
                let to = (next + batch).min(ids.end);
                for (id, payload) in (next..to).zip(records(next, to)) {
                    let key = id.to_string();
                    let mut record = BaseRecord::to(&topic)
                        .payload(payload.as_bytes())
                        .key(key.as_bytes())
                        .partition((id % partitions as u64) as i32);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                record = r;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err((e, _)) => panic!("feeding record {id}: {e}"),
                        }
                    }
                }
                next = to;
                std::thread::sleep(pause);
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            assert_eq!(producer.in_flight_count(), 0, "fed records not delivered");
            next
        });
        Feeder {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops feeding, waits for every fed record to be delivered, and
    /// returns the id after the last one fed.
    pub(super) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(super) fn sum(offsets: &BTreeMap<i32, i64>) -> i64 {
    offsets.values().sum()
}

/// Waits until the group's commits on `topic` reach its high watermarks.
pub(super) fn wait_committed_to_end(kafka: &impl Kafka, group: &str, topic: &str, partitions: i32) {
    let high = kafka.high_watermarks(topic, partitions).unwrap();
    // A broker busy with a worker's backlog (tansu) may time a request out:
    // that is "not yet", not a failure.
    wait_until(
        "the commits to reach the high watermarks",
        Duration::from_secs(25),
        || {
            kafka
                .committed(group, topic, partitions)
                .is_ok_and(|c| c == high)
        },
    );
}

/// Reads the whole output topic (exactly what its high watermarks say is
/// there), asserts that every id `0..n` came out, and returns the ids that
/// came out more than once (once per extra copy).
pub(super) fn every_id_out(
    kafka: &impl Kafka,
    topic: &str,
    partitions: i32,
    n: u64,
    what: &str,
) -> Vec<u64> {
    let output = format!("{topic}_enr");
    let total = sum(&kafka.high_watermarks(&output, partitions).unwrap()) as usize;
    let out = kafka
        .read_all(&output, total, Duration::from_secs(10))
        .unwrap();
    assert_eq!(out.len(), total, "{what}: read the whole output topic");
    let (ids, _) = count_ids(&out, "id");
    let missing: Vec<u64> = (0..n).filter(|id| !ids.contains(id)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {n} ids missing, first {missing:?}",
        n - ids.len() as u64
    );
    assert_eq!(ids.len() as u64, n, "{what}: no id beyond those fed");
    let mut seen = std::collections::BTreeSet::new();
    let mut repeated = Vec::new();
    for r in &out {
        for id in count_ids(std::slice::from_ref(r), "id").0 {
            if !seen.insert(id) {
                repeated.push(id);
            }
        }
    }
    println!(
        "{what}: {n} records, every id out, {} duplicates",
        repeated.len()
    );
    repeated
}

/// Waits until the worker has produced something (it is mid-stream).
pub(super) fn wait_for_output(kafka: &impl Kafka, topic: &str, partitions: i32) {
    let output = format!("{topic}_enr");
    wait_until("some output", Duration::from_secs(20), || {
        sum(&kafka.high_watermarks(&output, partitions).unwrap()) > 0
    });
}

/// A worker in this process, fed in the background: the frame of the
/// broker-fault tests, which inject their fault between [`Fed::start`] and
/// [`Fed::drain`].
struct Fed {
    kafka: MockKafka,
    topic: &'static str,
    partitions: i32,
    config: Config,
    feeder: Option<Feeder>,
    worker: Worker,
    _dbs: Dbs,
}

impl Fed {
    /// Starts a mock cluster of `brokers`, the topics, a feeder of `ids` and a
    /// worker (its config changed by `tweak`), and waits for the first output.
    fn start(
        brokers: i32,
        topic: &'static str,
        partitions: i32,
        ids: Range<u64>,
        tweak: impl FnOnce(&mut Config),
    ) -> Fed {
        let kafka = MockKafka::start(brokers).unwrap();
        topics(&kafka, topic, partitions);
        let dbs = write_dbs();
        let mut config = kafka_config(&dbs, &kafka, topic);
        tweak(&mut config);
        let feeder = Feeder::start(&kafka, topic, partitions, ids);
        let worker = Worker::start(&config);
        wait_for_output(&kafka, topic, partitions);
        Fed {
            kafka,
            topic,
            partitions,
            config,
            feeder: Some(feeder),
            worker,
            _dbs: dbs,
        }
    }

    /// Stops feeding and waits until the group's commits reach the end of the
    /// input; returns how many records were fed.
    fn drain(&mut self) -> u64 {
        let n = self.feeder.take().map_or(0, Feeder::finish);
        wait_committed_to_end(
            &self.kafka,
            &self.config.kafka.group_id,
            self.topic,
            self.partitions,
        );
        n
    }

    /// Stops the worker and checks that every one of the `n` ids fed came
    /// out; returns its report and the number of duplicates.
    fn stop(self, n: u64, what: &str) -> (enricher::kafka::RunReport, usize) {
        let report = self.worker.stop();
        println!("{what}: {report:?}");
        let dups = every_id_out(&self.kafka, self.topic, self.partitions, n, what).len();
        (report, dups)
    }
}

// ---------------------------------------------------------------------------
// Injected broker faults, one worker in this process
// ---------------------------------------------------------------------------

#[test]
fn failed_offset_commits_are_retried_until_the_commits_reach_the_high_watermark() {
    use RDKafkaRespErr::{
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS as LOADING,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR as NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT as TIMED_OUT,
    };
    let mut fed = Fed::start(1, "faults_commit_errors", 3, 0..15_000, |_| {});
    // Twice, a second apart, so failures hit commits mid-stream.
    for _ in 0..2 {
        fed.kafka.cluster().request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[
                NOT_COORDINATOR,
                TIMED_OUT,
                LOADING,
                NOT_COORDINATOR,
                TIMED_OUT,
            ],
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let n = fed.drain();
    assert!(fed.worker.health.alive());
    let (report, dups) = fed.stop(n, "commit errors");
    assert_eq!(report.consumed, n, "no restart, no redelivery");
    assert_eq!(
        dups, 0,
        "a failed commit redoes nothing while we own the partition"
    );
}

#[test]
fn failed_produce_requests_are_retried_and_every_record_comes_out() {
    use RDKafkaRespErr::{
        RD_KAFKA_RESP_ERR__TRANSPORT as TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION as NOT_LEADER,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT as TIMED_OUT,
    };
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("faults_produce_errors", 3);
    topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let c = kafka_config(&dbs, &kafka, topic);
    // The whole input first: the worker is then the only producer, so the
    // errors meet its requests (a test producer would take them otherwise).
    let n = 18_000;
    kafka.produce(topic, partitions, records(0, n)).unwrap();
    let errors = [
        NOT_LEADER, TIMED_OUT, TRANSPORT, NOT_LEADER, TIMED_OUT, TIMED_OUT, TRANSPORT,
    ];
    kafka
        .cluster()
        .request_errors(RDKafkaApiKey::Produce, &errors);
    let w = Worker::start(&c);
    // Again as soon as the first records are out, while it works through
    // the backlog.
    wait_for_output(&kafka, topic, partitions);
    kafka
        .cluster()
        .request_errors(RDKafkaApiKey::Produce, &errors);
    wait_committed_to_end(&kafka, &c.kafka.group_id, topic, partitions);
    let report = w.stop();
    println!("produce errors: {report:?}");
    assert_eq!(report.consumed, n, "no restart, no redelivery");
    let dups = every_id_out(&kafka, topic, partitions, n, "produce errors").len();
    // Why any: the mock checks producer sequence numbers only for
    // transactional producers, so when `__TRANSPORT` drops a connection, the
    // requests in flight on it that were written but not answered are
    // written again on retry (a real broker drops those as duplicates).
    assert!(dups as u64 <= n / 4, "{dups} duplicates of {n}");
}

#[test]
fn all_brokers_down_for_three_seconds_then_up_loses_nothing() {
    let mut fed = Fed::start(3, "faults_brokers_down", 6, 0..30_000, |_| {});
    let kafka = &fed.kafka;
    std::thread::sleep(Duration::from_millis(500));
    let all_down = kafka.cluster().broker_down(-1).is_ok();
    if !all_down {
        for id in 1..=3 {
            kafka.cluster().broker_down(id).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    if all_down {
        kafka.cluster().broker_up(-1).unwrap();
    } else {
        for id in 1..=3 {
            kafka.cluster().broker_up(id).unwrap();
        }
    }
    // Keep feeding for a while after the outage.
    std::thread::sleep(Duration::from_secs(2));
    let n = fed.drain();
    wait_until("readiness again", Duration::from_secs(10), || {
        fed.worker.health.ready()
    });
    let (_, dups) = fed.stop(n, "brokers down");
    // The group may have expired the member during the outage; then what
    // was in flight and uncommitted is redone, never more than was fed.
    assert!(dups as u64 <= n, "{dups} duplicates of {n}");
}

#[test]
fn deliveries_that_time_out_in_an_outage_are_sent_again_by_the_worker() {
    let mut fed = Fed::start(1, "faults_delivery_timeout", 3, 0..15_000, |c| {
        // librdkafka gives up on a record after a second; the worker must not.
        c.kafka
            .producer_properties
            .insert("message.timeout.ms".into(), "1000".into());
    });
    // A slow round trip first, so that produce requests are surely in flight
    // when the brokers go down, however fast the worker keeps up.
    let cluster = fed.kafka.cluster();
    outage(cluster);
    let n = fed.drain();
    let (report, dups) = fed.stop(n, "delivery timeouts");
    assert!(report.retried > 0, "the outage failed some deliveries");
    // A record that timed out after it was sent may have been written.
    assert!(dups as u64 <= n, "{dups} duplicates of {n}");
}

#[test]
fn a_slow_broker_round_trip_loses_nothing() {
    let mut fed = Fed::start(1, "faults_slow_rtt", 3, 0..15_000, |_| {});
    fed.kafka
        .cluster()
        .broker_round_trip_time(-1, Duration::from_millis(300))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let n = fed.drain();
    let (report, dups) = fed.stop(n, "slow round trip");
    assert_eq!(report.consumed, n);
    assert_eq!(dups, 0);
}

// ---------------------------------------------------------------------------
// Real `enricher run` processes
// ---------------------------------------------------------------------------

/// A free port on loopback (bound, then released for the process to take).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Writes the worker's config file: fast commits, a short session.
pub(super) fn write_run_config(dbs: &Dbs) -> PathBuf {
    write_run_config_with(dbs, "")
}

/// As [`write_run_config`], with `extra` TOML tables (`[dns]`, `[redis]`,
/// ...) appended.
pub(super) fn write_run_config_with(dbs: &Dbs, extra: &str) -> PathBuf {
    write_run_config_session(dbs, extra, 6_000)
}

/// As [`write_run_config_with`], with the consumer group's session timeout
/// in milliseconds: a broker as slow as tansu under a full produce backlog
/// may answer heartbeats later than the tests' usual 6 s.
pub(super) fn write_run_config_session(dbs: &Dbs, extra: &str, session_ms: u64) -> PathBuf {
    let path = dbs.dir.path().join("enricher.toml");
    let text = format!(
        r#"
[geoip]
city = "{}"
asn = "{}"
reload_interval_ms = 0

[worker]
commit_interval_ms = 200
stats_interval_ms = 500
shutdown_grace_ms = 5000
drain_timeout_ms = 5000
progress_log_secs = 3600

[kafka.consumer_properties]
"session.timeout.ms" = "{session_ms}"
"heartbeat.interval.ms" = "500"

{extra}
"#,
        path_of(&dbs.city),
        path_of(&dbs.asn)
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One `enricher run` process; killed (SIGKILL) if still running when dropped.
/// Its log (JSON lines, info) stays in `$CARGO_TARGET_TMPDIR/faults/`.
pub(super) struct Proc {
    pub(super) name: String,
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Proc {
    pub(super) fn spawn(name: &str, kafka: &impl Kafka, topic: &str, config: &Path) -> Proc {
        Proc::spawn_with(name, kafka, topic, config, &["--no-dns"])
    }

    /// As [`Proc::spawn`], with `args` in place of `--no-dns`.
    pub(super) fn spawn_with(
        name: &str,
        kafka: &impl Kafka,
        topic: &str,
        config: &Path,
        args: &[&str],
    ) -> Proc {
        let group = format!("g-{topic}");
        let mut all = vec!["--input-topic", topic];
        all.extend_from_slice(args);
        Proc::launch(name, kafka, &group, config, &all)
    }

    /// A worker of several topics (`--input-topics`, a list or a pattern)
    /// in consumer group `group`, without DNS.
    pub(super) fn spawn_topics(
        name: &str,
        kafka: &impl Kafka,
        group: &str,
        topics: &str,
        config: &Path,
    ) -> Proc {
        Proc::launch(
            name,
            kafka,
            group,
            config,
            &["--input-topics", topics, "--no-dns"],
        )
    }

    fn launch(name: &str, kafka: &impl Kafka, group: &str, config: &Path, args: &[&str]) -> Proc {
        let metrics = free_addr();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}-{name}.log", group.trim_start_matches("g-")));
        let child = Command::new(env!("CARGO_BIN_EXE_enricher"))
            .arg("run")
            .args(["--brokers", kafka.bootstrap()])
            .args(["--group", group])
            .args(args)
            .args(["--metrics-addr", &metrics.to_string()])
            .arg("--config")
            .arg(config)
            .env("ENRICHER_LOG", "info")
            .env("ENRICHER_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            name: name.to_string(),
            child,
            metrics,
            log,
        }
    }

    /// The partitions the process holds now, per its log: those of its last
    /// assignment, or none if it revoked or lost them since.
    pub(super) fn partitions(&self) -> Vec<i32> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut held = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            // JSON logs carry the message and fields at the top level.
            let fields = &v;
            match fields["message"].as_str() {
                Some("Partitions assigned") => {
                    let list = fields["partitions"].as_str().unwrap_or("[]");
                    held = list
                        .trim_matches(['[', ']'])
                        .split(',')
                        .filter_map(|p| p.trim().parse().ok())
                        .collect();
                }
                Some(m)
                    if m.starts_with("Partitions revoked") || m.starts_with("Partitions lost") =>
                {
                    held.clear();
                }
                _ => {}
            }
        }
        held
    }

    /// Whether its log holds an event with this message.
    pub(super) fn logged(&self, message: &str) -> bool {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|v| v["message"].as_str() == Some(message))
    }

    /// Lines of its log at `level` (`WARN`, `ERROR`).
    pub(super) fn lines_at(&self, level: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("\"level\":\"{level}\"");
        text.lines().filter(|l| l.contains(&needle)).count()
    }

    pub(super) fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path).unwrap_or((0, String::new()))
    }

    /// CPU seconds the process has used (user and system), from /proc.
    pub(super) fn cpu_secs(&self) -> f64 {
        cpu_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// CPU seconds used by the process's threads whose name starts with
    /// `prefix` (librdkafka's broker threads are `rdk:broker<id>`).
    pub(super) fn threads_cpu_secs(&self, prefix: &str) -> f64 {
        let dir = format!("/proc/{}/task", self.child.id());
        let Ok(tasks) = std::fs::read_dir(&dir) else {
            return 0.0;
        };
        tasks
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|name| name.starts_with(prefix))
            })
            .map(|t| cpu_of(&t.path().join("stat").display().to_string()))
            .sum()
    }

    /// SIGTERM, without libc.
    pub(super) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", self.name);
    }

    /// Waits for the process to exit, at most `limit`.
    pub(super) fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit, which must be a clean one.
    pub(super) fn stop(mut self) {
        self.terminate();
        let status = self.wait(Duration::from_secs(20));
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    /// SIGKILL: no drain, no final commit.
    pub(super) fn kill(mut self) {
        self.child.kill().unwrap();
        self.wait(Duration::from_secs(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {}'s log ---", self.name);
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// The CPU seconds (user and system) in a `/proc/.../stat` file: after the
/// command name in parentheses, utime and stime are the 12th and 13th
/// fields, in clock ticks (100 a second on Linux).
fn cpu_of(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A tiny HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// How long a worker joining a group that has members may take to get its
/// partitions on librdkafka's mock cluster (2.12.1). The mock ends a
/// group's sync as soon as the leader's SyncGroup arrives, since that sets
/// every member's assignment, and answers a follower whose SyncGroup comes
/// after it with INVALID_REQUEST; the follower joins again and the group
/// rebalances once more, 5 s a round (the session timeout less 1 s). A real
/// broker hands a late follower its assignment. On a busy machine a joining
/// process can lose that race round after round (CI saw five rounds, 25 s):
/// the wait allows a dozen.
pub(super) const MOCK_JOIN: Duration = Duration::from_secs(60);

/// Waits until the processes together hold every partition, each process
/// at least one, and none twice.
pub(super) fn wait_spread(procs: &[&Proc], partitions: i32, limit: Duration) {
    wait_until("the partitions to spread over the processes", limit, || {
        let held: Vec<Vec<i32>> = procs.iter().map(|p| p.partitions()).collect();
        let mut all: Vec<i32> = held.iter().flatten().copied().collect();
        all.sort_unstable();
        held.iter().all(|h| !h.is_empty()) && all == (0..partitions).collect::<Vec<_>>()
    });
    for p in procs {
        println!("{} holds {:?}", p.name, p.partitions());
    }
}

#[test]
fn a_worker_process_serves_its_probes_and_metrics_whose_outcomes_add_up() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("faults_probes", 2);
    topics(&kafka, topic, partitions);
    kafka
        .create_topic(&format!("{topic}_dlq"), partitions)
        .unwrap();
    kafka.produce(topic, partitions, records(0, 500)).unwrap();
    kafka
        .produce(topic, partitions, (0..20).map(|_| "{\"id\":\"truncated"))
        .unwrap();
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let w = Proc::spawn("probes", &kafka, topic, &config);
    wait_until("/healthz 200", Duration::from_secs(10), || {
        w.get("/healthz").0 == 200
    });
    wait_until("/readyz 200", Duration::from_secs(15), || {
        w.get("/readyz").0 == 200
    });
    wait_committed_to_end(&kafka, &format!("g-{topic}"), topic, partitions);
    let metric = |body: &str, name: &str, labels: &[&str]| super::chaos::metric(body, name, labels);
    let mut body = String::new();
    wait_until(
        "every outcome in the metrics",
        Duration::from_secs(10),
        || {
            let (status, b) = w.get("/metrics");
            body = b;
            status == 200
                && metric(&body, "enricher_records_received_total", &[]) == Some(520.0)
                && metric(&body, "enricher_records_total", &[]) == Some(520.0)
        },
    );
    // Received is the sum of the final outcomes: a dead letter counts once,
    // under its reason, and not also as received-and-enriched.
    assert_eq!(
        metric(&body, "enricher_records_total", &[r#"outcome="enriched""#]),
        Some(500.0)
    );
    assert_eq!(
        metric(
            &body,
            "enricher_records_total",
            &[
                r#"outcome="dead_lettered""#,
                r#"reason="truncated""#,
                r#"topic="faults_probes""#
            ]
        ),
        Some(20.0)
    );
    assert!(metric(&body, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 1e6));
    assert!(metric(&body, "process_cpu_seconds_total", &[]).is_some_and(|v| v > 0.0));
    assert!(metric(&body, "process_open_fds", &[]).is_some_and(|v| v > 3.0));
    assert!(body.contains("# HELP process_threads "));
    assert_eq!(w.get("/nope").0, 404);
    w.stop();
    every_id_out(&kafka, topic, partitions, 500, "probes");
}

#[test]
fn scaling_out_to_three_processes_and_back_to_one_loses_nothing() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("faults_scale", 6);
    topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let group = format!("g-{topic}");
    let committed = || sum(&kafka.committed(&group, topic, partitions).unwrap());
    let fed = || sum(&kafka.high_watermarks(topic, partitions).unwrap());
    // Wave 1, to one process.
    let wave = Feeder::start(&kafka, topic, partitions, 0..40_000);
    let first = Proc::spawn("worker-1", &kafka, topic, &config);
    wait_spread(&[&first], partitions, Duration::from_secs(15));
    let backlog = fed();
    wait_until("wave 1's backlog", Duration::from_secs(15), || {
        committed() >= backlog
    });
    let wave_1 = wave.finish();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    // Scale out between waves.
    let second = Proc::spawn("worker-2", &kafka, topic, &config);
    let third = Proc::spawn("worker-3", &kafka, topic, &config);
    wait_spread(&[&first, &second, &third], partitions, MOCK_JOIN);
    // Wave 2, to three processes; scale in while it flows: both extra
    // processes drain, commit and leave, and their partitions go back to
    // the first.
    let since = Instant::now();
    let wave = Feeder::start(&kafka, topic, partitions, wave_1..40_000);
    let backlog = wave_1 as i64 + 1_000;
    wait_until("the three at work", Duration::from_secs(15), || {
        committed() >= backlog
    });
    second.terminate();
    third.terminate();
    for mut p in [second, third] {
        let status = p.wait(Duration::from_secs(20));
        assert!(status.success(), "{} exited with {status}", p.name);
    }
    wait_spread(&[&first], partitions, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let n = wave.finish();
    let rate = (n - wave_1) as f64 / since.elapsed().as_secs_f64();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    first.stop();
    let repeated = every_id_out(&kafka, topic, partitions, n, "scale 1 -> 3 -> 1");
    let (in_wave_1, in_wave_2): (Vec<u64>, Vec<u64>) =
        repeated.iter().partition(|&&id| id < wave_1);
    println!(
        "scale 1 -> 3 -> 1: {wave_1} records in wave 1 ({} repeated), {} in wave 2 at \
         {rate:.0}/s ({} repeated)",
        in_wave_1.len(),
        n - wave_1,
        in_wave_2.len()
    );
    assert!(
        in_wave_1.is_empty(),
        "a change of members with nothing in flight repeats nothing"
    );
    // Why any in wave 2: the mock refuses OffsetCommit from the moment a
    // member leaves until the group is stable again (a real broker takes
    // commits of the current generation while it prepares a rebalance), so
    // the final commit of the revoked first process fails, and it redoes
    // what it did since its last periodic commit: about a commit interval
    // and a heartbeat interval of its share. Allow two seconds of input.
    let bound = (rate * 2.0) as usize;
    assert!(
        in_wave_2.len() <= bound,
        "{} repeated in wave 2, more than {bound}",
        in_wave_2.len()
    );
}

#[test]
fn a_killed_worker_process_is_replaced_and_only_uncommitted_records_repeat() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("faults_sigkill", 6);
    topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let group = format!("g-{topic}");
    let feeder = Feeder::start(&kafka, topic, partitions, 0..40_000);
    let first = Proc::spawn("doomed", &kafka, topic, &config);
    wait_spread(&[&first], partitions, Duration::from_secs(15));
    wait_until("a commit", Duration::from_secs(15), || {
        sum(&kafka.committed(&group, topic, partitions).unwrap()) > 0
    });
    // Kill it while it has produced records it has not committed yet.
    let output = format!("{topic}_enr");
    wait_until("uncommitted output", Duration::from_secs(10), || {
        // The output first: the commit read after it still lags it when
        // there is uncommitted output now (the kill follows at once).
        let out = sum(&kafka.high_watermarks(&output, partitions).unwrap());
        out > sum(&kafka.committed(&group, topic, partitions).unwrap())
    });
    first.kill();
    // Let the mock take in whatever the process sent before it died.
    std::thread::sleep(Duration::from_millis(300));
    let committed_at_kill = sum(&kafka.committed(&group, topic, partitions).unwrap());
    let out_at_kill = sum(&kafka.high_watermarks(&output, partitions).unwrap());
    let second = Proc::spawn("replacement", &kafka, topic, &config);
    wait_spread(&[&second], partitions, Duration::from_secs(25));
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    second.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "SIGKILL and restart").len();
    println!(
        "SIGKILL: {out_at_kill} out and {committed_at_kill} committed at the kill, {dups} records redone"
    );
    assert!(dups as u64 <= n, "{dups} duplicates of {n}");
    // The replacement starts from the commits: exactly what the killed
    // process produced past them is redone, nothing else.
    assert!(
        dups as i64 <= out_at_kill - committed_at_kill,
        "{dups} redone, more than the {} produced and not committed",
        out_at_kill - committed_at_kill
    );
}

/// A worker process mid-stream whose brokers then go away: records taken,
/// their deliveries stuck. Returns the process and when the brokers went.
fn stuck_worker(kafka: &MockKafka, topic: &str, partitions: i32) -> (Proc, Dbs) {
    topics(kafka, topic, partitions);
    kafka
        .produce(topic, partitions, records(0, 30_000))
        .unwrap();
    // Answers take half a second, so deliveries are surely in flight when
    // the brokers go down.
    kafka
        .cluster()
        .broker_round_trip_time(-1, Duration::from_millis(500))
        .unwrap();
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let w = Proc::spawn("stuck", kafka, topic, &config);
    wait_for_output(kafka, topic, partitions);
    kafka.cluster().broker_down(-1).unwrap();
    (w, dbs)
}

#[test]
fn sigterm_with_the_brokers_gone_exits_within_the_grace_saying_records_were_left() {
    let kafka = MockKafka::start(1).unwrap();
    let (mut w, _dbs) = stuck_worker(&kafka, "faults_grace", 2);
    let since = Instant::now();
    w.terminate();
    // shutdown_grace_ms is 5 s in the test config; the drain's last steps
    // get 3 s more.
    let status = w.wait(Duration::from_secs(12));
    let took = since.elapsed();
    println!("grace: exited with {status} after {took:.1?}");
    assert_eq!(
        status.code(),
        Some(75),
        "EX_TEMPFAIL: records left undelivered"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let kafka = MockKafka::start(1).unwrap();
    let (mut w, _dbs) = stuck_worker(&kafka, "faults_second_signal", 2);
    w.terminate();
    std::thread::sleep(Duration::from_millis(300));
    let since = Instant::now();
    w.terminate();
    let status = w.wait(Duration::from_secs(5));
    println!(
        "second signal: exited with {status} after {:.1?}",
        since.elapsed()
    );
    assert_eq!(status.code(), Some(75));
    assert!(since.elapsed() < Duration::from_secs(2));
}

/// A 3 s outage of every broker, behind a slow round trip so that produce
/// requests are surely in flight when the brokers go down.
pub(super) fn outage(
    cluster: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) {
    cluster
        .broker_round_trip_time(-1, Duration::from_millis(500))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    cluster.broker_down(-1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(-1).unwrap();
    cluster.broker_round_trip_time(-1, Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_secs(1));
}

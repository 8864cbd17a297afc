//! The Kafka worker while its dependencies fail under load: the consumer
//! group's coordinator moves, the broker leading the input goes down and up,
//! Redis is killed and restarted, DNS turns slow, then silent, then goes
//! away, and a worker process is killed with SIGKILL in a loop. Each test
//! feeds records while the fault happens and counts them by id at the other
//! end: every id must come out; duplicates are printed and bounded.
//!
//! The SIGKILL loop runs for `CHAOS_SECS` seconds (20 by default, so CI stays
//! fast); the few-minutes version is
//! `CHAOS_SECS=180 cargo nextest run -p enricher -E 'test(/sigkill_loop/)' --no-capture`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCoordinator;
use serde_json::Value;
use test_support::kafka::{Kafka, MockKafka, Received};
use test_support::{Answer, Behaviour, DnsServer, RedisServer, synth_name};

use super::faults::{
    Feeder, Proc, every_id_out, sum, topics, wait_committed_to_end, wait_for_output,
    write_run_config, write_run_config_with,
};
use super::kafka::{Worker, kafka_config, wait_until};
use super::*;

/// Records in the output topic so far.
fn out_count(kafka: &impl Kafka, topic: &str, partitions: i32) -> i64 {
    sum(&kafka
        .high_watermarks(&format!("{topic}_enr"), partitions)
        .unwrap())
}

/// The whole output topic, parsed, with the partition and offset of each record.
fn read_output(kafka: &impl Kafka, topic: &str, partitions: i32) -> Vec<(Received, Value)> {
    let output = format!("{topic}_enr");
    let total = sum(&kafka.high_watermarks(&output, partitions).unwrap()) as usize;
    kafka
        .read_all(&output, total, Duration::from_secs(10))
        .unwrap()
        .into_iter()
        .map(|r| {
            let v = serde_json::from_slice(r.payload.as_deref().unwrap_or_default())
                .unwrap_or_else(|e| panic!("invalid JSON out ({e}): {}", r.text()));
            (r, v)
        })
        .collect()
}

/// The country the standard fixture gives the record's `id.resp_h` (see
/// `kafka::records`): GB, SE, JP, and none for the private `10.0.0.1`.
fn expected_country(id: u64) -> Option<&'static str> {
    [Some("GB"), Some("SE"), Some("JP"), None][(id % 4) as usize]
}

/// A multi-thread runtime for the in-process DNS server.
fn dns_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------

#[test]
fn a_coordinator_move_under_load_loses_nothing_and_commits_reach_the_end() {
    let kafka = MockKafka::start(3).unwrap();
    let (topic, partitions) = ("chaos_coordinator", 6);
    topics(&kafka, topic, partitions);
    // Every partition led by broker 1, so brokers 2 and 3 serve the group only.
    for p in 0..partitions {
        for t in [topic.to_string(), format!("{topic}_enr")] {
            kafka.cluster().partition_leader(&t, p, Some(1)).unwrap();
        }
    }
    let dbs = write_dbs();
    let c = kafka_config(&dbs, &kafka, topic);
    let group = c.kafka.group_id.clone();
    let coordinator = |broker| {
        kafka
            .cluster()
            .coordinator(MockCoordinator::Group(group.clone()), broker)
            .unwrap();
    };
    let committed = || sum(&kafka.committed(&group, topic, partitions).unwrap());
    coordinator(2);
    let feeder = Feeder::start(&kafka, topic, partitions, 0..40_000);
    let w = Worker::start(&c);
    wait_for_output(&kafka, topic, partitions);
    // Move the coordinator, then take the old one down: the commits that
    // follow can only have gone through the new one. Twice, there and back.
    for (from, to) in [(2, 3), (3, 2)] {
        coordinator(to);
        kafka.cluster().broker_down(from).unwrap();
        let before = committed();
        wait_until(
            "a commit through the new coordinator",
            Duration::from_secs(30),
            || committed() > before,
        );
        kafka.cluster().broker_up(from).unwrap();
        println!(
            "coordinator moved {from} -> {to}: {} committed",
            committed()
        );
    }
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &group, topic, partitions);
    assert!(w.health.alive());
    let report = w.stop();
    println!("coordinator moves: {report:?}");
    let dups = every_id_out(&kafka, topic, partitions, n, "coordinator moves").len();
    // The group lives on in the mock, so a move is no rebalance; but if the
    // member's heartbeats failed past its session it was expired, and what
    // it had not committed is redone.
    assert!(dups as u64 <= n, "{dups} duplicates of {n}");
}

#[test]
fn the_broker_leading_the_input_and_then_the_one_leading_the_output_go_down_and_up() {
    let kafka = MockKafka::start(3).unwrap();
    let (topic, partitions) = ("chaos_leader_down", 6);
    topics(&kafka, topic, partitions);
    let output = format!("{topic}_enr");
    // Input led by broker 1, output by broker 2, the group coordinated by 3:
    // each outage hits one side only.
    for p in 0..partitions {
        kafka.cluster().partition_leader(topic, p, Some(1)).unwrap();
        kafka
            .cluster()
            .partition_leader(&output, p, Some(2))
            .unwrap();
    }
    let dbs = write_dbs();
    let c = kafka_config(&dbs, &kafka, topic);
    kafka
        .cluster()
        .coordinator(MockCoordinator::Group(c.kafka.group_id.clone()), 3)
        .unwrap();
    let feeder = Feeder::start(&kafka, topic, partitions, 0..30_000);
    let w = Worker::start(&c);
    wait_for_output(&kafka, topic, partitions);
    for broker in [1, 2] {
        let before = out_count(&kafka, topic, partitions);
        kafka.cluster().broker_down(broker).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        kafka.cluster().broker_up(broker).unwrap();
        wait_until(
            "output after the broker is back",
            Duration::from_secs(30),
            || out_count(&kafka, topic, partitions) > before,
        );
    }
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &c.kafka.group_id, topic, partitions);
    assert!(w.health.alive());
    let report = w.stop();
    println!("leader down: {report:?}");
    let dups = every_id_out(&kafka, topic, partitions, n, "leader down").len();
    // A produce request written before the output's leader went away may
    // have landed and be sent again; never more than was fed.
    assert!(dups as u64 <= n, "{dups} duplicates of {n}");
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// The sum of a metric's samples whose labels contain every one of `labels`
/// (Prometheus text format).
pub(super) fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let (series, value) = rest.rsplit_once(' ')?;
        if labels.iter().all(|l| series.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

#[test]
fn redis_killed_mid_run_and_restarted_opens_and_closes_the_circuit_and_changes_nothing_but_provenance()
 {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("chaos_redis", 3);
    topics(&kafka, topic, partitions);
    let mut redis = RedisServer::start().unwrap();
    let runtime = dns_runtime();
    let dns = runtime
        .block_on(DnsServer::start(Behaviour::default()))
        .unwrap();
    let dbs = write_dbs();
    // A lookup deadline and budget wait far beyond any scheduling delay, and
    // retries, so every record carries its PTR whatever the load: the outage
    // may change where an answer came from, never the answer. (With a tight
    // DNS budget, the lookups Redis no longer absorbs would come out
    // `over_budget`: see the DNS test below. With a thousand queries in
    // flight and no retry, one record once came out `timeout` on a loaded
    // machine, most likely a query dropped at the test server's UDP socket;
    // so the default 64 in flight, and retries.)
    let config = write_run_config_with(
        &dbs,
        r#"
[dns]
timeout_ms = 2000
retries = 2
qps = 100000
burst = 100000
budget_wait_ms = 20000

[cache]
lookup_deadline_ms = 60000

[redis]
timeout_ms = 200
open_ms = 500
"#,
    );
    let (dns_addr, redis_url) = (dns.addr().to_string(), redis.url());
    let dbsize = |redis: &RedisServer| -> u64 {
        let reply = redis.command(&["DBSIZE"]).unwrap_or_default();
        reply.trim().trim_start_matches(':').parse().unwrap_or(0)
    };
    let started = Instant::now();
    let feeder = Feeder::start(&kafka, topic, partitions, 0..20_000);
    let w = Proc::spawn_with(
        "redis",
        &kafka,
        topic,
        &config,
        &[
            "--dns-server",
            &dns_addr,
            "--redis-url",
            &redis_url,
            "--provenance",
        ],
    );
    wait_for_output(&kafka, topic, partitions);
    wait_until("writes to Redis", Duration::from_secs(20), || {
        dbsize(&redis) > 0
    });

    redis.stop();
    let at_kill = out_count(&kafka, topic, partitions);
    wait_until("the circuit to open", Duration::from_secs(20), || {
        w.logged("Redis failing; circuit open, serving from L1 and direct lookups")
    });
    // No stall: records keep coming out while Redis is away.
    wait_until("output during the outage", Duration::from_secs(30), || {
        out_count(&kafka, topic, partitions) > at_kill + 1_000
    });
    let (_, body) = w.get("/metrics");
    let skipped = metric(&body, "enricher_redis_ops_total", &[r#"result="skipped""#]);
    let open = metric(&body, "enricher_redis_circuit_state", &[r#"state="open""#]);
    println!("Redis down: circuit state {open:?}, {skipped:?} operations skipped");
    assert!(skipped.unwrap_or(0.0) > 0.0, "Redis skipped while open");

    redis.restart().unwrap();
    let at_restart = out_count(&kafka, topic, partitions);
    wait_until("the circuit to close", Duration::from_secs(20), || {
        w.logged("Redis is back; circuit closed")
    });
    wait_until("writes to Redis again", Duration::from_secs(20), || {
        dbsize(&redis) > 0
    });
    wait_until(
        "a closed circuit in /metrics",
        Duration::from_secs(10),
        || {
            let body = w.get("/metrics").1;
            metric(
                &body,
                "enricher_redis_circuit_state",
                &[r#"state="closed""#],
            ) == Some(1.0)
                && metric(&body, "enricher_redis_circuit_state", &[r#"state="open""#]) == Some(0.0)
        },
    );

    let n = feeder.finish();
    wait_committed_to_end(&kafka, &format!("g-{topic}"), topic, partitions);
    let wall = started.elapsed();
    w.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "Redis killed").len();
    assert_eq!(dups, 0, "Redis is no reason to redo anything");
    // Every record is enriched as it would be with Redis up; only the tier
    // may differ. The records produced during the outage are among them.
    let mut tiers = BTreeMap::<String, u64>::new();
    for (r, v) in read_output(&kafka, topic, partitions) {
        let id = v["id"].as_u64().unwrap();
        assert_eq!(
            v["id.resp_h_country"].as_str(),
            expected_country(id),
            "record {id} at {}/{}",
            r.partition,
            r.offset
        );
        let orig: std::net::IpAddr = v["id.orig_h"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            v["id.orig_h_ptr"].as_str(),
            Some(synth_name(orig).trim_end_matches('.')),
            "record {id}: {v}"
        );
        *tiers
            .entry(v["id.orig_h_tier"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
    }
    println!(
        "Redis killed: {n} records in {wall:.1?}, {} out before the kill, {} by the restart; \
         PTR tiers {tiers:?}",
        at_kill, at_restart
    );
    assert!(at_restart > at_kill);
}

// ---------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------

#[test]
fn dns_slow_then_silent_then_gone_keeps_every_record_flowing_within_the_query_budget() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("chaos_dns", 3);
    topics(&kafka, topic, partitions);
    let runtime = dns_runtime();
    let dns = runtime
        .block_on(DnsServer::start(Behaviour::default()))
        .unwrap();
    let dbs = write_dbs();
    let mut c = kafka_config(&dbs, &kafka, topic);
    c.output.provenance = true;
    c.dns.enabled = true;
    c.dns.servers = vec![dns.addr()];
    c.dns.timeout_ms = 1_000;
    c.dns.retries = 0;
    let (qps, burst) = (50u32, 20u32);
    c.dns.qps = qps;
    c.dns.burst = burst;
    c.cache.lookup_deadline_ms = 1_500;
    let feeder = Feeder::start(&kafka, topic, partitions, 0..25_000);
    // Before the worker builds its resolver: the budget counts from here.
    let budget_from = Instant::now();
    let w = Worker::start(&c);
    wait_for_output(&kafka, topic, partitions);
    wait_until("healthy lookups", Duration::from_secs(20), || {
        dns.queries() >= 20
    });
    // Each phase lasts at least three seconds and until DNS has seen
    // queries under it and records came out meanwhile.
    let phase = |what: &str, dns: Option<&DnsServer>| {
        let (since, out) = (Instant::now(), out_count(&kafka, topic, partitions));
        let queries = dns.map(DnsServer::queries);
        wait_until(what, Duration::from_secs(30), || {
            since.elapsed() >= Duration::from_secs(3)
                && out_count(&kafka, topic, partitions) > out + 500
                && dns.zip(queries).is_none_or(|(d, q)| d.queries() >= q + 10)
        });
    };
    dns.set_behaviour(Behaviour::default().with_latency(Duration::from_secs(2)));
    phase("a slow DNS phase", Some(&dns));
    dns.set_behaviour(Behaviour::answering(Answer::Silence));
    phase("a silent DNS phase", Some(&dns));
    let (queries, elapsed) = (dns.queries(), budget_from.elapsed());
    drop(dns);
    phase("output with DNS gone", None);
    let n = feeder.finish();
    wait_committed_to_end(&kafka, &c.kafka.group_id, topic, partitions);
    let report = w.stop();
    println!("DNS faults: {report:?}");
    assert_eq!(report.consumed, n, "no restart, no redelivery");
    let dups = every_id_out(&kafka, topic, partitions, n, "DNS faults").len();
    assert_eq!(dups, 0);

    // The budget held: a GCRA grants at most `burst` at once, then `qps`.
    let allowed = f64::from(qps) * elapsed.as_secs_f64() + f64::from(burst);
    println!(
        "DNS faults: {queries} queries in {elapsed:.1?} while DNS was up, budget {allowed:.0} \
         ({qps}/s + {burst})"
    );
    assert!(
        queries as f64 <= allowed,
        "{queries} queries, over the budget of {allowed:.0}"
    );
    // Every record came out, and each address without a PTR says why.
    let mut reasons = BTreeMap::<String, u64>::new();
    for (_, v) in read_output(&kafka, topic, partitions) {
        let id = v["id"].as_u64().unwrap();
        assert_eq!(v["id.resp_h_country"].as_str(), expected_country(id));
        for field in ["id.orig_h", "id.resp_h"] {
            let ptr = &v[format!("{field}_ptr")];
            let status = &v[format!("{field}_ptr_status")];
            match (ptr.as_str(), status.as_str()) {
                (Some(_), None) => *reasons.entry("ptr".into()).or_default() += 1,
                (None, Some(why)) => *reasons.entry(why.into()).or_default() += 1,
                _ => panic!("record {id}: {field} has PTR {ptr} and status {status}: {v}"),
            }
        }
    }
    println!("DNS faults: PTR outcomes by address {reasons:?}");
    for why in reasons.keys().filter(|k| *k != "ptr") {
        assert!(
            ["timeout", "over_budget", "error", "servfail"].contains(&why.as_str()),
            "unexpected reason {why}"
        );
    }
    assert!(
        reasons.get("timeout").copied().unwrap_or(0) > 0,
        "a slow and a silent DNS time out"
    );
    assert!(
        reasons.get("over_budget").copied().unwrap_or(0) > 0,
        "the budget turns the rest away"
    );
}

// ---------------------------------------------------------------------------
// SIGKILL in a loop
// ---------------------------------------------------------------------------

/// How long the SIGKILL loop runs: `CHAOS_SECS`, 20 s by default.
fn chaos_secs() -> u64 {
    std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[test]
fn sigkill_loop_under_load_loses_nothing() {
    let kafka = MockKafka::start(1).unwrap();
    let (topic, partitions) = ("chaos_sigkill_loop", 8);
    topics(&kafka, topic, partitions);
    let dbs = write_dbs();
    let config = write_run_config(&dbs);
    let group = format!("g-{topic}");
    let secs = chaos_secs();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    // 20 records every 40 ms at most, so a few minutes stay well under the
    // mock's 5 MiB per partition, duplicates included.
    let feeder = Feeder::start_batched(&kafka, topic, partitions, 0..u64::MAX, 20);
    // A pseudo-random pause before each kill (xorshift, seed printed).
    let mut seed = started.elapsed().subsec_nanos() as u64 | 1;
    println!("sigkill loop: {secs} s, seed {seed}");
    let mut kills = 0u64;
    while Instant::now() < until {
        let out = out_count(&kafka, topic, partitions);
        let victim = Proc::spawn(&format!("victim-{kills}"), &kafka, topic, &config);
        // Let it take over (the group first expires the killed member) and
        // produce, so every kill lands mid-stream.
        wait_until("the new worker to produce", Duration::from_secs(60), || {
            !victim.partitions().is_empty() && out_count(&kafka, topic, partitions) > out
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(500 + seed % 2_500));
        victim.kill();
        kills += 1;
    }
    let n = feeder.finish();
    let drainer = Proc::spawn("drainer", &kafka, topic, &config);
    wait_until("the drainer to take over", Duration::from_secs(60), || {
        !drainer.partitions().is_empty()
    });
    wait_committed_to_end(&kafka, &group, topic, partitions);
    drainer.stop();
    let dups = every_id_out(&kafka, topic, partitions, n, "sigkill loop").len();
    println!(
        "sigkill loop: {kills} kills, {n} records, {dups} duplicates, {:.1?} wall",
        started.elapsed()
    );
    assert!(kills > 0);
    assert!(dups as u64 <= n, "{dups} duplicates of {n}");
}

//! Reads the output and dead-letter topics while the run goes on, and counts
//! every record of this run by its sequence number: lost, duplicated,
//! dead-lettered, enriched, and how long each took end to end.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::cluster::Cluster;
use crate::feed::{RUN_HEADER, SENT_HEADER, SEQ_HEADER};

/// What is known in advance of one input topic's records.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The input topic; output is read from `<topic>_enr` and `<topic>_dlq`.
    pub topic: String,
    /// Each record's input length, to tell an enriched record from a copy.
    pub input_len: Vec<u32>,
    /// Records that must come out with GeoIP members.
    pub expect_geo: Vec<bool>,
}

/// Counts for one input topic.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TopicTally {
    /// The input topic.
    pub topic: String,
    /// Records of this run read from the output topic.
    pub out: u64,
    /// Records of this run read from the dead-letter topic.
    pub dead_lettered: u64,
    /// Distinct sequence numbers seen (output or dead letter).
    pub distinct: u64,
    /// Records seen again after their first time.
    pub duplicates: u64,
    /// Output records longer than their input (something was added).
    pub enriched: u64,
    /// Output records with a GeoIP country (of a field or of a DNS answer).
    pub with_geo: u64,
    /// Output records with a PTR name.
    pub with_ptr: u64,
    /// Records that had a public address of the demo database but came out
    /// without a country (synthetic data only; must be 0).
    pub geo_missing: u64,
    /// Dead letters by `enricher.reason`.
    pub dlq_reasons: BTreeMap<String, u64>,
    /// Send time (Unix µs) of the newest record seen at the output.
    #[serde(skip)]
    pub newest_sent_us: u64,
}

/// Everything the watcher has counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per input topic.
    pub topics: Vec<TopicTally>,
    /// End-to-end latency of each output record in ms: its output timestamp
    /// minus the time it was sent.
    pub latencies_ms: Vec<f32>,
    /// Earliest and latest output timestamps (Unix ms).
    pub first_out_ms: Option<i64>,
    /// See `first_out_ms`.
    pub last_out_ms: Option<i64>,
    /// Records of other runs (a reused topic) or without the tags, ignored.
    pub foreign: u64,
    /// The first enriched record with GeoIP members, as a sample.
    pub sample: Option<String>,
    seen: Vec<Vec<u8>>,
    /// Per topic, per record: the output timestamp of its first copy out,
    /// Unix ms (0: not seen); empty unless started by [`Watcher::start_timed`].
    out_ms: Vec<Vec<i64>>,
}

impl Tally {
    /// Sequence numbers never seen, per topic, leaving out `excluded` ones
    /// (records the cluster refused at produce time).
    pub fn missing(&self, excluded: &[(usize, u64)]) -> Vec<u64> {
        self.seen
            .iter()
            .enumerate()
            .map(|(t, seen)| {
                let skipped = excluded.iter().filter(|(x, _)| *x == t).count() as u64;
                let zero = seen.iter().filter(|c| **c == 0).count() as u64;
                zero.saturating_sub(skipped)
            })
            .collect()
    }

    /// Distinct records seen in all topics.
    pub fn distinct(&self) -> u64 {
        self.topics.iter().map(|t| t.distinct).sum()
    }

    /// Output plus dead-letter records read, duplicates included.
    pub fn total_out(&self) -> u64 {
        self.topics.iter().map(|t| t.out + t.dead_lettered).sum()
    }

    /// End-to-end latency of every record seen whose time in the input
    /// topic is known, ms: its first output record's timestamp minus
    /// `in_topic_us[topic][seq]` (Unix µs, 0 for unknown). Empty unless the
    /// watcher was started with [`Watcher::start_timed`].
    pub fn latencies_from(&self, in_topic_us: &[Vec<u64>]) -> Vec<f32> {
        let mut l = Vec::new();
        for (outs, ins) in self.out_ms.iter().zip(in_topic_us) {
            for (&out, &at) in outs.iter().zip(ins) {
                if out != 0 && at != 0 {
                    l.push((out as f64 - at as f64 / 1000.0).max(0.0) as f32);
                }
            }
        }
        l
    }
}

/// A thread reading the output topics.
pub struct Watcher {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts reading `<topic>_enr` and `<topic>_dlq` of every expected
    /// topic from the beginning, counting records of `run_id`.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be created or assigned.
    pub fn start(cluster: &Cluster, run_id: &str, expect: Vec<Expect>) -> anyhow::Result<Self> {
        Self::start_with(cluster, run_id, expect, false)
    }

    /// [`Watcher::start`], also noting when each record first came out, for
    /// [`Tally::latencies_from`] (8 bytes a record).
    ///
    /// # Errors
    ///
    /// When the consumer cannot be created or assigned.
    pub fn start_timed(
        cluster: &Cluster,
        run_id: &str,
        expect: Vec<Expect>,
    ) -> anyhow::Result<Self> {
        Self::start_with(cluster, run_id, expect, true)
    }

    fn start_with(
        cluster: &Cluster,
        run_id: &str,
        expect: Vec<Expect>,
        timed: bool,
    ) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = cluster
            .client_config()
            .set("group.id", format!("loadtest-watch-{run_id}"))
            .set("enable.auto.commit", "false")
            // Read as soon as records are out: the mock cluster and tansu
            // hold an empty fetch for its whole wait; librdkafka waits
            // `fetch.error.backoff.ms` (500 ms) after a partition had an
            // error and `fetch.queue.backoff.ms` (1 s) when its queue is full.
            .set("fetch.wait.max.ms", "5")
            .set("fetch.error.backoff.ms", "20")
            .set("fetch.queue.backoff.ms", "20")
            .create()
            .context("creating the output reader")?;
        let mut tpl = TopicPartitionList::new();
        let mut index = HashMap::new();
        for (t, e) in expect.iter().enumerate() {
            for (suffix, dlq) in [("_enr", false), ("_dlq", true)] {
                let topic = format!("{}{suffix}", e.topic);
                for p in 0..cluster.partitions(&topic)? {
                    tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
                }
                index.insert(topic, (t, dlq));
            }
        }
        consumer.assign(&tpl)?;
        let tally = Arc::new(Mutex::new(Tally {
            topics: expect
                .iter()
                .map(|e| TopicTally {
                    topic: e.topic.clone(),
                    ..TopicTally::default()
                })
                .collect(),
            seen: expect
                .iter()
                .map(|e| vec![0u8; e.input_len.len()])
                .collect(),
            out_ms: if timed {
                expect.iter().map(|e| vec![0; e.input_len.len()]).collect()
            } else {
                Vec::new()
            },
            ..Tally::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let run_id = run_id.to_string();
        let thread = {
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("loadtest-watch".into())
                .spawn(move || watch(&consumer, &run_id, &expect, &index, &tally, &stop))?
        };
        Ok(Self {
            tally,
            stop,
            thread: Some(thread),
        })
    }

    /// The counts so far.
    pub fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops reading and returns the final counts.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.tally())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn header<'a>(msg: &'a rdkafka::message::BorrowedMessage<'_>, key: &str) -> Option<&'a [u8]> {
    msg.headers()?.iter().find(|h| h.key == key)?.value
}

fn number(bytes: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(bytes?).ok()?.parse().ok()
}

fn watch(
    consumer: &BaseConsumer,
    run_id: &str,
    expect: &[Expect],
    index: &HashMap<String, (usize, bool)>,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
) {
    let geo = memchr::memmem::Finder::new("country\":");
    let ptr = memchr::memmem::Finder::new("_ptr\"");
    let finder_geo = |hay: &[u8]| geo.find(hay).is_some();
    let finder_ptr = |hay: &[u8]| ptr.find(hay).is_some();
    while !stop.load(Ordering::Relaxed) {
        let Some(first) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Some(first);
        let mut n = 0;
        while let Some(result) = next.take() {
            n += 1;
            if let Ok(msg) = result {
                take(
                    &msg,
                    run_id,
                    expect,
                    index,
                    &mut tally,
                    &finder_geo,
                    &finder_ptr,
                );
            }
            if n < 2_000 {
                next = consumer.poll(Duration::ZERO);
            }
        }
    }
}

/// A record's sequence number and send time (Unix µs, when tagged with it)
/// when it belongs to `run_id`: from the run and sequence headers, or from
/// a `run:seq` key ([`crate::feed::Tag::Key`]).
fn tag(msg: &rdkafka::message::BorrowedMessage<'_>, run_id: &str) -> Option<(u64, Option<u64>)> {
    if let Some(run) = header(msg, RUN_HEADER) {
        if run != run_id.as_bytes() {
            return None;
        }
        return Some((
            number(header(msg, SEQ_HEADER))?,
            Some(number(header(msg, SENT_HEADER))?),
        ));
    }
    let (run, seq) = std::str::from_utf8(msg.key()?).ok()?.rsplit_once(':')?;
    (run == run_id).then_some(())?;
    Some((seq.parse().ok()?, None))
}

fn take(
    msg: &rdkafka::message::BorrowedMessage<'_>,
    run_id: &str,
    expect: &[Expect],
    index: &HashMap<String, (usize, bool)>,
    tally: &mut Tally,
    has_geo: &impl Fn(&[u8]) -> bool,
    has_ptr: &impl Fn(&[u8]) -> bool,
) {
    let Some(&(t, dlq)) = index.get(msg.topic()) else {
        return;
    };
    let Some((seq, sent_us)) = tag(msg, run_id) else {
        tally.foreign += 1;
        return;
    };
    let seq = seq as usize;
    if seq >= tally.seen[t].len() {
        tally.foreign += 1;
        return;
    }
    let first = tally.seen[t][seq] == 0;
    tally.seen[t][seq] = tally.seen[t][seq].saturating_add(1);
    if let Some(out_ms) = msg.timestamp().to_millis() {
        if let Some(sent_us) = sent_us {
            tally
                .latencies_ms
                .push((out_ms as f64 - sent_us as f64 / 1000.0).max(0.0) as f32);
        }
        if first && let Some(slot) = tally.out_ms.get_mut(t).and_then(|v| v.get_mut(seq)) {
            *slot = out_ms;
        }
        tally.first_out_ms = Some(tally.first_out_ms.map_or(out_ms, |f| f.min(out_ms)));
        tally.last_out_ms = Some(tally.last_out_ms.map_or(out_ms, |l| l.max(out_ms)));
    }
    let payload = msg.payload().unwrap_or_default();
    let geo = !dlq && has_geo(payload);
    if geo && tally.sample.is_none() {
        tally.sample = Some(String::from_utf8_lossy(payload).into_owned());
    }
    let counts = &mut tally.topics[t];
    counts.newest_sent_us = counts.newest_sent_us.max(sent_us.unwrap_or(0));
    if first {
        counts.distinct += 1;
    } else {
        counts.duplicates += 1;
    }
    if dlq {
        counts.dead_lettered += 1;
        let reason = header(msg, "enricher.reason").map_or_else(
            || "unknown".to_string(),
            |r| String::from_utf8_lossy(r).into_owned(),
        );
        *counts.dlq_reasons.entry(reason).or_insert(0) += 1;
        return;
    }
    counts.out += 1;
    if payload.len() > expect[t].input_len[seq] as usize {
        counts.enriched += 1;
    }
    if geo {
        counts.with_geo += 1;
    } else if first && expect[t].expect_geo[seq] {
        counts.geo_missing += 1;
    }
    if has_ptr(payload) {
        counts.with_ptr += 1;
    }
}

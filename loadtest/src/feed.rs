//! Produces the data set to the input topics, each record tagged so it can
//! be counted at the other end: a run id, its sequence number in its topic,
//! and the time it was sent.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::cluster::Cluster;

/// Header naming the run a record belongs to.
pub const RUN_HEADER: &str = "loadtest.run";
/// Header with the record's sequence number within its topic.
pub const SEQ_HEADER: &str = "loadtest.seq";
/// Header with the Unix time in microseconds the record was sent.
pub const SENT_HEADER: &str = "loadtest.sent_us";

/// One input topic and its records.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The input topic.
    pub topic: String,
    /// Payloads, in sequence order.
    pub records: Arc<Vec<Vec<u8>>>,
    /// Each record's own timestamp in seconds, for time-compressed replay.
    pub ts: Arc<Vec<Option<f64>>>,
    /// Partitions of the topic: records go round-robin over them, so no
    /// partition outgrows the mock cluster's 5 MiB (0: the producer's choice).
    pub partitions: i32,
}

/// How each record is tagged so that it can be counted at the other end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tag {
    /// Three headers: run id, sequence number, send time.
    #[default]
    Headers,
    /// The key `<run id>:<seq>`, no headers: tansu 0.6.0 serves records
    /// with headers so slowly (about a millisecond per record of three
    /// headers in a fetch) that a run of tens of thousands stalls.
    Key,
}

/// How the feed's producer is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedSettings<'a> {
    /// librdkafka properties on top of the feed's own (`linger.ms=5`,
    /// batches of up to 10,000 records, the idempotent producer).
    pub producer_properties: &'a [(&'a str, &'a str)],
    /// How records are tagged.
    pub tag: Tag,
}

/// How fast to send.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Pace {
    /// As fast as the producer goes.
    #[default]
    Flat,
    /// This many records per second, all topics together.
    Rate(f64),
    /// The records' own timestamps, compressed by this factor.
    Speedup(f64),
}

/// What a producer's delivery reports say: the records the cluster
/// acknowledged, and the `(topic, seq)` of those it refused after the
/// producer's retries (not part of the run: they cannot be lost downstream).
#[derive(Debug, Default)]
pub struct Deliveries {
    acked: AtomicU64,
    refused: Mutex<Vec<(usize, u64)>>,
}

impl Deliveries {
    /// Counts the delivery report of record `id`.
    pub fn record(&self, result: &DeliveryResult<'_>, id: (usize, u64)) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                tracing::warn!(%error, "A load-test record was refused by the cluster");
                if let Ok(mut refused) = self.refused.lock() {
                    refused.push(id);
                }
            }
        }
    }

    /// Records acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// The refused records, as `(topic, seq)`.
    pub fn refused(&self) -> Vec<(usize, u64)> {
        self.refused.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Number of refused records.
    pub fn refused_count(&self) -> u64 {
        self.refused.lock().map_or(0, |r| r.len() as u64)
    }
}

/// When each record of one topic was handed to the producer and when it was
/// in the input topic, Unix µs (0: not yet known).
#[derive(Debug)]
pub struct RecordTimes {
    /// When the feed handed it to its producer.
    pub sent_us: Vec<AtomicU64>,
    /// When it was in the input topic: its log-append time where the broker
    /// stamps it (see [`Progress::timed`]), else the time the producer's
    /// delivery report said the broker had it.
    pub in_topic_us: Vec<AtomicU64>,
}

impl RecordTimes {
    fn new(records: usize) -> Self {
        Self {
            sent_us: (0..records).map(|_| AtomicU64::new(0)).collect(),
            in_topic_us: (0..records).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `in_topic_us - sent_us` of every record with both, ms: the feed's
    /// own producer queue and the broker's answer.
    pub fn queue_ms(&self) -> Vec<f32> {
        self.sent_us
            .iter()
            .zip(&self.in_topic_us)
            .filter_map(|(s, i)| {
                let (s, i) = (s.load(Ordering::Relaxed), i.load(Ordering::Relaxed));
                (s > 0 && i > 0).then(|| (i as f64 - s as f64).max(0.0) as f32 / 1000.0)
            })
            .collect()
    }

    /// The in-topic times as plain numbers.
    pub fn in_topic(&self) -> Vec<u64> {
        self.in_topic_us
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .collect()
    }
}

/// What the feeder has done so far; shared with the progress display.
#[derive(Debug)]
pub struct Progress {
    /// Records handed to the producer.
    pub sent: AtomicU64,
    /// What the cluster acknowledged and refused.
    pub deliveries: Deliveries,
    /// Per topic: the send time (Unix µs) of the newest record sent.
    pub newest_sent_us: Vec<AtomicU64>,
    /// Set when every record has been sent and acknowledged or refused.
    pub done: AtomicBool,
    /// Per topic, per record: when it was sent and when it was in the input
    /// topic (empty unless made by [`Progress::timed`]).
    pub times: Vec<RecordTimes>,
    /// Take a delivery report's timestamp as the record's time in the topic
    /// when the broker says it is a log-append time.
    log_append_time: bool,
}

impl Progress {
    /// Progress for `topics` topics.
    pub fn new(topics: usize) -> Arc<Self> {
        Arc::new(Self {
            sent: AtomicU64::new(0),
            deliveries: Deliveries::default(),
            newest_sent_us: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            done: AtomicBool::new(false),
            times: Vec::new(),
            log_append_time: false,
        })
    }

    /// Progress that also notes each record's times, for topics of
    /// `records` records each. With `log_append_time` (the broker was seen
    /// to stamp records, [`crate::cluster::Cluster::honours_log_append_time`])
    /// a record is in the topic at the log-append time its delivery report
    /// carries; without it, when the delivery report came (the broker had
    /// appended it by then; a consumer may have read it a little earlier).
    pub fn timed(records: &[usize], log_append_time: bool) -> Arc<Self> {
        Arc::new(Self {
            sent: AtomicU64::new(0),
            deliveries: Deliveries::default(),
            newest_sent_us: records.iter().map(|_| AtomicU64::new(0)).collect(),
            done: AtomicBool::new(false),
            times: records.iter().map(|&n| RecordTimes::new(n)).collect(),
            log_append_time,
        })
    }

    fn note_delivery(&self, result: &DeliveryResult<'_>, (topic, seq): (usize, u64)) {
        let (Ok(msg), Some(times)) = (result, self.times.get(topic)) else {
            return;
        };
        let at = match msg.timestamp() {
            rdkafka::Timestamp::LogAppendTime(ms) if self.log_append_time && ms > 0 => {
                ms as u64 * 1000
            }
            _ => now_us(),
        };
        if let Some(slot) = times.in_topic_us.get(seq as usize) {
            slot.store(at, Ordering::Relaxed);
        }
    }
}

struct Context {
    progress: Arc<Progress>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        self.progress.note_delivery(result, unpack(opaque));
        self.progress.deliveries.record(result, unpack(opaque));
    }
}

const SEQ_BITS: u32 = 40;

fn pack(topic: usize, seq: u64) -> usize {
    ((topic as u64) << SEQ_BITS | seq) as usize
}

fn unpack(opaque: usize) -> (usize, u64) {
    let v = opaque as u64;
    ((v >> SEQ_BITS) as usize, v & ((1 << SEQ_BITS) - 1))
}

/// Unix time in microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The order records go out in: by their own timestamps across topics when
/// pacing by them, else interleaved in proportion to each topic's size.
pub fn send_order(streams: &[Stream], pace: Pace) -> Vec<(u16, u32)> {
    let mut order: Vec<(u16, u32)> =
        Vec::with_capacity(streams.iter().map(|s| s.records.len()).sum());
    if matches!(pace, Pace::Speedup(_)) {
        for (t, s) in streams.iter().enumerate() {
            order.extend((0..s.records.len()).map(|i| (t as u16, i as u32)));
        }
        let ts = |&(t, i): &(u16, u32)| streams[t as usize].ts[i as usize].unwrap_or(0.0);
        order.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
    } else {
        // Largest remainder interleaving: each topic advances at its own share.
        let total: usize = streams.iter().map(|s| s.records.len()).sum();
        let mut next = vec![0usize; streams.len()];
        for k in 0..total {
            let t = (0..streams.len())
                .filter(|&t| next[t] < streams[t].records.len())
                .min_by(|&a, &b| {
                    let share = |t: usize| (next[t] as f64 + 0.5) / streams[t].records.len() as f64;
                    share(a).total_cmp(&share(b))
                })
                .unwrap_or(0);
            order.push((t as u16, next[t] as u32));
            next[t] += 1;
            let _ = k;
        }
    }
    order
}

/// Sends every record in `order`, paced, then waits for every
/// acknowledgement. Blocking: run it on its own thread.
///
/// # Errors
///
/// When the producer cannot be created.
pub fn feed(
    cluster: &Cluster,
    run_id: &str,
    streams: &[Stream],
    order: &[(u16, u32)],
    pace: Pace,
    progress: &Arc<Progress>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    feed_with(
        cluster,
        run_id,
        streams,
        order,
        pace,
        progress,
        stop,
        &FeedSettings::default(),
    )
}

/// [`feed`] with the producer set up and the records tagged as `settings`
/// say.
///
/// # Errors
///
/// When the producer cannot be created.
#[allow(clippy::too_many_arguments)]
pub fn feed_with(
    cluster: &Cluster,
    run_id: &str,
    streams: &[Stream],
    order: &[(u16, u32)],
    pace: Pace,
    progress: &Arc<Progress>,
    stop: &AtomicBool,
    settings: &FeedSettings<'_>,
) -> anyhow::Result<()> {
    let mut client = producer_config(cluster);
    for (k, v) in settings.producer_properties {
        client.set(*k, *v);
    }
    let producer: ThreadedProducer<Context> = client.create_with_context(Context {
        progress: Arc::clone(progress),
    })?;
    // Connected before the clock starts: the first records of a paced feed
    // would otherwise wait out the connection (and the idempotent
    // producer's id) in the queue.
    for stream in streams {
        let _ = producer
            .client()
            .fetch_metadata(Some(&stream.topic), Duration::from_secs(10));
    }
    let start = Instant::now();
    let first_ts = order
        .first()
        .and_then(|&(t, i)| streams[t as usize].ts[i as usize])
        .unwrap_or(0.0);
    let mut seq_text = itoa_buf();
    let mut key_text = String::with_capacity(64);
    for (n, &(t, i)) in order.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if n % 64 == 0 {
            let due = match pace {
                Pace::Flat => None,
                Pace::Rate(rate) => Some(Duration::from_secs_f64(n as f64 / rate)),
                Pace::Speedup(factor) => {
                    let ts = streams[t as usize].ts[i as usize].unwrap_or(first_ts);
                    Some(Duration::from_secs_f64(((ts - first_ts) / factor).max(0.0)))
                }
            };
            if let Some(due) = due {
                let elapsed = start.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
        }
        let stream = &streams[t as usize];
        let sent = now_us();
        let seq = u64::from(i);
        let mut record =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(&stream.topic, pack(t as usize, seq))
                .payload(stream.records[i as usize].as_slice());
        match settings.tag {
            Tag::Headers => {
                record = record.headers(tag_headers(run_id, seq_text.format(seq), sent));
            }
            Tag::Key => {
                key_text.clear();
                key_text.push_str(run_id);
                key_text.push(':');
                key_text.push_str(seq_text.format(seq));
                record = record.key(key_text.as_bytes());
            }
        }
        if stream.partitions > 0 {
            record = record.partition((i % stream.partitions as u32) as i32);
        }
        send_when_room(&producer, record)
            .map_err(|error| anyhow::anyhow!("producing to {}: {error}", stream.topic))?;
        progress.sent.fetch_add(1, Ordering::Relaxed);
        progress.newest_sent_us[t as usize].fetch_max(sent, Ordering::Relaxed);
        if let Some(slot) = progress
            .times
            .get(t as usize)
            .and_then(|times| times.sent_us.get(i as usize))
        {
            slot.store(sent, Ordering::Relaxed);
        }
    }
    while producer.in_flight_count() > 0 && !stop.load(Ordering::Relaxed) {
        let _ = producer.flush(Duration::from_millis(200));
    }
    progress.done.store(true, Ordering::Relaxed);
    Ok(())
}

/// The feed's producer on `cluster`: batches of up to 10,000 records after
/// at most 5 ms, a queue deep enough for a flat-out pass, the idempotent
/// producer, and five minutes before a record is given up.
pub fn producer_config(cluster: &Cluster) -> ClientConfig {
    let mut client = cluster.client_config();
    client
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "300000");
    client
}

/// The three headers that tag a record: its run id, its sequence number
/// (as text) and when it was sent (Unix µs).
pub fn tag_headers(run_id: &str, seq: &str, sent_us: u64) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: RUN_HEADER,
            value: Some(run_id),
        })
        .insert(Header {
            key: SEQ_HEADER,
            value: Some(seq),
        })
        .insert(Header {
            key: SENT_HEADER,
            value: Some(&sent_us.to_string()),
        })
}

/// Hands `record` to `producer`, waiting a millisecond at a time while its
/// queue is full.
///
/// # Errors
///
/// Any other error of the producer's.
pub fn send_when_room<'a, C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A reusable decimal formatter.
struct ItoaBuf(String);

fn itoa_buf() -> ItoaBuf {
    ItoaBuf(String::with_capacity(20))
}

impl ItoaBuf {
    fn format(&mut self, n: u64) -> &str {
        use std::fmt::Write as _;
        self.0.clear();
        let _ = write!(self.0, "{n}");
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(topic: &str, n: usize, ts: impl Fn(usize) -> f64) -> Stream {
        Stream {
            topic: topic.into(),
            records: Arc::new((0..n).map(|i| format!("{i}").into_bytes()).collect()),
            ts: Arc::new((0..n).map(|i| Some(ts(i))).collect()),
            partitions: 0,
        }
    }

    #[test]
    fn topics_are_interleaved_by_share_or_by_timestamp() {
        let streams = [
            stream("a", 4, |i| i as f64),
            stream("b", 2, |i| 0.5 + 2.0 * i as f64),
        ];
        let flat = send_order(&streams, Pace::Flat);
        assert_eq!(flat.len(), 6);
        assert_eq!(flat[..3].iter().filter(|(t, _)| *t == 1).count(), 1);
        let by_ts = send_order(&streams, Pace::Speedup(10.0));
        assert_eq!(by_ts, [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (0, 3)]);
    }

    #[test]
    fn the_opaque_round_trips() {
        assert_eq!(unpack(pack(7, 123_456_789)), (7, 123_456_789));
    }
}

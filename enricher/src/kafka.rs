//! `enricher run`: consume one topic in a consumer group, enrich, produce,
//! commit in order.
//!
//! ```text
//! consumer thread: poll --> acker.track --> batch --> lane thread (stage.rs):
//!        |                          enrich_cached --Done--> producer.send(opaque)
//!        |                                '--Pending--> tokio task: enrich, send
//!        |<-- acks (channel) <-- delivery report (producer thread) <----------'
//!        |<-- retries (channel) <-- failed delivery: sent again, never skipped
//!        '--> a record too large to produce: dead-lettered (without its
//!             payload if that is too large too), never retried
//!        '--> every commit interval: acker.commits_due --> commit (sync, result to the acker)
//! ```
//!
//! With `worker.enrich_threads = 0` the consumer thread runs the stage
//! itself. One thread owns the consumer and the acker, so the rebalance callbacks
//! (which librdkafka runs inside `poll`) can drain a revoked partition by
//! applying delivery reports themselves while they wait. Records that miss
//! L1 become tokio tasks that produce by themselves, so they keep going
//! while the consumer thread is busy in a rebalance. A record's delivery
//! opaque packs its partition's assignment slot and its offset; the slot
//! names the epoch, so reports from an earlier assignment are fenced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acker::{AckResult, Acker, AckerConfig, Epoch, TopicPartition};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::{Config, ConfigError};
use crate::enrich::{Enricher, Scratch};
use crate::metrics as m;
use crate::stats::Counter;

mod stage;
mod streak;

use stage::{BATCH_RECORDS, Batch, Lanes, Msg, Stage, lane_of};
use streak::{Backoff, Messages, Streak};

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Health as the HTTP probes see it.
#[derive(Debug, Default)]
pub struct Health {
    /// The consumer group gave this worker an assignment (possibly empty).
    pub assigned: AtomicBool,
    /// At least one broker is up, per the last statistics.
    pub broker_up: AtomicBool,
    /// Unix millis of the consumer loop's last turn (liveness).
    pub heartbeat_ms: AtomicI64,
    /// Set once the worker is draining for shutdown.
    pub stopping: AtomicBool,
}

impl Health {
    /// Ready for traffic: assigned, a broker reachable, not stopping.
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
            && self.broker_up.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
    }

    /// Alive: the consumer loop turned within the last 30 seconds.
    pub fn alive(&self) -> bool {
        let last = self.heartbeat_ms.load(Ordering::Relaxed);
        last == 0 || now_ms() - last < 30_000
    }
}

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Records taken from the input topic.
    pub consumed: u64,
    /// Records produced to the output topic.
    pub produced: u64,
    /// Records produced to the dead-letter topic.
    pub dead_lettered: u64,
    /// Failed deliveries sent again.
    pub retried: u64,
    /// Offsets committed (partition commits that succeeded).
    pub commits: u64,
    /// Records taken and not delivered when the shutdown grace ran out: not
    /// committed, so the partition's next owner reads them again.
    pub undelivered: u64,
}

/// The opaque of a produced record: assignment slot in the high 20 bits,
/// offset in the low 44 (17 trillion records per partition).
const OFFSET_BITS: u32 = 44;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

fn pack(slot: u32, offset: i64) -> usize {
    ((u64::from(slot) << OFFSET_BITS) | (offset as u64 & OFFSET_MASK)) as usize
}

fn unpack(opaque: usize) -> (u32, i64) {
    let v = opaque as u64;
    ((v >> OFFSET_BITS) as u32, (v & OFFSET_MASK) as i64)
}

/// A delivery that failed after librdkafka's own retries: sent again, or
/// dead-lettered if the broker refused it as too large.
struct Retry {
    opaque: usize,
    too_large: bool,
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

/// The producer's context: delivery reports become acks or retries.
struct DeliveryContext {
    acks: mpsc::Sender<usize>,
    retries: mpsc::Sender<Retry>,
    /// Failed deliveries, said once per streak.
    failures: Mutex<Streak>,
    /// Whether a streak is going on, so that a success takes no lock.
    failing: AtomicBool,
    /// librdkafka's global errors, said once per streak.
    client_errors: Mutex<Streak>,
    /// Records by final outcome, counted when the broker has them.
    outcomes: Arc<Outcomes>,
    dlq_topic: String,
    passthrough: bool,
}

/// Records by the outcome they were delivered with. Counted in the
/// delivery report, once per record acknowledged by the broker, so that a
/// resent record counts once and an output refused as too large counts as
/// the dead letter it became, not also as enriched. Dead letters count by
/// reason straight into the exporter (they are rare).
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    enriched: Counter,
    passed: Counter,
}

impl Outcomes {
    /// Copies the counts into the exporter (on the loop's tick).
    fn publish(&self) {
        metrics::counter!(m::RECORDS, "outcome" => "enriched").absolute(self.enriched.get());
        metrics::counter!(m::RECORDS, "outcome" => "passed").absolute(self.passed.get());
    }
}

impl DeliveryContext {
    fn count(&self, msg: &BorrowedMessage<'_>) {
        if msg.topic() == self.dlq_topic {
            let reason = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "enricher.reason"))
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("unknown")
                .to_string();
            metrics::counter!(m::RECORDS, "outcome" => "dead_lettered", "reason" => reason)
                .increment(1);
        } else if self.passthrough || msg.payload().is_none() {
            self.outcomes.passed.inc();
        } else {
            self.outcomes.enriched.inc();
        }
    }
}

const DELIVERY_FAILURES: Messages = Messages {
    started: "Deliveries failing; sending them again with backoff",
    ongoing: "Deliveries still failing",
    ended: "Deliveries succeed again",
};

const COMMIT_FAILURES: Messages = Messages {
    started: "Offset commits failing; retrying at the next tick",
    ongoing: "Offset commits still failing",
    ended: "Offset commits succeed again",
};

const CONSUMER_ERRORS: Messages = Messages {
    started: "Consumer errors",
    ongoing: "Consumer errors go on",
    ended: "Consumer fetching again",
};

/// A number in [0, 1) that differs between workers and calls: enough to
/// keep workers that failed together from retrying together.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}

/// An error's fixed label for a metric: librdkafka's code name.
fn error_label(error: &KafkaError) -> String {
    error
        .rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |code| format!("{code:?}"))
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.client_errors, &error, reason);
    }
}

const CLIENT_ERRORS: Messages = Messages {
    started: "Kafka client errors",
    ongoing: "Kafka client errors go on",
    ended: "Kafka client errors stopped",
};

/// librdkafka's global errors (all brokers down, transport failures), said
/// once per streak instead of once per reconnection attempt.
fn log_client_error(streak: &Mutex<Streak>, error: &KafkaError, reason: &str) {
    metrics::counter!(m::CLIENT_ERRORS, "error" => error_label(error)).increment(1);
    let mut streak = streak.lock().unwrap_or_else(|p| p.into_inner());
    streak.failed(Instant::now(), &format_args!("{error}: {reason}"), "client");
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Ok(msg) => {
                self.count(msg);
                let _ = self.acks.send(opaque);
                if self.failing.load(Ordering::Relaxed) {
                    let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                    failures.succeeded(Instant::now());
                    self.failing.store(false, Ordering::Relaxed);
                }
            }
            Err((error, msg)) => {
                metrics::counter!(m::PRODUCE_ERRORS, "error" => error_label(error)).increment(1);
                let too_large = too_large(error);
                if too_large {
                    tracing::warn!(%error, topic = msg.topic(), "Delivery refused as too large; dead-lettering the record");
                } else {
                    let place = format!("{}/{}", msg.topic(), msg.partition());
                    let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                    failures.failed(Instant::now(), error, &place);
                    self.failing.store(true, Ordering::Relaxed);
                }
                let _ = self.retries.send(Retry {
                    opaque,
                    too_large,
                    topic: msg.topic().to_string(),
                    partition: (msg.partition() >= 0).then(|| msg.partition()),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec),
                    headers: msg.headers().map(|h| h.detach()),
                });
            }
        }
    }
}

type Producer_ = ThreadedProducer<DeliveryContext>;
type Record<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// The header a dead letter sent without its payload carries: the size in
/// bytes of the payload left out.
const PAYLOAD_DROPPED: &str = "enricher.payload_dropped";

/// The one produce error that retrying never fixes.
fn too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

/// The headers of a dead letter: why, where the record came from, then the
/// record's own headers.
fn dead_letter_headers<H: Headers>(
    reason: &str,
    message: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    original: Option<&H>,
) -> OwnedHeaders {
    let partition = partition.to_string();
    let offset = offset.to_string();
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        ("enricher.reason", reason),
        ("enricher.error", message),
        ("enricher.source.topic", topic),
        ("enricher.source.partition", partition.as_str()),
        ("enricher.source.offset", offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    if let Some(original) = original {
        for h in original.iter() {
            headers = headers.insert(h);
        }
    }
    headers
}

/// A dead letter too large to produce goes without its payload, whose size
/// a header keeps: the source headers still say which record it was.
fn without_payload(mut record: Record<'_>) -> Record<'_> {
    let size = record.payload.map_or(0, <[u8]>::len).to_string();
    record.payload = None;
    let headers = record.headers.take().unwrap_or_default();
    record.headers = Some(headers.insert(Header {
        key: PAYLOAD_DROPPED,
        value: Some(size.as_str()),
    }));
    record
}

/// An assignment: which partition and epoch a slot stands for.
#[derive(Debug, Clone)]
struct Assignment {
    tp: TopicPartition,
    epoch: Epoch,
}

/// Everything the consumer thread owns, reachable from the rebalance,
/// commit and statistics callbacks (which librdkafka runs on that thread).
struct State {
    acker: Acker,
    /// Slot -> assignment; a slot is never reused.
    slots: HashMap<u32, Assignment>,
    /// Partition number -> (slot, epoch) of its current assignment.
    current: HashMap<i32, (u32, Epoch)>,
    next_slot: u32,
    paused: HashMap<i32, bool>,
    /// Newest record timestamp seen per partition (for the source diff).
    newest_ts: HashMap<i32, i64>,
    report: RunReport,
    /// Tracked records not yet handed to their enrichment thread, one batch
    /// per lane (none: records are enriched on the consumer thread).
    pending: Vec<Batch>,
    /// Emptied batches the lanes gave back, reused so that a batch's
    /// buffers are not grown afresh for every 128 records.
    spare: Vec<Batch>,
    /// Failed deliveries waiting for their backoff to pass.
    resend: Vec<Retry>,
    /// When `resend` goes out; `None` while it is empty.
    resend_at: Option<Instant>,
    backoff: Backoff,
    /// Failed offset commits, said once per streak.
    commit_failures: Streak,
}

struct Shared {
    topic: Arc<str>,
    state: Mutex<State>,
    acks: Mutex<mpsc::Receiver<usize>>,
    retries: Mutex<mpsc::Receiver<Retry>>,
    producer: Producer_,
    /// Acknowledges a record that cannot be produced at all (see
    /// [`Shared::give_up`]).
    self_acks: mpsc::Sender<usize>,
    output_topic: String,
    dlq_topic: String,
    /// The producer's `message.max.bytes`, for error messages.
    message_max_bytes: usize,
    drain_timeout: Duration,
    health: Arc<Health>,
    /// The enrichment threads' channels, by lane; emptied at shutdown.
    lanes: Mutex<Vec<mpsc::SyncSender<Batch>>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes every non-empty pending batch, with its lane.
    fn take_pending(state: &mut State) -> Vec<(usize, Batch)> {
        let State { pending, spare, .. } = state;
        pending
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(lane, b)| (lane, std::mem::replace(b, spare.pop().unwrap_or_default())))
            .collect()
    }

    /// Hands a batch to its lane, waiting while the lane's queue is full.
    /// The batch comes back if the lane is gone.
    fn hand_off(&self, lane: usize, batch: Batch) -> Result<(), Batch> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        match lanes.get(lane) {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }

    /// Applies every delivery report waiting, and sends failed ones again
    /// once their backoff has passed.
    fn settle(&self, state: &mut State) {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mut acked = false;
        while let Ok(opaque) = acks.try_recv() {
            acked = true;
            let (slot, offset) = unpack(opaque);
            let Some(a) = state.slots.get(&slot) else {
                continue;
            };
            let (tp, epoch) = (a.tp.clone(), a.epoch);
            if state.acker.ack(&tp, epoch, offset) == AckResult::Fenced {
                tracing::debug!(%tp, offset, "Ignored a delivery report of an earlier assignment");
            }
        }
        drop(acks);
        let now = Instant::now();
        let retries = self.retries.lock().unwrap_or_else(|p| p.into_inner());
        state.resend.extend(retries.try_iter());
        drop(retries);
        if state.resend.is_empty() {
            if acked {
                state.backoff.reset();
            }
            return;
        }
        // A broker that fails every request is not asked again in a loop:
        // the failed records wait, and the in-flight limit holds new ones.
        let due = *state
            .resend_at
            .get_or_insert_with(|| now + state.backoff.next_delay(jitter()));
        if now < due {
            return;
        }
        state.resend_at = None;
        for retry in std::mem::take(&mut state.resend) {
            let mut record = BaseRecord::with_opaque_to(&retry.topic, retry.opaque);
            if let Some(p) = retry.partition {
                record = record.partition(p);
            }
            if let Some(k) = &retry.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &retry.payload {
                record = record.payload(p.as_slice());
            }
            if let Some(h) = retry.headers.clone() {
                record = record.headers(h);
            }
            if retry.too_large {
                self.refused(state, record);
                continue;
            }
            state.report.retried += 1;
            if let Err(record) = send_blocking(&self.producer, record) {
                self.refused(state, record);
            }
        }
    }

    /// A record the producer refused as too large: an output record is
    /// dead-lettered in its place, without its payload (the enriched bytes
    /// are not the original record); a dead letter goes without its payload.
    fn refused(&self, state: &mut State, record: Record<'_>) {
        let size = record.payload.map_or(0, <[u8]>::len);
        if record.topic == self.dlq_topic {
            self.send_or_give_up(without_payload(record));
            return;
        }
        let opaque = record.delivery_opaque;
        let (slot, offset) = unpack(opaque);
        let Some(a) = state.slots.get(&slot) else {
            tracing::debug!(
                offset,
                "A refused record of an earlier assignment; not dead-lettered"
            );
            return;
        };
        let partition = a.tp.partition;
        let message = format!("enriched record of {size} bytes refused as too large");
        let headers = dead_letter_headers(
            "too_large",
            &message,
            &self.topic,
            partition,
            offset,
            record.headers.as_ref(),
        );
        let mut dead = BaseRecord::with_opaque_to(&self.dlq_topic, opaque)
            .payload(record.payload.unwrap_or_default())
            .headers(headers);
        if let Some(k) = record.key {
            dead = dead.key(k);
        }
        self.send_or_give_up(without_payload(dead));
        state.report.produced = state.report.produced.saturating_sub(1);
        state.report.dead_lettered += 1;
    }

    /// Sends a dead letter, without its payload if it is too large.
    fn send_dead_letter(&self, record: Record<'_>) {
        if let Err(record) = send_blocking(&self.producer, record) {
            tracing::warn!(
                size = record.payload.map_or(0, <[u8]>::len),
                "Dead letter too large to produce; sending it without its payload"
            );
            self.send_or_give_up(without_payload(record));
        }
    }

    fn send_or_give_up(&self, record: Record<'_>) {
        if let Err(record) = send_blocking(&self.producer, record) {
            self.give_up(&record);
        }
    }

    /// A dead letter too large even without its payload (its key and
    /// headers alone): logged, counted and acknowledged, so the partition
    /// still moves on.
    fn give_up(&self, record: &Record<'_>) {
        metrics::counter!(m::PRODUCE_ERRORS, "error" => "too_large").increment(1);
        metrics::counter!(m::RECORDS, "outcome" => "dropped").increment(1);
        let (_, offset) = unpack(record.delivery_opaque);
        tracing::error!(
            topic = record.topic,
            offset,
            "Dead letter too large even without its payload; dropped"
        );
        let _ = self.self_acks.send(record.delivery_opaque);
    }
}

/// Sends a record, waiting out a full queue, retrying any other error but
/// one: a record too large for the producer never goes, so it is handed
/// back.
fn send_blocking<'a>(producer: &Producer_, mut record: Record<'a>) -> Result<(), Record<'a>> {
    let mut waited = 0u32;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((error, r)) if too_large(&error) => return Err(r),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, r)) => {
                record = r;
                waited += 1;
                if waited % 100 == 1 {
                    tracing::error!(%error, "Cannot queue a record for produce; retrying");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// [`send_blocking`] for a tokio task.
async fn send_async<'a>(producer: &Producer_, mut record: Record<'a>) -> Result<(), Record<'a>> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((error, r)) if too_large(&error) => return Err(r),
            Err((_, r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// The consumer's context: rebalances, commit results, statistics.
struct WorkerContext {
    shared: Arc<Mutex<Option<Arc<Shared>>>>,
    /// librdkafka's global errors, said once per streak.
    client_errors: Mutex<Streak>,
}

impl WorkerContext {
    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientContext for WorkerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.client_errors, &error, reason);
    }

    fn stats(&self, stats: Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        if up {
            let mut streak = self.client_errors.lock().unwrap_or_else(|p| p.into_inner());
            if streak.is_active() {
                streak.succeeded(Instant::now());
            }
        }
        let Some(shared) = self.shared() else { return };
        shared.health.broker_up.store(up, Ordering::Relaxed);
        let Some(topic) = stats.topics.get(&*shared.topic) else {
            return;
        };
        let mut state = shared.state();
        for (partition, p) in &topic.partitions {
            if *partition < 0 || p.hi_offset < 0 {
                continue;
            }
            let newest = state.newest_ts.get(partition).copied();
            let tp = TopicPartition::new(Arc::clone(&shared.topic), *partition);
            state.acker.set_high_watermark(&tp, p.hi_offset, newest);
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared() else { return };
        let Rebalance::Revoke(tpl) = rebalance else {
            if let Rebalance::Error(e) = rebalance {
                tracing::error!(error = %e, "Rebalance failed");
            }
            return;
        };
        let revoked: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == &*shared.topic)
            .map(|e| e.partition())
            .collect();
        let lost = consumer.assignment_lost();
        // Records taken but not yet handed to their lane go first, so the
        // drain below can see them produced.
        let pending = Shared::take_pending(&mut shared.state());
        for (lane, batch) in pending {
            if shared.hand_off(lane, batch).is_err() {
                tracing::error!(
                    lane,
                    "An enrichment thread is gone; its records will be processed again by the partitions' next owner"
                );
            }
        }
        let mut state = shared.state();
        if lost {
            for p in &revoked {
                let tp = TopicPartition::new(Arc::clone(&shared.topic), *p);
                state.acker.lost(&tp);
                forget(&mut state, *p);
            }
            tracing::warn!(partitions = ?revoked, "Partitions lost; their in-flight records will be processed again by their new owner");
            return;
        }
        for p in &revoked {
            state
                .acker
                .revoke(&TopicPartition::new(Arc::clone(&shared.topic), *p));
        }
        // Drain: delivery reports keep arriving from the producer thread and
        // from lookup tasks; apply them here, up to the deadline.
        let deadline = Instant::now() + shared.drain_timeout;
        loop {
            shared.settle(&mut state);
            let drained = revoked.iter().all(|p| {
                state
                    .acker
                    .is_drained(&TopicPartition::new(Arc::clone(&shared.topic), *p))
            });
            if drained || Instant::now() >= deadline {
                if !drained {
                    tracing::warn!(partitions = ?revoked, "Drain deadline passed; committing what is done");
                }
                break;
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(2));
            state = shared.state();
        }
        let mut final_tpl = TopicPartitionList::new();
        let mut commits = Vec::new();
        for p in &revoked {
            let tp = TopicPartition::new(Arc::clone(&shared.topic), *p);
            if let Some(c) = state.acker.commit_now(&tp) {
                let _ = final_tpl.add_partition_offset(&shared.topic, *p, Offset::Offset(c.offset));
                commits.push(c);
            }
        }
        if !commits.is_empty() {
            match commit_final(consumer, &final_tpl) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                    for c in &commits {
                        state.acker.committed(&c.tp, c.epoch, c.offset);
                        state.report.commits += 1;
                    }
                }
                Err(error) => tracing::error!(%error, "Final commit of revoked partitions failed"),
            }
        }
        for p in &revoked {
            state
                .acker
                .release(&TopicPartition::new(Arc::clone(&shared.topic), *p));
            forget(&mut state, *p);
        }
        tracing::info!(partitions = ?revoked, "Partitions revoked, drained and committed");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared() else { return };
        if let Rebalance::Assign(tpl) = rebalance {
            let mut state = shared.state();
            let mut assigned = Vec::new();
            let mut resume = TopicPartitionList::new();
            for e in tpl.elements() {
                if e.topic() != &*shared.topic {
                    continue;
                }
                let tp = TopicPartition::new(Arc::clone(&shared.topic), e.partition());
                let epoch = state.acker.assign(tp.clone());
                let slot = state.next_slot;
                state.next_slot = state.next_slot.wrapping_add(1) & ((1 << (64 - OFFSET_BITS)) - 1);
                state.slots.insert(slot, Assignment { tp, epoch });
                state.current.insert(e.partition(), (slot, epoch));
                state.paused.insert(e.partition(), false);
                let _ = resume.add_partition(&shared.topic, e.partition());
                assigned.push(e.partition());
            }
            // A partition paused under an earlier assignment starts fetching.
            if resume.count() > 0 {
                let _ = consumer.resume(&resume);
            }
            shared.health.assigned.store(true, Ordering::Relaxed);
            tracing::info!(partitions = ?assigned, "Partitions assigned");
        }
    }
}

fn forget(state: &mut State, partition: i32) {
    if let Some((slot, _)) = state.current.remove(&partition) {
        state.slots.remove(&slot);
    }
    state.paused.remove(&partition);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn client_config(
    config: &Config,
    extra: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in config.kafka.properties.iter().chain(extra) {
        c.set(k, v);
    }
    c
}

/// The producer's configuration, with the defaults a careful operator would
/// choose: `acks=all`, records in order through retries (one request in
/// flight per broker, or the idempotent producer with `kafka.idempotence`),
/// compression, and batching for throughput.
fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    if config.kafka.idempotence {
        c.set("enable.idempotence", "true");
    } else {
        c.set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    c.set("acks", "all")
        .set("compression.type", config.kafka.compression.librdkafka())
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set(
            "queue.buffering.max.messages",
            (config.worker.max_in_flight * 4).max(100_000).to_string(),
        );
    for (k, v) in config
        .kafka
        .properties
        .iter()
        .chain(&config.kafka.producer_properties)
    {
        c.set(k, v);
    }
    c
}

fn producer(config: &Config, ctx: DeliveryContext) -> Result<Producer_, ConfigError> {
    producer_config(config)
        .create_with_context(ctx)
        .map_err(|e| client_error(config, "producer", &e))
}

/// The producer's `message.max.bytes` as configured (librdkafka's default
/// otherwise).
fn message_max_bytes(config: &Config) -> usize {
    config
        .kafka
        .producer_properties
        .get("message.max.bytes")
        .or_else(|| config.kafka.properties.get("message.max.bytes"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The consumer's `fetch.queue.backoff.ms` unless configured.
const FETCH_QUEUE_BACKOFF_MS: &str = "100";
/// The consumer's prefetch bound (`queued.max.messages.kbytes`) unless
/// configured: 16 MiB.
const QUEUED_MAX_KBYTES: &str = "16384";

fn consumer_config(config: &Config) -> ClientConfig {
    let mut c = client_config(config, &std::collections::BTreeMap::new());
    c.set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka (2.4 and later) waits this long before fetching again
        // once its prefetch queue is full; its 1 s default idles a worker
        // that drains the queue faster than that (any worker catching up
        // on lag): the load test saw whole-process stalls of 0.3-0.5 s that
        // cut passthrough from about 200k to 110k records/s.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        // The prefetch is most of a worker's memory: librdkafka's 64 MiB
        // default per worker bought nothing once the backoff above is
        // short (bench passthrough and warm the same at 16 MiB).
        .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES)
        .set(
            "statistics.interval.ms",
            config.worker.stats_interval_ms.to_string(),
        );
    for (k, v) in &config.kafka.consumer_properties {
        c.set(k, v);
    }
    c
}

fn consumer(
    config: &Config,
    ctx: WorkerContext,
) -> Result<BaseConsumer<WorkerContext>, ConfigError> {
    consumer_config(config)
        .create_with_context(ctx)
        .map_err(|e| client_error(config, "consumer", &e))
}

/// Creates the consumer and the producer exactly as [`run`] would, and drops
/// them: librdkafka checks every property then (a bad value, a TLS file it
/// cannot load, a SASL mechanism it does not have) without reaching a broker.
/// The binary calls it before binding any port; the error names the property.
pub fn check_clients(config: &Config) -> Result<(), ConfigError> {
    let consumer: BaseConsumer<Quiet> = consumer_config(config)
        .create_with_context(Quiet)
        .map_err(|e| client_error(config, "consumer", &e))?;
    drop(consumer);
    let producer: rdkafka::producer::BaseProducer<Quiet> = producer_config(config)
        .create_with_context(Quiet)
        .map_err(|e| client_error(config, "producer", &e))?;
    drop(producer);
    Ok(())
}

/// The context of [`check_clients`]' clients: they live for an instant, but
/// may start connecting first, and a failure of that (no broker reachable
/// yet) is no news for a configuration check: nothing is logged, so the
/// check's own error is the one line a bad configuration prints.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for Quiet {}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A client that librdkafka refused, as a config error naming the property
/// (`kafka.properties.ssl.ca.location`) with secret values masked.
fn client_error(config: &Config, client: &str, error: &KafkaError) -> ConfigError {
    let own = if client == "consumer" {
        (
            "kafka.consumer_properties",
            &config.kafka.consumer_properties,
        )
    } else {
        (
            "kafka.producer_properties",
            &config.kafka.producer_properties,
        )
    };
    let sections = [own, ("kafka.properties", &config.kafka.properties)];
    let key_of = |property: &str| {
        sections
            .iter()
            .find(|(_, props)| props.contains_key(property))
            .map(|(section, _)| format!("{section}.{property}"))
    };
    let mask = |text: &str| {
        let mut text = text.to_string();
        for (_, props) in &sections {
            for (k, v) in props.iter() {
                if crate::config::is_secret_property(k) && !v.is_empty() {
                    text = text.replace(v.as_str(), "***");
                }
            }
        }
        text
    };
    match error {
        KafkaError::ClientConfig(_, desc, property, _) => ConfigError::new(
            key_of(property).unwrap_or_else(|| "kafka".into()),
            format!(
                "librdkafka refused the {client} configuration: {}",
                mask(desc)
            ),
        ),
        KafkaError::ClientCreation(message) => {
            // librdkafka names the property that failed ("ssl.ca.location
            // failed: ...") or quotes its value ("Unsupported hash function:
            // SCRAM-SHA-1024"); never match on a secret's value.
            let properties = || sections.iter().flat_map(|(_, props)| props.iter());
            let named = properties()
                .map(|(k, _)| k)
                .filter(|k| message.contains(k.as_str()))
                .max_by_key(|k| k.len())
                .or_else(|| {
                    properties()
                        .filter(|(k, v)| {
                            v.len() >= 3
                                && !crate::config::is_secret_property(k)
                                && message.contains(v.as_str())
                        })
                        .max_by_key(|(_, v)| v.len())
                        .map(|(k, _)| k)
                });
            ConfigError::new(
                named
                    .and_then(|k| key_of(k))
                    .unwrap_or_else(|| "kafka.properties".into()),
                format!("cannot create the {client}: {}", mask(message)),
            )
        }
        other => ConfigError::new("kafka", format!("{client}: {}", mask(&other.to_string()))),
    }
}

/// Runs the worker until `stop` is set, then drains, commits and leaves the
/// group. Blocking: call it on its own thread. `runtime` runs the lookups
/// of records that miss L1.
pub fn run(
    config: &Config,
    enricher: Arc<Enricher>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
) -> Result<RunReport, WorkerError> {
    config.validate_run()?;
    let topic: Arc<str> = config.kafka.input_topic.as_str().into();
    let (ack_tx, ack_rx) = mpsc::channel();
    let (retry_tx, retry_rx) = mpsc::channel();
    let self_acks = ack_tx.clone();
    let outcomes = Arc::new(Outcomes::default());
    let producer = producer(
        config,
        DeliveryContext {
            acks: ack_tx,
            retries: retry_tx,
            failures: Mutex::new(Streak::new(DELIVERY_FAILURES)),
            failing: AtomicBool::new(false),
            client_errors: Mutex::new(Streak::new(CLIENT_ERRORS)),
            outcomes: Arc::clone(&outcomes),
            dlq_topic: config.kafka.dlq_topic(),
            passthrough: config.worker.passthrough,
        },
    )?;
    let slot = Arc::new(Mutex::new(None));
    let consumer = consumer(
        config,
        WorkerContext {
            shared: Arc::clone(&slot),
            client_errors: Mutex::new(Streak::new(CLIENT_ERRORS)),
        },
    )?;
    let acker_config = AckerConfig {
        commit_interval: Duration::from_millis(config.worker.commit_interval_ms),
        log_interval: Duration::from_secs(config.worker.progress_log_secs.max(1)),
    };
    let shared = Arc::new(Shared {
        topic: Arc::clone(&topic),
        state: Mutex::new(State {
            acker: Acker::new(acker_config, Instant::now()),
            slots: HashMap::new(),
            current: HashMap::new(),
            next_slot: 0,
            paused: HashMap::new(),
            newest_ts: HashMap::new(),
            report: RunReport::default(),
            pending: Vec::new(),
            spare: Vec::new(),
            resend: Vec::new(),
            resend_at: None,
            backoff: Backoff::new(
                Duration::from_millis(config.worker.resend_backoff_ms),
                Duration::from_millis(config.worker.resend_backoff_max_ms),
            ),
            commit_failures: Streak::new(COMMIT_FAILURES),
        }),
        acks: Mutex::new(ack_rx),
        retries: Mutex::new(retry_rx),
        producer,
        self_acks,
        output_topic: config.kafka.output_topic(),
        dlq_topic: config.kafka.dlq_topic(),
        message_max_bytes: message_max_bytes(config),
        drain_timeout: Duration::from_millis(config.worker.drain_timeout_ms),
        health: Arc::clone(&health),
        lanes: Mutex::new(Vec::new()),
    });
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&shared));
    consumer.subscribe(&[&topic])?;
    tracing::info!(
        topic = %topic,
        output = %shared.output_topic,
        group = %config.kafka.group_id,
        "Worker started"
    );
    let stage = || Stage {
        shared: Arc::clone(&shared),
        enricher: Arc::clone(&enricher),
        runtime: runtime.clone(),
        max_record_bytes: config.input.max_record_bytes,
        preserve_order: config.worker.preserve_order,
        passthrough: config.worker.passthrough,
        scratch: Scratch::with_front(),
        out: Vec::with_capacity(64 * 1024),
        produced: 0,
    };
    // Passthrough copies on the consumer thread: handing records to another
    // thread would only add work.
    let lanes = if config.worker.passthrough {
        0
    } else {
        config.worker.enrich_threads
    };
    let lanes = if lanes > 0 {
        let (threads, senders) =
            Lanes::start((0..lanes).map(|_| stage()).collect()).map_err(|e| {
                ConfigError::new(
                    "worker.enrich_threads",
                    format!("cannot start a thread: {e}"),
                )
            })?;
        *shared.lanes.lock().unwrap_or_else(|p| p.into_inner()) = senders;
        shared.state().pending = (0..lanes).map(|_| Batch::default()).collect();
        Some(threads)
    } else {
        None
    };
    let mut worker = Loop {
        shared: Arc::clone(&shared),
        enricher: Arc::clone(&enricher),
        per_partition: config.worker.max_in_flight_per_partition,
        total: config.worker.max_in_flight,
        stage: stage(),
        lanes,
        full_since: None,
        all_paused: false,
        consumer_errors: Streak::new(CONSUMER_ERRORS),
        outcomes,
    };
    worker.run(&consumer, &stop, config)?;
    let report = shared.state().report;
    // Break the context's reference cycle before the clients are dropped.
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(report)
}

struct Loop {
    shared: Arc<Shared>,
    enricher: Arc<Enricher>,
    per_partition: usize,
    total: usize,
    /// Enriches on the consumer thread: every record without lanes, and the
    /// batches of a lane that is gone.
    stage: Stage,
    /// The enrichment threads, if any.
    lanes: Option<Lanes>,
    /// Since when the total in-flight limit has been reached.
    full_since: Option<Instant>,
    all_paused: bool,
    /// Consumer errors, said once per streak.
    consumer_errors: Streak,
    outcomes: Arc<Outcomes>,
}

impl Drop for Loop {
    /// Should the loop end without its shutdown, the lanes still stop.
    fn drop(&mut self) {
        self.close_lanes();
    }
}

/// How long the loop holds back at the total in-flight limit before it
/// pauses every partition.
const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(1);

/// How long the loop sleeps per turn while it holds back.
const HOLD_TICK: Duration = Duration::from_millis(1);

impl Loop {
    fn run(
        &mut self,
        consumer: &BaseConsumer<WorkerContext>,
        stop: &AtomicBool,
        config: &Config,
    ) -> Result<(), WorkerError> {
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.shared
                .health
                .heartbeat_ms
                .store(now_ms(), Ordering::Relaxed);
            // Up to a batch of messages per turn, then the bookkeeping. At
            // the total in-flight limit no message is taken until delivery
            // reports bring it down (see `flow_control`).
            let mut wait = Duration::from_millis(20);
            if self.holding() {
                std::thread::sleep(HOLD_TICK);
            }
            for _ in 0..512 {
                if self.holding() {
                    break;
                }
                match consumer.poll(wait) {
                    None => break,
                    Some(Ok(msg)) => {
                        if self.consumer_errors.is_active() {
                            self.consumer_errors.succeeded(Instant::now());
                        }
                        self.take(&msg);
                    }
                    Some(Err(error)) => {
                        metrics::counter!(m::CONSUMER_ERRORS, "error" => error_label(&error))
                            .increment(1);
                        self.consumer_errors
                            .failed(Instant::now(), &error, "consumer");
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            self.hand_off_pending();
            self.stage.publish_produced();
            let now = Instant::now();
            {
                let shared = Arc::clone(&self.shared);
                let mut state = shared.state();
                shared.settle(&mut state);
                self.flow_control(consumer, &mut state, now);
                if now.duration_since(last_tick) >= Duration::from_millis(100) {
                    last_tick = now;
                    commit(consumer, &shared.topic, &mut state, now, false);
                    let now_ms = now_ms();
                    state.acker.publish(now_ms);
                    state.acker.log_progress(now);
                    metrics::gauge!(m::IN_FLIGHT).set(state.acker.total_in_flight() as f64);
                }
            }
            if last_tick == now {
                m::publish(&self.enricher);
                self.outcomes.publish();
            }
        }
        self.shutdown(consumer, config);
        Ok(())
    }

    /// Whether the total in-flight limit holds the loop back from taking
    /// messages (without pausing: see [`Self::flow_control`]).
    fn holding(&self) -> bool {
        self.full_since.is_some() && !self.all_paused
    }

    /// Bounds in-flight records: pauses a partition at its limit and resumes
    /// it at half.
    ///
    /// At the total limit the loop first just stops taking messages:
    /// librdkafka stops fetching once its bounded prefetch queue is full, and
    /// the queue is kept. Pausing would throw it away (librdkafka purges a
    /// paused partition's prefetched messages) and cost a fetch round trip
    /// per partition on resume. Only when the limit has held for
    /// [`HOLD_BEFORE_PAUSE`] (a stuck producer) is everything paused, so the
    /// loop can poll again and serve rebalances while nothing is taken.
    fn flow_control(
        &mut self,
        consumer: &BaseConsumer<WorkerContext>,
        state: &mut State,
        now: Instant,
    ) {
        let topic = &self.shared.topic;
        let full = state.acker.total_in_flight() >= self.total;
        if full {
            self.full_since.get_or_insert(now);
        } else {
            self.full_since = None;
        }
        let over_total = self
            .full_since
            .is_some_and(|since| now.duration_since(since) >= HOLD_BEFORE_PAUSE);
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        let partitions: Vec<i32> = state.current.keys().copied().collect();
        for p in partitions {
            let in_flight = state
                .acker
                .in_flight(&TopicPartition::new(Arc::clone(topic), p));
            let paused = state.paused.get(&p).copied().unwrap_or(false);
            let want_paused = over_total
                || in_flight >= self.per_partition
                || (paused && in_flight > self.per_partition / 2);
            if want_paused && !paused {
                let _ = pause.add_partition(topic, p);
                state.paused.insert(p, true);
            } else if !want_paused && paused {
                let _ = resume.add_partition(topic, p);
                state.paused.insert(p, false);
            }
        }
        if pause.count() > 0 {
            let _ = consumer.pause(&pause);
        }
        if resume.count() > 0 {
            let _ = consumer.resume(&resume);
        }
        self.all_paused = over_total;
    }

    /// Takes one message: tracks it, then enriches and produces it (or
    /// dead-letters it) here, or adds it to its lane's batch.
    fn take(&mut self, msg: &BorrowedMessage<'_>) {
        let partition = msg.partition();
        let offset = msg.offset();
        let ts = msg.timestamp().to_millis();
        let mut state = self.shared.state();
        let Some(&(slot, epoch)) = state.current.get(&partition) else {
            return;
        };
        // Even a paused partition's message is taken: librdkafka has
        // moved past it, and skipping it would let the commit point
        // move past it too.
        let tp = TopicPartition::new(Arc::clone(&self.shared.topic), partition);
        if state.acker.track(&tp, epoch, offset, ts).is_err() {
            return;
        }
        if let Some(ts) = ts {
            let newest = state.newest_ts.entry(partition).or_insert(ts);
            *newest = (*newest).max(ts);
        }
        state.report.consumed += 1;
        if state.acker.total_in_flight() >= self.total {
            self.full_since.get_or_insert_with(Instant::now);
        }
        let opaque = pack(slot, offset);
        self.enricher.stats().records_in.inc();
        let State { pending, spare, .. } = &mut *state;
        let lane = lane_of(partition, pending.len());
        let Some(batch) = pending.get_mut(lane) else {
            // No lanes: enriched here.
            drop(state);
            self.stage.process(Msg::of(msg), opaque);
            return;
        };
        batch.push(msg, opaque);
        if batch.len() >= BATCH_RECORDS {
            let batch = std::mem::replace(batch, spare.pop().unwrap_or_default());
            drop(state);
            self.hand_off(lane, batch);
        }
    }

    /// Stops the lanes once they have processed what they were handed.
    /// Their stages hold the shared state, so until this runs they keep it
    /// (and the producer) alive.
    fn close_lanes(&mut self) {
        self.shared
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(lanes) = self.lanes.take() {
            lanes.join();
        }
    }

    /// Hands every pending batch to its lane.
    fn hand_off_pending(&mut self) {
        let pending = Shared::take_pending(&mut self.shared.state());
        for (lane, batch) in pending {
            self.hand_off(lane, batch);
        }
    }

    /// Hands a batch to its lane; should the lane be gone, the batch is
    /// processed here.
    fn hand_off(&mut self, lane: usize, batch: Batch) {
        if let Err(mut batch) = self.shared.hand_off(lane, batch) {
            tracing::error!(
                lane,
                "An enrichment thread is gone; enriching its records on the consumer thread"
            );
            batch.run(&mut self.stage);
        }
    }

    fn shutdown(&mut self, consumer: &BaseConsumer<WorkerContext>, config: &Config) {
        let shared = Arc::clone(&self.shared);
        shared.health.stopping.store(true, Ordering::Relaxed);
        tracing::info!("Stopping: draining in-flight records");
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        self.hand_off_pending();
        let deadline = Instant::now() + Duration::from_millis(config.worker.shutdown_grace_ms);
        loop {
            // Keep serving callbacks; paused partitions deliver nothing new
            // (and anything that slips through is not tracked).
            let _ = consumer.poll(Duration::from_millis(10));
            let mut state = shared.state();
            shared.settle(&mut state);
            if state.acker.total_in_flight() == 0 || Instant::now() >= deadline {
                if state.acker.total_in_flight() > 0 {
                    tracing::warn!(
                        in_flight = state.acker.total_in_flight(),
                        "Grace period over; committing what is done"
                    );
                }
                break;
            }
        }
        // The lanes finish what they were handed (anything still in flight
        // is produced, or its delivery report comes too late to commit) and
        // stop; nothing is handed to them after this.
        self.close_lanes();
        self.stage.publish_produced();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = shared
            .producer
            .flush(remaining.max(Duration::from_millis(100)));
        let mut state = shared.state();
        shared.settle(&mut state);
        state.report.undelivered = state.acker.total_in_flight() as u64;
        let due = state.acker.commits_due(Instant::now(), true);
        if !due.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for c in &due {
                let _ = tpl.add_partition_offset(
                    &shared.topic,
                    c.tp.partition,
                    Offset::Offset(c.offset),
                );
            }
            match commit_final(consumer, &tpl) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                    for c in &due {
                        state.acker.committed(&c.tp, c.epoch, c.offset);
                        state.report.commits += 1;
                    }
                }
                Err(error) => tracing::error!(%error, "Final commit failed"),
            }
        }
        state.acker.publish(now_ms());
        drop(state);
        m::publish(&self.enricher);
        self.outcomes.publish();
        consumer.unsubscribe();
        tracing::info!("Stopped");
    }
}

/// Commits what is due and tells the acker how it went.
fn commit(
    consumer: &BaseConsumer<WorkerContext>,
    topic: &str,
    state: &mut State,
    now: Instant,
    force: bool,
) {
    let due = state.acker.commits_due(now, force);
    if due.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for c in &due {
        let _ = tpl.add_partition_offset(topic, c.tp.partition, Offset::Offset(c.offset));
    }
    // Synchronous on purpose. rust-rdkafka 0.39 never calls
    // `ConsumerContext::commit_callback` for a manual `CommitMode::Async`
    // commit (it passes librdkafka no reply queue; fede1024/rust-rdkafka#856),
    // so with async commits the acker never learnt that anything was
    // committed: no lag or committed-offset gauges, failures unseen, and the
    // same offset sent again every interval. A sync commit costs this thread
    // one round trip per commit interval; while the coordinator is away
    // librdkafka holds it for at most `session.timeout.ms`. The result covers
    // the whole list: any partition's error fails them all, which only means
    // a retry at the next tick.
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            state.commit_failures.succeeded(now);
            for c in &due {
                state.acker.committed(&c.tp, c.epoch, c.offset);
                state.report.commits += 1;
            }
        }
        Err(error) => {
            state.commit_failures.failed(now, &error, topic);
            for c in &due {
                state.acker.commit_failed(&c.tp, c.epoch, c.offset);
            }
        }
    }
}

/// A last commit before a partition is released or the worker exits: there
/// is no later tick to retry it, so it is tried a few times here.
fn commit_final(
    consumer: &BaseConsumer<WorkerContext>,
    tpl: &TopicPartitionList,
) -> KafkaResult<()> {
    let mut attempt = 0;
    loop {
        match consumer.commit(tpl, CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(code))
                if code != RDKafkaErrorCode::NoOffset && attempt < 3 =>
            {
                attempt += 1;
                tracing::warn!(error = %code, attempt, "Final commit failed; trying again");
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            other => return other,
        }
    }
}

/// Records on Kafka carry no line ending.
fn strip_newline(out: &mut Vec<u8>) {
    if out.last() == Some(&b'\n') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaques_round_trip() {
        for (slot, offset) in [
            (0, 0),
            (1, 1),
            (1_048_575, (1 << 44) - 1),
            (7, 123_456_789_012),
        ] {
            assert_eq!(unpack(pack(slot, offset)), (slot, offset));
        }
    }

    #[test]
    fn the_producer_keeps_order_without_the_idempotent_producers_busy_wait() {
        let mut config = Config::default();
        let c = producer_config(&config);
        assert_eq!(c.get("enable.idempotence"), Some("false"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("acks"), Some("all"));
        config.kafka.idempotence = true;
        let c = producer_config(&config);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), None);
    }

    #[test]
    fn the_fetch_backoff_is_short_and_the_prefetch_bounded_unless_configured() {
        let mut config = Config::default();
        let c = consumer_config(&config);
        assert_eq!(
            c.get("fetch.queue.backoff.ms"),
            Some(FETCH_QUEUE_BACKOFF_MS)
        );
        assert_eq!(c.get("queued.max.messages.kbytes"), Some(QUEUED_MAX_KBYTES));
        config
            .kafka
            .consumer_properties
            .insert("fetch.queue.backoff.ms".into(), "500".into());
        let c = consumer_config(&config);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("500"));
    }
}

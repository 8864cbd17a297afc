//! The one owner of the producer and of each input topic's output,
//! dead-letter and alerts topics (its [`Route`]): the only place that builds a record
//! to send (a dead letter included). Delivery reports come back through
//! `delivery.rs`.
//!
//! ```text
//! lane / lookup task --send(opaque)--> producer --delivery report (producer thread)-->
//!     ok:     (opaque, outcome) --acks--> partitions::settle --> acker, the route's counts
//!     ok, an alert: Retry --forwards--> partitions::settle --> Output::forward (to the output)
//!     failed: Retry --retries--> partitions::settle --after a backoff--> Output::resend
//!     refused as too large (now or at delivery): the original record is dead-lettered
//! ```
//!
//! A record's delivery opaque packs its partition's assignment slot, its
//! offset and whether it is a dead letter or an alert ([`pack`]); the slot
//! names the epoch (so reports from an earlier assignment are fenced) and
//! the route. A record that matched an indicator, when its route has an
//! alerts topic, goes there first with the alert bit; once that delivery is
//! acknowledged the same bytes go to the output topic without it, and that
//! delivery acknowledges the offset: committed only after both.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::clients;
use super::delivery::{self, DeliveryContext};
pub(super) use super::delivery::{Deliveries, Resends, Retry};
use super::route::{Outcome, Route};
use crate::config::{Config, ConfigError};
use crate::metrics as m;
use crate::record::RecordError;

/// The opaque of a produced record: assignment slot in the high 20 bits,
/// then one bit set on an alert, one set on a dead letter, then the offset
/// in the low 42 (4.4 trillion records per partition).
const OFFSET_BITS: u32 = 42;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const DEAD_LETTER: u64 = 1 << OFFSET_BITS;
const ALERT: u64 = 1 << (OFFSET_BITS + 1);
const SLOT_SHIFT: u32 = OFFSET_BITS + 2;
/// Slots wrap at this mask.
pub(super) const SLOT_MASK: u32 = (1 << (64 - SLOT_SHIFT)) - 1;

/// A delivery opaque for `offset` of the partition assigned in `slot`.
pub(super) fn pack(slot: u32, offset: i64) -> usize {
    ((u64::from(slot) << SLOT_SHIFT) | (offset as u64 & OFFSET_MASK)) as usize
}

/// The slot and the offset of a delivery opaque.
pub(super) fn unpack(opaque: usize) -> (u32, i64) {
    let v = opaque as u64;
    ((v >> SLOT_SHIFT) as u32, (v & OFFSET_MASK) as i64)
}

/// The opaque of the dead letter of the record whose opaque is `opaque`
/// (an alert's dead letter is no alert: its delivery acknowledges).
pub(super) fn dead_letter_opaque(opaque: usize) -> usize {
    ((opaque as u64 & !ALERT) | DEAD_LETTER) as usize
}

/// The opaque of a record's copy sent to its alerts topic.
pub(super) fn alert_opaque(opaque: usize) -> usize {
    (opaque as u64 | ALERT) as usize
}

/// Whether an opaque is an alert's (its delivery is forwarded, not acked).
pub(super) fn is_alert(opaque: usize) -> bool {
    opaque as u64 & ALERT != 0
}

/// The opaque of a delivered alert's output record.
pub(super) fn without_alert(opaque: usize) -> usize {
    (opaque as u64 & !ALERT) as usize
}

/// Whether an opaque is a dead letter's.
pub(super) fn is_dead_letter(opaque: usize) -> bool {
    opaque as u64 & DEAD_LETTER != 0
}

/// A delivery report that succeeded: the record's opaque and outcome.
pub(super) type Ack = (usize, Outcome);

pub(super) type Producer_ = BaseProducer<DeliveryContext>;
type Record<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// The header a dead letter sent without its payload carries: the size in
/// bytes of the payload left out.
const PAYLOAD_DROPPED: &str = "enricher.payload_dropped";

/// The header that says why a record was dead-lettered.
pub(super) const REASON: &str = "enricher.reason";

/// The header that names a dead letter's input topic.
pub(super) const SOURCE_TOPIC: &str = "enricher.source.topic";

/// A header's value as text, if the record has it.
pub(super) fn header<'a>(headers: Option<&'a impl Headers>, key: &str) -> Option<&'a str> {
    headers
        .and_then(|h| h.iter().find(|h| h.key == key))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Where a record came from: its topic's route, its partition and offset
/// in the input, its key and headers (which go out with it).
pub(super) struct Source<'a> {
    pub(super) route: &'a Arc<Route>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<&'a [u8]>,
    pub(super) headers: Option<OwnedHeaders>,
}

/// How long one call of the delivery-report thread waits. rdkafka's
/// `BaseProducer::poll` (0.39) polls until its deadline and hands librdkafka
/// the time left truncated to whole milliseconds, so the last millisecond
/// of every call is a loop of non-blocking polls: the 100 ms calls of its
/// `ThreadedProducer` burnt about 1% of a core, idle or busy (perf on
/// tansu: `clock_gettime`, a mutex and the queue pop, 0.4 µs a record in
/// the bench's warm pass). One-second calls make it 0.1%.
const POLL_WINDOW: Duration = Duration::from_secs(1);

/// The producer and the thread that serves its delivery reports.
struct Polled {
    producer: Arc<Producer_>,
    stop: Arc<AtomicBool>,
}

impl Polled {
    fn start(producer: Producer_) -> std::io::Result<Self> {
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&producer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("producer poll".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.poll(POLL_WINDOW);
                }
            })?;
        Ok(Self { producer, stop })
    }
}

impl std::ops::Deref for Polled {
    type Target = Producer_;

    fn deref(&self) -> &Producer_ {
        &self.producer
    }
}

impl Drop for Polled {
    /// The thread ends within [`POLL_WINDOW`] and drops the producer then;
    /// the worker flushed it before.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The producer; each record names its topics ([`Route`]).
pub(super) struct Output {
    producer: Polled,
    /// Output records go to their input partition (`worker.preserve_order`).
    same_partition: bool,
    /// The producer's `message.max.bytes`, for error messages.
    message_max_bytes: usize,
    /// Acknowledges a record that cannot be produced at all (see
    /// [`Output::give_up`]).
    self_acks: mpsc::Sender<Ack>,
    produced: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
}

/// What [`Output::start`] gives: the output and the delivery reports'
/// receiving end.
pub(super) struct Started {
    pub(super) output: Output,
    pub(super) deliveries: Deliveries,
}

impl Output {
    /// Creates the producer.
    pub(super) fn start(config: &Config) -> Result<Started, ConfigError> {
        let (context, deliveries, self_acks) = delivery::channels(config.worker.passthrough);
        let producer = clients::producer(config, context)?;
        let producer = Polled::start(producer).map_err(|e| {
            ConfigError::new("kafka.brokers", format!("cannot start the producer: {e}"))
        })?;
        Ok(Started {
            output: Self {
                producer,
                same_partition: config.worker.preserve_order,
                message_max_bytes: clients::message_max_bytes(config),
                self_acks,
                produced: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                retried: AtomicU64::new(0),
            },
            deliveries,
        })
    }

    /// Records produced, dead-lettered and sent again so far.
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        (
            self.produced.load(Ordering::Relaxed),
            self.dead_lettered.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
        )
    }

    /// Adds records a lane produced to the count.
    pub(super) fn add_produced(&self, n: u64) {
        if n > 0 {
            self.produced.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Waits up to `timeout` for everything queued to be delivered.
    pub(super) fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }

    /// The record to send for `source`: to its output topic, or, for a
    /// record that matched (`alert`) when its route has an alerts topic,
    /// there first, with the alert bit and on any partition (the alerts
    /// topic may have fewer than the input).
    fn record<'a>(
        &'a self,
        opaque: usize,
        source: &'a Source<'_>,
        payload: Option<&'a [u8]>,
        headers: Option<OwnedHeaders>,
        alert: bool,
    ) -> Record<'a> {
        let (topic, opaque, pinned): (&str, usize, bool) = match source.route.intel.as_deref() {
            Some(intel) if alert => (intel, alert_opaque(opaque), false),
            _ => (&source.route.output, opaque, self.same_partition),
        };
        let mut record = BaseRecord::with_opaque_to(topic, opaque);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(k) = source.key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        if pinned {
            record = record.partition(source.partition);
        }
        record
    }

    /// Produces `payload` (the enriched record, or the original one copied)
    /// for `source`, waiting while the producer's queue is full; to the
    /// alerts topic first if it matched (`alert`). Returns whether it went
    /// to the output topic (the caller counts it); a record too large to
    /// produce is dead-lettered instead, as `original`.
    pub(super) fn send(
        &self,
        opaque: usize,
        mut source: Source<'_>,
        payload: Option<&[u8]>,
        original: Option<&[u8]>,
        alert: bool,
    ) -> bool {
        let headers = source.headers.take();
        let record = self.record(opaque, &source, payload, headers, alert);
        let Err(refused) = send_blocking(&self.producer, record) else {
            return true;
        };
        source.headers = refused.headers;
        let error = self.too_large_error(payload);
        tracing::warn!(%error, offset = source.offset, "Output too large to produce; dead-lettering the record");
        self.dead_letter(opaque, &source, original, &error);
        false
    }

    /// [`Output::send`] for a lookup task: waits without blocking its
    /// thread, and counts what it produced itself. Returns whether it went
    /// to the output topic.
    pub(super) async fn send_async(
        &self,
        opaque: usize,
        source: Source<'_>,
        payload: &[u8],
        original: &[u8],
        alert: bool,
    ) -> bool {
        let headers = source.headers.clone();
        let record = self.record(opaque, &source, Some(payload), headers, alert);
        if send_async(&self.producer, record).await.is_ok() {
            self.produced.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let error = self.too_large_error(Some(payload));
        tracing::warn!(%error, offset = source.offset, "Output too large to produce; dead-lettering the record");
        let record = self.dead_letter_record(opaque, &source, Some(original), &error);
        if let Err(record) = send_async(&self.producer, record).await
            && let Err(record) = send_async(&self.producer, without_payload(record)).await
        {
            self.give_up(&record);
        }
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        false
    }

    fn too_large_error(&self, payload: Option<&[u8]>) -> RecordError {
        RecordError::TooLarge {
            limit: self.message_max_bytes,
            size: payload.map_or(0, <[u8]>::len),
        }
    }

    /// Sends the original record to the dead-letter topic with why, and
    /// where it came from; without its payload if that is too large too.
    pub(super) fn dead_letter(
        &self,
        opaque: usize,
        source: &Source<'_>,
        original: Option<&[u8]>,
        error: &RecordError,
    ) {
        let record = self.dead_letter_record(opaque, source, original, error);
        if let Err(record) = send_blocking(&self.producer, record) {
            tracing::warn!(
                size = record.payload.map_or(0, <[u8]>::len),
                "Dead letter too large to produce; sending it without its payload"
            );
            if let Err(record) = send_blocking(&self.producer, without_payload(record)) {
                self.give_up(&record);
            }
        }
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// The one builder of a dead letter: the original payload and key, the
    /// reason and the source in headers, then the record's own headers.
    fn dead_letter_record<'a>(
        &'a self,
        opaque: usize,
        source: &'a Source<'_>,
        original: Option<&'a [u8]>,
        error: &RecordError,
    ) -> Record<'a> {
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let message = error.to_string();
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            (REASON, error.label()),
            ("enricher.error", message.as_str()),
            (SOURCE_TOPIC, &*source.route.input),
            ("enricher.source.partition", partition.as_str()),
            ("enricher.source.offset", offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(original) = &source.headers {
            for h in original.iter() {
                headers = headers.insert(h);
            }
        }
        let mut record = BaseRecord::with_opaque_to(&source.route.dlq, dead_letter_opaque(opaque))
            .headers(headers);
        if let Some(p) = original {
            record = record.payload(p);
        }
        if let Some(k) = source.key {
            record = record.key(k);
        }
        record
    }

    /// Sends a failed delivery again. `place` is the input partition and
    /// route of its assignment (`None`: an earlier assignment's). A record the
    /// broker refused as too large is never sent again: an output record is
    /// dead-lettered in its place, without its payload (the enriched bytes
    /// are not the original record); a dead letter goes without its payload.
    pub(super) fn resend(&self, retry: Retry, place: Option<(i32, &Arc<Route>)>) {
        let mut record = BaseRecord::with_opaque_to(retry.topic.as_str(), retry.opaque);
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
        if !retry.too_large {
            if !retry.forward {
                self.retried.fetch_add(1, Ordering::Relaxed);
            }
            match send_blocking(&self.producer, record) {
                Ok(()) => return,
                Err(r) => record = r,
            }
        }
        if is_dead_letter(retry.opaque) {
            if let Err(record) = send_blocking(&self.producer, without_payload(record)) {
                self.give_up(&record);
            }
            return;
        }
        let (_, offset) = unpack(retry.opaque);
        let Some((partition, route)) = place else {
            tracing::debug!(
                offset,
                "A refused record of an earlier assignment; not dead-lettered"
            );
            return;
        };
        // An output record refused at delivery: counted as produced when it
        // was sent, it becomes a dead letter, without its payload (the
        // enriched bytes are not the original record).
        let _ = self
            .produced
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        let source = Source {
            route,
            partition,
            offset,
            key: retry.key.as_deref(),
            headers: record.headers.take(),
        };
        let error = RecordError::TooLarge {
            limit: self.message_max_bytes,
            size: record.payload.map_or(0, <[u8]>::len),
        };
        let dead = self.dead_letter_record(retry.opaque, &source, record.payload, &error);
        if let Err(dead) = send_blocking(&self.producer, without_payload(dead)) {
            self.give_up(&dead);
        }
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a delivered alert's record on to its output topic, without the
    /// alert bit: that delivery acknowledges the offset. `place` is the
    /// input partition and route of its assignment; an earlier
    /// assignment's is dropped (the partition's next owner redoes it).
    pub(super) fn forward(&self, mut retry: Retry, place: Option<(i32, &Arc<Route>)>) {
        let Some((partition, route)) = place else {
            tracing::debug!(
                offset = unpack(retry.opaque).1,
                "A delivered alert of an earlier assignment; not sent on"
            );
            return;
        };
        route.counts.alerts.inc();
        retry.opaque = without_alert(retry.opaque);
        retry.topic = route.output.to_string();
        retry.partition = self.same_partition.then_some(partition);
        self.resend(retry, place);
    }

    /// A dead letter too large even without its payload (its key and
    /// headers alone): logged, counted and acknowledged, so the partition
    /// still moves on.
    fn give_up(&self, record: &Record<'_>) {
        metrics::counter!(m::PRODUCE_ERRORS, "error" => "too_large").increment(1);
        let topic = header(record.headers.as_ref(), SOURCE_TOPIC)
            .unwrap_or("unknown")
            .to_string();
        metrics::counter!(m::RECORDS, "outcome" => "dropped", "topic" => topic).increment(1);
        let (_, offset) = unpack(record.delivery_opaque);
        tracing::error!(
            topic = record.topic,
            offset,
            "Dead letter too large even without its payload; dropped"
        );
        let _ = self
            .self_acks
            .send((record.delivery_opaque, Outcome::Counted));
    }
}

/// The one produce error that retrying never fixes.
pub(super) fn too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaques_round_trip() {
        for (slot, offset) in [
            (0, 0),
            (1, 1),
            (SLOT_MASK, (1 << 42) - 1),
            (7, 123_456_789_012),
        ] {
            assert_eq!(unpack(pack(slot, offset)), (slot, offset));
            let dead = dead_letter_opaque(pack(slot, offset));
            assert!(is_dead_letter(dead) && !is_dead_letter(pack(slot, offset)));
            assert_eq!(unpack(dead), (slot, offset));
            let alert = alert_opaque(pack(slot, offset));
            assert!(is_alert(alert) && !is_dead_letter(alert) && !is_alert(dead));
            assert_eq!(unpack(alert), (slot, offset));
            assert_eq!(without_alert(alert), pack(slot, offset));
            let alerts_dead = dead_letter_opaque(alert);
            assert!(is_dead_letter(alerts_dead) && !is_alert(alerts_dead));
            assert_eq!(unpack(alerts_dead), (slot, offset));
        }
    }
}

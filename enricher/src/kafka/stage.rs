//! What becomes of a record once the consumer thread has tracked it: enrich,
//! produce, dead-letter, or hand it to a lookup task.
//!
//! A [`Stage`] does that work. With `worker.enrich_threads = 0` the consumer
//! thread owns the only one; otherwise each enrichment thread (a *lane*)
//! owns one, and the consumer thread hands it [`Batch`]es of copied records
//! over a bounded channel:
//!
//! ```text
//! consumer thread: poll --> track --> Batch (one per lane, by partition) --full or end of poll burst-->
//! lane thread:     Stage::process --Done--> producer.send(opaque)
//!                                 '--Pending--> tokio task: enrich, send
//! ```
//!
//! A partition always goes to the same lane, so `preserve_order` holds. The
//! consumer thread keeps polling, tracking and committing while lanes enrich,
//! so a worker uses more than one core. The pending batches live in the
//! consumer's shared state, so a rebalance can hand them off before it
//! drains the revoked partitions.

use std::ops::Range;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::{
    Shared, dead_letter_headers, send_async, send_blocking, strip_newline, without_payload,
};
use crate::enrich::{Enricher, Ready, Scratch};
use crate::record::RecordError;

/// Records a batch holds before it is handed to its lane, at most.
pub(super) const BATCH_RECORDS: usize = 128;

/// Batches queued for one lane, at most; the consumer thread waits beyond.
const LANE_QUEUE: usize = 16;

/// Emptied batches kept for reuse, at most, and the largest buffer one may
/// keep: a batch that carried very large records gives its memory back.
const MAX_SPARE: usize = 2 * LANE_QUEUE;
const SPARE_BYTES: usize = 256 << 10;

/// A tracked record, as far as the stage needs it.
pub(super) struct Msg<'a> {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) headers: Option<OwnedHeaders>,
}

impl<'a> Msg<'a> {
    pub(super) fn of(msg: &'a BorrowedMessage<'_>) -> Self {
        Self {
            partition: msg.partition(),
            offset: msg.offset(),
            payload: msg.payload(),
            key: msg.key(),
            headers: msg.headers().map(|h| h.detach()),
        }
    }
}

/// Enriches and produces records; one per thread that does so.
pub(super) struct Stage {
    pub(super) shared: Arc<Shared>,
    pub(super) enricher: Arc<Enricher>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) max_record_bytes: usize,
    pub(super) preserve_order: bool,
    pub(super) passthrough: bool,
    pub(super) scratch: Scratch,
    pub(super) out: Vec<u8>,
    /// Records produced and not yet added to the run report.
    pub(super) produced: u64,
}

impl Stage {
    /// Enriches and produces one record (or dead-letters it, or hands it to
    /// a lookup task). `opaque` is its delivery opaque.
    pub(super) fn process(&mut self, msg: Msg<'_>, opaque: usize) {
        if self.passthrough {
            let payload = msg.payload;
            self.produce(msg, opaque, payload);
            return;
        }
        let Some(payload) = msg.payload else {
            // A tombstone: nothing to enrich; passed through so compaction
            // semantics survive downstream.
            self.produce(msg, opaque, None);
            return;
        };
        if payload.len() > self.max_record_bytes {
            let error = RecordError::TooLarge {
                limit: self.max_record_bytes,
                size: payload.len(),
            };
            self.dead_letter(&msg, opaque, &error);
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        match self
            .enricher
            .enrich_cached(payload, &mut self.scratch, &mut out)
        {
            Ok(Ready::Done) => {
                strip_newline(&mut out);
                self.produce(msg, opaque, Some(&out));
            }
            Ok(Ready::Pending) => self.slow_path(msg, opaque, payload),
            Err(error) => self.dead_letter(&msg, opaque, &error),
        }
        self.out = out;
    }

    /// Adds what was produced since the last call to the run report.
    pub(super) fn publish_produced(&mut self) {
        if self.produced > 0 {
            self.shared.state().report.produced += self.produced;
            self.produced = 0;
        }
    }

    /// Adds what was produced to the run report and gives `batch`, which
    /// [`Batch::run`] emptied, back for reuse, under one lock.
    fn finish(&mut self, batch: Batch) {
        let mut state = self.shared.state();
        state.report.produced += std::mem::take(&mut self.produced);
        if batch.bytes.capacity() <= SPARE_BYTES && state.spare.len() < MAX_SPARE {
            state.spare.push(batch);
        }
    }

    fn produce(&mut self, mut msg: Msg<'_>, opaque: usize, payload: Option<&[u8]>) {
        let mut record = BaseRecord::with_opaque_to(&self.shared.output_topic, opaque);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(k) = msg.key {
            record = record.key(k);
        }
        if let Some(h) = msg.headers.take() {
            record = record.headers(h);
        }
        if self.preserve_order {
            record = record.partition(msg.partition);
        }
        let refused = match send_blocking(&self.shared.producer, record) {
            Ok(()) => {
                self.produced += 1;
                return;
            }
            Err(refused) => refused,
        };
        // Too large to produce, now or ever: the original goes to the
        // dead-letter topic instead.
        msg.headers = refused.headers;
        let error = RecordError::TooLarge {
            limit: self.shared.message_max_bytes,
            size: payload.map_or(0, <[u8]>::len),
        };
        tracing::warn!(%error, offset = msg.offset, "Output too large to produce; dead-lettering the record");
        self.dead_letter(&msg, opaque, &error);
    }

    fn dead_letter(&mut self, msg: &Msg<'_>, opaque: usize, error: &RecordError) {
        self.enricher.stats().rejected.inc();
        let headers = dead_letter_headers(
            error.label(),
            &error.to_string(),
            &self.shared.topic,
            msg.partition,
            msg.offset,
            msg.headers.as_ref(),
        );
        let mut record =
            BaseRecord::with_opaque_to(&self.shared.dlq_topic, opaque).headers(headers);
        if let Some(p) = msg.payload {
            record = record.payload(p);
        }
        if let Some(k) = msg.key {
            record = record.key(k);
        }
        self.shared.send_dead_letter(record);
        self.shared.state().report.dead_lettered += 1;
    }

    /// A record that missed L1: its lookups run on the runtime. In order
    /// mode this thread waits for them (bounded by the lookup deadline), so
    /// nothing behind it overtakes it.
    fn slow_path(&mut self, msg: Msg<'_>, opaque: usize, payload: &[u8]) {
        let enricher = Arc::clone(&self.enricher);
        let input = payload.to_vec();
        let key = msg.key.map(<[u8]>::to_vec);
        let headers = msg.headers;
        let partition = self.preserve_order.then_some(msg.partition);
        let source = (msg.partition, msg.offset);
        let shared = Arc::clone(&self.shared);
        let task = async move {
            let mut scratch = Scratch::default();
            let mut out = Vec::with_capacity(input.len() + 256);
            // The record parsed once already; should a second parse fail,
            // it goes out unchanged rather than being lost.
            if enricher
                .enrich(&input, &mut scratch, &mut out)
                .await
                .is_err()
            {
                out.clear();
                out.extend_from_slice(&input);
            }
            strip_newline(&mut out);
            let mut record =
                BaseRecord::with_opaque_to(&shared.output_topic, opaque).payload(out.as_slice());
            if let Some(k) = &key {
                record = record.key(k.as_slice());
            }
            if let Some(h) = headers.clone() {
                record = record.headers(h);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if send_async(&shared.producer, record).await.is_ok() {
                shared.state().report.produced += 1;
                return;
            }
            // Too large to produce: dead-lettered like on the hot path.
            let error = RecordError::TooLarge {
                limit: shared.message_max_bytes,
                size: out.len(),
            };
            tracing::warn!(%error, offset = source.1, "Output too large to produce; dead-lettering the record");
            enricher.stats().rejected.inc();
            let dead = dead_letter_headers(
                error.label(),
                &error.to_string(),
                &shared.topic,
                source.0,
                source.1,
                headers.as_ref(),
            );
            let mut record = BaseRecord::with_opaque_to(&shared.dlq_topic, opaque)
                .payload(input.as_slice())
                .headers(dead);
            if let Some(k) = &key {
                record = record.key(k.as_slice());
            }
            if let Err(record) = send_async(&shared.producer, record).await {
                let record = without_payload(record);
                if let Err(record) = send_async(&shared.producer, record).await {
                    shared.give_up(&record);
                }
            }
            shared.state().report.dead_lettered += 1;
        };
        if self.preserve_order {
            self.runtime.block_on(task);
        } else {
            self.runtime.spawn(task);
        }
    }
}

/// Tracked records copied out of librdkafka's buffers for one lane.
#[derive(Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

struct Item {
    partition: i32,
    offset: i64,
    opaque: usize,
    payload: Option<Range<usize>>,
    key: Option<Range<usize>>,
    headers: Option<OwnedHeaders>,
}

impl Batch {
    pub(super) fn push(&mut self, msg: &BorrowedMessage<'_>, opaque: usize) {
        let payload = msg.payload().map(|p| copy(&mut self.bytes, p));
        let key = msg.key().map(|k| copy(&mut self.bytes, k));
        self.items.push(Item {
            partition: msg.partition(),
            offset: msg.offset(),
            opaque,
            payload,
            key,
            headers: msg.headers().map(|h| h.detach()),
        });
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Processes every record, in order, and leaves the batch empty.
    pub(super) fn run(&mut self, stage: &mut Stage) {
        let Batch { bytes, items } = self;
        for item in items.drain(..) {
            let msg = Msg {
                partition: item.partition,
                offset: item.offset,
                payload: item.payload.and_then(|r| bytes.get(r)),
                key: item.key.and_then(|r| bytes.get(r)),
                headers: item.headers,
            };
            stage.process(msg, item.opaque);
        }
        bytes.clear();
    }
}

fn copy(bytes: &mut Vec<u8>, from: &[u8]) -> Range<usize> {
    let start = bytes.len();
    bytes.extend_from_slice(from);
    start..bytes.len()
}

/// The enrichment threads, each fed by a bounded channel.
pub(super) struct Lanes {
    threads: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// Starts one thread per stage; returns the threads and their senders.
    pub(super) fn start(
        stages: Vec<Stage>,
    ) -> std::io::Result<(Self, Vec<mpsc::SyncSender<Batch>>)> {
        let mut threads = Vec::with_capacity(stages.len());
        let mut senders = Vec::with_capacity(stages.len());
        for (i, mut stage) in stages.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Batch>(LANE_QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("enricher-lane-{i}"))
                .spawn(move || {
                    while let Ok(mut batch) = rx.recv() {
                        batch.run(&mut stage);
                        stage.finish(batch);
                    }
                })?;
            threads.push(thread);
            senders.push(tx);
        }
        Ok((Self { threads }, senders))
    }

    /// Waits for every lane to finish what it was handed; call it once
    /// their senders are dropped.
    pub(super) fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("An enrichment thread panicked");
            }
        }
    }
}

/// The lane a partition's records go to.
pub(super) fn lane_of(partition: i32, lanes: usize) -> usize {
    (partition.unsigned_abs() as usize) % lanes.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_always_goes_to_the_same_lane_and_lanes_share_partitions_evenly() {
        assert_eq!(lane_of(5, 1), 0);
        assert_eq!(lane_of(5, 0), 0, "no lanes: never out of range");
        let lanes: Vec<usize> = (0..6).map(|p| lane_of(p, 3)).collect();
        assert_eq!(lanes, [0, 1, 2, 0, 1, 2]);
        assert_eq!(lane_of(7, 4), lane_of(7, 4));
    }
}

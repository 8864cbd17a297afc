//! What becomes of a record once the consumer thread has tracked it:
//! enrich, then produce or dead-letter it, or hand it to a lookup task.
//!
//! A [`Lane`] does that work. With `worker.enrich_threads = 0` the consumer
//! thread owns the only one; otherwise each enrichment thread owns one, and
//! the consumer thread hands it [`Batch`]es of copied records over a
//! bounded channel:
//!
//! ```text
//! consumer thread: poll --> track --> Batch (one per lane, by partition) --full or end of poll burst-->
//! lane thread:     Lane::process --Done--> Output::send(opaque, matched?)
//!                                '--Pending--> tokio task: enrich, Output::send_async
//! ```
//!
//! A partition always goes to the same lane, so `preserve_order` holds. The
//! consumer thread keeps polling, tracking and committing while lanes enrich,
//! so a worker uses more than one core. The pending batches live in the
//! consumer's shared state, so a rebalance can hand them off before it
//! drains the revoked partitions.

use std::ops::Range;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};

use super::produce::{Output, Source};
use super::route::Route;
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

/// Emptied batches the lanes gave back, reused so that a batch's buffers
/// are not grown afresh for every 128 records.
#[derive(Default)]
pub(super) struct Spares(Mutex<Vec<Batch>>);

impl Spares {
    /// An emptied batch, or a new one.
    pub(super) fn take(&self) -> Batch {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, batch: Batch) {
        let mut spares = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if batch.bytes.capacity() <= SPARE_BYTES && spares.len() < MAX_SPARE {
            spares.push(batch);
        }
    }
}

/// A tracked record, as far as a lane needs it.
pub(super) struct Msg<'a> {
    pub(super) route: &'a Arc<Route>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) headers: Option<OwnedHeaders>,
}

impl<'a> Msg<'a> {
    pub(super) fn of(msg: &'a BorrowedMessage<'_>, route: &'a Arc<Route>) -> Self {
        Self {
            route,
            partition: msg.partition(),
            offset: msg.offset(),
            payload: msg.payload(),
            key: msg.key(),
            headers: msg.headers().map(|h| h.detach()),
        }
    }

    fn source(&mut self) -> Source<'a> {
        Source {
            route: self.route,
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            headers: self.headers.take(),
        }
    }
}

/// Enriches and produces records; one per thread that does so.
pub(super) struct Lane {
    pub(super) output: Arc<Output>,
    pub(super) enricher: Arc<Enricher>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) spares: Arc<Spares>,
    pub(super) max_record_bytes: usize,
    pub(super) preserve_order: bool,
    pub(super) passthrough: bool,
    pub(super) scratch: Scratch,
    pub(super) out: Vec<u8>,
    /// Records produced and not yet added to the output's count.
    pub(super) produced: u64,
}

impl Lane {
    /// Enriches and produces one record (or dead-letters it, or hands it to
    /// a lookup task). `opaque` is its delivery opaque.
    pub(super) fn process(&mut self, mut msg: Msg<'_>, opaque: usize) {
        let original = msg.payload;
        if self.passthrough {
            self.produce(msg.source(), opaque, original, original, false);
            return;
        }
        let Some(payload) = original else {
            // A tombstone: nothing to enrich; passed through so compaction
            // semantics survive downstream.
            self.produce(msg.source(), opaque, None, None, false);
            return;
        };
        if payload.len() > self.max_record_bytes {
            let error = RecordError::TooLarge {
                limit: self.max_record_bytes,
                size: payload.len(),
            };
            self.dead_letter(msg.source(), opaque, payload, &error);
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
                let alert = self.scratch.matched();
                self.produce(msg.source(), opaque, Some(&out), original, alert);
            }
            Ok(Ready::Pending) => self.slow_path(msg.source(), opaque, payload),
            Err(error) => self.dead_letter(msg.source(), opaque, payload, &error),
        }
        self.out = out;
    }

    /// Adds what was produced since the last call to the output's count.
    pub(super) fn publish_produced(&mut self) {
        self.output.add_produced(std::mem::take(&mut self.produced));
    }

    /// Publishes the count and gives `batch`, which [`Batch::run`] emptied,
    /// back for reuse.
    fn finish(&mut self, batch: Batch) {
        self.publish_produced();
        self.spares.give_back(batch);
    }

    fn produce(
        &mut self,
        source: Source<'_>,
        opaque: usize,
        payload: Option<&[u8]>,
        original: Option<&[u8]>,
        alert: bool,
    ) {
        if self.output.send(opaque, source, payload, original, alert) {
            self.produced += 1;
        } else {
            self.enricher.stats().rejected.inc();
        }
    }

    fn dead_letter(
        &mut self,
        source: Source<'_>,
        opaque: usize,
        original: &[u8],
        error: &RecordError,
    ) {
        self.enricher.stats().rejected.inc();
        self.output
            .dead_letter(opaque, &source, Some(original), error);
    }

    /// A record that missed L1: its lookups run on the runtime. In order
    /// mode this thread waits for them (bounded by the lookup deadline), so
    /// nothing behind it overtakes it.
    fn slow_path(&mut self, source: Source<'_>, opaque: usize, payload: &[u8]) {
        let enricher = Arc::clone(&self.enricher);
        let output = Arc::clone(&self.output);
        let input = payload.to_vec();
        let key = source.key.map(<[u8]>::to_vec);
        let route = Arc::clone(source.route);
        let (partition, offset, headers) = (source.partition, source.offset, source.headers);
        let task = async move {
            let mut scratch = Scratch::default();
            let mut out = Vec::with_capacity(input.len() + 256);
            // The record parsed once already; should a second parse fail,
            // it goes out unchanged rather than being lost.
            let alert = match enricher.enrich(&input, &mut scratch, &mut out).await {
                Ok(()) => scratch.matched(),
                Err(_) => {
                    out.clear();
                    out.extend_from_slice(&input);
                    false
                }
            };
            strip_newline(&mut out);
            let source = Source {
                route: &route,
                partition,
                offset,
                key: key.as_deref(),
                headers,
            };
            if !output.send_async(opaque, source, &out, &input, alert).await {
                enricher.stats().rejected.inc();
            }
        };
        if self.preserve_order {
            self.runtime.block_on(task);
        } else {
            self.runtime.spawn(task);
        }
    }
}

/// Records on Kafka carry no line ending.
fn strip_newline(out: &mut Vec<u8>) {
    if out.last() == Some(&b'\n') {
        out.pop();
    }
}

/// Tracked records copied out of librdkafka's buffers for one lane.
#[derive(Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    items: Vec<Item>,
    /// The routes of the batch's records: a batch mostly holds one topic's,
    /// so an item names its route by index, and no record clones an `Arc`.
    routes: Vec<Arc<Route>>,
}

struct Item {
    route: usize,
    partition: i32,
    offset: i64,
    opaque: usize,
    payload: Option<Range<usize>>,
    key: Option<Range<usize>>,
    headers: Option<OwnedHeaders>,
}

impl Batch {
    pub(super) fn push(&mut self, msg: &BorrowedMessage<'_>, opaque: usize, route: &Arc<Route>) {
        let payload = msg.payload().map(|p| copy(&mut self.bytes, p));
        let key = msg.key().map(|k| copy(&mut self.bytes, k));
        let route = match self.routes.iter().rposition(|r| Arc::ptr_eq(r, route)) {
            Some(i) => i,
            None => {
                self.routes.push(Arc::clone(route));
                self.routes.len() - 1
            }
        };
        self.items.push(Item {
            route,
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
    pub(super) fn run(&mut self, lane: &mut Lane) {
        let Batch {
            bytes,
            items,
            routes,
        } = self;
        for item in items.drain(..) {
            // Always there: `push` adds the route before the item.
            let Some(route) = routes.get(item.route) else {
                continue;
            };
            let msg = Msg {
                route,
                partition: item.partition,
                offset: item.offset,
                payload: item.payload.and_then(|r| bytes.get(r)),
                key: item.key.and_then(|r| bytes.get(r)),
                headers: item.headers,
            };
            lane.process(msg, item.opaque);
        }
        bytes.clear();
        routes.clear();
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
    /// Starts one thread per lane; returns the threads and their senders.
    pub(super) fn start(lanes: Vec<Lane>) -> std::io::Result<(Self, Vec<mpsc::SyncSender<Batch>>)> {
        let mut threads = Vec::with_capacity(lanes.len());
        let mut senders = Vec::with_capacity(lanes.len());
        for (i, mut lane) in lanes.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Batch>(LANE_QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("enricher-lane-{i}"))
                .spawn(move || {
                    while let Ok(mut batch) = rx.recv() {
                        batch.run(&mut lane);
                        lane.finish(batch);
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

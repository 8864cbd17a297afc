//! Sends batches of tagged records from a thread of its own, one batch
//! after the other, each paced and flushed before the next, with the
//! feed's producer settings, tags and queue-full wait ([`crate::feed`]).
//!
//! ```text
//! run --Batch (run id, count, rate)--> send thread --tagged records--> input topic
//!                                           '<-- delivery reports: SendState (per run)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::cluster::Cluster;
use crate::feed::{self, Deliveries};

/// A batch of records for the sender.
pub(super) struct Batch {
    /// 0 calibration, 1 soak: each has its own sequence numbers and counters.
    pub(super) run: usize,
    /// The run id its records are tagged with.
    pub(super) run_id: String,
    /// Records in the batch.
    pub(super) count: u64,
    /// Records per second (`None`: as fast as the producer goes).
    pub(super) rate: Option<f64>,
}

/// What the sender has done, shared with the monitor.
#[derive(Debug, Default)]
pub(super) struct SendState {
    /// What the cluster acknowledged and refused, per run (calibration 0,
    /// soak 1); refused records as the watcher's `(0, seq)` pairs.
    pub(super) runs: [Deliveries; 2],
    /// Batches sent and acknowledged in full.
    pub(super) batches_done: AtomicU64,
}

/// The opaque of a calibration record has this bit set.
const CALIBRATION_BIT: usize = 1 << 62;

struct SendContext {
    state: Arc<SendState>,
}

impl ClientContext for SendContext {}

impl ProducerContext for SendContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let run = usize::from(opaque & CALIBRATION_BIT == 0);
        let seq = (opaque & !CALIBRATION_BIT) as u64;
        self.state.runs[run].record(result, (0, seq));
    }
}

/// Sends batches of tagged records from a thread of its own, one batch
/// after the other, each paced and flushed before the next.
pub(super) struct Sender {
    batches_tx: Option<mpsc::Sender<Batch>>,
    pub(super) state: Arc<SendState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Batches handed over so far.
    pub(super) batches: u64,
}

impl Sender {
    /// Starts the thread, its producer on `cluster`, sending to `topic`
    /// round-robin over `partitions`.
    pub(super) fn start(
        cluster: &Cluster,
        topic: &str,
        partitions: i32,
        payloads: Arc<Vec<Vec<u8>>>,
    ) -> anyhow::Result<Self> {
        let state = Arc::new(SendState::default());
        let producer: ThreadedProducer<SendContext> = feed::producer_config(cluster)
            .create_with_context(SendContext {
                state: Arc::clone(&state),
            })?;
        let (tx, rx) = mpsc::channel::<Batch>();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, topic) = (Arc::clone(&state), Arc::clone(&stop), topic.to_string());
            std::thread::Builder::new()
                .name("soak-send".into())
                .spawn(move || {
                    send_loop(
                        &producer,
                        &rx,
                        &topic,
                        partitions.max(1) as u64,
                        &payloads,
                        &state,
                        &stop,
                    )
                })?
        };
        Ok(Self {
            batches_tx: Some(tx),
            state,
            stop,
            thread: Some(thread),
            batches: 0,
        })
    }

    /// Hands `batch` to the thread.
    pub(super) fn send(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.batches_tx
            .as_ref()
            .context("the sender is closed")?
            .send(batch)
            .map_err(|_| anyhow::anyhow!("the sender thread has stopped"))?;
        self.batches += 1;
        Ok(())
    }

    /// Closes the queue and waits for the thread.
    pub(super) fn finish(mut self) -> anyhow::Result<()> {
        self.batches_tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.batches_tx = None;
        if self.thread.is_some() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn send_loop(
    producer: &ThreadedProducer<SendContext>,
    batches: &mpsc::Receiver<Batch>,
    topic: &str,
    partitions: u64,
    payloads: &[Vec<u8>],
    state: &SendState,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut next_seq = [0u64; 2];
    for batch in batches {
        let start = Instant::now();
        let first = next_seq[batch.run];
        for n in 0..batch.count {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if n % 64 == 0
                && let Some(rate) = batch.rate
            {
                let due = Duration::from_secs_f64(n as f64 / rate);
                let elapsed = start.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            let seq = first + n;
            let opaque = seq as usize | if batch.run == 0 { CALIBRATION_BIT } else { 0 };
            let headers = feed::tag_headers(&batch.run_id, &seq.to_string(), feed::now_us());
            let record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, opaque)
                .payload(payloads[(seq % payloads.len() as u64) as usize].as_slice())
                .headers(headers)
                .partition((seq % partitions) as i32);
            feed::send_when_room(producer, record)
                .map_err(|error| anyhow::anyhow!("producing to {topic}: {error}"))?;
        }
        next_seq[batch.run] += batch.count;
        while producer.in_flight_count() > 0 && !stop.load(Ordering::Relaxed) {
            let _ = producer.flush(Duration::from_millis(100));
        }
        state.batches_done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

//! The consumer thread's state, shared with the rebalance and statistics
//! callbacks (which librdkafka runs on that thread inside `poll`): the
//! acker, which assignment slot each partition is in, which partitions are
//! paused, the batches not yet handed to their lanes, and the failed
//! deliveries waiting to go again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use acker::{AckResult, Acker, Epoch, TopicPartition};

use super::health::Health;
use super::lane::{Batch, Spares};
use super::produce::{Deliveries, Output, Resends, SLOT_MASK, unpack};
use super::streak::Streak;

/// An assignment: which partition and epoch a slot stands for.
#[derive(Debug, Clone)]
pub(super) struct Assignment {
    pub(super) tp: TopicPartition,
    pub(super) epoch: Epoch,
}

/// Everything the consumer thread owns, reachable from its callbacks.
pub(super) struct State {
    pub(super) acker: Acker,
    /// Slot -> assignment; a slot is never reused.
    slots: HashMap<u32, Assignment>,
    /// Partition number -> (slot, epoch) of its current assignment.
    pub(super) current: HashMap<i32, (u32, Epoch)>,
    next_slot: u32,
    pub(super) paused: HashMap<i32, bool>,
    /// Newest record timestamp seen per partition (for the source diff).
    pub(super) newest_ts: HashMap<i32, i64>,
    /// Records taken from the input topic.
    pub(super) consumed: u64,
    /// Partition commits that succeeded.
    pub(super) commits: u64,
    /// Records in flight when the shutdown grace ran out.
    pub(super) undelivered: u64,
    /// Tracked records not yet handed to their enrichment thread, one batch
    /// per lane (none: records are enriched on the consumer thread).
    pub(super) pending: Vec<Batch>,
    resends: Resends,
    /// Failed offset commits, said once per streak.
    pub(super) commit_failures: Streak,
}

impl State {
    /// A state with no assignment.
    pub(super) fn new(acker: Acker, resends: Resends, commit_failures: Streak) -> Self {
        Self {
            acker,
            slots: HashMap::new(),
            current: HashMap::new(),
            next_slot: 0,
            paused: HashMap::new(),
            newest_ts: HashMap::new(),
            consumed: 0,
            commits: 0,
            undelivered: 0,
            pending: Vec::new(),
            resends,
            commit_failures,
        }
    }

    /// Gives a newly assigned partition a slot of its own.
    pub(super) fn assign(&mut self, tp: TopicPartition) {
        let partition = tp.partition;
        let epoch = self.acker.assign(tp.clone());
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1) & SLOT_MASK;
        self.slots.insert(slot, Assignment { tp, epoch });
        self.current.insert(partition, (slot, epoch));
        self.paused.insert(partition, false);
    }

    /// Forgets a partition that is no longer this worker's.
    pub(super) fn forget(&mut self, partition: i32) {
        if let Some((slot, _)) = self.current.remove(&partition) {
            self.slots.remove(&slot);
        }
        self.paused.remove(&partition);
    }
}

/// The state and what the consumer thread shares with its lanes.
pub(super) struct Shared {
    pub(super) topic: Arc<str>,
    state: Mutex<State>,
    pub(super) output: Arc<Output>,
    deliveries: Deliveries,
    pub(super) drain_timeout: Duration,
    pub(super) health: Arc<Health>,
    /// The enrichment threads' channels, by lane; emptied at shutdown.
    lanes: Mutex<Vec<mpsc::SyncSender<Batch>>>,
    pub(super) spares: Arc<Spares>,
}

impl Shared {
    /// The shared parts of a worker.
    pub(super) fn new(
        topic: Arc<str>,
        state: State,
        output: Arc<Output>,
        deliveries: Deliveries,
        drain_timeout: Duration,
        health: Arc<Health>,
    ) -> Self {
        Self {
            topic,
            state: Mutex::new(state),
            output,
            deliveries,
            drain_timeout,
            health,
            lanes: Mutex::new(Vec::new()),
            spares: Arc::new(Spares::default()),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the lanes' channels and one pending batch per lane.
    pub(super) fn set_lanes(&self, senders: Vec<mpsc::SyncSender<Batch>>) {
        self.state().pending = (0..senders.len()).map(|_| Batch::default()).collect();
        *self.lanes.lock().unwrap_or_else(|p| p.into_inner()) = senders;
    }

    /// Drops the lanes' channels, so that they stop once they are done.
    pub(super) fn close_lanes(&self) {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Takes every non-empty pending batch, with its lane.
    fn take_pending(&self) -> Vec<(usize, Batch)> {
        let mut state = self.state();
        state
            .pending
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(lane, b)| (lane, std::mem::replace(b, self.spares.take())))
            .collect()
    }

    /// Hands a batch to its lane, waiting while the lane's queue is full.
    /// The batch comes back if the lane is gone.
    pub(super) fn hand_off(&self, lane: usize, batch: Batch) -> Result<(), Batch> {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        match lanes.get(lane) {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }

    /// Hands every pending batch to its lane; returns those whose lane is
    /// gone.
    pub(super) fn hand_off_pending(&self) -> Vec<(usize, Batch)> {
        let mut orphans = Vec::new();
        for (lane, batch) in self.take_pending() {
            if let Err(batch) = self.hand_off(lane, batch) {
                orphans.push((lane, batch));
            }
        }
        orphans
    }

    /// Applies every delivery report waiting, and sends failed ones again
    /// once their backoff has passed.
    pub(super) fn settle(&self, state: &mut State) {
        let acked = self.deliveries.acked(|opaque| {
            let (slot, offset) = unpack(opaque);
            let Some(a) = state.slots.get(&slot) else {
                return;
            };
            let (tp, epoch) = (a.tp.clone(), a.epoch);
            if state.acker.ack(&tp, epoch, offset) == AckResult::Fenced {
                tracing::debug!(%tp, offset, "Ignored a delivery report of an earlier assignment");
            }
        });
        self.deliveries.failed(&mut state.resends);
        for retry in state.resends.due(Instant::now(), acked) {
            let partition = state.slots.get(&retry.slot()).map(|a| a.tp.partition);
            self.output.resend(retry, partition);
        }
    }
}

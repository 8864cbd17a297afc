//! The consumer thread's state, shared with the rebalance and statistics
//! callbacks (which librdkafka runs on that thread inside `poll`): the
//! acker, each input topic's route and partitions (which assignment slot
//! each is in, whether it is paused), the batches not yet handed to their
//! lanes, and the failed deliveries waiting to go again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use acker::{AckResult, Acker, Epoch, TopicPartition};

use super::health::Health;
use super::lane::{Batch, Spares};
use super::produce::{Deliveries, Output, Resends, SLOT_MASK, unpack};
use super::route::Route;
use super::streak::Streak;
use crate::config::KafkaConfig;
use crate::config::is_pattern;

/// An assignment: which partition and epoch a slot stands for, and its
/// topic's route.
#[derive(Debug, Clone)]
pub(super) struct Assignment {
    pub(super) tp: TopicPartition,
    pub(super) epoch: Epoch,
    pub(super) route: Arc<Route>,
}

/// A partition this worker holds now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Current {
    pub(super) slot: u32,
    pub(super) epoch: Epoch,
    pub(super) paused: bool,
}

/// One input topic as the consumer thread sees it. Kept once seen (a
/// handful of topics), so its counts only grow.
pub(super) struct Topic {
    pub(super) route: Arc<Route>,
    /// Partition number -> its current assignment.
    pub(super) partitions: HashMap<i32, Current>,
    /// Newest record timestamp seen per partition (for the source diff).
    pub(super) newest_ts: HashMap<i32, i64>,
}

/// Which assigned topics the worker consumes, and their names.
pub(super) struct Routing {
    kafka: KafkaConfig,
    /// Whether indicator files are configured (routes get an alerts topic).
    intel: bool,
    /// Topics a pattern matched that are the worker's own outputs: left
    /// paused, said once each.
    skipped: HashSet<String>,
}

impl Routing {
    /// The routing of `kafka`'s subscription; `intel` says whether
    /// indicator files are configured.
    pub(super) fn new(kafka: &KafkaConfig, intel: bool) -> Self {
        Self {
            kafka: kafka.clone(),
            intel,
            skipped: HashSet::new(),
        }
    }

    /// Whether `topic` is one a pattern matched that the worker writes
    /// itself (`KafkaConfig::is_own_output`); a topic named in the
    /// configuration is always consumed.
    fn skips(&mut self, topic: &str) -> bool {
        let inputs = self.kafka.inputs();
        let skip = inputs.iter().any(|t| is_pattern(t))
            && !inputs.contains(&topic)
            && self.kafka.is_own_output(topic);
        if skip && self.skipped.insert(topic.to_string()) {
            tracing::warn!(
                topic,
                "A topic the pattern matches is shaped like an output of this worker; not consumed"
            );
        }
        skip
    }
}

/// Everything the consumer thread owns, reachable from its callbacks.
pub(super) struct State {
    pub(super) acker: Acker,
    /// Slot -> assignment; a slot is never reused.
    slots: HashMap<u32, Assignment>,
    /// Input topics seen, by name.
    pub(super) topics: HashMap<Arc<str>, Topic>,
    routing: Routing,
    next_slot: u32,
    /// Records taken from the input topics.
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
    pub(super) fn new(
        acker: Acker,
        resends: Resends,
        commit_failures: Streak,
        routing: Routing,
    ) -> Self {
        Self {
            acker,
            slots: HashMap::new(),
            topics: HashMap::new(),
            routing,
            next_slot: 0,
            consumed: 0,
            commits: 0,
            undelivered: 0,
            pending: Vec::new(),
            resends,
            commit_failures,
        }
    }

    /// Gives a newly assigned partition a slot of its own, and its topic a
    /// route when it is new. Returns `false` for a topic the worker does
    /// not consume (see [`Routing`]).
    pub(super) fn assign(&mut self, topic: &str, partition: i32) -> bool {
        if !self.topics.contains_key(topic) {
            if self.routing.skips(topic) {
                return false;
            }
            let route = Arc::new(Route::new(&self.routing.kafka, topic, self.routing.intel));
            tracing::info!(
                topic,
                output = %route.output,
                dlq = %route.dlq,
                alerts = route.intel.as_deref().unwrap_or("-"),
                "Consuming a topic"
            );
            self.topics.insert(
                Arc::clone(&route.input),
                Topic {
                    route,
                    partitions: HashMap::new(),
                    newest_ts: HashMap::new(),
                },
            );
        }
        let Some(t) = self.topics.get_mut(topic) else {
            return false;
        };
        let tp = TopicPartition::new(Arc::clone(&t.route.input), partition);
        let epoch = self.acker.assign(tp.clone());
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1) & SLOT_MASK;
        let route = Arc::clone(&t.route);
        self.slots.insert(slot, Assignment { tp, epoch, route });
        t.partitions.insert(
            partition,
            Current {
                slot,
                epoch,
                paused: false,
            },
        );
        true
    }

    /// The partitions held now among `pairs` of topic and partition.
    pub(super) fn held<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Vec<TopicPartition> {
        pairs
            .into_iter()
            .filter_map(|(topic, p)| {
                let (name, t) = self.topics.get_key_value(topic)?;
                t.partitions
                    .contains_key(&p)
                    .then(|| TopicPartition::new(Arc::clone(name), p))
            })
            .collect()
    }

    /// Forgets a partition that is no longer this worker's.
    pub(super) fn forget(&mut self, tp: &TopicPartition) {
        let Some(t) = self.topics.get_mut(&*tp.topic) else {
            return;
        };
        if let Some(current) = t.partitions.remove(&tp.partition) {
            self.slots.remove(&current.slot);
        }
    }

    /// Copies every topic's counts into the exporter.
    pub(super) fn publish_routes(&self) {
        for t in self.topics.values() {
            t.route.publish();
        }
    }
}

/// The state and what the consumer thread shares with its lanes.
pub(super) struct Shared {
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
        state: State,
        output: Arc<Output>,
        deliveries: Deliveries,
        drain_timeout: Duration,
        health: Arc<Health>,
    ) -> Self {
        Self {
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

    /// Applies every delivery report waiting, sends delivered alerts on to
    /// their output topics, and sends failed deliveries again once their
    /// backoff has passed.
    pub(super) fn settle(&self, state: &mut State) {
        let State { slots, acker, .. } = state;
        let acked = self.deliveries.acked(|opaque, outcome| {
            let (slot, offset) = unpack(opaque);
            // A report of an earlier assignment is not counted: the
            // partition's next owner counts the record when it redoes it.
            let Some(a) = slots.get(&slot) else {
                return;
            };
            a.route.delivered(outcome);
            if acker.ack(&a.tp, a.epoch, offset) == AckResult::Fenced {
                tracing::debug!(tp = %a.tp, offset, "Ignored a delivery report of an earlier assignment");
            }
        });
        for forward in self.deliveries.forwarded() {
            let place = state
                .slots
                .get(&forward.slot())
                .map(|a| (a.tp.partition, &a.route));
            self.output.forward(forward, place);
        }
        self.deliveries.failed(&mut state.resends);
        for retry in state.resends.due(Instant::now(), acked) {
            let place = state
                .slots
                .get(&retry.slot())
                .map(|a| (a.tp.partition, &a.route));
            self.output.resend(retry, place);
        }
    }
}

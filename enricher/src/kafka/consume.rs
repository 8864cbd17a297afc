//! The consumer loop: poll, track each record with the acker, hand it to
//! its lane (or enrich it here), apply delivery reports, hold back at the
//! in-flight limits, commit on the tick; then, when told to stop, drain and
//! commit what is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use acker::TopicPartition;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::clients::error_label;
use super::commit::{When, commit};
use super::health::now_ms;
use super::lane::{BATCH_RECORDS, Batch, Lane, Lanes, Msg, lane_of};
use super::partitions::{Shared, State};
use super::produce::pack;
use super::rebalance::WorkerContext;
use super::streak::{Messages, Streak};
use crate::enrich::Enricher;
use crate::metrics as m;

const CONSUMER_ERRORS: Messages = Messages {
    started: "Consumer errors",
    ongoing: "Consumer errors go on",
    ended: "Consumer fetching again",
};

/// How long the loop holds back at the total in-flight limit before it
/// pauses every partition.
const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(1);

/// How long the loop sleeps per turn while it holds back.
const HOLD_TICK: Duration = Duration::from_millis(1);

/// How often the loop commits what is due and publishes its gauges.
const TICK: Duration = Duration::from_millis(100);

/// The consumer thread's loop.
pub(super) struct Loop {
    shared: Arc<Shared>,
    enricher: Arc<Enricher>,
    per_partition: usize,
    total: usize,
    /// Enriches on the consumer thread: every record without lanes, and the
    /// batches of a lane that is gone.
    lane: Lane,
    /// The enrichment threads, if any.
    lanes: Option<Lanes>,
    /// Since when the total in-flight limit has been reached.
    full_since: Option<Instant>,
    all_paused: bool,
    /// Consumer errors, said once per streak.
    consumer_errors: Streak,
    shutdown_grace: Duration,
}

impl Drop for Loop {
    /// Should the loop end without its shutdown, the lanes still stop.
    fn drop(&mut self) {
        self.close_lanes();
    }
}

/// The limits the loop holds in-flight records to.
pub(super) struct Limits {
    /// Records in flight per partition before it is paused.
    pub(super) per_partition: usize,
    /// Records in flight in all, before the loop holds back.
    pub(super) total: usize,
    /// How long the shutdown waits for in-flight records.
    pub(super) shutdown_grace: Duration,
}

impl Loop {
    /// A loop over `shared`, enriching on `lane` when `lanes` is `None`.
    pub(super) fn new(
        shared: Arc<Shared>,
        enricher: Arc<Enricher>,
        lane: Lane,
        lanes: Option<Lanes>,
        limits: Limits,
    ) -> Self {
        Self {
            shared,
            enricher,
            per_partition: limits.per_partition,
            total: limits.total,
            lane,
            lanes,
            full_since: None,
            all_paused: false,
            consumer_errors: Streak::new(CONSUMER_ERRORS),
            shutdown_grace: limits.shutdown_grace,
        }
    }

    /// Runs until `stop` is set, then drains and commits.
    pub(super) fn run(&mut self, consumer: &BaseConsumer<WorkerContext>, stop: &AtomicBool) {
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.shared.health.beat();
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
            self.lane.publish_produced();
            let now = Instant::now();
            let ticked = now.duration_since(last_tick) >= TICK;
            {
                let shared = Arc::clone(&self.shared);
                let mut state = shared.state();
                shared.settle(&mut state);
                self.flow_control(consumer, &mut state, now);
                if ticked {
                    last_tick = now;
                    let due = state.acker.commits_due(now, false);
                    commit(consumer, &mut state, &due, When::Tick);
                    state.acker.publish(now_ms());
                    state.acker.log_progress(now);
                    metrics::gauge!(m::IN_FLIGHT).set(state.acker.total_in_flight() as f64);
                }
            }
            if ticked {
                self.publish();
            }
        }
        self.shutdown(consumer);
    }

    fn publish(&self) {
        crate::telemetry::publish(&self.enricher);
        self.shared.state().publish_routes();
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
        let State { topics, acker, .. } = state;
        for (name, t) in topics.iter_mut() {
            for (&p, current) in &mut t.partitions {
                let in_flight = acker.in_flight(&TopicPartition::new(Arc::clone(name), p));
                let paused = current.paused;
                let want_paused = over_total
                    || in_flight >= self.per_partition
                    || (paused && in_flight > self.per_partition / 2);
                if want_paused && !paused {
                    let _ = pause.add_partition(name, p);
                    current.paused = true;
                } else if !want_paused && paused {
                    let _ = resume.add_partition(name, p);
                    current.paused = false;
                }
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
        let mut guard = self.shared.state();
        let state = &mut *guard;
        let Some(t) = state.topics.get_mut(msg.topic()) else {
            return;
        };
        let Some(current) = t.partitions.get(&partition) else {
            return;
        };
        let (slot, epoch) = (current.slot, current.epoch);
        // Even a paused partition's message is taken: librdkafka has
        // moved past it, and skipping it would let the commit point
        // move past it too.
        let tp = TopicPartition::new(Arc::clone(&t.route.input), partition);
        if state.acker.track(&tp, epoch, offset, ts).is_err() {
            return;
        }
        if let Some(ts) = ts {
            let newest = t.newest_ts.entry(partition).or_insert(ts);
            *newest = (*newest).max(ts);
        }
        t.route.counts.received.inc();
        state.consumed += 1;
        if state.acker.total_in_flight() >= self.total {
            self.full_since.get_or_insert_with(Instant::now);
        }
        let opaque = pack(slot, offset);
        self.enricher.stats().records_in.inc();
        let lanes = state.pending.len();
        let lane = lane_of(partition, lanes);
        let Some(batch) = state.pending.get_mut(lane) else {
            // No lanes: enriched here.
            let route = Arc::clone(&t.route);
            drop(guard);
            self.lane.process(Msg::of(msg, &route), opaque);
            return;
        };
        batch.push(msg, opaque, &t.route);
        if batch.len() >= BATCH_RECORDS {
            let batch = std::mem::replace(batch, self.shared.spares.take());
            drop(guard);
            self.hand_off(lane, batch);
        }
    }

    /// Stops the lanes once they have processed what they were handed.
    /// They hold the output, so until this runs they keep the producer
    /// alive.
    fn close_lanes(&mut self) {
        self.shared.close_lanes();
        if let Some(lanes) = self.lanes.take() {
            lanes.join();
        }
    }

    /// Hands every pending batch to its lane; a batch whose lane is gone is
    /// processed here.
    fn hand_off_pending(&mut self) {
        for (lane, batch) in self.shared.hand_off_pending() {
            self.orphan(lane, batch);
        }
    }

    /// Hands a batch to its lane; should the lane be gone, the batch is
    /// processed here.
    fn hand_off(&mut self, lane: usize, batch: Batch) {
        if let Err(batch) = self.shared.hand_off(lane, batch) {
            self.orphan(lane, batch);
        }
    }

    fn orphan(&mut self, lane: usize, mut batch: Batch) {
        tracing::error!(
            lane,
            "An enrichment thread is gone; enriching its records on the consumer thread"
        );
        batch.run(&mut self.lane);
    }

    fn shutdown(&mut self, consumer: &BaseConsumer<WorkerContext>) {
        let shared = Arc::clone(&self.shared);
        shared.health.stopping.store(true, Ordering::Relaxed);
        tracing::info!("Stopping: draining in-flight records");
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        self.hand_off_pending();
        let deadline = Instant::now() + self.shutdown_grace;
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
        self.lane.publish_produced();
        // Twice: settling sends delivered alerts on to their output topics,
        // whose deliveries the second flush waits for.
        for _ in 0..2 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            shared
                .output
                .flush(remaining.max(Duration::from_millis(100)));
            shared.settle(&mut shared.state());
        }
        let mut state = shared.state();
        state.undelivered = state.acker.total_in_flight() as u64;
        let due = state.acker.commits_due(Instant::now(), true);
        commit(consumer, &mut state, &due, When::Last);
        state.acker.publish(now_ms());
        drop(state);
        self.publish();
        consumer.unsubscribe();
        tracing::info!("Stopped");
    }
}

//! The consumer's context: rebalances (assign: a slot per partition;
//! revoke: hand off, drain, commit, release), the statistics that feed the
//! high watermarks and the health, and librdkafka's client errors.
//!
//! librdkafka runs these callbacks on the consumer thread inside `poll`, so
//! a revoke can drain its partitions by applying delivery reports itself
//! while it waits.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acker::TopicPartition;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;

use super::clients::{CLIENT_ERRORS, log_client_error};
use super::commit::{When, commit};
use super::partitions::Shared;
use super::streak::Streak;

/// The consumer's context. The shared state is set once the worker is
/// built, and taken away before the clients are dropped.
pub(super) struct WorkerContext {
    shared: Arc<Mutex<Option<Arc<Shared>>>>,
    /// librdkafka's global errors, said once per streak.
    client_errors: Mutex<Streak>,
}

impl WorkerContext {
    /// A context whose shared state `slot` will hold.
    pub(super) fn new(slot: Arc<Mutex<Option<Arc<Shared>>>>) -> Self {
        Self {
            shared: slot,
            client_errors: Mutex::new(Streak::new(CLIENT_ERRORS)),
        }
    }

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
        let mut guard = shared.state();
        let state = &mut *guard;
        for (name, t) in &state.topics {
            let Some(topic) = stats.topics.get(&**name) else {
                continue;
            };
            for (partition, p) in &topic.partitions {
                if *partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                let newest = t.newest_ts.get(partition).copied();
                let tp = TopicPartition::new(Arc::clone(name), *partition);
                state.acker.set_high_watermark(&tp, p.hi_offset, newest);
            }
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
        let elements = tpl.elements();
        let revoked = shared
            .state()
            .held(elements.iter().map(|e| (e.topic(), e.partition())));
        revoke(consumer, &shared, &revoked);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared() else { return };
        if let Rebalance::Assign(tpl) = rebalance {
            let mut state = shared.state();
            let mut assigned: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            let mut resume = TopicPartitionList::new();
            let mut skip = TopicPartitionList::new();
            let elements = tpl.elements();
            for e in &elements {
                if state.assign(e.topic(), e.partition()) {
                    let _ = resume.add_partition(e.topic(), e.partition());
                    assigned.entry(e.topic()).or_default().push(e.partition());
                } else {
                    let _ = skip.add_partition(e.topic(), e.partition());
                }
            }
            // A partition paused under an earlier assignment starts fetching;
            // one of a topic the worker does not consume never does.
            if resume.count() > 0 {
                let _ = consumer.resume(&resume);
            }
            if skip.count() > 0 {
                let _ = consumer.pause(&skip);
            }
            shared.health.assigned.store(true, Ordering::Relaxed);
            for (topic, partitions) in &assigned {
                tracing::info!(topic, partitions = ?partitions, "Partitions assigned");
            }
            if assigned.is_empty() {
                tracing::info!(partitions = "[]", "Partitions assigned");
            }
        }
    }
}

/// Partitions leave: records taken but not yet handed to their lane go
/// first, then their in-flight records drain (up to the drain timeout),
/// what is done is committed, and the partitions are released. Lost
/// partitions (the group moved on without us) are only forgotten: their
/// new owner processes their in-flight records again.
fn revoke<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    revoked: &[TopicPartition],
) {
    let lost = consumer.assignment_lost();
    for (lane, _) in shared.hand_off_pending() {
        tracing::error!(
            lane,
            "An enrichment thread is gone; its records will be processed again by the partitions' next owner"
        );
    }
    let mut state = shared.state();
    if lost {
        for tp in revoked {
            state.acker.lost(tp);
            state.forget(tp);
        }
        tracing::warn!(partitions = ?names(revoked), "Partitions lost; their in-flight records will be processed again by their new owner");
        return;
    }
    for tp in revoked {
        state.acker.revoke(tp);
    }
    // Drain: delivery reports keep arriving from the producer thread and
    // from lookup tasks; apply them here, up to the deadline.
    let deadline = Instant::now() + shared.drain_timeout;
    loop {
        shared.settle(&mut state);
        let drained = revoked.iter().all(|tp| state.acker.is_drained(tp));
        if drained || Instant::now() >= deadline {
            if !drained {
                tracing::warn!(partitions = ?names(revoked), "Drain deadline passed; committing what is done");
            }
            break;
        }
        drop(state);
        std::thread::sleep(Duration::from_millis(2));
        state = shared.state();
    }
    let due: Vec<_> = revoked
        .iter()
        .filter_map(|tp| state.acker.commit_now(tp))
        .collect();
    commit(consumer, &mut state, &due, When::Last);
    for tp in revoked {
        state.acker.release(tp);
        state.forget(tp);
    }
    tracing::info!(partitions = ?names(revoked), "Partitions revoked, drained and committed");
}

/// `topic:partition` for each, for logs.
fn names(tps: &[TopicPartition]) -> Vec<String> {
    tps.iter().map(ToString::to_string).collect()
}

//! The consumer's context: rebalances (assign: a slot per partition;
//! revoke: hand off, drain, commit, release), the statistics that feed the
//! high watermarks and the health, and librdkafka's client errors.
//!
//! librdkafka runs these callbacks on the consumer thread inside `poll`, so
//! a revoke can drain its partitions by applying delivery reports itself
//! while it waits.

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
        revoke(consumer, &shared, &revoked);
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
                state.assign(TopicPartition::new(
                    Arc::clone(&shared.topic),
                    e.partition(),
                ));
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

/// Partitions leave: records taken but not yet handed to their lane go
/// first, then their in-flight records drain (up to the drain timeout),
/// what is done is committed, and the partitions are released. Lost
/// partitions (the group moved on without us) are only forgotten: their
/// new owner processes their in-flight records again.
fn revoke<C: ConsumerContext>(consumer: &BaseConsumer<C>, shared: &Shared, revoked: &[i32]) {
    let lost = consumer.assignment_lost();
    for (lane, _) in shared.hand_off_pending() {
        tracing::error!(
            lane,
            "An enrichment thread is gone; its records will be processed again by the partitions' next owner"
        );
    }
    let tp = |p: &i32| TopicPartition::new(Arc::clone(&shared.topic), *p);
    let mut state = shared.state();
    if lost {
        for p in revoked {
            state.acker.lost(&tp(p));
            state.forget(*p);
        }
        tracing::warn!(partitions = ?revoked, "Partitions lost; their in-flight records will be processed again by their new owner");
        return;
    }
    for p in revoked {
        state.acker.revoke(&tp(p));
    }
    // Drain: delivery reports keep arriving from the producer thread and
    // from lookup tasks; apply them here, up to the deadline.
    let deadline = Instant::now() + shared.drain_timeout;
    loop {
        shared.settle(&mut state);
        let drained = revoked.iter().all(|p| state.acker.is_drained(&tp(p)));
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
    let due: Vec<_> = revoked
        .iter()
        .filter_map(|p| state.acker.commit_now(&tp(p)))
        .collect();
    commit(consumer, &shared.topic, &mut state, &due, When::Last);
    for p in revoked {
        state.acker.release(&tp(p));
        state.forget(*p);
    }
    tracing::info!(partitions = ?revoked, "Partitions revoked, drained and committed");
}

//! Commits: the acker says which offsets are due, this commits them and
//! tells the acker how it went. One function for the tick, for revoked
//! partitions and for the shutdown.

use std::time::{Duration, Instant};

use acker::Commit;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::partitions::State;

/// When a commit happens, which decides what a failure costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    /// On the loop's tick: a failure is retried at the next tick.
    Tick,
    /// Before a partition is released or the worker exits: there is no
    /// later tick, so it is tried a few times here.
    Last,
}

/// Commits `due` and tells the acker how it went.
pub(super) fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    state: &mut State,
    due: &[Commit],
    when: When,
) {
    if due.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for c in due {
        let _ = tpl.add_partition_offset(&c.tp.topic, c.tp.partition, Offset::Offset(c.offset));
    }
    let result = match when {
        When::Tick => consumer.commit(&tpl, CommitMode::Sync),
        When::Last => commit_with_retries(consumer, &tpl),
    };
    let now = Instant::now();
    match result {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
            state.commit_failures.succeeded(now);
            for c in due {
                state.acker.committed(&c.tp, c.epoch, c.offset);
                state.commits += 1;
            }
        }
        Err(error) if when == When::Tick => {
            state.commit_failures.failed(now, &error, "commit");
            for c in due {
                state.acker.commit_failed(&c.tp, c.epoch, c.offset);
            }
        }
        Err(error) => tracing::error!(%error, "Last commit failed"),
    }
}

/// Synchronous on purpose. rust-rdkafka 0.39 never calls
/// `ConsumerContext::commit_callback` for a manual `CommitMode::Async`
/// commit (it passes librdkafka no reply queue; fede1024/rust-rdkafka#856),
/// so with async commits the acker never learnt that anything was
/// committed: no lag or committed-offset gauges, failures unseen, and the
/// same offset sent again every interval. A sync commit costs the consumer
/// thread one round trip per commit interval; while the coordinator is away
/// librdkafka holds it for at most `session.timeout.ms`. The result covers
/// the whole list: any partition's error fails them all, which only means a
/// retry at the next tick.
fn commit_with_retries<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> KafkaResult<()> {
    let mut attempt = 0;
    loop {
        match consumer.commit(tpl, CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(code))
                if code != RDKafkaErrorCode::NoOffset && attempt < 3 =>
            {
                attempt += 1;
                tracing::warn!(error = %code, attempt, "Last commit failed; trying again");
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            other => return other,
        }
    }
}

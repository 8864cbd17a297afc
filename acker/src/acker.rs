//! All partitions of one consumer: assignment epochs and fencing, commit
//! scheduling, lag reports and progress logs around one [`PartitionState`]
//! per partition.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::metrics::Label;

use crate::error::{AckResult, TrackError};
use crate::metrics as names;
use crate::partition::{Epoch, PartitionState};

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic and partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.topic, self.partition)
    }
}

/// When commits and progress lines are due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckerConfig {
    /// Least time between two rounds of commits (failed commits and forced
    /// rounds do not wait for it).
    pub commit_interval: Duration,
    /// Time between two progress lines per partition.
    pub log_interval: Duration,
}

impl Default for AckerConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(5),
            log_interval: Duration::from_secs(10),
        }
    }
}

/// An offset to commit for a partition. `offset` is already Kafka's "next
/// offset to read": commit or store it as it is, without adding one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The partition.
    pub tp: TopicPartition,
    /// The assignment the offset belongs to; report the outcome with it.
    pub epoch: Epoch,
    /// The offset to commit.
    pub offset: i64,
}

/// How far behind one partition is. Values that are not known yet (nothing
/// committed, no watermark, no timestamps) are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct LagReport {
    /// The partition.
    pub tp: TopicPartition,
    /// The last committed offset in this assignment.
    pub committed: Option<i64>,
    /// The partition's high watermark, as last set.
    pub high_watermark: Option<i64>,
    /// High watermark minus committed offset, never negative.
    pub lag_records: Option<u64>,
    /// How many seconds the group trails the partition: 0 when it has
    /// committed up to the high watermark, otherwise the age (now minus the
    /// Kafka timestamp) of the oldest record not yet committed. It keeps
    /// growing while a consumer is stuck, and reads 0 on a quiet topic that
    /// is caught up.
    pub timestamp_diff_secs: Option<f64>,
    /// Now minus the Kafka timestamp of the last committed record: the time
    /// since the last record, which grows on a quiet topic too.
    pub committed_age_secs: Option<f64>,
    /// The partition's newest timestamp minus that of the last committed
    /// record.
    pub source_diff_secs: Option<f64>,
    /// Records tracked and not yet acked.
    pub in_flight: usize,
}

/// Records acked on one partition over one log interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The partition.
    pub tp: TopicPartition,
    /// Records acked over the interval.
    pub acked: u64,
    /// The interval's length.
    pub elapsed: Duration,
}

#[derive(Debug)]
struct Slot {
    state: PartitionState,
    high_watermark: Option<i64>,
    newest_ts_ms: Option<i64>,
    /// Built once per partition, so publishing allocates no label strings.
    labels: [Label; 2],
}

impl Slot {
    fn new(tp: &TopicPartition, state: PartitionState) -> Self {
        Self {
            state,
            high_watermark: None,
            newest_ts_ms: None,
            labels: [
                Label::new(names::TOPIC, Arc::clone(&tp.topic)),
                Label::new(names::PARTITION, Arc::<str>::from(tp.partition.to_string())),
            ],
        }
    }
}

/// Tracks every assigned partition of one consumer and decides what to
/// commit. Not thread-safe by itself: one owner, or a mutex around it.
///
/// Lifecycle of a partition: [`assign`](Self::assign) (a new [`Epoch`]) ->
/// [`track`](Self::track) / [`ack`](Self::ack) -> on revoke
/// [`revoke`](Self::revoke), wait for [`is_drained`](Self::is_drained) or a
/// deadline, [`commit_now`](Self::commit_now), [`release`](Self::release);
/// or [`lost`](Self::lost), which commits nothing.
#[derive(Debug)]
pub struct Acker {
    config: AckerConfig,
    partitions: HashMap<TopicPartition, Slot, foldhash::fast::RandomState>,
    last_epoch: u64,
    total_in_flight: usize,
    next_commit_at: Instant,
    last_log_at: Instant,
}

impl Acker {
    /// An acker with no partition; the first commit round is due
    /// `commit_interval` after `now`.
    pub fn new(config: AckerConfig, now: Instant) -> Self {
        Self {
            next_commit_at: now + config.commit_interval,
            last_log_at: now,
            config,
            partitions: HashMap::default(),
            last_epoch: 0,
            total_in_flight: 0,
        }
    }

    /// Starts a new assignment of `tp` with fresh state, and returns its
    /// epoch. Re-assigning a partition drops its previous state: acks that
    /// carry the old epoch are then fenced.
    pub fn assign(&mut self, tp: TopicPartition) -> Epoch {
        self.last_epoch += 1;
        let epoch = Epoch::new(self.last_epoch);
        let state = PartitionState::new(epoch);
        match self.partitions.get_mut(&tp) {
            Some(slot) => {
                self.total_in_flight -= slot.state.in_flight();
                slot.state = state;
            }
            None => {
                let slot = Slot::new(&tp, state);
                self.partitions.insert(tp, slot);
            }
        }
        epoch
    }

    /// The current epoch of `tp`, if assigned: the one to tag records with
    /// as they are taken from the consumer. Acks must carry the epoch their
    /// record was tracked with, never this one.
    pub fn epoch(&self, tp: &TopicPartition) -> Option<Epoch> {
        self.partitions.get(tp).map(|slot| slot.state.epoch())
    }

    /// Takes a record as it comes from the consumer, with its Kafka timestamp
    /// in Unix ms. On an error the record is not covered by any commit and
    /// must not be processed.
    pub fn track(
        &mut self,
        tp: &TopicPartition,
        epoch: Epoch,
        offset: i64,
        ts_ms: Option<i64>,
    ) -> Result<(), TrackError> {
        let slot = self.partitions.get_mut(tp).ok_or(TrackError::Unassigned)?;
        let current = slot.state.epoch();
        if epoch != current {
            return Err(TrackError::StaleEpoch {
                given: epoch,
                current,
            });
        }
        slot.state.track(offset, ts_ms)?;
        self.total_in_flight += 1;
        Ok(())
    }

    /// Marks a record durably produced. An ack of an earlier assignment or of
    /// a partition no longer assigned is ignored and counted.
    pub fn ack(&mut self, tp: &TopicPartition, epoch: Epoch, offset: i64) -> AckResult {
        let result = match self.partitions.get_mut(tp) {
            None => AckResult::Unassigned,
            Some(slot) if slot.state.epoch() != epoch => AckResult::Fenced,
            Some(slot) => slot.state.ack(offset),
        };
        match result {
            AckResult::Acked => self.total_in_flight -= 1,
            AckResult::Fenced | AckResult::Unassigned => {
                ::metrics::counter!(names::ACKS_FENCED).increment(1);
            }
            AckResult::Duplicate | AckResult::Untracked => {}
        }
        result
    }

    /// Stops `tp` taking records (it drains: acks still count). Returns
    /// whether it was assigned.
    pub fn revoke(&mut self, tp: &TopicPartition) -> bool {
        match self.partitions.get_mut(tp) {
            Some(slot) => {
                slot.state.start_draining();
                true
            }
            None => false,
        }
    }

    /// Whether `tp` has no record in flight (true when not assigned).
    pub fn is_drained(&self, tp: &TopicPartition) -> bool {
        self.in_flight(tp) == 0
    }

    /// Drops the state of `tp`, after its final commit. Returns it, so the
    /// caller can log what was still in flight.
    pub fn release(&mut self, tp: &TopicPartition) -> Option<PartitionState> {
        self.remove(tp)
    }

    /// Drops the state of `tp` at once, committing nothing: the partition
    /// already belongs to another consumer. Late acks for it are ignored.
    pub fn lost(&mut self, tp: &TopicPartition) -> Option<PartitionState> {
        self.remove(tp)
    }

    fn remove(&mut self, tp: &TopicPartition) -> Option<PartitionState> {
        let slot = self.partitions.remove(tp)?;
        self.total_in_flight -= slot.state.in_flight();
        for name in [
            names::CONSUMER_LAG,
            names::TIMESTAMP_DIFF,
            names::COMMITTED_AGE,
            names::SOURCE_TIMESTAMP_DIFF,
            names::IN_FLIGHT,
        ] {
            ::metrics::gauge!(name, slot.labels.iter()).set(0.0);
        }
        Some(slot.state)
    }

    /// The commits to make now: every partition whose commit point is past
    /// its last committed offset, once per `commit_interval` (or at once
    /// with `force`, e.g. at shutdown); a partition whose last commit failed
    /// is retried at every call. Report each outcome with
    /// [`committed`](Self::committed) or [`commit_failed`](Self::commit_failed).
    pub fn commits_due(&mut self, now: Instant, force: bool) -> Vec<Commit> {
        let round = force || now >= self.next_commit_at;
        if round {
            self.next_commit_at = now + self.config.commit_interval;
        }
        let mut due = Vec::new();
        for (tp, slot) in &mut self.partitions {
            if !(round || slot.state.needs_retry()) {
                continue;
            }
            if let Some(offset) = slot.state.begin_commit() {
                due.push(Commit {
                    tp: tp.clone(),
                    epoch: slot.state.epoch(),
                    offset,
                });
            }
        }
        due
    }

    /// The commit of one partition regardless of the interval, if anything
    /// is new: the final commit after a revoke. `None` means nothing to
    /// commit (so no `NoOffset` error from the broker).
    pub fn commit_now(&mut self, tp: &TopicPartition) -> Option<Commit> {
        let slot = self.partitions.get_mut(tp)?;
        let offset = slot.state.begin_commit()?;
        Some(Commit {
            tp: tp.clone(),
            epoch: slot.state.epoch(),
            offset,
        })
    }

    /// Reports a successful commit (treat the broker's `NoOffset` as one).
    /// Returns whether it moved the partition's last committed offset: a
    /// stale epoch or an older offset than already committed does not.
    pub fn committed(&mut self, tp: &TopicPartition, epoch: Epoch, offset: i64) -> bool {
        ::metrics::counter!(names::COMMITS, names::RESULT => "ok").increment(1);
        match self.partitions.get_mut(tp) {
            Some(slot) if slot.state.epoch() == epoch => slot.state.committed(offset),
            _ => false,
        }
    }

    /// Reports a failed commit. The partition stays due and is handed out
    /// again by the next [`commits_due`](Self::commits_due), interval or not.
    pub fn commit_failed(&mut self, tp: &TopicPartition, epoch: Epoch, offset: i64) {
        ::metrics::counter!(names::COMMITS, names::RESULT => "failed").increment(1);
        if let Some(slot) = self.partitions.get_mut(tp)
            && slot.state.epoch() == epoch
        {
            slot.state.commit_failed(offset);
        }
    }

    /// Records of `tp` tracked and not yet acked (0 when not assigned).
    pub fn in_flight(&self, tp: &TopicPartition) -> usize {
        self.partitions
            .get(tp)
            .map_or(0, |slot| slot.state.in_flight())
    }

    /// Records tracked and not yet acked over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.total_in_flight
    }

    /// The state of `tp`, to read.
    pub fn partition(&self, tp: &TopicPartition) -> Option<&PartitionState> {
        self.partitions.get(tp).map(|slot| &slot.state)
    }

    /// The assigned partitions, in no particular order.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.partitions.keys()
    }

    /// Sets what the consumer knows of the partition's end: its high
    /// watermark and the timestamp of its newest record (Unix ms), e.g. from
    /// librdkafka's statistics. Ignored when `tp` is not assigned.
    pub fn set_high_watermark(
        &mut self,
        tp: &TopicPartition,
        high_watermark: i64,
        newest_ts_ms: Option<i64>,
    ) {
        if let Some(slot) = self.partitions.get_mut(tp) {
            slot.high_watermark = Some(high_watermark);
            if newest_ts_ms.is_some() {
                slot.newest_ts_ms = newest_ts_ms;
            }
        }
    }

    /// How far behind `tp` is, with `now_ms` the wall clock in Unix ms.
    pub fn lag(&self, tp: &TopicPartition, now_ms: i64) -> Option<LagReport> {
        let slot = self.partitions.get(tp)?;
        Some(lag_report(tp, slot, now_ms))
    }

    /// [`lag`](Self::lag) of every assigned partition, ordered by partition.
    pub fn lag_reports(&self, now_ms: i64) -> Vec<LagReport> {
        let mut reports: Vec<_> = self
            .partitions
            .iter()
            .map(|(tp, slot)| lag_report(tp, slot, now_ms))
            .collect();
        reports.sort_by(|a, b| a.tp.cmp(&b.tp));
        reports
    }

    /// Sets the gauges of every assigned partition (see [`crate::metrics`]).
    /// Call it on an interval; values not known yet are left unset.
    pub fn publish(&self, now_ms: i64) {
        for (tp, slot) in &self.partitions {
            let report = lag_report(tp, slot, now_ms);
            let labels = &slot.labels;
            let set = |name: &'static str, value: Option<f64>| {
                if let Some(value) = value {
                    ::metrics::gauge!(name, labels.iter()).set(value);
                }
            };
            set(names::COMMITTED_OFFSET, report.committed.map(|c| c as f64));
            set(
                names::HIGH_WATERMARK,
                report.high_watermark.map(|h| h as f64),
            );
            set(names::CONSUMER_LAG, report.lag_records.map(|l| l as f64));
            set(names::TIMESTAMP_DIFF, report.timestamp_diff_secs);
            set(names::COMMITTED_AGE, report.committed_age_secs);
            set(names::SOURCE_TIMESTAMP_DIFF, report.source_diff_secs);
            set(names::IN_FLIGHT, Some(report.in_flight as f64));
        }
    }

    /// Once per `log_interval`: logs, for every assigned partition, how many
    /// records were acked since the last time, and returns the same figures
    /// (ordered by partition). Empty between intervals.
    pub fn log_progress(&mut self, now: Instant) -> Vec<Progress> {
        let elapsed = now.saturating_duration_since(self.last_log_at);
        if elapsed < self.config.log_interval {
            return Vec::new();
        }
        self.last_log_at = now;
        let mut lines: Vec<_> = self
            .partitions
            .iter_mut()
            .map(|(tp, slot)| Progress {
                tp: tp.clone(),
                acked: slot.state.take_acked_count(),
                elapsed,
            })
            .collect();
        lines.sort_by(|a, b| a.tp.cmp(&b.tp));
        for line in &lines {
            let secs = line.elapsed.as_secs_f64().round() as u64;
            tracing::info!(
                topic = %line.tp.topic,
                partition = line.tp.partition,
                acked = line.acked,
                secs,
                "Acker for {} processed {} entries in {}s",
                line.tp,
                line.acked,
                secs,
            );
        }
        lines
    }
}

fn lag_report(tp: &TopicPartition, slot: &Slot, now_ms: i64) -> LagReport {
    let committed = slot.state.last_committed();
    let committed_ts = slot.state.committed_ts_ms();
    let secs_between = |from: i64, to: i64| to.saturating_sub(from) as f64 / 1000.0;
    let oldest = slot.state.oldest_uncommitted();
    let caught_up = match (committed, slot.high_watermark) {
        (Some(c), Some(h)) => c >= h,
        // Without the partition's end, what this consumer holds decides.
        (Some(_), None) => oldest.is_none(),
        (None, _) => false,
    };
    let timestamp_diff_secs = if caught_up {
        Some(0.0)
    } else {
        match oldest {
            Some(stamp) => stamp.ts_ms.map(|ts| secs_between(ts, now_ms)),
            // Behind, and the next record not consumed yet: it is at most as
            // old as the last committed one.
            None => committed_ts.map(|ts| secs_between(ts, now_ms)),
        }
    };
    LagReport {
        tp: tp.clone(),
        committed,
        high_watermark: slot.high_watermark,
        lag_records: committed
            .zip(slot.high_watermark)
            .map(|(c, h)| u64::try_from(h.saturating_sub(c)).unwrap_or(0)),
        timestamp_diff_secs,
        committed_age_secs: committed_ts.map(|ts| secs_between(ts, now_ms)),
        source_diff_secs: committed_ts
            .zip(slot.newest_ts_ms)
            .map(|(ts, newest)| secs_between(ts, newest)),
        in_flight: slot.state.in_flight(),
    }
}

#[cfg(test)]
mod tests;

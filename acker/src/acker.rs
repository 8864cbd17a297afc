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
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use ::metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("bro_conn", partition)
    }

    fn acker(t0: Instant) -> Acker {
        let config = AckerConfig {
            commit_interval: INTERVAL,
            log_interval: Duration::from_secs(10),
        };
        Acker::new(config, t0)
    }

    /// Tracks `offsets` on partition `p` (timestamp: offset * 1000).
    fn track_all(a: &mut Acker, p: i32, epoch: Epoch, offsets: impl IntoIterator<Item = i64>) {
        for offset in offsets {
            a.track(&tp(p), epoch, offset, Some(offset * 1000)).unwrap();
        }
    }

    fn offsets(commits: &[Commit]) -> Vec<(i32, i64)> {
        let mut v: Vec<_> = commits.iter().map(|c| (c.tp.partition, c.offset)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn every_assignment_gets_a_new_epoch() {
        let mut a = acker(Instant::now());
        let e0 = a.assign(tp(0));
        let e1 = a.assign(tp(1));
        let e0b = a.assign(tp(0));
        assert!(e0 != e1 && e0 != e0b && e1 != e0b);
        assert_eq!(a.epoch(&tp(0)), Some(e0b));
        assert_eq!(a.epoch(&tp(2)), None);
    }

    #[test]
    fn track_needs_the_current_epoch_of_an_assigned_partition() {
        let mut a = acker(Instant::now());
        let stale = a.assign(tp(0));
        let epoch = a.assign(tp(0));
        assert_eq!(
            a.track(&tp(0), stale, 0, None),
            Err(TrackError::StaleEpoch {
                given: stale,
                current: epoch
            })
        );
        assert_eq!(a.track(&tp(1), epoch, 0, None), Err(TrackError::Unassigned));
        assert_eq!(a.track(&tp(0), epoch, 0, None), Ok(()));
        assert_eq!(a.total_in_flight(), 1);
    }

    #[test]
    fn commits_wait_for_the_interval() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        track_all(&mut a, 0, e, 0..10);
        for offset in 0..4 {
            assert_eq!(a.ack(&tp(0), e, offset), AckResult::Acked);
        }
        assert!(a.commits_due(t0 + Duration::from_secs(1), false).is_empty());
        let due = a.commits_due(t0 + INTERVAL, false);
        assert_eq!(
            due,
            vec![Commit {
                tp: tp(0),
                epoch: e,
                offset: 4
            }]
        );
        assert!(a.committed(&tp(0), e, 4));
        assert_eq!(a.ack(&tp(0), e, 4), AckResult::Acked);
        assert!(
            a.commits_due(t0 + INTERVAL + Duration::from_secs(4), false)
                .is_empty()
        );
        assert_eq!(
            offsets(&a.commits_due(t0 + INTERVAL * 2, false)),
            vec![(0, 5)]
        );
    }

    #[test]
    fn force_commits_at_once_and_nothing_new_is_not_due() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        track_all(&mut a, 0, e, [0]);
        assert!(a.commits_due(t0, true).is_empty(), "nothing acked");
        assert_eq!(a.ack(&tp(0), e, 0), AckResult::Acked);
        assert_eq!(offsets(&a.commits_due(t0, true)), vec![(0, 1)]);
        assert!(a.committed(&tp(0), e, 1));
        assert!(a.commits_due(t0, true).is_empty(), "equals last committed");
        assert!(a.commit_now(&tp(0)).is_none());
    }

    #[test]
    fn only_advanced_partitions_are_due() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e0 = a.assign(tp(0));
        let e1 = a.assign(tp(1));
        let _e2 = a.assign(tp(2));
        track_all(&mut a, 0, e0, [0, 1]);
        track_all(&mut a, 1, e1, [7]);
        assert_eq!(a.ack(&tp(0), e0, 0), AckResult::Acked);
        assert_eq!(a.ack(&tp(1), e1, 7), AckResult::Acked);
        assert_eq!(
            offsets(&a.commits_due(t0 + INTERVAL, false)),
            vec![(0, 1), (1, 8)]
        );
    }

    #[test]
    fn a_failed_commit_is_retried_at_the_next_call() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        track_all(&mut a, 0, e, [0, 1]);
        assert_eq!(a.ack(&tp(0), e, 0), AckResult::Acked);
        let due = a.commits_due(t0 + INTERVAL, false);
        assert_eq!(offsets(&due), vec![(0, 1)]);
        a.commit_failed(&tp(0), e, 1);
        assert_eq!(a.partition(&tp(0)).unwrap().commit_failures(), 1);
        assert_eq!(a.ack(&tp(0), e, 1), AckResult::Acked);
        // Before the next interval, and with the newest commit point.
        let retry = a.commits_due(t0 + INTERVAL + Duration::from_millis(1), false);
        assert_eq!(offsets(&retry), vec![(0, 2)]);
        assert!(a.committed(&tp(0), e, 2));
        assert!(
            a.commits_due(t0 + INTERVAL + Duration::from_millis(2), false)
                .is_empty()
        );
    }

    #[test]
    fn committed_offsets_never_move_backwards() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        track_all(&mut a, 0, e, 0..4);
        assert_eq!(a.ack(&tp(0), e, 0), AckResult::Acked);
        let first = a.commits_due(t0, true);
        assert_eq!(a.ack(&tp(0), e, 1), AckResult::Acked);
        let second = a.commits_due(t0, true);
        assert_eq!(offsets(&first), vec![(0, 1)]);
        assert_eq!(offsets(&second), vec![(0, 2)]);
        // Replies arrive out of order.
        assert!(a.committed(&tp(0), e, 2));
        assert!(!a.committed(&tp(0), e, 1));
        assert_eq!(a.partition(&tp(0)).unwrap().last_committed(), Some(2));
    }

    #[test]
    fn acks_of_an_earlier_assignment_are_fenced() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let old = a.assign(tp(0));
        track_all(&mut a, 0, old, 100..110);
        // Rebalance: revoked without draining, then assigned back; the new
        // assignment resumes from the last commit, here nothing.
        a.revoke(&tp(0));
        a.release(&tp(0));
        let new = a.assign(tp(0));
        track_all(&mut a, 0, new, 50..52);
        for offset in 100..110 {
            assert_eq!(a.ack(&tp(0), old, offset), AckResult::Fenced);
        }
        assert_eq!(a.partition(&tp(0)).unwrap().commit_point(), None);
        assert_eq!(a.in_flight(&tp(0)), 2);
        assert_eq!(a.total_in_flight(), 2);
        assert!(!a.committed(&tp(0), old, 110), "stale epoch commit report");
        assert_eq!(a.ack(&tp(0), new, 50), AckResult::Acked);
        assert_eq!(offsets(&a.commits_due(t0, true)), vec![(0, 51)]);
    }

    #[test]
    fn a_revoked_partition_drains_then_commits_once_and_is_released() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        track_all(&mut a, 0, e, 0..3);
        assert!(a.revoke(&tp(0)));
        assert_eq!(a.track(&tp(0), e, 3, None), Err(TrackError::Revoked));
        assert!(!a.is_drained(&tp(0)));
        for offset in [2, 0, 1] {
            assert_eq!(a.ack(&tp(0), e, offset), AckResult::Acked);
        }
        assert!(a.is_drained(&tp(0)));
        let last = a.commit_now(&tp(0)).unwrap();
        assert_eq!(last.offset, 3);
        assert!(a.committed(&tp(0), last.epoch, last.offset));
        let state = a.release(&tp(0)).unwrap();
        assert_eq!(state.last_committed(), Some(3));
        assert!(a.is_drained(&tp(0)));
        assert_eq!(a.ack(&tp(0), e, 1), AckResult::Unassigned);
        assert!(!a.revoke(&tp(0)));
    }

    #[test]
    fn a_lost_partition_is_dropped_without_a_commit() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        track_all(&mut a, 0, e, 0..3);
        assert_eq!(a.ack(&tp(0), e, 0), AckResult::Acked);
        let dropped = a.lost(&tp(0)).unwrap();
        assert_eq!(dropped.in_flight(), 2);
        assert_eq!(a.total_in_flight(), 0);
        assert!(a.commits_due(t0, true).is_empty());
        assert_eq!(a.ack(&tp(0), e, 1), AckResult::Unassigned);
        assert_eq!(a.track(&tp(0), e, 3, None), Err(TrackError::Unassigned));
    }

    #[test]
    fn in_flight_is_counted_per_partition_and_in_total() {
        let mut a = acker(Instant::now());
        let e0 = a.assign(tp(0));
        let e1 = a.assign(tp(1));
        track_all(&mut a, 0, e0, 0..5);
        track_all(&mut a, 1, e1, 0..3);
        assert_eq!(a.ack(&tp(0), e0, 3), AckResult::Acked);
        assert_eq!(a.ack(&tp(0), e0, 3), AckResult::Duplicate);
        assert_eq!(a.ack(&tp(1), e1, 9), AckResult::Untracked);
        assert_eq!((a.in_flight(&tp(0)), a.in_flight(&tp(1))), (4, 3));
        assert_eq!(a.total_in_flight(), 7);
        a.assign(tp(1));
        assert_eq!(a.total_in_flight(), 4);
    }

    #[test]
    fn lag_compares_the_last_commit_with_the_partition_end() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        a.set_high_watermark(&tp(0), 1000, Some(90_000));
        let empty = a.lag(&tp(0), 100_000).unwrap();
        assert_eq!((empty.committed, empty.lag_records), (None, None));
        assert_eq!(empty.timestamp_diff_secs, None);
        track_all(&mut a, 0, e, 10..20);
        for offset in 10..15 {
            assert_eq!(a.ack(&tp(0), e, offset), AckResult::Acked);
        }
        let c = a.commit_now(&tp(0)).unwrap();
        assert_eq!(a.ack(&tp(0), e, 15), AckResult::Acked);
        assert!(a.committed(&c.tp, c.epoch, c.offset));
        let r = a.lag(&tp(0), 100_000).unwrap();
        assert_eq!(r.committed, Some(15));
        assert_eq!(r.high_watermark, Some(1000));
        assert_eq!(r.lag_records, Some(985));
        // The oldest record not committed is 15, stamped 15 s.
        assert_eq!(r.timestamp_diff_secs, Some(85.0));
        // The last committed record is 14, stamped 14 s: not 15.
        assert_eq!(r.committed_age_secs, Some(86.0));
        assert_eq!(r.source_diff_secs, Some(76.0));
        assert_eq!(r.in_flight, 4);
        a.set_high_watermark(&tp(0), 3, None);
        let r = a.lag(&tp(0), 100_000).unwrap();
        assert_eq!(r.lag_records, Some(0), "never negative");
        assert_eq!(r.source_diff_secs, Some(76.0), "newest timestamp kept");
    }

    #[test]
    fn lag_in_seconds_is_zero_when_caught_up_and_grows_while_stuck() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(0));
        // Records 0..10 stamped 0..9 s, all produced and committed.
        track_all(&mut a, 0, e, 0..10);
        for offset in 0..10 {
            assert_eq!(a.ack(&tp(0), e, offset), AckResult::Acked);
        }
        let c = a.commit_now(&tp(0)).unwrap();
        assert!(a.committed(&c.tp, c.epoch, c.offset));
        a.set_high_watermark(&tp(0), 10, Some(9_000));
        // Quiet for an hour, caught up: 0, while the time since the last
        // record grows.
        let r = a.lag(&tp(0), 3_600_000).unwrap();
        assert_eq!(r.timestamp_diff_secs, Some(0.0));
        assert_eq!(r.committed_age_secs, Some(3_591.0));
        // Records 10..20 arrive (stamped 10..19 s) and the worker is stuck
        // on 10: the age of record 10 grows with the clock.
        track_all(&mut a, 0, e, 10..20);
        a.set_high_watermark(&tp(0), 20, Some(19_000));
        for offset in 11..20 {
            assert_eq!(a.ack(&tp(0), e, offset), AckResult::Acked);
        }
        assert_eq!(
            a.lag(&tp(0), 30_000).unwrap().timestamp_diff_secs,
            Some(20.0)
        );
        assert_eq!(
            a.lag(&tp(0), 90_000).unwrap().timestamp_diff_secs,
            Some(80.0)
        );
        // Acked but not committed yet: still the age of record 10.
        assert_eq!(a.ack(&tp(0), e, 10), AckResult::Acked);
        assert_eq!(
            a.lag(&tp(0), 95_000).unwrap().timestamp_diff_secs,
            Some(85.0)
        );
        let c = a.commit_now(&tp(0)).unwrap();
        assert!(a.committed(&c.tp, c.epoch, c.offset));
        assert_eq!(
            a.lag(&tp(0), 95_000).unwrap().timestamp_diff_secs,
            Some(0.0)
        );
        // Behind with nothing consumed yet: at most as old as the last
        // committed record (19 s).
        a.set_high_watermark(&tp(0), 25, Some(24_000));
        assert_eq!(
            a.lag(&tp(0), 100_000).unwrap().timestamp_diff_secs,
            Some(81.0)
        );
        // A commit handed out while records arrive: after it lands, the
        // oldest uncommitted record is the first one past it.
        track_all(&mut a, 0, e, 20..23);
        assert_eq!(a.ack(&tp(0), e, 20), AckResult::Acked);
        let c = a.commit_now(&tp(0)).unwrap();
        assert_eq!(c.offset, 21);
        assert_eq!(a.ack(&tp(0), e, 21), AckResult::Acked);
        assert!(a.committed(&c.tp, c.epoch, c.offset));
        assert_eq!(
            a.lag(&tp(0), 100_000).unwrap().timestamp_diff_secs,
            Some(79.0)
        );
    }

    #[test]
    fn progress_is_logged_once_per_interval() {
        let t0 = Instant::now();
        let mut a = acker(t0);
        let e = a.assign(tp(1));
        track_all(&mut a, 1, e, 0..5);
        for offset in [4, 0, 1] {
            assert_eq!(a.ack(&tp(1), e, offset), AckResult::Acked);
        }
        assert!(a.log_progress(t0 + Duration::from_secs(9)).is_empty());
        let lines = a.log_progress(t0 + Duration::from_secs(10));
        assert_eq!(
            lines,
            vec![Progress {
                tp: tp(1),
                acked: 3,
                elapsed: Duration::from_secs(10)
            }]
        );
        assert!(a.log_progress(t0 + Duration::from_secs(15)).is_empty());
        let lines = a.log_progress(t0 + Duration::from_secs(21));
        assert_eq!(lines[0].acked, 0);
        assert_eq!(lines[0].elapsed, Duration::from_secs(11));
    }

    /// Keeps the last value of every gauge and counter, by rendered key.
    #[derive(Default)]
    struct Capture(Arc<Mutex<BTreeMap<String, f64>>>);

    struct Cell {
        key: String,
        values: Arc<Mutex<BTreeMap<String, f64>>>,
    }

    impl Cell {
        fn update(&self, f: impl FnOnce(&mut f64)) {
            let mut values = self.values.lock().unwrap();
            f(values.entry(self.key.clone()).or_default());
        }
    }

    impl GaugeFn for Cell {
        fn increment(&self, value: f64) {
            self.update(|v| *v += value);
        }
        fn decrement(&self, value: f64) {
            self.update(|v| *v -= value);
        }
        fn set(&self, value: f64) {
            self.update(|v| *v = value);
        }
    }

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            self.update(|v| *v += value as f64);
        }
        fn absolute(&self, value: u64) {
            self.update(|v| *v = value as f64);
        }
    }

    impl Capture {
        fn cell(&self, key: &Key) -> Arc<Cell> {
            let labels: Vec<_> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Arc::new(Cell {
                key: format!("{}{{{}}}", key.name(), labels.join(",")),
                values: Arc::clone(&self.0),
            })
        }

        fn get(&self, key: &str) -> Option<f64> {
            self.0.lock().unwrap().get(key).copied()
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn publish_sets_gauges_per_partition_and_counters_count() {
        let capture = Capture::default();
        ::metrics::with_local_recorder(&capture, || {
            let t0 = Instant::now();
            let mut a = acker(t0);
            let e = a.assign(tp(3));
            track_all(&mut a, 3, e, 0..4);
            assert_eq!(a.ack(&tp(3), e, 0), AckResult::Acked);
            assert_eq!(a.ack(&tp(3), Epoch::new(99), 1), AckResult::Fenced);
            let c = a.commit_now(&tp(3)).unwrap();
            a.commit_failed(&c.tp, c.epoch, c.offset);
            assert!(a.committed(&c.tp, c.epoch, c.offset));
            a.set_high_watermark(&tp(3), 10, Some(5000));
            a.publish(60_000);
        });
        let labels = "{topic=bro_conn,partition=3}";
        let gauge = |name: &str| capture.get(&format!("{name}{labels}"));
        assert_eq!(gauge(names::COMMITTED_OFFSET), Some(1.0));
        assert_eq!(gauge(names::HIGH_WATERMARK), Some(10.0));
        assert_eq!(gauge(names::CONSUMER_LAG), Some(9.0));
        // The oldest record not committed is 1, stamped 1 s; the last
        // committed one is 0, stamped 0 s.
        assert_eq!(gauge(names::TIMESTAMP_DIFF), Some(59.0));
        assert_eq!(gauge(names::COMMITTED_AGE), Some(60.0));
        assert_eq!(gauge(names::SOURCE_TIMESTAMP_DIFF), Some(5.0));
        assert_eq!(gauge(names::IN_FLIGHT), Some(3.0));
        assert_eq!(capture.get("acker_commits_total{result=ok}"), Some(1.0));
        assert_eq!(capture.get("acker_commits_total{result=failed}"), Some(1.0));
        assert_eq!(capture.get("acker_acks_fenced_total{}"), Some(1.0));
    }

    #[test]
    fn a_released_partition_reports_no_lag() {
        let capture = Capture::default();
        ::metrics::with_local_recorder(&capture, || {
            let mut a = acker(Instant::now());
            let e = a.assign(tp(0));
            track_all(&mut a, 0, e, 0..4);
            assert_eq!(a.ack(&tp(0), e, 0), AckResult::Acked);
            let c = a.commit_now(&tp(0)).unwrap();
            assert!(a.committed(&c.tp, c.epoch, c.offset));
            a.set_high_watermark(&tp(0), 10, Some(5000));
            a.publish(60_000);
            a.lost(&tp(0));
            a.publish(70_000);
        });
        let labels = "{topic=bro_conn,partition=0}";
        let gauge = |name: &str| capture.get(&format!("{name}{labels}"));
        assert_eq!(gauge(names::CONSUMER_LAG), Some(0.0));
        assert_eq!(gauge(names::TIMESTAMP_DIFF), Some(0.0));
        assert_eq!(gauge(names::IN_FLIGHT), Some(0.0));
        assert_eq!(gauge(names::COMMITTED_OFFSET), Some(1.0));
    }
}

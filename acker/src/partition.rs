//! One partition under one assignment: which records are in flight, how far
//! the contiguous acked prefix reaches (the commit point), what was committed.
//!
//! Records are kept in a `VecDeque` in offset order, from the lowest unacked
//! one on. An ack marks its record; when the front is acked, the acked prefix
//! is popped. Both are O(1) amortised, and memory follows the in-flight window:
//! in steady state nothing is allocated.

use std::collections::VecDeque;
use std::fmt;

use crate::error::{AckResult, TrackError};

/// One assignment of a partition. Every [`crate::Acker::assign`] hands out a
/// new one, so acks of records taken under an earlier assignment can be told
/// apart and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// An epoch of the given number. [`crate::Acker`] numbers them itself;
    /// this is for using a [`PartitionState`] alone.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The epoch's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A record's offset and Kafka timestamp (Unix ms), as tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The record's offset.
    pub offset: i64,
    /// Its Kafka timestamp in Unix ms, if it carried one.
    pub ts_ms: Option<i64>,
}

/// A commit handed out and not yet reported.
#[derive(Debug, Clone, Copy)]
struct Handout {
    offset: i64,
    /// Timestamp of the newest record below `offset`.
    covered_ts_ms: Option<i64>,
    /// The first record tracked at or past `offset`, once known.
    first_after: Option<Stamp>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    ts_ms: Option<i64>,
    acked: bool,
}

/// The offsets of one partition under one [`Epoch`].
///
/// The **commit point** is the offset to commit (Kafka's convention: the next
/// offset to read): the lowest tracked offset not yet acked, or the last
/// tracked offset + 1 when all are acked. It is `None` until the first
/// tracked record is acked, and never moves backwards.
#[derive(Debug, Clone)]
pub struct PartitionState {
    epoch: Epoch,
    draining: bool,
    /// From the lowest unacked record on; the front is never acked.
    entries: VecDeque<Entry>,
    first_tracked: Option<i64>,
    last_tracked: Option<i64>,
    /// Whether any record has left the front, i.e. the commit point exists.
    acked_through: bool,
    /// Timestamp of the newest record below the commit point that had one.
    covered_ts_ms: Option<i64>,
    in_flight: usize,
    acked_since_log: u64,
    last_committed: Option<i64>,
    committed_ts_ms: Option<i64>,
    /// The last commit handed out.
    handed_out: Option<Handout>,
    /// The first record tracked at or past the last committed offset: the
    /// oldest record this consumer holds that the group has not committed.
    oldest_uncommitted: Option<Stamp>,
    retry: bool,
    commit_failures: u64,
}

impl PartitionState {
    /// A fresh partition: nothing tracked, nothing committed.
    pub fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            draining: false,
            entries: VecDeque::new(),
            first_tracked: None,
            last_tracked: None,
            acked_through: false,
            covered_ts_ms: None,
            in_flight: 0,
            acked_since_log: 0,
            last_committed: None,
            committed_ts_ms: None,
            handed_out: None,
            oldest_uncommitted: None,
            retry: false,
            commit_failures: 0,
        }
    }

    /// The assignment this state belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Takes a record as it comes from the consumer, with its Kafka timestamp
    /// in Unix milliseconds. Offsets must increase; gaps are fine.
    pub fn track(&mut self, offset: i64, ts_ms: Option<i64>) -> Result<(), TrackError> {
        if self.draining {
            return Err(TrackError::Revoked);
        }
        if !(0..i64::MAX).contains(&offset) {
            return Err(TrackError::InvalidOffset(offset));
        }
        if let Some(last) = self.last_tracked
            && offset <= last
        {
            return Err(TrackError::NotIncreasing { offset, last });
        }
        self.entries.push_back(Entry {
            offset,
            ts_ms,
            acked: false,
        });
        self.first_tracked.get_or_insert(offset);
        self.last_tracked = Some(offset);
        let stamp = Stamp { offset, ts_ms };
        self.oldest_uncommitted.get_or_insert(stamp);
        if let Some(handout) = &mut self.handed_out {
            handout.first_after.get_or_insert(stamp);
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Marks a record done (durably produced). Any order; anything but
    /// [`AckResult::Acked`] left the state as it was.
    pub fn ack(&mut self, offset: i64) -> AckResult {
        let Some(front) = self.entries.front() else {
            return self.not_in_window(offset);
        };
        let Some(distance) = offset
            .checked_sub(front.offset)
            .and_then(|d| usize::try_from(d).ok())
        else {
            return self.not_in_window(offset);
        };
        // Offsets strictly increase, so a record sits at most `distance`
        // places from the front, and exactly there when offsets are dense.
        let index = match self.entries.get(distance) {
            Some(entry) if entry.offset == offset => distance,
            _ => match self.entries.binary_search_by_key(&offset, |e| e.offset) {
                Ok(index) => index,
                Err(_) => return AckResult::Untracked,
            },
        };
        let entry = &mut self.entries[index];
        if entry.acked {
            return AckResult::Duplicate;
        }
        entry.acked = true;
        self.in_flight -= 1;
        self.acked_since_log += 1;
        if index == 0 {
            while let Some(entry) = self.entries.front()
                && entry.acked
            {
                if entry.ts_ms.is_some() {
                    self.covered_ts_ms = entry.ts_ms;
                }
                self.entries.pop_front();
            }
            self.acked_through = true;
        }
        AckResult::Acked
    }

    /// An ack for an offset outside the window of unacked records.
    fn not_in_window(&self, offset: i64) -> AckResult {
        match (self.first_tracked, self.last_tracked) {
            (Some(first), Some(last)) if (first..=last).contains(&offset) => AckResult::Duplicate,
            _ => AckResult::Untracked,
        }
    }

    /// The offset to commit: every record below it is acked. See the type's
    /// doc.
    pub fn commit_point(&self) -> Option<i64> {
        if !self.acked_through {
            return None;
        }
        match self.entries.front() {
            Some(front) => Some(front.offset),
            // `track` refuses i64::MAX, so this cannot overflow.
            None => self.last_tracked.map(|last| last + 1),
        }
    }

    /// The commit point if it is past the last committed offset.
    pub fn commit_due(&self) -> Option<i64> {
        let point = self.commit_point()?;
        match self.last_committed {
            Some(committed) if point <= committed => None,
            _ => Some(point),
        }
    }

    /// Hands out the due commit (see [`Self::commit_due`]), remembering the
    /// timestamp it covers for when it is reported committed.
    pub fn begin_commit(&mut self) -> Option<i64> {
        let offset = self.commit_due()?;
        self.handed_out = Some(Handout {
            offset,
            covered_ts_ms: self.covered_ts_ms,
            // The lowest unacked record sits at the commit point.
            first_after: self.front_stamp(),
        });
        Some(offset)
    }

    /// Records that `offset` was committed. Returns whether the last
    /// committed offset moved: a report at or below it (a late reply to an
    /// older commit) or above the commit point (never handed out) is ignored.
    pub fn committed(&mut self, offset: i64) -> bool {
        let above_last = self.last_committed.is_none_or(|last| offset > last);
        let within = self.commit_point().is_some_and(|point| offset <= point);
        if !(above_last && within) {
            return false;
        }
        self.last_committed = Some(offset);
        self.retry = false;
        if let Some(handout) = self.handed_out
            && handout.offset == offset
        {
            self.committed_ts_ms = handout.covered_ts_ms;
            self.oldest_uncommitted = handout.first_after;
        } else if self.commit_point() == Some(offset) {
            self.committed_ts_ms = self.covered_ts_ms;
            self.oldest_uncommitted = self.front_stamp();
        }
        // Otherwise both stay the older ones until a commit whose records are
        // known lands: the lag in seconds reads high, never low.
        true
    }

    /// Records that committing `offset` failed. If it is still ahead of the
    /// last committed offset, the partition is due again at the next chance
    /// ([`Self::needs_retry`]). Returns whether it is.
    pub fn commit_failed(&mut self, offset: i64) -> bool {
        self.commit_failures += 1;
        self.retry =
            self.commit_due().is_some() && self.last_committed.is_none_or(|last| offset > last);
        self.retry
    }

    /// Whether the last commit failed and nothing was committed since.
    pub fn needs_retry(&self) -> bool {
        self.retry && self.commit_due().is_some()
    }

    /// Failed commits of this partition in this epoch.
    pub fn commit_failures(&self) -> u64 {
        self.commit_failures
    }

    /// The last offset reported committed in this epoch.
    pub fn last_committed(&self) -> Option<i64> {
        self.last_committed
    }

    /// Kafka timestamp (Unix ms) of the newest record below the last
    /// committed offset, as far as records carried one.
    pub fn committed_ts_ms(&self) -> Option<i64> {
        self.committed_ts_ms
    }

    /// Kafka timestamp (Unix ms) of the newest record below the commit point,
    /// as far as records carried one.
    pub fn commit_point_ts_ms(&self) -> Option<i64> {
        self.covered_ts_ms
    }

    /// The oldest record tracked that the group has not committed: the
    /// record at the last committed offset, or the first one tracked after
    /// it. `None` when every tracked record is committed.
    pub fn oldest_uncommitted(&self) -> Option<Stamp> {
        self.oldest_uncommitted
    }

    fn front_stamp(&self) -> Option<Stamp> {
        self.entries.front().map(|e| Stamp {
            offset: e.offset,
            ts_ms: e.ts_ms,
        })
    }

    /// Records tracked and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The last offset tracked in this epoch.
    pub fn last_tracked(&self) -> Option<i64> {
        self.last_tracked
    }

    /// Stops taking records; acks are still taken. Used on revoke.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Whether [`Self::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Returns the records acked since the last call and restarts the count.
    pub fn take_acked_count(&mut self) -> u64 {
        std::mem::take(&mut self.acked_since_log)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn state() -> PartitionState {
        PartitionState::new(Epoch::new(1))
    }

    fn tracked(offsets: &[i64]) -> PartitionState {
        let mut s = state();
        for &offset in offsets {
            s.track(offset, Some(offset * 1000)).unwrap();
        }
        s
    }

    #[test]
    fn nothing_to_commit_until_the_first_record_is_acked() {
        let mut s = tracked(&[10, 11, 12]);
        assert_eq!(s.commit_point(), None);
        assert_eq!(s.ack(11), AckResult::Acked);
        assert_eq!(s.commit_point(), None);
        assert_eq!(s.commit_due(), None);
        assert_eq!(s.ack(10), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(12));
        assert_eq!(s.commit_point_ts_ms(), Some(11_000));
    }

    #[test]
    fn out_of_order_acks_commit_only_the_contiguous_prefix() {
        let mut s = tracked(&[0, 1, 2, 3, 4]);
        for offset in [4, 2, 0] {
            assert_eq!(s.ack(offset), AckResult::Acked);
        }
        assert_eq!(s.commit_point(), Some(1));
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.ack(1), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(3));
        assert_eq!(s.ack(3), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(5));
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.commit_point_ts_ms(), Some(4000));
    }

    #[test]
    fn sparse_offsets_commit_the_next_tracked_or_last_plus_one() {
        let mut s = tracked(&[3, 7, 20, 21, 40]);
        assert_eq!(s.ack(20), AckResult::Acked);
        assert_eq!(s.ack(3), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(7));
        assert_eq!(s.ack(7), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(21));
        assert_eq!(s.ack(5), AckResult::Duplicate, "gap below the commit point");
        assert_eq!(s.ack(30), AckResult::Untracked, "gap in the window");
        assert_eq!(s.ack(21), AckResult::Acked);
        assert_eq!(s.ack(40), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(41));
    }

    #[test]
    fn a_new_record_after_a_drained_window_holds_the_commit_point() {
        let mut s = tracked(&[5]);
        assert_eq!(s.ack(5), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(6));
        s.track(9, None).unwrap();
        assert_eq!(s.commit_point(), Some(9));
        assert_eq!(s.ack(9), AckResult::Acked);
        assert_eq!(s.commit_point(), Some(10));
        assert_eq!(
            s.commit_point_ts_ms(),
            Some(5000),
            "record 9 had no timestamp"
        );
    }

    #[test]
    fn duplicate_acks_are_reported_and_change_nothing() {
        let mut s = tracked(&[0, 1, 2]);
        assert_eq!(s.ack(1), AckResult::Acked);
        assert_eq!(s.ack(1), AckResult::Duplicate);
        assert_eq!(s.ack(0), AckResult::Acked);
        assert_eq!(s.ack(0), AckResult::Duplicate);
        assert_eq!(s.ack(1), AckResult::Duplicate);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.take_acked_count(), 2);
        assert_eq!(s.take_acked_count(), 0);
    }

    #[test]
    fn an_ack_before_its_track_is_ignored() {
        let mut s = state();
        assert_eq!(s.ack(0), AckResult::Untracked);
        s.track(0, None).unwrap();
        assert_eq!(s.ack(1), AckResult::Untracked);
        assert_eq!(s.ack(-1), AckResult::Untracked);
        assert_eq!(s.ack(i64::MIN), AckResult::Untracked);
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.ack(0), AckResult::Acked);
    }

    #[test]
    fn track_refuses_offsets_that_do_not_increase() {
        let mut s = tracked(&[5, 6]);
        assert_eq!(
            s.track(6, None),
            Err(TrackError::NotIncreasing { offset: 6, last: 6 })
        );
        assert_eq!(
            s.track(2, None),
            Err(TrackError::NotIncreasing { offset: 2, last: 6 })
        );
        assert_eq!(s.track(-1, None), Err(TrackError::InvalidOffset(-1)));
        assert_eq!(
            s.track(i64::MAX, None),
            Err(TrackError::InvalidOffset(i64::MAX))
        );
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.last_tracked(), Some(6));
    }

    #[test]
    fn draining_refuses_records_and_takes_acks() {
        let mut s = tracked(&[0, 1]);
        s.start_draining();
        assert!(s.is_draining());
        assert_eq!(s.track(2, None), Err(TrackError::Revoked));
        assert_eq!(s.ack(1), AckResult::Acked);
        assert_eq!(s.ack(0), AckResult::Acked);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.commit_due(), Some(2));
    }

    #[test]
    fn commit_is_due_only_past_the_last_committed() {
        let mut s = tracked(&[0, 1, 2]);
        assert_eq!(s.ack(0), AckResult::Acked);
        assert_eq!(s.begin_commit(), Some(1));
        assert!(s.committed(1));
        assert_eq!(s.last_committed(), Some(1));
        assert_eq!(s.committed_ts_ms(), Some(0));
        assert_eq!(s.commit_due(), None, "commit point equals last committed");
        assert_eq!(s.ack(1), AckResult::Acked);
        assert_eq!(s.commit_due(), Some(2));
    }

    #[test]
    fn committed_never_moves_backwards_nor_past_the_commit_point() {
        let mut s = tracked(&[0, 1, 2, 3]);
        assert_eq!(s.ack(0), AckResult::Acked);
        assert_eq!(s.begin_commit(), Some(1));
        assert_eq!(s.ack(1), AckResult::Acked);
        assert_eq!(s.ack(2), AckResult::Acked);
        assert_eq!(s.begin_commit(), Some(3));
        assert!(s.committed(3));
        assert_eq!(s.committed_ts_ms(), Some(2000));
        assert!(!s.committed(1), "late reply to the older commit");
        assert_eq!(s.last_committed(), Some(3));
        assert!(!s.committed(4), "never handed out");
        assert_eq!(s.last_committed(), Some(3));
    }

    #[test]
    fn a_failed_commit_stays_due_and_asks_for_a_retry() {
        let mut s = tracked(&[0]);
        assert_eq!(s.ack(0), AckResult::Acked);
        assert_eq!(s.begin_commit(), Some(1));
        assert!(s.commit_failed(1));
        assert!(s.needs_retry());
        assert_eq!(s.commit_failures(), 1);
        assert_eq!(s.commit_due(), Some(1));
        assert!(s.committed(1));
        assert!(!s.needs_retry());
        assert!(!s.commit_failed(1), "already committed by a later success");
    }

    #[test]
    fn memory_follows_the_in_flight_window() {
        let mut s = state();
        for offset in 0..100_000 {
            s.track(offset, None).unwrap();
            if offset >= 8 {
                assert_eq!(s.ack(offset - 8), AckResult::Acked);
            }
        }
        assert!(s.entries.capacity() < 64, "{}", s.entries.capacity());
        assert_eq!(s.in_flight(), 8);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Track the offset `gap` above the last one (0: the next).
        Track { gap: i64 },
        /// Track an offset at or below the last one.
        TrackBack { back: i64 },
        /// Ack the n-th (mod len) unacked record.
        AckInFlight(usize),
        /// Ack an arbitrary offset: tracked, untracked, duplicate.
        AckAny(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..3).prop_map(|gap| Op::Track { gap }),
            1 => (0i64..5).prop_map(|back| Op::TrackBack { back }),
            4 => any::<usize>().prop_map(Op::AckInFlight),
            1 => (-2i64..40).prop_map(Op::AckAny),
        ]
    }

    /// The naive model: the set of unacked offsets.
    #[derive(Default)]
    struct Model {
        tracked: BTreeSet<i64>,
        unacked: BTreeSet<i64>,
    }

    impl Model {
        fn commit_point(&self) -> Option<i64> {
            let first = *self.tracked.first()?;
            match self.unacked.first() {
                Some(&lowest) if lowest == first => None,
                Some(&lowest) => Some(lowest),
                None => Some(self.tracked.last()? + 1),
            }
        }
    }

    proptest! {
        #[test]
        fn matches_a_naive_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut s = state();
            let mut m = Model::default();
            let mut last_point = None;
            for op in ops {
                match op {
                    Op::Track { gap } => {
                        let offset = m.tracked.last().map_or(gap, |last| last + 1 + gap);
                        prop_assert_eq!(s.track(offset, Some(offset)), Ok(()));
                        m.tracked.insert(offset);
                        m.unacked.insert(offset);
                    }
                    Op::TrackBack { back } => {
                        if let Some(&last) = m.tracked.last() {
                            let refused = s.track(last - back, None);
                            prop_assert!(refused.is_err());
                        }
                    }
                    Op::AckInFlight(n) => {
                        if !m.unacked.is_empty() {
                            let offset = *m.unacked.iter().nth(n % m.unacked.len()).unwrap();
                            prop_assert_eq!(s.ack(offset), AckResult::Acked);
                            m.unacked.remove(&offset);
                        }
                    }
                    Op::AckAny(offset) => {
                        let got = s.ack(offset);
                        let below_point = m.commit_point().is_some_and(|point| {
                            m.tracked.first().is_some_and(|&first| first <= offset) && offset < point
                        });
                        let expected = if m.unacked.remove(&offset) {
                            AckResult::Acked
                        } else if m.tracked.contains(&offset) || below_point {
                            // Below the commit point a gap reads as a duplicate.
                            AckResult::Duplicate
                        } else {
                            AckResult::Untracked
                        };
                        prop_assert_eq!(got, expected);
                    }
                }
                let point = s.commit_point();
                prop_assert_eq!(point, m.commit_point());
                prop_assert_eq!(s.in_flight(), m.unacked.len());
                prop_assert!(point >= last_point, "commit point moved back");
                if let (Some(point), Some(&lowest)) = (point, m.unacked.first()) {
                    prop_assert!(point <= lowest, "commit point past an unacked record");
                }
                last_point = point;
            }
        }
    }
}

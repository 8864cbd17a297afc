//! Random sequences of operations on up to three partitions, checked step
//! by step against a naive model: per partition and epoch, a `BTreeSet` of
//! unacked offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use acker::{AckResult, Acker, AckerConfig, Commit, Epoch, TopicPartition, TrackError};
use proptest::prelude::*;

const INTERVAL_MS: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    Assign(i32),
    /// Track on a partition; the offset is `gap` above the last one.
    Track(i32, i64),
    /// Ack the n-th unacked record of the current epoch.
    Ack(i32, usize),
    /// Ack the n-th record ever tracked under an earlier epoch.
    AckStale(usize),
    /// Ack an arbitrary offset in the current epoch.
    AckAny(i32, i64),
    Revoke(i32),
    Release(i32),
    Lost(i32),
    /// Advance the clock by this many ms, then ask for commits.
    CommitsDue(u64, bool),
    CommitNow(i32),
    /// Report the n-th outstanding commit: success or failure.
    Reply(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0i32..3;
    prop_oneof![
        1 => p.clone().prop_map(Op::Assign),
        8 => (p.clone(), 0i64..3).prop_map(|(p, gap)| Op::Track(p, gap)),
        8 => (p.clone(), any::<usize>()).prop_map(|(p, n)| Op::Ack(p, n)),
        1 => any::<usize>().prop_map(Op::AckStale),
        1 => (p.clone(), 0i64..60).prop_map(|(p, o)| Op::AckAny(p, o)),
        1 => p.clone().prop_map(Op::Revoke),
        1 => p.clone().prop_map(Op::Release),
        1 => p.clone().prop_map(Op::Lost),
        3 => (0u64..150, prop::bool::weighted(0.1)).prop_map(|(ms, f)| Op::CommitsDue(ms, f)),
        1 => p.prop_map(Op::CommitNow),
        3 => (any::<usize>(), prop::bool::weighted(0.7)).prop_map(|(n, ok)| Op::Reply(n, ok)),
    ]
}

/// One assignment of one partition, the naive way.
#[derive(Debug, Clone)]
struct Assignment {
    epoch: Epoch,
    tracked: BTreeSet<i64>,
    unacked: BTreeSet<i64>,
    draining: bool,
    committed: Option<i64>,
    retry: bool,
}

impl Assignment {
    fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            tracked: BTreeSet::new(),
            unacked: BTreeSet::new(),
            draining: false,
            committed: None,
            retry: false,
        }
    }

    /// Lowest unacked, or last tracked + 1; none until the first is acked.
    fn commit_point(&self) -> Option<i64> {
        let first = *self.tracked.first()?;
        match self.unacked.first() {
            Some(&lowest) if lowest == first => None,
            Some(&lowest) => Some(lowest),
            None => Some(self.tracked.last()? + 1),
        }
    }

    fn due(&self) -> Option<i64> {
        let point = self.commit_point()?;
        (self.committed.is_none_or(|c| point > c)).then_some(point)
    }
}

struct Harness {
    acker: Acker,
    now: Instant,
    next_round: Instant,
    live: BTreeMap<i32, Assignment>,
    /// Every earlier assignment, for stale acks.
    past: Vec<(i32, Assignment)>,
    outstanding: Vec<Commit>,
    /// The highest offset reported committed per epoch.
    committed_per_epoch: BTreeMap<Epoch, i64>,
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let interval = Duration::from_millis(INTERVAL_MS);
        let config = AckerConfig {
            commit_interval: interval,
            ..AckerConfig::default()
        };
        Self {
            acker: Acker::new(config, now),
            now,
            next_round: now + interval,
            live: BTreeMap::new(),
            past: Vec::new(),
            outstanding: Vec::new(),
            committed_per_epoch: BTreeMap::new(),
        }
    }

    fn retire(&mut self, p: i32) {
        if let Some(old) = self.live.remove(&p) {
            self.past.push((p, old));
        }
    }

    /// What the acker shows of every partition, to compare before and after
    /// an operation that must change nothing.
    fn snapshot(&self) -> Vec<(i32, Option<i64>, Option<i64>, usize)> {
        (0..3)
            .filter_map(|p| {
                let s = self.acker.partition(&tp(p))?;
                Some((p, s.commit_point(), s.last_committed(), s.in_flight()))
            })
            .collect()
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Assign(p) => {
                self.retire(p);
                let epoch = self.acker.assign(tp(p));
                prop_assert!(self.past.iter().all(|(_, a)| a.epoch != epoch));
                self.live.insert(p, Assignment::new(epoch));
            }
            Op::Track(p, gap) => {
                let Some(a) = self.live.get_mut(&p) else {
                    let stale = Epoch::new(0);
                    let got = self.acker.track(&tp(p), stale, 0, None);
                    prop_assert_eq!(got, Err(TrackError::Unassigned));
                    return Ok(());
                };
                let offset = a.tracked.last().map_or(gap * 7, |last| last + 1 + gap);
                let got = self.acker.track(&tp(p), a.epoch, offset, Some(offset));
                if a.draining {
                    prop_assert_eq!(got, Err(TrackError::Revoked));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    a.tracked.insert(offset);
                    a.unacked.insert(offset);
                }
                if let Some(&last) = a.tracked.last() {
                    let back = self.acker.track(&tp(p), a.epoch, last, None);
                    prop_assert!(back.is_err());
                }
            }
            Op::Ack(p, n) => {
                if let Some(a) = self.live.get_mut(&p)
                    && !a.unacked.is_empty()
                {
                    let offset = *a.unacked.iter().nth(n % a.unacked.len()).unwrap();
                    prop_assert_eq!(self.acker.ack(&tp(p), a.epoch, offset), AckResult::Acked);
                    a.unacked.remove(&offset);
                }
            }
            Op::AckStale(n) => {
                let candidates: Vec<(i32, Epoch, i64)> = self
                    .past
                    .iter()
                    .flat_map(|(p, a)| a.tracked.iter().map(move |&o| (*p, a.epoch, o)))
                    .collect();
                if !candidates.is_empty() {
                    let (p, epoch, offset) = candidates[n % candidates.len()];
                    let before = self.snapshot();
                    let got = self.acker.ack(&tp(p), epoch, offset);
                    let expected = if self.live.contains_key(&p) {
                        AckResult::Fenced
                    } else {
                        AckResult::Unassigned
                    };
                    prop_assert_eq!(got, expected);
                    prop_assert_eq!(self.snapshot(), before, "a fenced ack changed state");
                }
            }
            Op::AckAny(p, offset) => {
                if let Some(a) = self.live.get_mut(&p) {
                    let got = self.acker.ack(&tp(p), a.epoch, offset);
                    if a.unacked.remove(&offset) {
                        prop_assert_eq!(got, AckResult::Acked);
                    } else {
                        prop_assert!(got != AckResult::Acked);
                    }
                }
            }
            Op::Revoke(p) => {
                let known = self.acker.revoke(&tp(p));
                prop_assert_eq!(known, self.live.contains_key(&p));
                if let Some(a) = self.live.get_mut(&p) {
                    a.draining = true;
                }
            }
            Op::Release(p) | Op::Lost(p) => {
                let dropped = match op {
                    Op::Lost(_) => self.acker.lost(&tp(p)),
                    _ => self.acker.release(&tp(p)),
                };
                prop_assert_eq!(
                    dropped.map(|s| s.epoch()),
                    self.live.get(&p).map(|a| a.epoch)
                );
                self.retire(p);
            }
            Op::CommitsDue(ms, force) => {
                self.now += Duration::from_millis(ms);
                let round = force || self.now >= self.next_round;
                if round {
                    self.next_round = self.now + Duration::from_millis(INTERVAL_MS);
                }
                let got = self.acker.commits_due(self.now, force);
                let mut got_set: Vec<(i32, Epoch, i64)> = got
                    .iter()
                    .map(|c| (c.tp.partition, c.epoch, c.offset))
                    .collect();
                got_set.sort_unstable();
                let expected: Vec<(i32, Epoch, i64)> = self
                    .live
                    .iter()
                    .filter(|(_, a)| round || a.retry)
                    .filter_map(|(&p, a)| Some((p, a.epoch, a.due()?)))
                    .collect();
                prop_assert_eq!(got_set, expected);
                self.hand_out(got)?;
            }
            Op::CommitNow(p) => {
                let got = self.acker.commit_now(&tp(p));
                let expected = self.live.get(&p).and_then(|a| Some((a.epoch, a.due()?)));
                prop_assert_eq!(got.as_ref().map(|c| (c.epoch, c.offset)), expected);
                self.hand_out(got.into_iter().collect())?;
            }
            Op::Reply(n, ok) => {
                if self.outstanding.is_empty() {
                    return Ok(());
                }
                let c = self.outstanding.swap_remove(n % self.outstanding.len());
                let live = self
                    .live
                    .get_mut(&c.tp.partition)
                    .filter(|a| a.epoch == c.epoch);
                if ok {
                    let moved = self.acker.committed(&c.tp, c.epoch, c.offset);
                    let expected = live
                        .as_ref()
                        .is_some_and(|a| a.committed.is_none_or(|last| c.offset > last));
                    prop_assert_eq!(moved, expected);
                    if let Some(a) = live
                        && moved
                    {
                        a.committed = Some(c.offset);
                        a.retry = false;
                    }
                    if moved {
                        let prev = self.committed_per_epoch.insert(c.epoch, c.offset);
                        prop_assert!(prev.is_none_or(|p| p < c.offset), "committed went back");
                    }
                } else {
                    self.acker.commit_failed(&c.tp, c.epoch, c.offset);
                    if let Some(a) = live {
                        a.retry =
                            a.due().is_some() && a.committed.is_none_or(|last| c.offset > last);
                    }
                }
            }
        }
        self.check()
    }

    /// Every commit handed out is safe: at most the lowest unacked offset,
    /// and past the last committed one.
    fn hand_out(&mut self, commits: Vec<Commit>) -> Result<(), TestCaseError> {
        for c in commits {
            let a = &self.live[&c.tp.partition];
            prop_assert_eq!(c.epoch, a.epoch);
            if let Some(&lowest) = a.unacked.first() {
                prop_assert!(c.offset <= lowest, "commit past an unproduced record");
            }
            prop_assert!(a.committed.is_none_or(|last| c.offset > last));
            self.outstanding.push(c);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut total = 0;
        for p in 0..3 {
            let state = self.acker.partition(&tp(p));
            let Some(a) = self.live.get(&p) else {
                prop_assert!(state.is_none());
                prop_assert!(self.acker.is_drained(&tp(p)));
                continue;
            };
            let s = state.unwrap();
            prop_assert_eq!(s.epoch(), a.epoch);
            prop_assert_eq!(s.commit_point(), a.commit_point());
            prop_assert_eq!(s.in_flight(), a.unacked.len());
            prop_assert_eq!(s.last_committed(), a.committed);
            prop_assert_eq!(s.is_draining(), a.draining);
            prop_assert_eq!(self.acker.is_drained(&tp(p)), a.unacked.is_empty());
            if let (Some(c), Some(&lowest)) = (a.committed, a.unacked.first()) {
                prop_assert!(c <= lowest, "committed past an unacked record");
            }
            total += a.unacked.len();
        }
        prop_assert_eq!(self.acker.total_in_flight(), total);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn acker_matches_the_naive_model(ops in prop::collection::vec(op(), 1..300)) {
        let mut h = Harness::new();
        for op in ops {
            h.apply(op)?;
        }
    }
}

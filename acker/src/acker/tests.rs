//! The acker's tests: epochs and fencing, commit scheduling, lag reports
//! and progress logs, each against a recorder that keeps what was emitted.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use ::metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
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

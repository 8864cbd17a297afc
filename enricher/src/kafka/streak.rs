//! Failures that repeat, said once: a warning when a streak starts (with the
//! error and where), a summary at most every [`SUMMARY_EVERY`] while it goes
//! on, and one line when it ends. Counters carry the detail; a broker that
//! answers every request with an error for a minute is a few log lines, not
//! one per record.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// At most one summary line per streak in this interval.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// A failure this long after the last one starts a new streak: for kinds of
/// failure that have no success to end them (librdkafka's client errors).
pub(crate) const QUIET_ENDS: Duration = Duration::from_secs(30);

/// The messages of one kind of failure.
pub(crate) struct Messages {
    /// Logged when a streak starts.
    pub(crate) started: &'static str,
    /// Logged at most every [`SUMMARY_EVERY`] while it goes on.
    pub(crate) ongoing: &'static str,
    /// Logged when it ends.
    pub(crate) ended: &'static str,
}

/// One kind of failure (deliveries, commits, the consumer) and its streak.
pub(crate) struct Streak {
    messages: Messages,
    active: Option<Active>,
}

struct Active {
    since: Instant,
    total: u64,
    since_summary: u64,
    last_summary: Instant,
    last_failure: Instant,
}

impl Streak {
    pub(crate) const fn new(messages: Messages) -> Self {
        Self {
            messages,
            active: None,
        }
    }

    /// Whether a streak is going on.
    pub(crate) fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// One failure; `place` says where (`topic/partition`). Returns whether
    /// it logged.
    pub(crate) fn failed(&mut self, now: Instant, error: &dyn Display, place: &str) -> bool {
        if let Some(a) = &self.active
            && now.saturating_duration_since(a.last_failure) >= QUIET_ENDS
        {
            self.succeeded(a.last_failure);
        }
        let Some(a) = &mut self.active else {
            tracing::warn!(%error, place, "{}", self.messages.started);
            self.active = Some(Active {
                since: now,
                total: 1,
                since_summary: 0,
                last_summary: now,
                last_failure: now,
            });
            return true;
        };
        a.last_failure = now;
        a.total += 1;
        a.since_summary += 1;
        if now.saturating_duration_since(a.last_summary) < SUMMARY_EVERY {
            return false;
        }
        tracing::warn!(
            failures = a.since_summary,
            total = a.total,
            secs = now.saturating_duration_since(a.since).as_secs(),
            last_error = %error,
            place,
            "{}",
            self.messages.ongoing
        );
        a.since_summary = 0;
        a.last_summary = now;
        true
    }

    /// A success: ends the streak, if any. Returns whether it logged.
    pub(crate) fn succeeded(&mut self, now: Instant) -> bool {
        let Some(a) = self.active.take() else {
            return false;
        };
        tracing::info!(
            failures = a.total,
            secs = now.saturating_duration_since(a.since).as_secs(),
            "{}",
            self.messages.ended
        );
        true
    }
}

/// Exponential backoff with jitter, capped: the delay before failed
/// deliveries are sent again.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay to wait now (between half and all of the current step, so
    /// workers that failed together do not retry together), and doubles the
    /// step up to the cap.
    pub(crate) fn next_delay(&mut self, jitter: f64) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Back to the first step, after deliveries succeed again.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: Messages = Messages {
        started: "Failing",
        ongoing: "Still failing",
        ended: "Succeeding again",
    };

    #[test]
    fn a_streak_logs_once_then_at_most_every_interval_then_once_at_the_end() {
        let mut s = Streak::new(MESSAGES);
        let t0 = Instant::now();
        let logged = (0..100_000u64)
            .filter(|i| s.failed(t0 + Duration::from_micros(i * 200), &"boom", "t/0"))
            .count();
        // 20 s of failures: the start, then one summary every 5 s.
        assert_eq!(logged, 4);
        assert!(s.is_active());
        assert!(s.succeeded(t0 + Duration::from_secs(21)));
        assert!(!s.succeeded(t0 + Duration::from_secs(22)));
        assert!(s.failed(t0 + Duration::from_secs(23), &"boom", "t/0"));
        // Quiet for longer than QUIET_ENDS: the next failure starts anew.
        assert!(!s.failed(t0 + Duration::from_secs(24), &"boom", "t/0"));
        assert!(s.failed(t0 + Duration::from_secs(60), &"boom", "t/0"));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<u128> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
    }
}

//! What the HTTP probes read: whether the worker is assigned, reaches a
//! broker and turns its loop.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Health as the HTTP probes see it.
#[derive(Debug, Default)]
pub struct Health {
    /// The consumer group gave this worker an assignment (possibly empty).
    pub assigned: AtomicBool,
    /// At least one broker is up, per the last statistics.
    pub broker_up: AtomicBool,
    /// Unix millis of the consumer loop's last turn (liveness).
    pub heartbeat_ms: AtomicI64,
    /// Set once the worker is draining for shutdown.
    pub stopping: AtomicBool,
}

impl Health {
    /// Ready for traffic: assigned, a broker reachable, not stopping.
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
            && self.broker_up.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
    }

    /// Alive: the consumer loop turned within the last 30 seconds.
    pub fn alive(&self) -> bool {
        let last = self.heartbeat_ms.load(Ordering::Relaxed);
        last == 0 || now_ms() - last < 30_000
    }

    /// Marks a turn of the consumer loop.
    pub(super) fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Unix millis now.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

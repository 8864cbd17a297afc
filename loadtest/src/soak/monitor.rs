//! Reads lag, RSS and counts while the soak runs, one sample per interval
//! onto the timeline, with a progress line each.
//!
//! ```text
//! tick --> worker alive? --> lag (LagProbe) --> sample due? --> sent (send state), out (watcher), RSS
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::TICK;
use super::send::SendState;
use super::summary::SoakSample;
use super::worker::Running;
use crate::cluster::LagProbe;
use crate::report::thousands;
use crate::watch::Watcher;

/// Reads lag, RSS and counts while the soak runs.
pub(super) struct Monitor<'a> {
    pub(super) start: Instant,
    pub(super) sample_every: Duration,
    pub(super) next_sample: Instant,
    pub(super) probe: LagProbe,
    pub(super) worker: &'a mut Running,
    pub(super) state: Arc<SendState>,
    pub(super) timeline: Vec<SoakSample>,
    /// Time, sent and out of the last sample.
    pub(super) last: (Instant, u64, u64),
    pub(super) phase: String,
    /// Which run id's counters the samples show: 0 calibration, 1 soak.
    pub(super) run: usize,
    /// Highest lag read since it was last reset.
    pub(super) lag_max: i64,
    pub(super) progress: bool,
}

impl Monitor<'_> {
    pub(super) fn enter(&mut self, phase: &str, run: usize) {
        self.phase = phase.to_string();
        if run != self.run {
            self.run = run;
            self.last = (Instant::now(), 0, 0);
        }
    }

    /// Waits a tick; takes a sample when one is due, else reads only the
    /// lag when `read_lag`. Returns the lag when it was read.
    pub(super) fn step(
        &mut self,
        watcher: &Watcher,
        read_lag: bool,
    ) -> anyhow::Result<Option<i64>> {
        std::thread::sleep(TICK);
        self.worker.check_alive()?;
        let now = Instant::now();
        if now < self.next_sample {
            if !read_lag {
                return Ok(None);
            }
            let lag = self.probe.lag();
            self.lag_max = self.lag_max.max(lag.unwrap_or(0));
            return Ok(lag);
        }
        self.next_sample = now + self.sample_every;
        let lag = self.probe.lag();
        self.lag_max = self.lag_max.max(lag.unwrap_or(0));
        let sent = self.state.runs[self.run].acked();
        let out = watcher.tally().distinct();
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-9);
        let sample = SoakSample {
            t_s: now.duration_since(self.start).as_secs_f64(),
            phase: self.phase.clone(),
            sent,
            out,
            in_rps: sent.saturating_sub(self.last.1) as f64 / dt,
            out_rps: out.saturating_sub(self.last.2) as f64 / dt,
            lag,
            rss_mb: self.worker.rss_mb(),
        };
        self.last = (now, sent, out);
        if self.progress {
            eprintln!(
                "[{:>6.1}s] {:<9} sent {:>11}  out {:>11} ({:>7}/s)  lag {:>8}  worker RSS {:>6.1} MiB",
                sample.t_s,
                sample.phase,
                thousands(sample.sent),
                thousands(sample.out),
                thousands(sample.out_rps as u64),
                lag.map_or_else(|| "-".into(), |l| thousands(l.max(0) as u64)),
                sample.rss_mb
            );
        }
        self.timeline.push(sample);
        Ok(lag)
    }

    /// Steps until the lag reads 0; true when it did not within `timeout`.
    pub(super) fn wait_for_lag_zero(
        &mut self,
        watcher: &Watcher,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let by = Instant::now() + timeout;
        while Instant::now() < by {
            if self.step(watcher, true)? == Some(0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Steps until the sender has done `batches` batches and the watcher
    /// has seen every one of the `expected` records of the current run (or
    /// nothing new has come out for 60 s).
    pub(super) fn wait_for_output(
        &mut self,
        watcher: &Watcher,
        batches: u64,
        expected: u64,
    ) -> anyhow::Result<()> {
        let mut last_change = (Instant::now(), u64::MAX);
        loop {
            self.step(watcher, false)?;
            let done = self.state.batches_done.load(Ordering::Relaxed) >= batches;
            let out = watcher.tally().distinct();
            if done && out + self.state.runs[self.run].refused_count() >= expected {
                return Ok(());
            }
            if out != last_change.1 {
                last_change = (Instant::now(), out);
            } else if done && last_change.0.elapsed() > Duration::from_secs(60) {
                eprintln!("No new output for 60 s; counting what came out");
                return Ok(());
            }
        }
    }
}

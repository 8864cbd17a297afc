//! What `loadtest soak` reports: the calibration, every burst, the worker's
//! memory and the timeline, and the table people read.

use serde::Serialize;

use crate::report::{Percentiles, thousands};

/// The calibration pass.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Calibration {
    /// Records sent flat out.
    pub records: u64,
    /// Records out per second, between the first and the last output timestamp.
    pub max_rps: f64,
    /// Records lost in the pass.
    pub lost: u64,
    /// Records seen twice in the pass.
    pub duplicates: u64,
}

/// One burst and the idle spell after it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Burst {
    /// 1 for the first.
    pub index: usize,
    /// Seconds from the soak's start to the burst's start.
    pub start_s: f64,
    /// Records sent (and acknowledged by the cluster).
    pub records: u64,
    /// Seconds from the first record sent to the last one acknowledged.
    pub send_s: f64,
    /// Highest consumer lag read from the burst's start to its drain.
    pub max_lag: i64,
    /// Seconds from the last record acknowledged until the lag read 0
    /// (`None`: not within the drain timeout).
    pub drain_s: Option<f64>,
    /// Seconds of the idle spell (at least the configured idle time).
    pub idle_s: f64,
    /// Worker RSS at the end of the idle spell, MiB.
    pub rss_end_mb: f64,
}

/// Resident memory of the worker (the whole process when it runs in-process).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rss {
    /// Whether the figures are the worker's alone (a child process).
    pub worker_only: bool,
    /// Once ready, before any load, MiB.
    pub ready_mb: f64,
    /// At the start of the first burst (after calibration), MiB.
    pub start_mb: f64,
    /// After the last idle spell, MiB.
    pub end_mb: f64,
    /// Highest sample from the first burst on, MiB.
    pub max_mb: f64,
    /// Highest over the whole life, calibration included: the kernel's
    /// high-water mark (`VmHWM`, which the kernel updates lazily) or the
    /// highest sample, whichever is higher, MiB.
    pub peak_mb: f64,
    /// Least-squares slope of the RSS read at the end of each idle spell
    /// (the worker drained and quiet), over the second half of the bursts,
    /// MiB per hour: a leak shows in every half, while the one-time growth
    /// of caches and of librdkafka's fetch queue after the first large lag
    /// falls in the first (0 with fewer than three bursts).
    pub slope_mb_per_hour: f64,
}

/// One point of the timeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSample {
    /// Seconds since the worker was ready.
    pub t_s: f64,
    /// `calibrate`, `settle`, `burst N`, `idle N` or `final`.
    pub phase: String,
    /// Records of the current run id acknowledged by the cluster.
    pub sent: u64,
    /// Distinct records of the current run id seen at the output or dead-letter topic.
    pub out: u64,
    /// Records per second in over the last interval.
    pub in_rps: f64,
    /// Records per second out over the last interval.
    pub out_rps: f64,
    /// Consumer lag (`None`: the cluster did not answer in time).
    pub lag: Option<i64>,
    /// Worker RSS, MiB.
    pub rss_mb: f64,
}

/// What `loadtest soak` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSummary {
    /// The run id (the `loadtest.run` header of the soak's records).
    pub run_id: String,
    /// The worker: `enricher run` with its path and pid, or `in-process`.
    pub worker: String,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// The calibration pass (`None` when `--rate` was given).
    pub calibration: Option<Calibration>,
    /// Records per second asked for during a burst.
    pub rate_rps: f64,
    /// Records per second the sender held during bursts.
    pub achieved_rps: f64,
    /// Records processed per second of load: every burst's records over the
    /// time from its first record sent to its lag reading 0.
    pub throughput_rps: f64,
    /// Highest output rate over one sampling interval.
    pub out_rps_peak: f64,
    /// Seconds from the first burst's start to the last idle spell's end.
    pub duration_s: f64,
    /// Soak records acknowledged by the cluster (calibration not included).
    pub sent: u64,
    /// Soak records the cluster refused at produce time (not part of the run).
    pub refused: u64,
    /// Soak records sent and never seen at the output or dead-letter topic.
    pub lost: u64,
    /// Soak records seen more than once.
    pub duplicates: u64,
    /// Soak records dead-lettered.
    pub dead_lettered: u64,
    /// Whether the lag read 0 after every burst.
    pub drained_every_burst: bool,
    /// End-to-end latency of soak records: output timestamp minus send time.
    pub latency_ms: Percentiles,
    /// The worker's L1 hit ratio at the end (`None`: not read).
    pub l1_hit_ratio: Option<f64>,
    /// Upstream DNS queries the fake server answered over the whole life.
    pub dns_queries: u64,
    /// Worker memory.
    pub rss: Rss,
    /// How the worker ended: its exit status after SIGTERM.
    pub worker_exit: String,
    /// Every burst.
    pub bursts: Vec<Burst>,
    /// Every sample.
    pub timeline: Vec<SoakSample>,
}

impl SoakSummary {
    /// Nothing lost and the lag back to 0 after every burst.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.drained_every_burst
    }
}

impl SoakSummary {
    /// The report for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nSoak {}: worker {}, {} partitions, embedded broker",
            self.run_id, self.worker, self.partitions
        );
        if let Some(c) = self.calibration {
            let _ = writeln!(
                s,
                "  measured maximum    {} records/s ({} records flat out; lost {}, duplicates {})",
                thousands(c.max_rps as u64),
                thousands(c.records),
                c.lost,
                c.duplicates
            );
        }
        let bursts = self.bursts.len();
        let burst_s = self.bursts.first().map_or(0.0, |b| b.send_s);
        let _ = writeln!(
            s,
            "  load                {bursts} bursts of {} records at {} records/s (held {}/s, {:.0} s each), idle between; {:.1} min",
            thousands(self.bursts.first().map_or(0, |b| b.records)),
            thousands(self.rate_rps as u64),
            thousands(self.achieved_rps as u64),
            burst_s,
            self.duration_s / 60.0
        );
        let _ = writeln!(s, "  records sent        {}", thousands(self.sent));
        if self.refused > 0 {
            let _ = writeln!(s, "  refused by cluster  {}", thousands(self.refused));
        }
        let _ = writeln!(
            s,
            "  lost                {}   {}",
            thousands(self.lost),
            if self.lost == 0 { "OK" } else { "RECORDS LOST" }
        );
        let _ = writeln!(s, "  duplicates          {}", thousands(self.duplicates));
        let _ = writeln!(s, "  dead-lettered       {}", thousands(self.dead_lettered));
        let _ = writeln!(
            s,
            "  throughput          {} records/s from each burst's start to its lag at 0 (peak {}/s out)",
            thousands(self.throughput_rps as u64),
            thousands(self.out_rps_peak as u64)
        );
        let l = self.latency_ms;
        let _ = writeln!(
            s,
            "  end-to-end latency  p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.p50, l.p90, l.p99, l.max
        );
        let drained = self.bursts.iter().filter(|b| b.drain_s.is_some()).count();
        let _ = writeln!(
            s,
            "  lag back to 0       after {drained} of {bursts} bursts   {}; worst max lag {}, slowest drain {:.1} s",
            if self.drained_every_burst {
                "OK"
            } else {
                "NOT DRAINED"
            },
            thousands(
                self.bursts
                    .iter()
                    .map(|b| b.max_lag.max(0))
                    .max()
                    .unwrap_or(0) as u64
            ),
            self.bursts
                .iter()
                .filter_map(|b| b.drain_s)
                .fold(0.0, f64::max)
        );
        let r = self.rss;
        let _ = writeln!(
            s,
            "  worker RSS          start {:.1} MiB, end {:.1} MiB, max {:.1} MiB ({})",
            r.start_mb,
            r.end_mb,
            r.max_mb,
            if r.worker_only {
                "the worker process alone"
            } else {
                "the whole loadtest process"
            }
        );
        let _ = writeln!(
            s,
            "  RSS trend           {:+.1} MiB/h at the end of idle spells, second half; {:.1} MiB when ready, {:.1} MiB at most over its life",
            r.slope_mb_per_hour, r.ready_mb, r.peak_mb
        );
        let _ = writeln!(
            s,
            "  cache and DNS       L1 hit ratio {}, {} upstream DNS queries",
            self.l1_hit_ratio
                .map_or_else(|| "-".into(), |h| format!("{:.1}%", h * 100.0)),
            thousands(self.dns_queries)
        );
        let _ = writeln!(s, "  worker exit         {}", self.worker_exit);
        let _ = writeln!(
            s,
            "\n  {:>5} {:>9} {:>11} {:>8} {:>10} {:>10} {:>8} {:>9}",
            "burst",
            "start (s)",
            "records",
            "send (s)",
            "max lag",
            "drain (s)",
            "idle (s)",
            "RSS (MiB)"
        );
        for b in &self.bursts {
            let _ = writeln!(
                s,
                "  {:>5} {:>9.1} {:>11} {:>8.1} {:>10} {:>10} {:>8.1} {:>9.1}",
                b.index,
                b.start_s,
                thousands(b.records),
                b.send_s,
                thousands(b.max_lag.max(0) as u64),
                b.drain_s
                    .map_or_else(|| "NOT".into(), |d| format!("{d:.1}")),
                b.idle_s,
                b.rss_end_mb
            );
        }
        s
    }
}

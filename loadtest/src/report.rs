//! What a run found, as a table for people and JSON for machines.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use enricher::stats::{DnsSnapshot, Snapshot};
use serde::Serialize;

use crate::watch::TopicTally;

/// One point of the timeline, taken every sampling interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Records acknowledged by the cluster so far.
    pub sent: u64,
    /// Distinct records seen at the output (or dead-lettered) so far.
    pub out: u64,
    /// Records per second into the input topics over the last interval.
    pub in_rps: f64,
    /// Records per second out over the last interval.
    pub out_rps: f64,
    /// Consumer-group lag over all input topics (`None`: not read).
    pub lag: Option<i64>,
    /// How many seconds the enriched stream trails the raw one: send time of
    /// the newest record in minus send time of the newest record out.
    pub ts_diff_s: f64,
    /// Upstream DNS queries per second over the last interval.
    pub dns_qps: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `values` (sorted in place).
    pub fn of(values: &mut [f32]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable_by(f32::total_cmp);
        let at = |q: f64| f64::from(values[((values.len() - 1) as f64 * q).round() as usize]);
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Cache hit ratios per tier.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CacheRatios {
    /// L1 (in-process) hits over L1 lookups.
    pub l1_hit_ratio: f64,
    /// L2 (Redis) hits over L2 lookups (0 when there is no L2).
    pub l2_hit_ratio: f64,
    /// L1 lookups.
    pub l1_lookups: u64,
    /// L2 lookups.
    pub l2_lookups: u64,
    /// Lookups that skipped L2 because it was down or its circuit open.
    pub l2_unavailable: u64,
}

impl CacheRatios {
    /// From the workers' counters.
    pub fn from(stats: &Snapshot) -> Self {
        let c = stats.cache;
        let ratio = |hits: u64, misses: u64| {
            if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            }
        };
        Self {
            l1_hit_ratio: ratio(c.l1_hits, c.l1_misses),
            l2_hit_ratio: ratio(c.l2_hits, c.l2_misses),
            l1_lookups: c.l1_hits + c.l1_misses,
            l2_lookups: c.l2_hits + c.l2_misses,
            l2_unavailable: c.l2_unavailable,
        }
    }
}

/// Upstream DNS as the fake server (or the workers) counted it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DnsFigures {
    /// Queries the upstream received.
    pub queries: u64,
    /// Highest queries per second over one sampling interval.
    pub qps_peak: f64,
    /// Mean queries per second over the run.
    pub qps_mean: f64,
    /// The budget: `dns.qps` of each worker times the workers.
    pub budget_qps: f64,
    /// Lookups by outcome, from the workers.
    pub outcomes: DnsSnapshot,
}

/// Everything a replay or demo reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The run's id (the `loadtest.run` header of its records).
    pub run_id: String,
    /// Where the cluster was.
    pub brokers: String,
    /// Enricher workers run in this process (0: an external fleet did the work).
    pub workers: usize,
    /// Records the cluster acknowledged.
    pub sent: u64,
    /// Records the cluster refused at produce time (not part of the run).
    pub refused: u64,
    /// Seconds from the first record sent to the last one seen out.
    pub elapsed_s: f64,
    /// Distinct records out per second over `elapsed_s`.
    pub throughput_rps: f64,
    /// Records sent and never seen at the output or dead-letter topic.
    pub lost: u64,
    /// Records seen more than once.
    pub duplicates: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// End-to-end latency: output timestamp minus the time the record was
    /// in the input topic (when the feed's delivery report said the broker
    /// had it; the feed's own queue is left out).
    pub latency_ms: Percentiles,
    /// Cache hit ratios (in-process workers only).
    pub cache: CacheRatios,
    /// Upstream DNS.
    pub dns: DnsFigures,
    /// Highest consumer lag seen.
    pub lag_peak: i64,
    /// Highest timestamp diff seen, in seconds.
    pub ts_diff_peak_s: f64,
    /// Per input topic.
    pub topics: Vec<TopicTally>,
    /// Every sample.
    pub timeline: Vec<Sample>,
    /// One enriched record.
    pub sample_record: Option<String>,
    /// Peak resident memory of this process (broker, data set and workers), MiB.
    pub peak_rss_mb: f64,
}

/// Peak resident set size of this process in MiB (`VmHWM`), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    proc_status_kb("VmHWM:").map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// Current resident set size of this process in MiB (`VmRSS`).
pub fn rss_mb() -> f64 {
    proc_status_kb("VmRSS:").map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// CPU time this process has used so far, user and system, all threads
/// (those that have exited included), in seconds; `None` off Linux.
///
/// Read from `/proc/self/stat` in clock ticks of `USER_HZ`, which Linux
/// fixes at 100 on every architecture it exports it to user space.
pub fn cpu_seconds() -> Option<f64> {
    crate::process::cpu_seconds(None)
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Summary {
    /// The report for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let verdict = if self.lost == 0 { "OK" } else { "RECORDS LOST" };
        let _ = writeln!(
            s,
            "\nRun {} against {} ({} in-process workers)",
            self.run_id, self.brokers, self.workers
        );
        let _ = writeln!(s, "  records sent        {}", thousands(self.sent));
        if self.refused > 0 {
            let _ = writeln!(s, "  refused by cluster  {}", thousands(self.refused));
        }
        let _ = writeln!(
            s,
            "  lost                {}   {verdict}",
            thousands(self.lost)
        );
        let _ = writeln!(s, "  duplicates          {}", thousands(self.duplicates));
        let _ = writeln!(s, "  dead-lettered       {}", thousands(self.dead_lettered));
        let _ = writeln!(
            s,
            "  throughput          {} records/s over {:.1} s",
            thousands(self.throughput_rps as u64),
            self.elapsed_s
        );
        let l = self.latency_ms;
        let _ = writeln!(
            s,
            "  end-to-end latency  p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.p50, l.p90, l.p99, l.max
        );
        if self.workers > 0 {
            let c = self.cache;
            let _ = writeln!(
                s,
                "  cache hit ratio     L1 {:.1}% of {} lookups, L2 {}",
                c.l1_hit_ratio * 100.0,
                thousands(c.l1_lookups),
                if c.l2_lookups == 0 && c.l2_unavailable == 0 {
                    "off".to_string()
                } else {
                    format!(
                        "{:.1}% of {} lookups ({} skipped: unavailable)",
                        c.l2_hit_ratio * 100.0,
                        thousands(c.l2_lookups),
                        thousands(c.l2_unavailable)
                    )
                }
            );
        }
        let d = self.dns;
        let within = if d.budget_qps > 0.0 && d.qps_peak <= d.budget_qps * 1.05 {
            "within budget"
        } else if d.budget_qps > 0.0 {
            "OVER BUDGET"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  upstream DNS        {} queries, mean {:.0}/s, peak {:.0}/s, budget {:.0}/s {within}",
            thousands(d.queries),
            d.qps_mean,
            d.qps_peak,
            d.budget_qps
        );
        if self.workers > 0 {
            let o = d.outcomes;
            let _ = writeln!(
                s,
                "  PTR outcomes        ok {}, nxdomain {}, servfail {}, timeout {}, over budget {}",
                thousands(o.ok),
                thousands(o.nxdomain),
                thousands(o.servfail),
                thousands(o.timeout),
                thousands(o.over_budget)
            );
        }
        let _ = writeln!(
            s,
            "  consumer lag        peak {} records; timestamp diff peak {:.1} s",
            thousands(self.lag_peak.max(0) as u64),
            self.ts_diff_peak_s
        );
        let _ = writeln!(
            s,
            "  peak RSS            {:.0} MiB (whole process)",
            self.peak_rss_mb
        );
        let _ = writeln!(
            s,
            "\n  {:<20} {:>9} {:>9} {:>6} {:>5} {:>9} {:>8} {:>8}",
            "topic", "out", "enriched", "dlq", "dups", "with geo", "with ptr", "geo miss"
        );
        for t in &self.topics {
            let _ = writeln!(
                s,
                "  {:<20} {:>9} {:>9} {:>6} {:>5} {:>9} {:>8} {:>8}",
                t.topic,
                thousands(t.out),
                thousands(t.enriched),
                thousands(t.dead_lettered),
                thousands(t.duplicates),
                thousands(t.with_geo),
                thousands(t.with_ptr),
                thousands(t.geo_missing)
            );
        }
        let timeline = self.timeline_table(12);
        if !timeline.is_empty() {
            let _ = writeln!(s, "\n  lag and timestamp diff over time:\n{timeline}");
        }
        if let Some(sample) = &self.sample_record {
            let _ = writeln!(s, "  a sample enriched record:\n  {sample}");
        }
        s
    }

    /// At most `rows` evenly spaced timeline samples as a table.
    pub fn timeline_table(&self, rows: usize) -> String {
        let mut s = String::new();
        if self.timeline.is_empty() {
            return s;
        }
        let step = self.timeline.len().div_ceil(rows.max(1)).max(1);
        let _ = writeln!(
            s,
            "  {:>6} {:>10} {:>10} {:>10} {:>9} {:>8}",
            "t (s)", "in/s", "out/s", "lag", "ts diff", "dns q/s"
        );
        let last = self.timeline.len() - 1;
        for (i, p) in self.timeline.iter().enumerate() {
            if i % step != 0 && i != last {
                continue;
            }
            let _ = writeln!(
                s,
                "  {:>6.1} {:>10} {:>10} {:>10} {:>8.1}s {:>8.0}",
                p.t_s,
                thousands(p.in_rps as u64),
                thousands(p.out_rps as u64),
                p.lag
                    .map_or_else(|| "-".into(), |l| thousands(l.max(0) as u64)),
                p.ts_diff_s,
                p.dns_qps
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_thousands() {
        let mut v: Vec<f32> = (1..=100).map(|n| n as f32).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p99, p.max), (51.0, 99.0, 100.0));
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert!(peak_rss_mb() > 0.0);
    }

    #[test]
    fn cpu_time_grows_while_this_process_computes() {
        let before = cpu_seconds().expect("Linux has /proc/self/stat");
        let spin = std::time::Instant::now();
        // Reading /proc is itself work: the loop spins on it.
        while cpu_seconds().expect("still there") <= before {
            assert!(spin.elapsed().as_secs() < 10, "no CPU time counted");
        }
    }
}

/// The highest rate of a growing count (upstream DNS queries) over sliding
/// one-second windows: the DNS budget is per second, and shorter windows
/// would count its burst allowance twice.
#[derive(Debug, Default)]
pub struct PeakRate {
    window: Vec<(Instant, u64)>,
    peak: f64,
}

impl PeakRate {
    /// Takes the count as read at `now` (read it together with `now`: a
    /// count read late would inflate the rate).
    pub fn sample(&mut self, now: Instant, count: u64) {
        self.window.push((now, count));
        self.window
            .retain(|(t, _)| now.duration_since(*t) <= Duration::from_millis(1_050));
        if let Some(&(t0, c0)) = self.window.first()
            && now.duration_since(t0) >= Duration::from_millis(900)
        {
            let rate = count.saturating_sub(c0) as f64 / now.duration_since(t0).as_secs_f64();
            self.peak = self.peak.max(rate);
        }
    }

    /// The highest rate so far (0 before a whole window was seen).
    pub fn peak(&self) -> f64 {
        self.peak
    }
}

//! What a bench run is asked to do and what it reports: the options, the
//! passes, the paced phases and the table for people.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::{self, Percentiles, Sample};
use crate::source::LogSet;

use super::ratio;

/// Where the benchmark's broker comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// librdkafka's mock cluster, in this process.
    Mock,
    /// tansu, started by the bench as a child process (`$TANSU_BIN`, else
    /// `~/.cache/enricher-tools/bin/tansu`, else `tansu` on `PATH`).
    Tansu,
    /// A running cluster.
    External {
        /// `host:port,...`
        brokers: String,
        /// librdkafka properties for every client, the worker's and the
        /// peer's included (TLS, SASL).
        properties: BTreeMap<String, String>,
    },
}

/// What the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The data set, all in one topic.
    pub data: LogSet,
    /// Rounds of the modes.
    pub rounds: usize,
    /// Each worker's DNS budget, queries per second.
    pub dns_qps: u32,
    /// Each worker's DNS burst.
    pub dns_burst: u32,
    /// Seconds of each paced latency phase.
    pub latency_secs: f64,
    /// Records per second of both paced phases, instead of half the rates
    /// the passes measured (then `rounds` may be 0: to try settings).
    pub latency_rate: Option<f64>,
    /// The modes to run in each round (all for the report's ratios; one
    /// alone for profiling).
    pub modes: Vec<Mode>,
    /// The broker.
    pub broker: Broker,
    /// Partitions of every topic (default: sized from the data on the mock
    /// cluster, which keeps only 5 MiB per partition; 8 elsewhere).
    pub partitions: Option<i32>,
    /// The `enricher` binary the worker runs as.
    pub enricher: PathBuf,
    /// The Python the peer runs with, or why there is none (the peer pass
    /// is then skipped).
    pub python: Result<PathBuf, String>,
    /// Environment variables for every worker process (`ENRICHER_*`
    /// overrides: settings to try without editing anything).
    pub worker_env: Vec<(String, String)>,
}

/// The modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A plain copy.
    Passthrough,
    /// Enrichment, every address cached.
    Warm,
    /// Enrichment from an empty cache.
    Cold,
    /// The Python peer (GeoIP only, its own cache from empty).
    Peer,
}

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Warm => "warm",
            Mode::Cold => "cold",
            Mode::Peer => "peer",
        }
    }
}

/// One measured pass.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    /// Which mode.
    pub mode: Mode,
    /// Which round.
    pub round: usize,
    /// Records per second.
    pub rps: f64,
    /// Records lost.
    pub lost: u64,
    /// Records seen twice.
    pub duplicates: u64,
    /// Highest upstream DNS queries in any one-second window.
    pub dns_qps_peak: f64,
    /// CPU time the process under test (the worker, or the peer) spent per
    /// record while the pass ran, µs: its own, whatever the broker does.
    pub worker_cpu_us_per_record: f64,
    /// The same plus the broker's (the whole process on the mock cluster,
    /// which also holds the fake DNS; the tansu process; `None` on an
    /// external broker, whose CPU is not known here).
    pub cpu_us_per_record: Option<f64>,
    /// Seconds the warm-up took (warm mode).
    pub warmup_s: f64,
    /// How the process under test ended.
    pub exit: String,
}

/// A paced phase: a fresh worker fed live at a fixed rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Paced {
    /// `cold` or `warm`: the worker's cache when the feed started.
    pub cache: String,
    /// Records fed.
    pub records: u64,
    /// Records per second out at most, measured live just before (the
    /// feed flat out to this worker; `None`: the rate was given or derived
    /// from another phase).
    pub live_max_rps: Option<f64>,
    /// Records per second asked of the feed.
    pub rate_asked: f64,
    /// Records per second the feed held (acknowledged over the feed's time).
    pub rate_held: f64,
    /// Seconds the warm-up took (warm only).
    pub warmup_s: f64,
    /// Records lost.
    pub lost: u64,
    /// Records seen twice.
    pub duplicates: u64,
    /// End-to-end latency: from the time a record was in the input topic
    /// to its output record's timestamp.
    pub latency_ms: Percentiles,
    /// From the moment the feed handed a record to its producer to the time
    /// it was in the input topic: the feed's own queue, which the latency
    /// above leaves out.
    pub feed_queue_ms: Percentiles,
    /// The worker's CPU from the feed's start to the last record out, per
    /// record, µs (at this rate it also pays for its fetches while idle).
    pub worker_cpu_us: f64,
    /// Most records in the input topic not yet seen out at one sample.
    pub lag_peak: i64,
    /// Highest upstream DNS queries in any one-second window.
    pub dns_qps_peak: f64,
    /// How the worker ended.
    pub exit: String,
    /// Samples every 500 ms; their `lag` is the records in the input not
    /// yet seen out.
    pub timeline: Vec<Sample>,
}

/// The summary `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    /// The broker: `mock`, `tansu`, or the external bootstrap servers.
    pub broker: String,
    /// What the whole CPU figures hold besides the worker (`None`: only the
    /// worker's CPU is known, on an external broker).
    pub whole_cpu_is: Option<String>,
    /// Records per pass.
    pub records: usize,
    /// Rounds run.
    pub rounds: usize,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Median records/s of the passthrough passes.
    pub passthrough_rps: f64,
    /// Median records/s of the warm passes.
    pub warm_rps: f64,
    /// Median records/s of the cold passes.
    pub cold_rps: f64,
    /// `warm_rps / passthrough_rps`.
    pub warm_ratio: f64,
    /// `cold_rps / passthrough_rps`.
    pub cold_ratio: f64,
    /// Median CPU µs per record of the passthrough passes, worker and broker.
    pub passthrough_cpu_us: Option<f64>,
    /// Median CPU µs per record of the warm passes, worker and broker.
    pub warm_cpu_us: Option<f64>,
    /// Median CPU µs per record of the cold passes, worker and broker.
    pub cold_cpu_us: Option<f64>,
    /// Median CPU µs per record of the passthrough passes, the worker alone.
    pub passthrough_worker_cpu_us: f64,
    /// Median CPU µs per record of the warm passes, the worker alone.
    pub warm_worker_cpu_us: f64,
    /// Median CPU µs per record of the cold passes, the worker alone.
    pub cold_worker_cpu_us: f64,
    /// Median records/s of the Python peer (`None`: not run).
    pub peer_rps: Option<f64>,
    /// Median CPU µs per record of the peer process alone.
    pub peer_cpu_us: Option<f64>,
    /// The same with the broker's.
    pub peer_whole_cpu_us: Option<f64>,
    /// `warm_worker_cpu_us / peer_cpu_us`: the peer does GeoIP only with
    /// its own cache, so it is compared with the warm pass.
    pub worker_cpu_ratio_to_peer: Option<f64>,
    /// `warm_rps / peer_rps`.
    pub rps_ratio_to_peer: Option<f64>,
    /// The peer: its Python's confluent-kafka and librdkafka, or why it was
    /// skipped.
    pub peer: String,
    /// End-to-end median latency of the paced cold phase, ms.
    pub p50_ms: f64,
    /// End-to-end 99th percentile latency of the paced cold phase, ms.
    pub p99_ms: f64,
    /// Records per second a warm worker moved at most live (the feed flat
    /// out to it): the paced warm phase runs at half of it.
    pub warm_live_max_rps: Option<f64>,
    /// End-to-end median latency of the paced warm phase, ms (`None`: no
    /// warm pass measured a rate for it).
    pub warm_p50_ms: Option<f64>,
    /// End-to-end 99th percentile latency of the paced warm phase, ms.
    pub warm_p99_ms: Option<f64>,
    /// What the bench sets in every worker's config beyond its defaults and
    /// the run's topics, group and GeoIP/DNS (`key=value`; `--worker-env`
    /// comes on top).
    pub worker_settings: Vec<String>,
    /// Where end-to-end latency starts: `log_append_time` (the broker's
    /// stamp on the input record) or `delivery_report` (when the feed's
    /// producer heard that the broker had it: a broker that does not stamp).
    pub latency_from: String,
    /// Where it ends: the output record's timestamp, `log_append_time` or
    /// `create_time` (when the worker handed the record to its producer).
    pub latency_to: String,
    /// Highest upstream DNS queries in any one-second window, over all passes.
    pub dns_qps_peak: f64,
    /// The DNS budget of the one worker, queries per second.
    pub dns_budget_qps: f64,
    /// The burst the budget allows on top, once.
    pub dns_burst: u32,
    /// Records lost over all passes and phases (must be 0).
    pub lost: u64,
    /// Records seen twice over all passes and phases.
    pub duplicates: u64,
    /// Peak resident memory of this process (with the mock cluster: every
    /// topic of every pass), MiB.
    pub peak_rss_mb: f64,
    /// Highest peak resident memory of any worker process, MiB.
    pub worker_peak_rss_mb: f64,
    /// Every pass.
    pub passes: Vec<Pass>,
    /// The paced phase at half the cold rate, cold cache.
    pub paced: Paced,
    /// The paced phase at half the warm rate, warm cache.
    pub paced_warm: Option<Paced>,
}

impl BenchSummary {
    /// The table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let verdict = |ok: bool| if ok { "ok" } else { "BELOW TARGET" };
        let cpu = |c: Option<f64>| c.map_or_else(|| "-".to_string(), |c| format!("{c:.1}"));
        let _ = writeln!(
            s,
            "\nBenchmark on {}: {} records per pass, {} rounds, one worker process, {} partitions",
            self.broker,
            report::thousands(self.records as u64),
            self.rounds,
            self.partitions
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8} {:>12} {:>12}  target",
            "mode", "records/s", "ratio", "worker µs/r", "whole µs/r"
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8} {:>12.1} {:>12}",
            "passthrough",
            report::thousands(self.passthrough_rps as u64),
            "1.00",
            self.passthrough_worker_cpu_us,
            cpu(self.passthrough_cpu_us)
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8.2} {:>12.1} {:>12}  >= 0.85 {}",
            "warm",
            report::thousands(self.warm_rps as u64),
            self.warm_ratio,
            self.warm_worker_cpu_us,
            cpu(self.warm_cpu_us),
            verdict(self.warm_ratio >= 0.85)
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8.2} {:>12.1} {:>12}  >= 0.50 {}",
            "cold",
            report::thousands(self.cold_rps as u64),
            self.cold_ratio,
            self.cold_worker_cpu_us,
            cpu(self.cold_cpu_us),
            verdict(self.cold_ratio >= 0.5)
        );
        match (self.peer_rps, self.peer_cpu_us) {
            (Some(rps), Some(peer_cpu)) => {
                let _ = writeln!(
                    s,
                    "  {:<12} {:>12} {:>8.2} {:>12.1} {:>12}  ({})",
                    "peer",
                    report::thousands(rps as u64),
                    ratio(rps, self.passthrough_rps),
                    peer_cpu,
                    cpu(self.peer_whole_cpu_us),
                    self.peer
                );
                if let (Some(c), Some(r)) = (self.worker_cpu_ratio_to_peer, self.rps_ratio_to_peer)
                {
                    let _ = writeln!(
                        s,
                        "  warm worker against the peer (GeoIP only, so the warm pass): CPU per record {c:.2} of the peer's (<= 0.33 {}), records/s {r:.2} times (>= 1 {})",
                        verdict(c <= 1.0 / 3.0),
                        verdict(r >= 1.0)
                    );
                }
            }
            _ => {
                let _ = writeln!(s, "  peer         {}", self.peer);
            }
        }
        if let Some(what) = &self.whole_cpu_is {
            let _ = writeln!(s, "  whole CPU is {what}");
        } else {
            let _ = writeln!(
                s,
                "  whole CPU: the broker's is not known here; the worker's alone is"
            );
        }
        let _ = writeln!(
            s,
            "  end-to-end latency (from the input record's {} to the output's {}):",
            self.latency_from.replace('_', " "),
            self.latency_to.replace('_', " ")
        );
        for p in std::iter::once(&self.paced).chain(self.paced_warm.as_ref()) {
            if let Some(max) = p.live_max_rps {
                let _ = writeln!(
                    s,
                    "    {} cache: live maximum {} records/s (the feed flat out to it)",
                    p.cache,
                    report::thousands(max as u64)
                );
            }
            let _ = writeln!(
                s,
                "    {} cache at {} records/s (held {}): p50 {:.0} ms, p99 {:.0} ms; feed queue p50 {:.0} ms, p99 {:.0} ms; worker {:.1} µs/record{}",
                p.cache,
                report::thousands(p.rate_asked as u64),
                report::thousands(p.rate_held as u64),
                p.latency_ms.p50,
                p.latency_ms.p99,
                p.feed_queue_ms.p50,
                p.feed_queue_ms.p99,
                p.worker_cpu_us,
                if p.cache == "warm" && self.broker == "mock" {
                    format!("  p99 < 100 ms {}", verdict(p.latency_ms.p99 < 100.0))
                } else {
                    String::new()
                }
            );
        }
        let within = self.dns_qps_peak <= self.dns_budget_qps + f64::from(self.dns_burst);
        let _ = writeln!(
            s,
            "  upstream DNS peak {:.0} q/s against a budget of {:.0} q/s (+{} burst): {}",
            self.dns_qps_peak,
            self.dns_budget_qps,
            self.dns_burst,
            verdict(within)
        );
        let _ = writeln!(
            s,
            "  lost {} ({}), duplicates {}",
            self.lost,
            verdict(self.lost == 0),
            self.duplicates
        );
        let _ = writeln!(
            s,
            "  peak RSS {:.0} MiB for this process, {:.0} MiB for the largest worker",
            self.peak_rss_mb, self.worker_peak_rss_mb
        );
        s
    }
}

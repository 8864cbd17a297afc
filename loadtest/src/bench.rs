//! `loadtest bench`: enrichment measured against a plain copy on the same
//! broker, the same data and the same machine, in one run.
//!
//! One input topic is preloaded with the whole data set before anything is
//! measured. Each round runs three modes in turn, each pass one worker in a
//! fresh consumer group that reads the whole input into output topics of
//! its own:
//!
//! - `passthrough`: `worker.passthrough = true` (consume, copy, produce,
//!   commit): this machine's ceiling;
//! - `warm`: enrichment with every address already in L1;
//! - `cold`: enrichment from an empty cache, the fake DNS answering with a
//!   20 ms median.
//!
//! Throughput is the records divided by the time between the first and the
//! last output timestamp. A last, paced phase (half the cold rate, cold
//! cache) measures end-to-end latency, lag and the timestamp diff.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use enricher::config::Config;
use enricher::enrich::Scratch;
use serde::Serialize;
use test_support::DnsServer;

use crate::cluster::{Cluster, Watermarks};
use crate::feed::{self, Pace, Progress, Stream};
use crate::fleet::{self, Worker};
use crate::report::{self, Summary};
use crate::run::{self, Plan};
use crate::source::LogSet;
use crate::watch::{Expect, Watcher};

/// What the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The data set, all in one topic.
    pub data: LogSet,
    /// Rounds of the three modes.
    pub rounds: usize,
    /// Each worker's DNS budget, queries per second.
    pub dns_qps: u32,
    /// Each worker's DNS burst.
    pub dns_burst: u32,
    /// Seconds of the paced latency phase.
    pub latency_secs: f64,
    /// The modes to run in each round (all three for the report's ratios;
    /// one alone for profiling).
    pub modes: Vec<Mode>,
}

/// The three modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A plain copy.
    Passthrough,
    /// Enrichment, every address cached.
    Warm,
    /// Enrichment from an empty cache.
    Cold,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Warm => "warm",
            Mode::Cold => "cold",
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
    /// CPU time the whole process (worker, broker and all) spent per
    /// record while the pass ran, µs: where records/s says how fast, this
    /// says how much work, which is what a change to the per-record code
    /// moves.
    pub cpu_us_per_record: f64,
    /// Seconds the warm-up took (warm mode).
    pub warmup_s: f64,
}

/// The summary `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    /// Records per pass.
    pub records: usize,
    /// Rounds run.
    pub rounds: usize,
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
    /// Median CPU µs per record of the passthrough passes (whole process).
    pub passthrough_cpu_us: f64,
    /// Median CPU µs per record of the warm passes (whole process).
    pub warm_cpu_us: f64,
    /// Median CPU µs per record of the cold passes (whole process).
    pub cold_cpu_us: f64,
    /// End-to-end median latency of the paced phase, ms.
    pub p50_ms: f64,
    /// End-to-end 99th percentile latency of the paced phase, ms.
    pub p99_ms: f64,
    /// Highest upstream DNS queries in any one-second window, over all passes.
    pub dns_qps_peak: f64,
    /// The DNS budget of the one worker, queries per second.
    pub dns_budget_qps: f64,
    /// The burst the budget allows on top, once.
    pub dns_burst: u32,
    /// Records lost over all passes (must be 0).
    pub lost: u64,
    /// Records seen twice over all passes.
    pub duplicates: u64,
    /// Peak resident memory of the whole process (broker with every topic,
    /// data set, workers), MiB.
    pub peak_rss_mb: f64,
    /// Every pass.
    pub passes: Vec<Pass>,
    /// The paced phase.
    pub paced: Summary,
}

/// Runs the benchmark.
///
/// # Errors
///
/// When a part cannot start.
pub fn run(options: &BenchOptions) -> anyhow::Result<BenchSummary> {
    let tmp = tempfile::tempdir()?;
    let dbs = crate::geo::write(tmp.path())?;
    let dns = crate::FakeDns::start()?;
    let cluster = Cluster::embedded()?;
    let mut config = crate::worker_config(&dbs, Some(dns.addr()), None);
    config.dns.qps = options.dns_qps;
    config.dns.burst = options.dns_burst;
    config.kafka.brokers = cluster.bootstrap();
    let n = options.data.records.len();
    eprintln!(
        "Bench: {} records ({:.0} MiB), {} rounds of passthrough, warm, cold; DNS budget {}/s + {} burst",
        report::thousands(n as u64),
        options.data.bytes() as f64 / (1 << 20) as f64,
        options.rounds,
        options.dns_qps,
        options.dns_burst
    );
    let input = Input::preload(&cluster, &options.data)?;
    let mut passes = Vec::new();
    for round in 0..options.rounds {
        for &mode in &options.modes {
            let pass = measure(&cluster, &config, options, &input, &dns, mode, round)
                .with_context(|| format!("{} pass of round {round}", mode.name()))?;
            eprintln!(
                "  round {round} {:<12} {:>9} records/s  {:>5.1} µs CPU/record  lost {}  duplicates {}  dns peak {:.0}/s{}",
                mode.name(),
                report::thousands(pass.rps as u64),
                pass.cpu_us_per_record,
                pass.lost,
                pass.duplicates,
                pass.dns_qps_peak,
                if mode == Mode::Warm {
                    format!("  (warm-up {:.1} s)", pass.warmup_s)
                } else {
                    String::new()
                }
            );
            passes.push(pass);
        }
    }
    let median_of = |mode: Mode, of: fn(&Pass) -> f64| {
        median(passes.iter().filter(|p| p.mode == mode).map(of).collect())
    };
    let rps = |p: &Pass| p.rps;
    let cpu = |p: &Pass| p.cpu_us_per_record;
    let (passthrough, warm, cold) = (
        median_of(Mode::Passthrough, rps),
        median_of(Mode::Warm, rps),
        median_of(Mode::Cold, rps),
    );

    // The paced phase: a fresh worker from a cold cache, at half the rate
    // a cold worker sustains (warm's or passthrough's without a cold pass).
    // Paced any faster, a cold start falls behind and the latency measured
    // is the queue's.
    let sustained = [cold, warm, passthrough]
        .into_iter()
        .find(|r| *r > 0.0)
        .unwrap_or(0.0);
    let rate = (sustained / 2.0).max(1_000.0);
    let count = ((rate * options.latency_secs) as usize).clamp(1, n);
    let mut paced_set = options.data.clone();
    paced_set.records.truncate(count);
    paced_set.ts.truncate(count);
    paced_set.expect_geo.truncate(count);
    paced_set.path = format!("paced_{}", run::run_id());
    eprintln!(
        "  paced phase: {} records at {} records/s, cold cache",
        report::thousands(count as u64),
        report::thousands(rate as u64)
    );
    let counter = || dns.queries();
    let (paced, _) = run::execute(
        &cluster,
        Plan {
            sets: vec![paced_set],
            topic_prefix: "bench_".into(),
            pace: Pace::Rate(rate),
            partitions: None,
            workers_per_topic: 1,
            worker_config: config.clone(),
            idle_timeout: Duration::from_secs(30),
            sample_every: Duration::from_millis(500),
            progress: false,
            dns_queries: Some(&counter),
        },
    )?;
    let dns_qps_peak = passes
        .iter()
        .map(|p| p.dns_qps_peak)
        .fold(paced.dns.qps_peak, f64::max);
    let summary = BenchSummary {
        records: n,
        rounds: options.rounds,
        passthrough_rps: passthrough,
        warm_rps: warm,
        cold_rps: cold,
        warm_ratio: warm / passthrough.max(1e-9),
        cold_ratio: cold / passthrough.max(1e-9),
        passthrough_cpu_us: median_of(Mode::Passthrough, cpu),
        warm_cpu_us: median_of(Mode::Warm, cpu),
        cold_cpu_us: median_of(Mode::Cold, cpu),
        p50_ms: paced.latency_ms.p50,
        p99_ms: paced.latency_ms.p99,
        dns_qps_peak,
        dns_budget_qps: f64::from(options.dns_qps),
        dns_burst: options.dns_burst,
        lost: passes.iter().map(|p| p.lost).sum::<u64>() + paced.lost,
        duplicates: passes.iter().map(|p| p.duplicates).sum::<u64>() + paced.duplicates,
        peak_rss_mb: report::peak_rss_mb(),
        passes,
        paced,
    };
    drop(dns);
    Ok(summary)
}

/// The input topic every pass reads, preloaded once with the whole data set.
struct Input {
    topic: String,
    run_id: String,
    partitions: i32,
}

impl Input {
    fn preload(cluster: &Cluster, data: &LogSet) -> anyhow::Result<Self> {
        let run_id = run::run_id();
        let topic = format!("bench_input_{run_id}");
        let partitions = run::mock_partitions(data.records.len(), data.bytes());
        cluster.create_topic(&topic, partitions)?;
        let stream = Stream {
            topic: topic.clone(),
            records: Arc::new(data.records.clone()),
            ts: Arc::new(data.ts.clone()),
            partitions,
        };
        let progress = Progress::new(1);
        let order = feed::send_order(std::slice::from_ref(&stream), Pace::Flat);
        feed::feed(
            cluster,
            &run_id,
            std::slice::from_ref(&stream),
            &order,
            Pace::Flat,
            &progress,
            &AtomicBool::new(false),
        )?;
        anyhow::ensure!(
            progress.deliveries.refused_count() == 0,
            "the preload was refused in part"
        );
        Ok(Self {
            topic,
            run_id,
            partitions,
        })
    }
}

/// One pass: a fresh group reads the whole input into output topics of its
/// own; one worker, its output timed.
fn measure(
    cluster: &Cluster,
    base: &Config,
    options: &BenchOptions,
    input: &Input,
    dns: &DnsServer,
    mode: Mode,
    round: usize,
) -> anyhow::Result<Pass> {
    let data = &options.data;
    let partitions = input.partitions;
    // The pass's own name: its outputs are `<topic>_enr` and `<topic>_dlq`.
    let topic = format!("bench_{}_{round}_{}", mode.name(), input.run_id);
    for t in [format!("{topic}_enr"), format!("{topic}_dlq")] {
        cluster.create_topic(&t, partitions)?;
    }

    let mut config = base.clone();
    config.kafka.input_topic.clone_from(&input.topic);
    config.kafka.output_topic = Some(format!("{topic}_enr"));
    config.kafka.dlq_topic = Some(format!("{topic}_dlq"));
    config.kafka.group_id = format!("bench-{topic}");
    config.worker.passthrough = mode == Mode::Passthrough;
    let runtime = fleet::runtime()?;
    let core = fleet::build_core(&config, &runtime)?;
    let mut warmup_s = 0.0;
    if mode == Mode::Warm {
        let started = Instant::now();
        warm_up(&core, &runtime, data)?;
        warmup_s = started.elapsed().as_secs_f64();
    }
    let expect = vec![Expect {
        topic: topic.clone(),
        input_len: data.records.iter().map(|r| r.len() as u32).collect(),
        expect_geo: data.expect_geo.clone(),
    }];
    // While the worker runs, only the outputs' high watermarks are read: the
    // reader that checks every record runs after the worker has stopped, so
    // it takes no CPU from the pass it measures. The rate comes from the
    // records' own output timestamps either way.
    let outputs = [format!("{topic}_enr"), format!("{topic}_dlq")];
    let probe = Watermarks::new(cluster, &outputs, partitions)?;
    let dns_before = dns.queries();
    let worker = Worker::start_with(&config, core, runtime)?;
    let mut dns_peak = report::PeakRate::default();
    // CPU time is read from the first output seen to the last, so the wait
    // for the group's first assignment (idle, but the broker's and the
    // clients' timers tick) is not charged to the records.
    let mut cpu = CpuPerRecord::default();
    let mut last_change = (Instant::now(), 0);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        dns_peak.sample(now, dns.queries() - dns_before);
        let out = probe.total().unwrap_or(last_change.1);
        cpu.sample(out);
        if out >= data.records.len() as u64 {
            break;
        }
        if out != last_change.1 {
            last_change = (now, out);
        } else if worker.assigned() && now.duration_since(last_change.0) > Duration::from_secs(30) {
            eprintln!("  no output for 30 s; giving up on this pass");
            break;
        }
    }
    let stopped = worker.stop();
    let watcher = Watcher::start(cluster, &input.run_id, expect)?;
    let mut last_change = (Instant::now(), 0);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let distinct = watcher.tally().distinct();
        if distinct >= data.records.len() as u64 {
            break;
        }
        if distinct != last_change.1 {
            last_change = (Instant::now(), distinct);
        } else if last_change.0.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let tally = watcher.finish();
    let report = stopped?;
    tracing::info!(?report, seen = tally.distinct(), "Pass done");
    let lost: u64 = tally.missing(&[]).iter().sum();
    let duplicates = tally.topics.iter().map(|t| t.duplicates).sum();
    let span_s = match (tally.first_out_ms, tally.last_out_ms) {
        (Some(a), Some(b)) => ((b - a) as f64 / 1000.0).max(1e-3),
        _ => f64::INFINITY,
    };
    Ok(Pass {
        mode,
        round,
        rps: tally.distinct() as f64 / span_s,
        lost,
        duplicates,
        dns_qps_peak: dns_peak.peak(),
        cpu_us_per_record: cpu.us_per_record(),
        warmup_s,
    })
}

/// The median of `v` (the mean of the middle two when their number is even),
/// 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match (v.get(n.wrapping_sub(1) / 2), v.get(n / 2)) {
        (Some(a), Some(b)) => (a + b) / 2.0,
        _ => 0.0,
    }
}

/// CPU time per record between the first and the last of a series of
/// output counts.
#[derive(Debug, Default)]
struct CpuPerRecord {
    first: Option<(f64, u64)>,
    last: Option<(f64, u64)>,
}

impl CpuPerRecord {
    /// Notes the process's CPU time against `out` records out so far.
    fn sample(&mut self, out: u64) {
        if out == 0 {
            return;
        }
        let Some(now) = report::cpu_seconds() else {
            return;
        };
        if self.first.is_none() {
            self.first = Some((now, out));
        }
        self.last = Some((now, out));
    }

    /// µs of CPU per record between the first and last samples; 0 when
    /// fewer than two samples with records between them.
    fn us_per_record(&self) -> f64 {
        match (self.first, self.last) {
            (Some((c0, n0)), Some((c1, n1))) if n1 > n0 => (c1 - c0) * 1e6 / (n1 - n0) as f64,
            _ => 0.0,
        }
    }
}

/// Enriches the data set until a whole pass finds every address in L1 (or
/// a minute has gone by), spreading the records over 64 tasks.
fn warm_up(
    core: &enricher::worker::Core,
    runtime: &tokio::runtime::Runtime,
    data: &LogSet,
) -> anyhow::Result<()> {
    let records = Arc::new(data.records.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = core.enricher.stats().snapshot().cache.l1_misses;
        runtime.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|k| {
                    let (enricher, records) = (Arc::clone(&core.enricher), Arc::clone(&records));
                    tokio::spawn(async move {
                        let mut scratch = Scratch::default();
                        let mut out = Vec::new();
                        for r in records.iter().skip(k).step_by(64) {
                            out.clear();
                            let _ = enricher.enrich(r, &mut scratch, &mut out).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        });
        let misses = core.enricher.stats().snapshot().cache.l1_misses - before;
        if misses == 0 || Instant::now() > deadline {
            return Ok(());
        }
        // Over-budget answers are cached for a second: let them expire and go again.
        std::thread::sleep(Duration::from_millis(1_100));
    }
}

impl BenchSummary {
    /// The table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let verdict = |ok: bool| if ok { "ok" } else { "BELOW TARGET" };
        let _ = writeln!(
            s,
            "\nBenchmark: {} records per pass, {} rounds, one worker, embedded broker",
            report::thousands(self.records as u64),
            self.rounds
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8} {:>13}  target",
            "mode", "records/s", "ratio", "CPU µs/record"
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8} {:>13.1}",
            "passthrough",
            report::thousands(self.passthrough_rps as u64),
            "1.00",
            self.passthrough_cpu_us
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8.2} {:>13.1}  >= 0.85 {}",
            "warm",
            report::thousands(self.warm_rps as u64),
            self.warm_ratio,
            self.warm_cpu_us,
            verdict(self.warm_ratio >= 0.85)
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>8.2} {:>13.1}  >= 0.50 {}",
            "cold",
            report::thousands(self.cold_rps as u64),
            self.cold_ratio,
            self.cold_cpu_us,
            verdict(self.cold_ratio >= 0.5)
        );
        let _ = writeln!(
            s,
            "  end-to-end latency at half the cold rate, cold start: p50 {:.0} ms, p99 {:.0} ms",
            self.p50_ms, self.p99_ms
        );
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
            "  peak RSS {:.0} MiB (whole process: broker with every topic, data set, workers)",
            self.peak_rss_mb
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_number_of_rounds_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![9.0, 1.0, 3.0, 4.0]), 3.5);
    }
}

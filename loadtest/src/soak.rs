//! `loadtest soak`: one worker under bursts of load for a long time, to show
//! that its memory stays flat, that its consumer lag comes back to 0 after
//! every burst, and that nothing is lost.
//!
//! ```text
//! calibrate: a flat-out pass (own run id) --> rate = half the measured maximum
//! burst 1 (rate, burst) --> idle (idle, longer until lag 0) --> burst 2 --> ... for `duration`
//!
//! sender thread --tagged, a pool of synthetic records cycled--> soak_<run> (embedded cluster)
//!     --> `enricher run --config <generated>` (a child process: its RSS is the worker's alone)
//!     --> soak_<run>_enr / _dlq --> watcher (counts every sequence number, while the run goes on)
//! monitor (this thread): lag (high watermarks minus committed offsets), worker VmRSS, counts
//! ```
//!
//! The mock cluster keeps at most 5 MiB per partition and drops older data
//! silently: the watcher reads the output while it is produced, and records
//! go round-robin over [`SoakOptions::partitions`] partitions so that each
//! partition's backlog stays far below that.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use enricher::config::Config;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;

use crate::cluster::{Cluster, LagProbe};
use crate::feed::{self, Deliveries, RUN_HEADER, SENT_HEADER, SEQ_HEADER};
use crate::fleet;
pub use crate::process::{check_binary, enricher_beside_me, worker_config_toml};
use crate::process::{free_addr, http_get, metric, proc_status_mb};
use crate::report::{Percentiles, thousands};
use crate::synth::{self, Spec};
use crate::watch::{Expect, Watcher};

/// How often the lag is read while an idle spell waits for it to reach 0.
const TICK: Duration = Duration::from_millis(100);

/// Where the worker under test runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerKind {
    /// `enricher run --config <file>` as a child process, this binary: the
    /// RSS reported is the worker's alone.
    Process(PathBuf),
    /// In this process, as `loadtest demo` runs workers: the RSS reported is
    /// the whole process (broker, data, watcher). For tests, which cannot
    /// count on another package's binary being built.
    InProcess,
}

/// What the soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long the bursts and their idle spells last together, at least.
    pub duration: Duration,
    /// Records per second during a burst; `None`: half the maximum that a
    /// calibration pass measures first.
    pub rate: Option<f64>,
    /// Length of one burst of load.
    pub burst: Duration,
    /// Quiet time after each burst; stretched until the lag is 0.
    pub idle: Duration,
    /// Longest an idle spell is stretched waiting for the lag to reach 0.
    pub drain_timeout: Duration,
    /// Records of the calibration pass, sent as fast as the producer goes.
    pub calibration_records: usize,
    /// Partitions of the input, output and dead-letter topics.
    pub partitions: i32,
    /// The pool of distinct synthetic records, sent over and over
    /// (`records` is the pool's size).
    pub spec: Spec,
    /// The worker's DNS budget, queries per second.
    pub dns_qps: u32,
    /// The worker's DNS burst.
    pub dns_burst: u32,
    /// Where the worker runs.
    pub worker: WorkerKind,
    /// Interval of the timeline's samples (lag, RSS, counts).
    pub sample_every: Duration,
    /// Print a progress line per sample to standard error.
    pub progress: bool,
}

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(600),
            rate: None,
            burst: Duration::from_secs(30),
            idle: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(120),
            calibration_records: 300_000,
            partitions: 64,
            spec: Spec {
                records: 100_000,
                addresses: 5_000,
                ..Spec::default()
            },
            dns_qps: 500,
            dns_burst: 50,
            worker: WorkerKind::InProcess,
            sample_every: Duration::from_secs(1),
            progress: true,
        }
    }
}

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

/// Bursts of `burst` plus `idle` that fill `duration`, at least one.
pub fn burst_count(duration: Duration, burst: Duration, idle: Duration) -> usize {
    let cycle = (burst + idle).as_secs_f64().max(1e-3);
    ((duration.as_secs_f64() / cycle).ceil() as usize).max(1)
}

/// Least-squares slope of `(seconds, MiB)` points, in MiB per hour (0 with
/// fewer than two distinct times).
pub fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, v) in points {
        num += (t - mean_t) * (v - mean_v);
        den += (t - mean_t) * (t - mean_t);
    }
    if den <= 0.0 { 0.0 } else { num / den * 3600.0 }
}

/// Runs the soak and returns its report.
///
/// # Errors
///
/// When a part cannot start, or the worker dies.
pub fn run(options: &SoakOptions) -> anyhow::Result<SoakSummary> {
    anyhow::ensure!(options.partitions >= 1, "partitions must be at least 1");
    anyhow::ensure!(!options.burst.is_zero(), "the burst must last some time");
    anyhow::ensure!(
        options.rate.is_none_or(|r| r.is_finite() && r > 0.0),
        "the rate must be a positive number of records per second"
    );
    anyhow::ensure!(options.spec.records > 0, "the record pool is empty");
    if let WorkerKind::Process(path) = &options.worker {
        check_binary(path)?;
    }
    let tmp = tempfile::tempdir()?;
    let dbs = crate::geo::write(tmp.path()).context("writing the demo GeoIP databases")?;
    let dns = crate::FakeDns::start()?;
    let pool = synth::generate(&options.spec);
    let geo: Arc<Vec<bool>> = Arc::new(pool.iter().map(|g| g.expect_geo).collect());
    let payloads: Arc<Vec<Vec<u8>>> = Arc::new(pool.into_iter().map(|g| g.json.into()).collect());

    let cluster = Cluster::embedded()?;
    let run_id = crate::run::run_id();
    let topic = format!("soak_{run_id}");
    for t in [
        topic.clone(),
        format!("{topic}_enr"),
        format!("{topic}_dlq"),
    ] {
        cluster.create_topic(&t, options.partitions)?;
    }
    let group = format!("soak-{run_id}");
    let mut config = crate::worker_config(&dbs, Some(dns.addr()), None);
    config.dns.qps = options.dns_qps;
    config.dns.burst = options.dns_burst;
    config.kafka.brokers = cluster.bootstrap();
    config.kafka.input_topic = topic.clone();
    config.kafka.group_id = group.clone();
    config.worker.metrics_addr = free_addr()?;
    config.worker.shutdown_grace_ms = 10_000;

    if options.progress {
        eprintln!(
            "Soak: {} of bursts of {:.0} s then {:.0} s idle, at {}; a pool of {} synthetic records over {} addresses, cycled, into {} partitions; fake DNS {}, budget {}/s",
            human(options.duration),
            options.burst.as_secs_f64(),
            options.idle.as_secs_f64(),
            options.rate.map_or_else(
                || "half the rate a calibration pass measures".to_string(),
                |r| format!("{} records/s", thousands(r as u64))
            ),
            thousands(payloads.len() as u64),
            thousands(options.spec.addresses as u64),
            options.partitions,
            dns.addr(),
            options.dns_qps
        );
    }
    let mut worker = Running::start(&options.worker, &config, tmp.path())?;
    if options.progress {
        eprintln!("Worker: {}; waiting for its assignment", worker.describe());
    }
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !worker.ready() {
        worker.check_alive()?;
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the worker was not ready within 30 s{}",
            worker.log_tail()
        );
        std::thread::sleep(TICK);
    }
    let ready_mb = worker.rss_mb();

    let mut sender = Sender::start(
        cluster.client_config(),
        &topic,
        options.partitions,
        Arc::clone(&payloads),
    )?;
    let expect = |n: u64| {
        vec![Expect {
            topic: topic.clone(),
            input_len: (0..n as usize)
                .map(|s| payloads[s % payloads.len()].len() as u32)
                .collect(),
            expect_geo: (0..n as usize).map(|s| geo[s % geo.len()]).collect(),
        }]
    };
    let probe = LagProbe::new(&cluster, &group, &[(topic.clone(), options.partitions)])?;
    let mut monitor = Monitor {
        start: Instant::now(),
        sample_every: options.sample_every,
        next_sample: Instant::now(),
        probe,
        worker: &mut worker,
        state: Arc::clone(&sender.state),
        timeline: Vec::new(),
        last: (Instant::now(), 0, 0),
        phase: String::new(),
        run: 0,
        lag_max: 0,
        progress: options.progress,
    };

    // Calibration: flat out, under its own run id, so the soak's counts start clean.
    let mut calibration = None;
    let rate = match options.rate {
        Some(rate) => rate,
        None => {
            let n = options.calibration_records.max(1) as u64;
            let cal_id = format!("{run_id}-cal");
            let watcher = Watcher::start(&cluster, &cal_id, expect(n))?;
            monitor.enter("calibrate", 0);
            sender.send(Batch {
                run: 0,
                run_id: cal_id,
                count: n,
                rate: None,
            })?;
            monitor.wait_for_output(&watcher, 1, n)?;
            let tally = watcher.finish();
            let refused = sender.state.runs[0].refused();
            let span_s = match (tally.first_out_ms, tally.last_out_ms) {
                (Some(a), Some(b)) => ((b - a) as f64 / 1000.0).max(1e-3),
                _ => f64::INFINITY,
            };
            let c = Calibration {
                records: n,
                max_rps: tally.distinct() as f64 / span_s,
                lost: tally.missing(&refused).iter().sum(),
                duplicates: tally.topics.iter().map(|t| t.duplicates).sum(),
            };
            if options.progress {
                eprintln!(
                    "Calibration: {} records/s out at most (flat out, {} records); the soak runs at half of it",
                    thousands(c.max_rps as u64),
                    thousands(n)
                );
            }
            calibration = Some(c);
            (c.max_rps / 2.0).max(1.0)
        }
    };

    let per_burst = (rate * options.burst.as_secs_f64()).round().max(1.0) as u64;
    let bursts = burst_count(options.duration, options.burst, options.idle);
    let total = per_burst * bursts as u64;
    let watcher = Watcher::start(&cluster, &run_id, expect(total))?;
    monitor.enter("settle", 1);
    if monitor.wait_for_lag_zero(&watcher, options.drain_timeout)? {
        anyhow::bail!(
            "the lag did not reach 0 within {} before the first burst",
            human(options.drain_timeout)
        );
    }
    let start_mb = monitor.worker.rss_mb();
    let soak_start = Instant::now();
    let soak_t0 = soak_start.duration_since(monitor.start).as_secs_f64();
    let mut report_bursts = Vec::with_capacity(bursts);
    for k in 1..=bursts {
        let started = Instant::now();
        monitor.enter(&format!("burst {k}"), 1);
        monitor.lag_max = 0;
        sender.send(Batch {
            run: 1,
            run_id: run_id.clone(),
            count: per_burst,
            rate: Some(rate),
        })?;
        while sender.state.batches_done.load(Ordering::Relaxed) < sender.batches {
            monitor.step(&watcher, false)?;
        }
        let sent_at = Instant::now();
        monitor.enter(&format!("idle {k}"), 1);
        let wait_at_most = options.drain_timeout.max(options.idle);
        let mut drain_s = None;
        loop {
            let lag = monitor.step(&watcher, drain_s.is_none())?;
            let since = sent_at.elapsed();
            if drain_s.is_none() && lag == Some(0) {
                drain_s = Some(since.as_secs_f64());
            }
            if since >= options.idle && (drain_s.is_some() || since >= wait_at_most) {
                break;
            }
        }
        let burst = Burst {
            index: k,
            start_s: started.duration_since(soak_start).as_secs_f64(),
            records: per_burst,
            send_s: sent_at.duration_since(started).as_secs_f64(),
            max_lag: monitor.lag_max,
            drain_s,
            idle_s: sent_at.elapsed().as_secs_f64(),
            rss_end_mb: monitor.worker.rss_mb(),
        };
        if options.progress {
            eprintln!(
                "Burst {k}/{bursts}: {} records in {:.1} s, max lag {}, {}, worker RSS {:.1} MiB",
                thousands(burst.records),
                burst.send_s,
                thousands(burst.max_lag.max(0) as u64),
                burst.drain_s.map_or_else(
                    || "lag NOT back to 0".to_string(),
                    |d| format!("lag back to 0 after {d:.1} s")
                ),
                burst.rss_end_mb
            );
        }
        report_bursts.push(burst);
    }
    let duration_s = soak_start.elapsed().as_secs_f64();
    let end_mb = monitor.worker.rss_mb();
    monitor.enter("final", 1);
    monitor.wait_for_output(&watcher, sender.batches, total)?;
    let timeline = std::mem::take(&mut monitor.timeline);
    drop(monitor);
    let peak_mb = timeline
        .iter()
        .map(|s| s.rss_mb)
        .fold(worker.peak_rss_mb(), f64::max);
    let l1_hit_ratio = worker.l1_hit_ratio();
    let refused = sender.state.runs[1].refused();
    let sent = sender.state.runs[1].acked();
    sender.finish()?;
    let worker_desc = worker.describe();
    let worker_exit = worker.stop()?;
    // Anything the stopping worker sent again shows up as a duplicate.
    std::thread::sleep(Duration::from_millis(500));
    let mut tally = watcher.finish();
    let dns_queries = dns.queries();
    drop(dns);

    let idle_ends: Vec<(f64, f64)> = report_bursts
        .iter()
        .skip(report_bursts.len() / 2)
        .map(|b| (b.start_s + b.send_s + b.idle_s, b.rss_end_mb))
        .collect();
    let soak_samples = || {
        timeline
            .iter()
            .filter(move |s| s.t_s >= soak_t0 && s.phase != "final")
    };
    let loaded_s: f64 = report_bursts
        .iter()
        .map(|b| b.send_s + b.drain_s.unwrap_or(b.idle_s))
        .sum();
    let send_s: f64 = report_bursts.iter().map(|b| b.send_s).sum();
    Ok(SoakSummary {
        run_id,
        worker: worker_desc,
        partitions: options.partitions,
        calibration,
        rate_rps: rate,
        achieved_rps: total as f64 / send_s.max(1e-3),
        throughput_rps: tally.distinct() as f64 / loaded_s.max(1e-3),
        out_rps_peak: soak_samples().map(|s| s.out_rps).fold(0.0, f64::max),
        duration_s,
        sent,
        refused: refused.len() as u64,
        lost: tally.missing(&refused).iter().sum(),
        duplicates: tally.topics.iter().map(|t| t.duplicates).sum(),
        dead_lettered: tally.topics.iter().map(|t| t.dead_lettered).sum(),
        drained_every_burst: report_bursts.iter().all(|b| b.drain_s.is_some()),
        latency_ms: Percentiles::of(&mut tally.latencies_ms),
        l1_hit_ratio,
        dns_queries,
        rss: Rss {
            worker_only: matches!(options.worker, WorkerKind::Process(_)),
            ready_mb,
            start_mb,
            end_mb,
            max_mb: soak_samples()
                .map(|s| s.rss_mb)
                .fold(start_mb.max(end_mb), f64::max),
            peak_mb,
            slope_mb_per_hour: slope_per_hour(&idle_ends),
        },
        worker_exit,
        bursts: report_bursts,
        timeline,
    })
}

/// `90 s`, `10 min`.
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

/// The worker under test, running.
enum Running {
    Child(ChildWorker),
    InProcess(fleet::Worker),
}

/// `enricher run` as a child process; killed if still running when dropped.
struct ChildWorker {
    child: Option<Child>,
    path: PathBuf,
    metrics: SocketAddr,
    log: PathBuf,
    grace: Duration,
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    fn start(kind: &WorkerKind, config: &Config, dir: &Path) -> anyhow::Result<Self> {
        match kind {
            WorkerKind::InProcess => Ok(Self::InProcess(fleet::Worker::start(config)?)),
            WorkerKind::Process(path) => {
                let file = dir.join("enricher.toml");
                std::fs::write(&file, worker_config_toml(config)?)?;
                let log = dir.join("enricher.log");
                let child = Command::new(path)
                    .arg("run")
                    .arg("--config")
                    .arg(&file)
                    .env("ENRICHER_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?)
                    .spawn()
                    .with_context(|| format!("starting {}", path.display()))?;
                Ok(Self::Child(ChildWorker {
                    child: Some(child),
                    path: path.clone(),
                    metrics: config.worker.metrics_addr,
                    log,
                    grace: Duration::from_millis(config.worker.shutdown_grace_ms),
                }))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Child(c) => format!(
                "{} run (pid {}, metrics on {})",
                c.path.display(),
                c.child.as_ref().map_or(0, Child::id),
                c.metrics
            ),
            Self::InProcess(_) => "in-process".to_string(),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Self::Child(c) => c.child.as_ref().map(Child::id),
            Self::InProcess(_) => None,
        }
    }

    fn rss_mb(&self) -> f64 {
        proc_status_mb(self.pid(), "VmRSS:").unwrap_or(0.0)
    }

    fn peak_rss_mb(&self) -> f64 {
        proc_status_mb(self.pid(), "VmHWM:").unwrap_or(0.0)
    }

    fn ready(&self) -> bool {
        match self {
            Self::Child(c) => http_get(c.metrics, "/readyz").is_some_and(|(s, _)| s == 200),
            Self::InProcess(w) => w.assigned(),
        }
    }

    /// The last lines of a child's log, for an error message.
    fn log_tail(&self) -> String {
        match self {
            Self::Child(c) => {
                let text = std::fs::read_to_string(&c.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; its log ends:\n  {tail}")
                }
            }
            Self::InProcess(_) => String::new(),
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        let exited = match self {
            Self::Child(c) => match c.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            },
            Self::InProcess(_) => None,
        };
        match exited {
            Some(status) => anyhow::bail!("the worker exited ({status}){}", self.log_tail()),
            None => Ok(()),
        }
    }

    fn l1_hit_ratio(&self) -> Option<f64> {
        let (hits, misses) = match self {
            Self::Child(c) => {
                let (_, text) = http_get(c.metrics, "/metrics")?;
                let read = |result: &str| {
                    metric(
                        &text,
                        enricher::metrics::CACHE,
                        &["tier=\"l1\"", &format!("result=\"{result}\"")],
                    )
                };
                (read("hit")?, read("miss")?)
            }
            Self::InProcess(w) => {
                let c = w.stats().cache;
                (c.l1_hits as f64, c.l1_misses as f64)
            }
        };
        (hits + misses > 0.0).then(|| hits / (hits + misses))
    }

    /// Stops the worker the way Kubernetes does (SIGTERM, then SIGKILL
    /// after the grace period) and says how it ended.
    fn stop(self) -> anyhow::Result<String> {
        match self {
            Self::InProcess(w) => {
                let report = w.stop()?;
                Ok(format!(
                    "stopped: consumed {}, produced {}",
                    report.consumed, report.produced
                ))
            }
            Self::Child(mut c) => {
                let Some(mut child) = c.child.take() else {
                    return Ok("gone".into());
                };
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let by = Instant::now() + c.grace + Duration::from_secs(5);
                loop {
                    if let Some(status) = child.try_wait()? {
                        return Ok(format!("{status} after SIGTERM"));
                    }
                    if Instant::now() > by {
                        let _ = child.kill();
                        let status = child.wait()?;
                        return Ok(format!("{status}: killed, SIGTERM was not enough"));
                    }
                    std::thread::sleep(TICK);
                }
            }
        }
    }
}

/// Reads lag, RSS and counts while the soak runs.
struct Monitor<'a> {
    start: Instant,
    sample_every: Duration,
    next_sample: Instant,
    probe: LagProbe,
    worker: &'a mut Running,
    state: Arc<SendState>,
    timeline: Vec<SoakSample>,
    /// Time, sent and out of the last sample.
    last: (Instant, u64, u64),
    phase: String,
    /// Which run id's counters the samples show: 0 calibration, 1 soak.
    run: usize,
    /// Highest lag read since it was last reset.
    lag_max: i64,
    progress: bool,
}

impl Monitor<'_> {
    fn enter(&mut self, phase: &str, run: usize) {
        self.phase = phase.to_string();
        if run != self.run {
            self.run = run;
            self.last = (Instant::now(), 0, 0);
        }
    }

    /// Waits a tick; takes a sample when one is due, else reads only the
    /// lag when `read_lag`. Returns the lag when it was read.
    fn step(&mut self, watcher: &Watcher, read_lag: bool) -> anyhow::Result<Option<i64>> {
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
    fn wait_for_lag_zero(&mut self, watcher: &Watcher, timeout: Duration) -> anyhow::Result<bool> {
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
    fn wait_for_output(
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

/// A batch of records for the sender.
struct Batch {
    /// 0 calibration, 1 soak: each has its own sequence numbers and counters.
    run: usize,
    run_id: String,
    count: u64,
    /// Records per second (`None`: as fast as the producer goes).
    rate: Option<f64>,
}

/// What the sender has done, shared with the monitor.
#[derive(Debug, Default)]
struct SendState {
    /// What the cluster acknowledged and refused, per run (calibration 0,
    /// soak 1); refused records as the watcher's `(0, seq)` pairs.
    runs: [Deliveries; 2],
    /// Batches sent and acknowledged in full.
    batches_done: AtomicU64,
}

/// The opaque of a calibration record has this bit set.
const CALIBRATION_BIT: usize = 1 << 62;

struct SendContext {
    state: Arc<SendState>,
}

impl ClientContext for SendContext {}

impl ProducerContext for SendContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let run = usize::from(opaque & CALIBRATION_BIT == 0);
        let seq = (opaque & !CALIBRATION_BIT) as u64;
        self.state.runs[run].record(result, (0, seq));
    }
}

/// Sends batches of tagged records from a thread of its own, one batch
/// after the other, each paced and flushed before the next.
struct Sender {
    batches_tx: Option<mpsc::Sender<Batch>>,
    state: Arc<SendState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Batches handed over so far.
    batches: u64,
}

impl Sender {
    fn start(
        mut client: ClientConfig,
        topic: &str,
        partitions: i32,
        payloads: Arc<Vec<Vec<u8>>>,
    ) -> anyhow::Result<Self> {
        let state = Arc::new(SendState::default());
        let producer: ThreadedProducer<SendContext> = client
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "300000")
            .create_with_context(SendContext {
                state: Arc::clone(&state),
            })?;
        let (tx, rx) = mpsc::channel::<Batch>();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, topic) = (Arc::clone(&state), Arc::clone(&stop), topic.to_string());
            std::thread::Builder::new()
                .name("soak-send".into())
                .spawn(move || {
                    send_loop(
                        &producer,
                        &rx,
                        &topic,
                        partitions.max(1) as u64,
                        &payloads,
                        &state,
                        &stop,
                    )
                })?
        };
        Ok(Self {
            batches_tx: Some(tx),
            state,
            stop,
            thread: Some(thread),
            batches: 0,
        })
    }

    fn send(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.batches_tx
            .as_ref()
            .context("the sender is closed")?
            .send(batch)
            .map_err(|_| anyhow::anyhow!("the sender thread has stopped"))?;
        self.batches += 1;
        Ok(())
    }

    /// Closes the queue and waits for the thread.
    fn finish(mut self) -> anyhow::Result<()> {
        self.batches_tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.batches_tx = None;
        if self.thread.is_some() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn send_loop(
    producer: &ThreadedProducer<SendContext>,
    batches: &mpsc::Receiver<Batch>,
    topic: &str,
    partitions: u64,
    payloads: &[Vec<u8>],
    state: &SendState,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut next_seq = [0u64; 2];
    for batch in batches {
        let start = Instant::now();
        let first = next_seq[batch.run];
        for n in 0..batch.count {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if n % 64 == 0
                && let Some(rate) = batch.rate
            {
                let due = Duration::from_secs_f64(n as f64 / rate);
                let elapsed = start.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            let seq = first + n;
            let opaque = seq as usize | if batch.run == 0 { CALIBRATION_BIT } else { 0 };
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: RUN_HEADER,
                    value: Some(&batch.run_id),
                })
                .insert(Header {
                    key: SEQ_HEADER,
                    value: Some(&seq.to_string()),
                })
                .insert(Header {
                    key: SENT_HEADER,
                    value: Some(&feed::now_us().to_string()),
                });
            let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, opaque)
                .payload(payloads[(seq % payloads.len() as u64) as usize].as_slice())
                .headers(headers)
                .partition((seq % partitions) as i32);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => anyhow::bail!("producing to {topic}: {error}"),
                }
            }
        }
        next_seq[batch.run] += batch.count;
        while producer.in_flight_count() > 0 && !stop.load(Ordering::Relaxed) {
            let _ = producer.flush(Duration::from_millis(100));
        }
        state.batches_done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Tiny settings: a few seconds, a small pool, four partitions, the
    /// worker in this process (another package's binary may not be built).
    fn tiny() -> SoakOptions {
        SoakOptions {
            duration: Duration::from_secs(6),
            rate: Some(1_500.0),
            burst: Duration::from_secs(2),
            idle: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(60),
            calibration_records: 2_000,
            partitions: 4,
            spec: Spec {
                records: 2_000,
                addresses: 200,
                ..Spec::default()
            },
            worker: WorkerKind::InProcess,
            sample_every: Duration::from_millis(250),
            progress: false,
            ..SoakOptions::default()
        }
    }

    #[test]
    fn two_bursts_lose_nothing_and_the_lag_returns_to_zero_after_each() {
        let summary = run(&tiny()).unwrap();
        assert_eq!(summary.bursts.len(), 2);
        assert_eq!(summary.sent, 6_000, "{}", summary.table());
        assert_eq!(summary.lost, 0, "{}", summary.table());
        assert!(summary.drained_every_burst, "{}", summary.table());
        assert!(summary.bursts.iter().all(|b| b.drain_s.is_some()));
        assert!(summary.ok());
        let rss = summary.rss;
        assert!(rss.start_mb > 0.0 && rss.max_mb >= rss.start_mb, "{rss:?}");
        assert!(summary.timeline.iter().any(|s| s.phase == "idle 2"));
        assert!(
            summary.worker_exit.starts_with("stopped"),
            "{}",
            summary.worker_exit
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["bursts"][1]["records"], 3_000);
    }

    #[test]
    fn without_a_rate_the_soak_runs_at_half_a_calibrated_maximum() {
        let summary = run(&SoakOptions {
            duration: Duration::from_secs(1),
            rate: None,
            burst: Duration::from_secs(1),
            idle: Duration::ZERO,
            ..tiny()
        })
        .unwrap();
        let calibration = summary.calibration.unwrap();
        assert_eq!(calibration.records, 2_000);
        assert_eq!(calibration.lost, 0);
        assert!(calibration.max_rps > 0.0);
        assert_eq!(summary.rate_rps, (calibration.max_rps / 2.0).max(1.0));
        assert_eq!(summary.bursts.len(), 1);
        assert_eq!(summary.lost, 0, "{}", summary.table());
        assert!(summary.drained_every_burst, "{}", summary.table());
    }

    #[test]
    fn bursts_fill_the_duration() {
        let s = Duration::from_secs;
        assert_eq!(burst_count(s(600), s(30), s(10)), 15);
        assert_eq!(burst_count(s(601), s(30), s(10)), 16);
        assert_eq!(burst_count(s(6), s(2), s(1)), 2);
        assert_eq!(burst_count(s(0), s(2), s(1)), 1);
    }

    #[test]
    fn the_slope_is_per_hour_and_flat_when_flat() {
        let flat: Vec<(f64, f64)> = (0..100).map(|t| (f64::from(t), 40.0)).collect();
        assert!(slope_per_hour(&flat).abs() < 1e-9);
        let growing: Vec<(f64, f64)> = (0..100)
            .map(|t| (f64::from(t), 40.0 + f64::from(t) / 60.0))
            .collect();
        assert!((slope_per_hour(&growing) - 60.0).abs() < 1e-6);
        assert!(slope_per_hour(&[(1.0, 2.0)]).abs() < 1e-9);
    }

    #[test]
    fn metrics_are_read_by_name_and_labels() {
        let text = "# TYPE enricher_cache_requests_total counter\n\
                    enricher_cache_requests_total{tier=\"l1\",result=\"hit\"} 90\n\
                    enricher_cache_requests_total{tier=\"l1\",result=\"miss\"} 10\n\
                    enricher_cache_requests_total_other 5\n";
        let name = enricher::metrics::CACHE;
        assert_eq!(
            metric(text, name, &["tier=\"l1\"", "result=\"hit\""]),
            Some(90.0)
        );
        assert_eq!(metric(text, name, &["result=\"miss\""]), Some(10.0));
        assert_eq!(metric(text, name, &["tier=\"l2\""]), None);
    }

    #[test]
    fn a_missing_enricher_binary_says_how_to_build_it() {
        let error = check_binary(Path::new("/nonexistent/enricher"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cargo build --release -p enricher"),
            "{error}"
        );
        assert!(error.contains("--enricher"), "{error}");
    }

    #[test]
    fn the_generated_worker_config_is_one_enricher_run_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let dbs = crate::geo::write(dir.path()).unwrap();
        let mut config = crate::worker_config(&dbs, Some("127.0.0.1:5353".parse().unwrap()), None);
        config.kafka.brokers = "127.0.0.1:9092".into();
        config.kafka.input_topic = "soak_x".into();
        config.kafka.group_id = "soak-x".into();
        config.worker.metrics_addr = "127.0.0.1:9999".parse().unwrap();
        let text = worker_config_toml(&config).unwrap();
        let read = Config::from_toml(&text).unwrap();
        assert_eq!(read, config);
        read.validate_run().unwrap();
    }
}

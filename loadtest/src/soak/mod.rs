//! `loadtest soak`: one worker under bursts of load for a long time, to show
//! that its memory stays flat, that its consumer lag comes back to 0 after
//! every burst, and that nothing is lost.
//!
//! ```text
//! calibrate: a flat-out pass (own run id) --> rate = half the measured maximum
//! burst 1 (rate, burst) --> idle (idle, longer until lag 0) --> burst 2 --> ... for `duration`
//!
//! send: a thread, the feed's producer --tagged, a pool of synthetic records cycled--> soak_<run>
//!     --> worker: `enricher run --config <generated>` (a child process: its RSS is its own)
//!     --> soak_<run>_enr / _dlq --> watcher (counts every sequence number, while the run goes on)
//! monitor (this thread): lag (high watermarks minus committed offsets), worker VmRSS, counts
//! summary: the report, as a table or JSON
//! ```
//!
//! The run (this file) drives the phases; [`crate::feed`] sets up its
//! producer and tags its records, [`crate::process`] runs and reads the
//! child worker, [`crate::fleet`] the in-process one, and [`crate::watch`]
//! counts the output.
//!
//! The mock cluster keeps at most 5 MiB per partition and drops older data
//! silently: the watcher reads the output while it is produced, and records
//! go round-robin over [`SoakOptions::partitions`] partitions so that each
//! partition's backlog stays far below that.

mod monitor;
mod send;
mod summary;
#[cfg(test)]
mod tests;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cluster::{Cluster, LagProbe};
use crate::process::free_addr;
pub use crate::process::{check_binary, enricher_beside_me, worker_config_toml};
use crate::report::{Percentiles, thousands};
use crate::synth::{self, Spec};
use crate::watch::{Expect, Watcher};
use monitor::Monitor;
use send::{Batch, Sender};
pub use summary::{Burst, Calibration, Rss, SoakSample, SoakSummary};
use worker::Running;

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

    let mut sender = Sender::start(&cluster, &topic, options.partitions, Arc::clone(&payloads))?;
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

//! `loadtest bench`: enrichment measured against a plain copy and against
//! the Python peer, on the same broker, the same data and the same machine,
//! in one run.
//!
//! ```text
//! broker: the mock cluster in this process | tansu (a child process) | --brokers HOST:PORT
//! preload: the whole data set into one input topic, once
//! each round, each pass a process of its own in a fresh consumer group, into output topics of its own:
//!   passthrough  enricher run, worker.passthrough = true: consume, copy, produce, commit
//!   warm         enricher run, every address in L1 (warmed through its own input topic, then
//!                paused while the data set is preloaded there, then resumed)
//!   cold         enricher run, empty cache, the fake DNS at 20 ms median
//!   peer         loadtest/peer/peer.py: confluent-kafka, json, maxminddb, a dict cache (GeoIP only)
//! paced phases: a fresh worker, warm (at half the maximum it moves live, measured first)
//!   then cold (at half the cold rate), fed live; end-to-end latency from the time each
//!   record was in the input topic
//! ```
//!
//! Records are tagged with their key (`<run>:<seq>`), not headers: tansu
//! 0.6.0 serves records with headers too slowly for a pass to finish.
//! Throughput is the records divided by the time between the first and the
//! last output timestamp. CPU per record is read from `/proc/<pid>/stat`
//! between the first and the last output seen: the worker's (or the peer's)
//! alone, and the whole, which adds the broker's (the mock cluster lives in
//! this process; tansu is a process of its own; an external broker's is not
//! known).
//!
//! The files: `setup.rs` (topics, feed, preload, worker configuration and
//! process, the cover records), `passes.rs` (one timed pass and its CPU),
//! `paced.rs` (the paced phases and their latency), `summary.rs` (options,
//! results, the table).

mod paced;
mod passes;
mod setup;
mod summary;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use enricher::config::Config;
use test_support::kafka::Tansu;

use crate::cluster::Cluster;
use crate::report::{self};
use crate::run;

pub use self::setup::cover;
use self::setup::worker_settings;
pub use self::summary::{BenchOptions, BenchSummary, Broker, Mode, Paced, Pass};

/// Records of the live calibration before the paced warm phase.
pub const CALIBRATION_RECORDS: usize = 300_000;

/// The DNS budget of a worker being warmed up, queries per second: the
/// fake DNS answers tens of thousands a second.
pub const WARM_DNS_QPS: u32 = 20_000;

/// The broker the bench runs against, running.
struct Running {
    cluster: Cluster,
    tansu: Option<Tansu>,
    name: String,
}

impl Running {
    fn start(broker: &Broker) -> anyhow::Result<Self> {
        Ok(match broker {
            Broker::Mock => Self {
                cluster: Cluster::embedded()?,
                tansu: None,
                name: "mock".into(),
            },
            Broker::Tansu => {
                let tansu = Tansu::start()
                    .context("starting tansu (scripts/tansu.sh installs it, or set TANSU_BIN)")?;
                Self {
                    cluster: Cluster::External {
                        brokers: test_support::kafka::Kafka::bootstrap(&tansu).to_string(),
                        properties: BTreeMap::new(),
                    },
                    tansu: Some(tansu),
                    name: "tansu".into(),
                }
            }
            Broker::External {
                brokers,
                properties,
            } => Self {
                cluster: Cluster::External {
                    brokers: brokers.clone(),
                    properties: properties.clone(),
                },
                tansu: None,
                name: brokers.clone(),
            },
        })
    }

    /// The broker's CPU time so far (`None`: not known here).
    fn cpu_seconds(&self) -> Option<f64> {
        match (&self.cluster, &self.tansu) {
            (Cluster::Embedded(_), _) => crate::process::cpu_seconds(None),
            (_, Some(tansu)) => crate::process::cpu_seconds(Some(tansu.pid()?)),
            _ => None,
        }
    }

    fn whole_cpu_is(&self) -> Option<String> {
        match (&self.cluster, &self.tansu) {
            (Cluster::Embedded(_), _) => Some(
                "the worker process plus this one: the mock cluster, the fake DNS, the \
                 output probe"
                    .into(),
            ),
            (_, Some(_)) => Some("the worker process plus the tansu process".into()),
            _ => None,
        }
    }

    fn is_tansu(&self) -> bool {
        self.tansu.is_some()
    }
}

/// Everything the passes share.
struct Bench<'a> {
    options: &'a BenchOptions,
    broker: Running,
    dns: crate::FakeDns,
    dbs: crate::geo::Databases,
    dir: PathBuf,
    base: Config,
    partitions: i32,
    log_append_time: bool,
    /// Records that between them hold every address of the data set.
    cover: Arc<Vec<Vec<u8>>>,
    /// The addresses in them.
    cover_addresses: usize,
    run_id: String,
    started: usize,
    worker_peak_rss_mb: f64,
}

/// Runs the benchmark.
///
/// # Errors
///
/// When a part cannot start.
pub fn run(options: &BenchOptions) -> anyhow::Result<BenchSummary> {
    crate::process::check_binary(&options.enricher)?;
    let n = options.data.records.len();
    anyhow::ensure!(n > 0, "the data set is empty");
    let tmp = tempfile::Builder::new()
        .prefix("loadtest-bench-")
        .tempdir()?;
    let dbs = crate::geo::write(tmp.path())?;
    let dns = crate::FakeDns::start()?;
    let broker = Running::start(&options.broker)?;
    let run_id = run::run_id();
    let partitions = options.partitions.unwrap_or_else(|| {
        if broker.cluster.is_embedded() {
            run::mock_partitions(n, options.data.bytes())
        } else {
            8
        }
    });
    let log_append_time = broker
        .cluster
        .honours_log_append_time(&format!("bench_tsprobe_{run_id}"))
        .context("probing the broker's timestamps")?;
    let mut base = crate::worker_config(&dbs, Some(dns.addr()), None);
    base.dns.qps = options.dns_qps;
    base.dns.burst = options.dns_burst;
    base.kafka.brokers = broker.cluster.bootstrap();
    if let Cluster::External { properties, .. } = &broker.cluster {
        for (k, v) in properties {
            base.kafka.properties.insert(k.clone(), v.clone());
        }
    }
    // The warm pass pauses its worker (SIGSTOP) while its input is
    // preloaded: the group must keep it that long.
    base.kafka
        .consumer_properties
        .insert("session.timeout.ms".into(), "45000".into());
    base.worker.shutdown_grace_ms = 10_000;
    let peer_line = match &options.python {
        Ok(python) => crate::peer::versions(python).unwrap_or_else(|| python.display().to_string()),
        Err(why) => format!("skipped: {why}"),
    };
    let mut modes = options.modes.clone();
    if let Err(why) = &options.python
        && modes.contains(&Mode::Peer)
    {
        eprintln!("Skipping the peer pass: {why}");
        modes.retain(|m| *m != Mode::Peer);
    }
    let (cover, cover_addresses) = cover(&options.data.records);
    let cover = Arc::new(cover);
    eprintln!(
        "Bench on {}: {} records ({:.0} MiB, {} partitions), {} rounds of {}; one worker process \
         ({}); DNS budget {}/s + {} burst; latency from the {}",
        broker.name,
        report::thousands(n as u64),
        options.data.bytes() as f64 / (1 << 20) as f64,
        partitions,
        options.rounds,
        modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        options.enricher.display(),
        options.dns_qps,
        options.dns_burst,
        if log_append_time {
            "input record's log-append time"
        } else {
            "delivery report of the input record (the broker does not stamp log-append time)"
        }
    );
    let mut bench = Bench {
        options,
        broker,
        dns,
        dbs,
        dir: tmp.path().to_path_buf(),
        base,
        partitions,
        log_append_time,
        cover,
        cover_addresses,
        run_id,
        started: 0,
        worker_peak_rss_mb: 0.0,
    };
    let mut passes = Vec::new();
    let input = if options.rounds > 0 && !modes.is_empty() {
        let started = Instant::now();
        let input = bench.preload_input()?;
        eprintln!("  preloaded in {:.1} s", started.elapsed().as_secs_f64());
        Some(input)
    } else {
        None
    };
    for round in 0..options.rounds {
        let Some(input) = &input else {
            break;
        };
        for &mode in &modes {
            let pass = bench
                .measure(input, mode, round)
                .with_context(|| format!("{} pass of round {round}", mode.name()))?;
            eprintln!(
                "  round {round} {:<12} {:>9} records/s  {:>5.1} µs CPU/record ({} whole)  lost {}  duplicates {}  dns peak {:.0}/s{}",
                mode.name(),
                report::thousands(pass.rps as u64),
                pass.worker_cpu_us_per_record,
                pass.cpu_us_per_record
                    .map_or_else(|| "-".to_string(), |c| format!("{c:.1}")),
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
    let median_opt = |mode: Mode, of: fn(&Pass) -> Option<f64>| {
        let v: Option<Vec<f64>> = passes.iter().filter(|p| p.mode == mode).map(of).collect();
        v.filter(|v| !v.is_empty()).map(median)
    };
    let rps = |p: &Pass| p.rps;
    let worker_cpu = |p: &Pass| p.worker_cpu_us_per_record;
    let whole_cpu = |p: &Pass| p.cpu_us_per_record;
    let (passthrough, warm, cold) = (
        median_of(Mode::Passthrough, rps),
        median_of(Mode::Warm, rps),
        median_of(Mode::Cold, rps),
    );
    let ran = |mode: Mode| passes.iter().any(|p| p.mode == mode);
    let peer_rps = ran(Mode::Peer).then(|| median_of(Mode::Peer, rps));
    let peer_cpu = ran(Mode::Peer).then(|| median_of(Mode::Peer, worker_cpu));
    let warm_worker_cpu = median_of(Mode::Warm, worker_cpu);

    // The paced phases. Warm: a warmed worker at half the maximum it moves
    // live (measured first, with the feed running beside it). Cold: a
    // fresh worker at half the rate a cold worker sustains (warm's or
    // passthrough's without a cold pass), and no faster than the warm
    // phase: paced any faster, a cold start falls behind and the latency
    // measured is the queue's.
    let sustained = [cold, warm, passthrough]
        .into_iter()
        .find(|r| *r > 0.0)
        .unwrap_or(0.0);
    let paced_warm = match options.latency_rate {
        Some(rate) => Some(bench.paced(true, Some(rate))?),
        None if warm > 0.0 => Some(bench.paced(true, None)?),
        None => None,
    };
    let live_max = paced_warm.as_ref().and_then(|p| p.live_max_rps);
    let cold_rate = (sustained / 2.0).min(live_max.map_or(f64::INFINITY, |m| m / 2.0));
    let paced = bench.paced(false, Some(options.latency_rate.unwrap_or(cold_rate)))?;
    let dns_qps_peak = passes
        .iter()
        .map(|p| p.dns_qps_peak)
        .chain(paced_warm.iter().map(|p| p.dns_qps_peak))
        .fold(paced.dns_qps_peak, f64::max);
    let summary = BenchSummary {
        broker: bench.broker.name.clone(),
        whole_cpu_is: bench.broker.whole_cpu_is(),
        records: n,
        rounds: options.rounds,
        partitions,
        passthrough_rps: passthrough,
        warm_rps: warm,
        cold_rps: cold,
        warm_ratio: ratio(warm, passthrough),
        cold_ratio: ratio(cold, passthrough),
        passthrough_cpu_us: median_opt(Mode::Passthrough, whole_cpu),
        warm_cpu_us: median_opt(Mode::Warm, whole_cpu),
        cold_cpu_us: median_opt(Mode::Cold, whole_cpu),
        passthrough_worker_cpu_us: median_of(Mode::Passthrough, worker_cpu),
        warm_worker_cpu_us: warm_worker_cpu,
        cold_worker_cpu_us: median_of(Mode::Cold, worker_cpu),
        peer_rps,
        peer_cpu_us: peer_cpu,
        peer_whole_cpu_us: median_opt(Mode::Peer, whole_cpu),
        worker_cpu_ratio_to_peer: peer_cpu
            .filter(|p| *p > 0.0 && ran(Mode::Warm))
            .map(|p| warm_worker_cpu / p),
        rps_ratio_to_peer: peer_rps
            .filter(|p| *p > 0.0 && ran(Mode::Warm))
            .map(|p| warm / p),
        peer: peer_line,
        p50_ms: paced.latency_ms.p50,
        p99_ms: paced.latency_ms.p99,
        warm_live_max_rps: live_max,
        warm_p50_ms: paced_warm.as_ref().map(|p| p.latency_ms.p50),
        warm_p99_ms: paced_warm.as_ref().map(|p| p.latency_ms.p99),
        worker_settings: worker_settings(&bench.base, &options.worker_env),
        latency_from: if bench.log_append_time {
            "log_append_time"
        } else {
            "delivery_report"
        }
        .into(),
        latency_to: if bench.log_append_time {
            "log_append_time"
        } else {
            "create_time"
        }
        .into(),
        dns_qps_peak,
        dns_budget_qps: f64::from(options.dns_qps),
        dns_burst: options.dns_burst,
        lost: passes.iter().map(|p| p.lost).sum::<u64>()
            + paced.lost
            + paced_warm.as_ref().map_or(0, |p| p.lost),
        duplicates: passes.iter().map(|p| p.duplicates).sum::<u64>()
            + paced.duplicates
            + paced_warm.as_ref().map_or(0, |p| p.duplicates),
        peak_rss_mb: report::peak_rss_mb(),
        worker_peak_rss_mb: bench.worker_peak_rss_mb,
        passes,
        paced,
        paced_warm,
    };
    drop(bench);
    Ok(summary)
}

/// The input topic the passes read, preloaded once with the whole data set.
struct Input {
    topic: String,
    run_id: String,
}

/// What the monitor of a pass read.
#[derive(Debug, Default)]
struct Timing {
    worker_cpu_us: f64,
    whole_cpu_us: Option<f64>,
    dns_qps_peak: f64,
}

/// `a / b`, 0 when `b` was not measured.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
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

#[cfg(test)]
mod tests;

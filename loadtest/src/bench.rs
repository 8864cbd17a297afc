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

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use enricher::config::Config;
use serde::Serialize;
use test_support::kafka::Tansu;

use crate::cluster::{Cluster, LOG_APPEND_TIME, Watermarks};
use crate::feed::{self, FeedSettings, Pace, Progress, Stream, Tag};
use crate::process::{Proc, WorkerProcess};
use crate::report::{self, Percentiles, Sample};
use crate::run;
use crate::source::LogSet;
use crate::watch::{Expect, Tally, Watcher};

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
    fn name(self) -> &'static str {
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

impl Bench<'_> {
    fn next_name(&mut self, what: &str) -> String {
        self.started += 1;
        format!("{what}-{}", self.started)
    }

    /// The partitions of a topic for `records` records of `bytes` bytes.
    fn partitions_for(&self, records: usize, bytes: usize) -> i32 {
        match self.options.partitions {
            Some(p) => p,
            None if self.broker.cluster.is_embedded() => run::mock_partitions(records, bytes),
            None => self.partitions,
        }
    }

    /// Producer properties of the feed on this broker.
    fn feed_properties(&self) -> Vec<(&'static str, &'static str)> {
        if self.broker.is_tansu() {
            // tansu stores each batch as it came and reads back many small
            // ones slowly (test_support's `Tansu::producer`); the
            // idempotent producer spins while a slow broker answers
            // (docs/decisions.md), which would take a core from the worker.
            vec![("enable.idempotence", "false"), ("linger.ms", "20")]
        } else {
            Vec::new()
        }
    }

    /// Sends `records` to `topic` under `run_id`, paced, and waits for every
    /// acknowledgement.
    fn send(
        &self,
        topic: &str,
        run_id: &str,
        records: Arc<Vec<Vec<u8>>>,
        partitions: i32,
        pace: Pace,
        progress: &Arc<Progress>,
    ) -> anyhow::Result<()> {
        let stream = Stream {
            topic: topic.to_string(),
            ts: Arc::new(vec![None; records.len()]),
            records,
            partitions,
        };
        let order = feed::send_order(std::slice::from_ref(&stream), pace);
        feed::feed_with(
            &self.broker.cluster,
            run_id,
            std::slice::from_ref(&stream),
            &order,
            pace,
            progress,
            &AtomicBool::new(false),
            &FeedSettings {
                producer_properties: &self.feed_properties(),
                tag: Tag::Key,
            },
        )?;
        anyhow::ensure!(
            progress.deliveries.refused_count() == 0,
            "{} records were refused by the broker",
            progress.deliveries.refused_count()
        );
        Ok(())
    }

    fn preload_input(&self) -> anyhow::Result<Input> {
        let run_id = run::run_id();
        let topic = format!("bench_input_{run_id}");
        self.broker.cluster.create_topic(&topic, self.partitions)?;
        self.send(
            &topic,
            &run_id,
            Arc::new(self.options.data.records.clone()),
            self.partitions,
            Pace::Flat,
            &Progress::new(1),
        )?;
        Ok(Input { topic, run_id })
    }

    fn create_outputs(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<[String; 2]> {
        let outputs = [format!("{name}_enr"), format!("{name}_dlq")];
        for t in &outputs {
            self.broker
                .cluster
                .create_topic_with(t, partitions, configs)?;
        }
        Ok(outputs)
    }

    fn worker_config(&self, input: &str, name: &str, passthrough: bool) -> anyhow::Result<Config> {
        self.worker_config_with(input, name, passthrough, false)
    }

    /// A worker's config; a worker to be warmed up (`warm`) gets a DNS
    /// budget of [`WARM_DNS_QPS`] and a twentieth of that in flight, so that
    /// its warm-up takes a round or two of the addresses instead of a round
    /// a second at the budget (the consumer takes them in bursts, and a
    /// lookup that cannot get a slot is cached for a second only). Once
    /// warm it asks DNS nothing while it is measured.
    fn worker_config_with(
        &self,
        input: &str,
        name: &str,
        passthrough: bool,
        warm: bool,
    ) -> anyhow::Result<Config> {
        let mut config = self.base.clone();
        if warm {
            config.dns.qps = config.dns.qps.max(WARM_DNS_QPS);
            config.dns.burst = config.dns.burst.max(WARM_DNS_QPS / 10);
            config.dns.max_in_flight = config.dns.max_in_flight.max((WARM_DNS_QPS / 20) as usize);
        }
        config.kafka.input_topic = input.to_string();
        config.kafka.output_topic = Some(format!("{name}_enr"));
        config.kafka.dlq_topic = Some(format!("{name}_dlq"));
        config.kafka.group_id = format!("bench-{name}");
        config.worker.passthrough = passthrough;
        config.worker.metrics_addr = crate::process::free_addr()?;
        Ok(config)
    }

    fn spawn_worker(&mut self, config: &Config) -> anyhow::Result<WorkerProcess> {
        let name = self.next_name("worker");
        WorkerProcess::spawn(
            &self.options.enricher,
            config,
            &self.dir,
            &name,
            &self.options.worker_env,
        )
    }

    /// One pass: a fresh process in a fresh group reads the whole input
    /// into output topics of its own, its output timed.
    fn measure(&mut self, input: &Input, mode: Mode, round: usize) -> anyhow::Result<Pass> {
        let n = self.options.data.records.len() as u64;
        // The pass's own name: its outputs are `<name>_enr` and `<name>_dlq`.
        let name = format!("bench_{}_{round}_{}", mode.name(), self.run_id);
        let outputs = self.create_outputs(&name, self.partitions, &[])?;
        let probe = Watermarks::new(&self.broker.cluster, &outputs, self.partitions)?;
        let mut warmup_s = 0.0;
        let mut run_id = input.run_id.clone();
        let (timing, exit) = match mode {
            Mode::Peer => {
                let python = self
                    .options
                    .python
                    .as_ref()
                    .map_err(|why| anyhow::anyhow!("{why}"))?;
                let properties = self.broker.cluster.properties();
                let mut peer = crate::peer::spawn(&crate::peer::PeerRun {
                    python,
                    dir: &self.dir,
                    brokers: &self.broker.cluster.bootstrap(),
                    properties: &properties,
                    input: &input.topic,
                    output: &outputs[0],
                    group: &format!("bench-{name}"),
                    city: &self.dbs.city,
                    asn: &self.dbs.asn,
                    idle_exit_secs: 120,
                })?;
                let timing = self.time_pass(&mut peer, &probe, 0, n)?;
                (timing, peer.stop(Duration::from_secs(30))?)
            }
            Mode::Warm => {
                // Its own input topic: warmed through it, then paused while
                // the data set is preloaded after the warm-up records, then
                // resumed, so the pass reads a backlog with every address in L1.
                self.broker.cluster.create_topic(&name, self.partitions)?;
                let config = self.worker_config_with(&name, &name, false, true)?;
                let mut worker = self.spawn_worker(&config)?;
                worker.wait_ready(Duration::from_secs(60))?;
                let started = Instant::now();
                self.warm_up(&mut worker, config.dns.qps, &name, self.partitions, &probe)?;
                warmup_s = started.elapsed().as_secs_f64();
                let base = probe.total().context("reading the output's watermarks")?;
                run_id = run::run_id();
                worker.proc.signal("STOP")?;
                let preloaded = self.send(
                    &name,
                    &run_id,
                    Arc::new(self.options.data.records.clone()),
                    self.partitions,
                    Pace::Flat,
                    &Progress::new(1),
                );
                worker.proc.signal("CONT")?;
                preloaded?;
                let timing = self.time_pass(&mut worker.proc, &probe, base, n)?;
                self.worker_peak_rss_mb = self.worker_peak_rss_mb.max(worker.proc.peak_rss_mb());
                (timing, worker.stop()?)
            }
            Mode::Passthrough | Mode::Cold => {
                let config = self.worker_config(&input.topic, &name, mode == Mode::Passthrough)?;
                let mut worker = self.spawn_worker(&config)?;
                let timing = self.time_pass(&mut worker.proc, &probe, 0, n)?;
                self.worker_peak_rss_mb = self.worker_peak_rss_mb.max(worker.proc.peak_rss_mb());
                (timing, worker.stop()?)
            }
        };
        let tally = self.count(&name, &run_id, n as usize, false)?;
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
            dns_qps_peak: timing.dns_qps_peak,
            worker_cpu_us_per_record: timing.worker_cpu_us,
            cpu_us_per_record: timing.whole_cpu_us,
            warmup_s,
            exit,
        })
    }

    /// Watches the outputs' high watermarks until `n` records beyond `base`
    /// are out, reading the process's CPU and the broker's as they go. Only
    /// the watermarks are read while the pass runs: the reader that checks
    /// every record runs after the process has stopped, so it takes no CPU
    /// from the pass it measures.
    fn time_pass(
        &self,
        subject: &mut Proc,
        probe: &Watermarks,
        base: u64,
        n: u64,
    ) -> anyhow::Result<Timing> {
        let dns_before = self.dns.queries();
        let mut dns_peak = report::PeakRate::default();
        // CPU time is read from the first output seen to the last, so the
        // wait for the group's first assignment (idle, but the broker's and
        // the clients' timers tick) is not charged to the records.
        let mut worker = CpuPerRecord::default();
        let mut whole = CpuPerRecord::default();
        let cpu = subject.cpu_seconds();
        worker.sample(0, cpu);
        whole.sample(0, cpu.zip(self.broker.cpu_seconds()).map(|(a, b)| a + b));
        let mut last_change = (Instant::now(), 0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            dns_peak.sample(now, self.dns.queries() - dns_before);
            let out = probe
                .total()
                .map_or(last_change.1, |t| t.saturating_sub(base));
            let cpu = subject.cpu_seconds();
            worker.sample(out, cpu);
            whole.sample(out, cpu.zip(self.broker.cpu_seconds()).map(|(a, b)| a + b));
            if out >= n {
                break;
            }
            subject.check_alive()?;
            if out != last_change.1 {
                last_change = (now, out);
            } else if now.duration_since(last_change.0) > Duration::from_secs(60) {
                eprintln!(
                    "  no output for 60 s; giving up on this pass{}",
                    subject.log_tail()
                );
                break;
            }
        }
        Ok(Timing {
            worker_cpu_us: worker.us_per_record().unwrap_or(0.0),
            whole_cpu_us: whole.us_per_record(),
            dns_qps_peak: dns_peak.peak(),
        })
    }

    /// Reads `<name>_enr` and `<name>_dlq` from the start and counts the
    /// records of `run_id` until all `n` are seen or nothing new comes.
    fn count(&self, name: &str, run_id: &str, n: usize, timed: bool) -> anyhow::Result<Tally> {
        let data = &self.options.data;
        let expect = vec![Expect {
            topic: name.to_string(),
            input_len: data.records[..n].iter().map(|r| r.len() as u32).collect(),
            expect_geo: data.expect_geo[..n].to_vec(),
        }];
        let watcher = if timed {
            Watcher::start_timed(&self.broker.cluster, run_id, expect)?
        } else {
            Watcher::start(&self.broker.cluster, run_id, expect)?
        };
        let quiet = if self.broker.cluster.is_embedded() {
            10
        } else {
            30
        };
        let mut last_change = (Instant::now(), 0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let distinct = watcher.tally().distinct();
            if distinct >= n as u64 {
                break;
            }
            if distinct != last_change.1 {
                last_change = (Instant::now(), distinct);
            } else if last_change.0.elapsed() > Duration::from_secs(quiet) {
                break;
            }
        }
        Ok(watcher.finish())
    }

    /// Feeds the records that hold every address of the data set through
    /// the worker's input topic, again and again, until a whole round finds
    /// every address in L1 (a lookup over the DNS budget is cached for a
    /// second only, so it waits a second between rounds), or 90 s passed.
    fn warm_up(
        &self,
        worker: &mut WorkerProcess,
        dns_qps: u32,
        topic: &str,
        partitions: i32,
        probe: &Watermarks,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        // Fed no faster than the DNS budget takes their new addresses: a
        // lookup that cannot get a slot is answered `over_budget` and
        // cached for a second only, so a round sent at once would mostly
        // come back for another.
        let addresses_per_record = self.cover_addresses as f64 / self.cover.len().max(1) as f64;
        let rate = f64::from(dns_qps.max(1)) * 0.9 / addresses_per_record.max(1.0);
        for round in 0.. {
            let misses_before = worker.l1_misses().unwrap_or(0.0);
            let out_before = probe.total().context("reading the output's watermarks")?;
            self.send(
                topic,
                &format!("warmup-{round}"),
                Arc::clone(&self.cover),
                partitions,
                Pace::Rate(rate),
                &Progress::new(1),
            )?;
            let want = out_before + self.cover.len() as u64;
            let by = Instant::now() + Duration::from_secs(60);
            // After a round sent at the budget's pace, one more finds the
            // few addresses it could not look up at once.
            while probe.total().unwrap_or(0) < want {
                worker.proc.check_alive()?;
                anyhow::ensure!(
                    Instant::now() < by,
                    "the warm-up records did not come out within 60 s{}",
                    worker.proc.log_tail()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let misses = worker.l1_misses().unwrap_or(0.0) - misses_before;
            tracing::info!(round, misses, records = self.cover.len(), "Warm-up round");
            if misses <= 0.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                eprintln!(
                    "  warm-up: {misses} L1 misses still in round {round} after 90 s; going on"
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1_100));
        }
        Ok(())
    }

    /// Sends the first `n` records of the data set flat out to `topic`, whose
    /// worker is running, and returns the records out per second between
    /// the first and the last output timestamp.
    fn calibrate(
        &self,
        worker: &mut WorkerProcess,
        topic: &str,
        partitions: i32,
        probe: &Watermarks,
        n: usize,
    ) -> anyhow::Result<f64> {
        let run_id = run::run_id();
        let data = &self.options.data;
        let base = probe.total().context("reading the output's watermarks")?;
        self.send(
            topic,
            &run_id,
            Arc::new(data.records[..n].to_vec()),
            partitions,
            Pace::Flat,
            &Progress::new(1),
        )?;
        self.wait_out(worker, probe, base + n as u64)?;
        let tally = self.count(topic, &run_id, n, false)?;
        let lost: u64 = tally.missing(&[]).iter().sum();
        anyhow::ensure!(
            lost == 0,
            "{lost} records of the calibration did not come out"
        );
        Ok(match (tally.first_out_ms, tally.last_out_ms) {
            (Some(a), Some(b)) => tally.distinct() as f64 / ((b - a) as f64 / 1000.0).max(1e-3),
            _ => 0.0,
        })
    }

    /// Waits until the outputs hold `want` records (or nothing new came out
    /// for 60 s).
    fn wait_out(
        &self,
        worker: &mut WorkerProcess,
        probe: &Watermarks,
        want: u64,
    ) -> anyhow::Result<()> {
        let mut last_change = (Instant::now(), 0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let out = probe.total().unwrap_or(last_change.1);
            if out >= want {
                return Ok(());
            }
            worker.proc.check_alive()?;
            if out != last_change.1 {
                last_change = (Instant::now(), out);
            } else if last_change.0.elapsed() > Duration::from_secs(60) {
                eprintln!("  no new output for 60 s; counting what came out");
                return Ok(());
            }
        }
    }

    /// A fresh worker (warmed first when `warm`) fed live at `rate` (`None`:
    /// half the maximum measured live first) for `latency_secs`: end-to-end
    /// latency from the time each record was in the input topic.
    fn paced(&mut self, warm: bool, rate: Option<f64>) -> anyhow::Result<Paced> {
        let data = &self.options.data;
        let cache = if warm { "warm" } else { "cold" };
        let name = format!("bench_paced_{cache}_{}", self.run_id);
        // Room for a calibration and the paced records: the mock cluster
        // keeps 5 MiB a partition (read as they come, but the bench's
        // reader starts from the beginning).
        let calibration = data.records.len().min(CALIBRATION_RECORDS);
        let partitions = self.partitions_for(
            calibration + data.records.len(),
            data.records[..calibration]
                .iter()
                .map(Vec::len)
                .sum::<usize>()
                + data.bytes(),
        );
        // The broker stamps the input and output records with the time it
        // appended them, where it does so at all (see `latency_from`).
        let stamp: &[(&str, &str)] = &[LOG_APPEND_TIME];
        self.broker
            .cluster
            .create_topic_with(&name, partitions, stamp)?;
        let outputs = self.create_outputs(&name, partitions, stamp)?;
        let config = self.worker_config_with(&name, &name, false, warm)?;
        let mut worker = self.spawn_worker(&config)?;
        worker.wait_ready(Duration::from_secs(60))?;
        let probe = Watermarks::new(&self.broker.cluster, &outputs, partitions)?;
        let mut warmup_s = 0.0;
        if warm {
            let started = Instant::now();
            self.warm_up(&mut worker, config.dns.qps, &name, partitions, &probe)?;
            warmup_s = started.elapsed().as_secs_f64();
        }
        // The maximum measured live: the feed flat out, the worker and the
        // broker at work together, as the paced phase will have them (a
        // pass reads a preloaded backlog with nothing else running).
        let live_max_rps = match rate {
            Some(_) => None,
            None => {
                let max = self.calibrate(&mut worker, &name, partitions, &probe, calibration)?;
                eprintln!(
                    "  live maximum: {} records/s ({} records flat out, {cache} cache)",
                    report::thousands(max as u64),
                    report::thousands(calibration as u64)
                );
                Some(max)
            }
        };
        let rate = rate
            .or(live_max_rps.map(|m| m / 2.0))
            .unwrap_or(1_000.0)
            .max(1_000.0);
        let count = ((rate * self.options.latency_secs) as usize).clamp(1, data.records.len());
        let records: Vec<Vec<u8>> = data.records[..count].to_vec();
        eprintln!(
            "  paced phase: {} records at {} records/s, {cache} cache{}",
            report::thousands(count as u64),
            report::thousands(rate as u64),
            if warm {
                format!(" (warm-up {warmup_s:.1} s)")
            } else {
                String::new()
            }
        );
        let run_id = run::run_id();
        // Only the outputs' watermarks are read while the feed runs: the
        // reader that counts every record, and takes each one's output
        // timestamp, runs after the worker has stopped, so that it takes no
        // CPU from the feed, the broker and the worker it measures.
        let base = probe.total().context("reading the output's watermarks")?;
        let progress = Progress::timed(&[count], self.log_append_time);
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            topic: name.clone(),
            ts: Arc::new(vec![None; count]),
            records: Arc::new(records),
            partitions,
        };
        let feeder = {
            let (progress, stop, run_id) =
                (Arc::clone(&progress), Arc::clone(&stop), run_id.clone());
            // The mock cluster cannot move between threads: the thread
            // reaches it by address.
            let (brokers, cluster_properties) = (
                self.broker.cluster.bootstrap(),
                self.broker.cluster.properties(),
            );
            // The idempotent producer's start held the first records of a
            // paced feed 400-600 ms in its queue on the mock cluster, and
            // released them in one burst that the worker then queued: a
            // start-up transient of the feed, not of the worker. Off, a
            // retry may write a record twice; it would show as a duplicate.
            let mut properties: Vec<(String, String)> = self
                .feed_properties()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            properties.push(("enable.idempotence".into(), "false".into()));
            std::thread::Builder::new()
                .name("loadtest-feed".into())
                .spawn(move || {
                    let cluster = Cluster::External {
                        brokers,
                        properties: cluster_properties,
                    };
                    let streams = [stream];
                    let order = feed::send_order(&streams, Pace::Rate(rate));
                    let properties: Vec<(&str, &str)> = properties
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    feed::feed_with(
                        &cluster,
                        &run_id,
                        &streams,
                        &order,
                        Pace::Rate(rate),
                        &progress,
                        &stop,
                        &FeedSettings {
                            producer_properties: &properties,
                            tag: Tag::Key,
                        },
                    )
                })?
        };
        let start = Instant::now();
        let cpu_start = worker.proc.cpu_seconds();
        let dns_start = self.dns.queries();
        let mut dns_peak = report::PeakRate::default();
        let mut timeline = Vec::new();
        let mut last = (start, 0u64, 0u64, dns_start);
        let mut last_change = Instant::now();
        let mut fed_at = None;
        loop {
            // Twice a second: enough for the timeline, and little load on
            // the broker it measures.
            std::thread::sleep(Duration::from_millis(500));
            let now = Instant::now();
            let dns = self.dns.queries();
            dns_peak.sample(now, dns - dns_start);
            let acked = progress.deliveries.acked();
            let out = probe.total().map_or(last.2, |t| t.saturating_sub(base));
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
            let sample = Sample {
                t_s: now.duration_since(start).as_secs_f64(),
                sent: acked,
                out,
                in_rps: acked.saturating_sub(last.1) as f64 / dt,
                out_rps: out.saturating_sub(last.2) as f64 / dt,
                // Records in the input not yet seen out: the group's
                // committed lag would trail by a commit interval, and
                // reading it asks a slow broker for every partition.
                lag: Some(acked.saturating_sub(out) as i64),
                ts_diff_s: 0.0,
                dns_qps: dns.saturating_sub(last.3) as f64 / dt,
            };
            if out != last.2 {
                last_change = now;
            }
            last = (now, acked, out, dns);
            timeline.push(sample);
            let fed = progress.done.load(Ordering::Relaxed);
            if fed && fed_at.is_none() {
                fed_at = Some(now);
            }
            if fed && out + progress.deliveries.refused_count() >= count as u64 {
                break;
            }
            worker.proc.check_alive()?;
            if now.duration_since(last_change) > Duration::from_secs(60) {
                eprintln!("  no new output for 60 s; counting what came out");
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        feeder
            .join()
            .map_err(|_| anyhow::anyhow!("the feed thread panicked"))??;
        let feed_s = fed_at
            .unwrap_or_else(Instant::now)
            .duration_since(start)
            .as_secs_f64();
        let worker_cpu_us = cpu_start
            .zip(worker.proc.cpu_seconds())
            .map_or(0.0, |(a, b)| (b - a) * 1e6 / count.max(1) as f64);
        self.worker_peak_rss_mb = self.worker_peak_rss_mb.max(worker.proc.peak_rss_mb());
        let exit = worker.stop()?;
        let tally = self.count(&name, &run_id, count, true)?;
        let refused = progress.deliveries.refused();
        let times = &progress.times[0];
        let mut latencies = tally.latencies_from(&[times.in_topic()]);
        Ok(Paced {
            cache: cache.into(),
            records: count as u64,
            live_max_rps,
            rate_asked: rate,
            rate_held: progress.deliveries.acked() as f64 / feed_s.max(1e-3),
            warmup_s,
            lost: tally.missing(&refused).iter().sum(),
            duplicates: tally.topics.iter().map(|t| t.duplicates).sum(),
            latency_ms: Percentiles::of(&mut latencies),
            feed_queue_ms: Percentiles::of(&mut times.queue_ms()),
            worker_cpu_us,
            lag_peak: timeline.iter().filter_map(|s| s.lag).max().unwrap_or(0),
            dns_qps_peak: dns_peak.peak(),
            exit,
            timeline,
        })
    }
}

/// The records that between them hold every address of `records` (the
/// first record in which each quoted string that reads as an IP address
/// appears), and how many addresses that is. Fed through a worker, they put
/// every address in its L1.
pub fn cover(records: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for record in records {
        let mut new = false;
        for text in quoted(record) {
            if text.len() <= 45
                && let Ok(text) = std::str::from_utf8(text)
                && let Ok(ip) = text.parse::<IpAddr>()
            {
                new |= seen.insert(ip);
            }
        }
        if new {
            out.push(record.clone());
        }
    }
    (out, seen.len())
}

/// The contents of the JSON strings of `record` (escapes left as they are).
fn quoted(record: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = None;
    let mut escaped = false;
    let mut spans = Vec::new();
    for (i, &b) in record.iter().enumerate() {
        match (start, b) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), b'\\') => escaped = true,
            (Some(s), b'"') => {
                spans.push(&record[s..i]);
                start = None;
            }
            (None, b'"') => start = Some(i + 1),
            _ => {}
        }
    }
    spans.into_iter()
}

/// The settings of `base` that are not the worker's defaults, as `key=value`
/// (topics, group and brokers left out), then the environment given.
fn worker_settings(base: &Config, env: &[(String, String)]) -> Vec<String> {
    let defaults = Config::default();
    let mut out = Vec::new();
    let maps = [
        (
            "kafka.properties",
            &base.kafka.properties,
            &defaults.kafka.properties,
        ),
        (
            "kafka.consumer_properties",
            &base.kafka.consumer_properties,
            &defaults.kafka.consumer_properties,
        ),
        (
            "kafka.producer_properties",
            &base.kafka.producer_properties,
            &defaults.kafka.producer_properties,
        ),
    ];
    for (section, map, default) in maps {
        for (k, v) in map {
            if default.get(k) != Some(v) && !k.contains("password") && !k.contains("secret") {
                out.push(format!("{section}.\"{k}\"={v}"));
            }
        }
    }
    let w = &base.worker;
    let dw = &defaults.worker;
    for (key, value, default) in [
        (
            "worker.commit_interval_ms",
            w.commit_interval_ms,
            dw.commit_interval_ms,
        ),
        (
            "worker.stats_interval_ms",
            w.stats_interval_ms,
            dw.stats_interval_ms,
        ),
        (
            "worker.shutdown_grace_ms",
            w.shutdown_grace_ms,
            dw.shutdown_grace_ms,
        ),
        (
            "worker.progress_log_secs",
            w.progress_log_secs,
            dw.progress_log_secs,
        ),
    ] {
        if value != default {
            out.push(format!("{key}={value}"));
        }
    }
    for (key, value, default) in [
        ("dns.qps", base.dns.qps, defaults.dns.qps),
        ("dns.burst", base.dns.burst, defaults.dns.burst),
    ] {
        if value != default {
            out.push(format!("{key}={value}"));
        }
    }
    out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    out
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

/// CPU time per record between the first and the last of a series of
/// output counts.
#[derive(Debug, Default)]
struct CpuPerRecord {
    /// The last sample before any output: the start when a pass is over
    /// within one sample.
    before: Option<(f64, u64)>,
    first: Option<(f64, u64)>,
    last: Option<(f64, u64)>,
}

impl CpuPerRecord {
    /// Notes CPU time `cpu` (seconds; `None`: not known) against `out`
    /// records out so far.
    fn sample(&mut self, out: u64, cpu: Option<f64>) {
        let Some(now) = cpu else {
            return;
        };
        if out == 0 {
            self.before = Some((now, 0));
            return;
        }
        if self.first.is_none() {
            self.first = Some((now, out));
        }
        self.last = Some((now, out));
    }

    /// µs of CPU per record between the first and last samples with
    /// output (from the last sample before any output when all came out
    /// within one sample); `None` without records between two samples.
    fn us_per_record(&self) -> Option<f64> {
        let per = |(c0, n0): (f64, u64), (c1, n1): (f64, u64)| {
            (n1 > n0).then(|| (c1 - c0) * 1e6 / (n1 - n0) as f64)
        };
        match (self.before, self.first, self.last) {
            (_, Some(first), Some(last)) if last.1 > first.1 => per(first, last),
            (Some(before), _, Some(last)) => per(before, last),
            _ => None,
        }
    }
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

    #[test]
    fn the_cover_holds_every_address_once() {
        let records: Vec<Vec<u8>> = [
            r#"{"id.orig_h":"10.0.0.1","id.resp_h":"45.0.0.1","note":"x\"45.0.0.9"}"#,
            r#"{"id.orig_h":"10.0.0.1","id.resp_h":"45.0.0.1"}"#,
            r#"{"id.orig_h":"10.0.0.2","answers":["81.0.0.1","host.example"]}"#,
            r#"{"id.orig_h":"2001:db8::1","id.resp_h":"45.0.0.1"}"#,
            r#"{"query":"81.0.0.1"}"#,
        ]
        .iter()
        .map(|r| r.as_bytes().to_vec())
        .collect();
        let (cover, addresses) = cover(&records);
        assert_eq!(
            cover,
            [records[0].clone(), records[2].clone(), records[3].clone()]
        );
        assert_eq!(addresses, 5);
    }

    #[test]
    fn cpu_per_record_counts_from_the_first_output() {
        let mut c = CpuPerRecord::default();
        c.sample(0, Some(1.0));
        assert_eq!(c.us_per_record(), None);
        c.sample(100, Some(2.0));
        assert_eq!(
            c.us_per_record(),
            Some(10_000.0),
            "all out within one sample"
        );
        c.sample(1_100, Some(2.5));
        assert_eq!(c.us_per_record(), Some(500.0));
        let mut unknown = CpuPerRecord::default();
        unknown.sample(10, None);
        unknown.sample(20, None);
        assert_eq!(unknown.us_per_record(), None);
    }
}

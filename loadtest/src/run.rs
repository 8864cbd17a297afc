//! One run: create topics, start workers (or use an external fleet), send
//! the data set, watch the output, sample the timeline, report.
//!
//! ```text
//! feed thread --tagged records--> <topic> --workers--> <topic>_enr / _dlq --> watch thread
//!      '-- progress --.                                                           |
//!                      '--> sampler (this thread): lag, ts diff, DNS q/s <--------'
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use enricher::config::Config;

use crate::cluster::{Cluster, LagProbe};
use crate::feed::{self, Pace, Progress, Stream};
use crate::fleet::Fleet;
use crate::report::{self, CacheRatios, DnsFigures, Percentiles, Sample, Summary};
use crate::source::LogSet;
use crate::watch::{Expect, Tally, Watcher};

/// The mock cluster keeps at most 5 MiB per partition: keep each partition
/// of the output (input plus enrichment, spread at random) well under this.
const MOCK_PARTITION_BYTES: usize = 2 << 20;

/// What to run.
pub struct Plan<'a> {
    /// The data set, one log type per topic.
    pub sets: Vec<LogSet>,
    /// Input topics are `<prefix><log type>`.
    pub topic_prefix: String,
    /// How fast to send.
    pub pace: Pace,
    /// Partitions of created topics (embedded: chosen from the data size when `None`).
    pub partitions: Option<i32>,
    /// Workers per topic started in this process (0: an external fleet does the work).
    pub workers_per_topic: usize,
    /// Config of in-process workers (brokers, topics and group are set per topic).
    pub worker_config: Config,
    /// Give up when no new record has come out for this long.
    pub idle_timeout: Duration,
    /// Sampling interval of the timeline.
    pub sample_every: Duration,
    /// Print a progress line per sample to standard error.
    pub progress: bool,
    /// Upstream DNS query counter.
    pub dns_queries: Option<&'a dyn Fn() -> u64>,
}

impl std::fmt::Debug for Plan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("topics", &self.sets.len())
            .field("pace", &self.pace)
            .field("workers_per_topic", &self.workers_per_topic)
            .finish_non_exhaustive()
    }
}

/// A fresh run id: time and process id in hex.
pub fn run_id() -> String {
    format!("{:x}-{:x}", feed::now_us(), std::process::id())
}

/// Partitions for a topic of this many records and bytes on the mock cluster.
pub fn mock_partitions(records: usize, bytes: usize) -> i32 {
    let by_bytes = (bytes * 5 / 2).div_ceil(MOCK_PARTITION_BYTES);
    let by_count = records.div_ceil(60_000);
    by_bytes.max(by_count).clamp(2, 128) as i32
}

/// Runs `plan` against `cluster` and reports.
///
/// # Errors
///
/// When topics, clients or workers cannot be set up.
pub fn execute(cluster: &Cluster, plan: Plan<'_>) -> anyhow::Result<(Summary, Tally)> {
    let run_id = run_id();
    let streams: Vec<Stream> = plan
        .sets
        .iter()
        .map(|s| Stream {
            topic: format!("{}{}", plan.topic_prefix, s.path),
            records: Arc::new(s.records.clone()),
            ts: Arc::new(s.ts.clone()),
            partitions: 0,
        })
        .collect();
    let mut streams = streams;
    let mut partitions = Vec::new();
    for (set, stream) in plan.sets.iter().zip(&streams) {
        let p = plan
            .partitions
            .unwrap_or_else(|| mock_partitions(set.records.len(), set.bytes()));
        for topic in [
            stream.topic.clone(),
            format!("{}_enr", stream.topic),
            format!("{}_dlq", stream.topic),
        ] {
            cluster.create_topic(&topic, p)?;
        }
        partitions.push(cluster.partitions(&stream.topic)?.max(1));
    }
    for (stream, p) in streams.iter_mut().zip(&partitions) {
        stream.partitions = *p;
    }
    let groups: Vec<(String, String)> = streams
        .iter()
        .map(|s| {
            let group = if plan.workers_per_topic > 0 {
                format!("loadtest-{run_id}-{}", s.topic)
            } else {
                plan.worker_config.kafka.group_id.clone()
            };
            (s.topic.clone(), group)
        })
        .collect();
    let mut config = plan.worker_config.clone();
    config.kafka.brokers = cluster.bootstrap();
    let fleet = if plan.workers_per_topic > 0 {
        Fleet::start(&config, &groups, plan.workers_per_topic).context("starting workers")?
    } else {
        Fleet::default()
    };
    // Wait for the group to hand out partitions, so the timeline measures
    // the pipeline rather than the group's first rebalance.
    let assigned_by = Instant::now() + Duration::from_secs(20);
    while !fleet.workers.iter().all(crate::fleet::Worker::assigned) && Instant::now() < assigned_by
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let probes: Vec<LagProbe> = groups
        .iter()
        .zip(&partitions)
        .filter_map(|((topic, group), p)| {
            LagProbe::new(cluster, group, &[(topic.clone(), *p)]).ok()
        })
        .collect();
    let expect: Vec<Expect> = plan
        .sets
        .iter()
        .zip(&streams)
        .map(|(set, stream)| Expect {
            topic: stream.topic.clone(),
            input_len: set.records.iter().map(|r| r.len() as u32).collect(),
            expect_geo: set.expect_geo.clone(),
        })
        .collect();
    let watcher = Watcher::start_timed(cluster, &run_id, expect)?;
    let progress = Progress::timed(
        &streams.iter().map(|s| s.records.len()).collect::<Vec<_>>(),
        false,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let order = feed::send_order(&streams, plan.pace);
    let total: u64 = order.len() as u64;
    let start = Instant::now();
    let start_us = feed::now_us();
    let feeder = {
        let (progress, stop, run_id, streams) = (
            Arc::clone(&progress),
            Arc::clone(&stop),
            run_id.clone(),
            streams.clone(),
        );
        let client_cluster = ClusterRef::of(cluster);
        let pace = plan.pace;
        std::thread::Builder::new()
            .name("loadtest-feed".into())
            .spawn(move || {
                let cluster = client_cluster.cluster();
                feed::feed(&cluster, &run_id, &streams, &order, pace, &progress, &stop)
            })?
    };

    let mut timeline = Vec::new();
    let mut last = (
        Instant::now(),
        0u64,
        0u64,
        plan.dns_queries.map_or(0, |f| f()),
    );
    let dns_start = last.3;
    let mut dns_peak = report::PeakRate::default();
    let mut last_change = Instant::now();
    let mut last_out = 0;
    loop {
        std::thread::sleep(plan.sample_every);
        let now = Instant::now();
        // Read with `now`: the probes below can take a while on a busy machine.
        let dns = plan.dns_queries.map_or(0, |f| f());
        dns_peak.sample(now, dns);
        let acked = progress.deliveries.acked();
        let refused = progress.deliveries.refused_count();
        let (out, ts_diff_s) = {
            let tally = watcher.tally();
            let diff = tally
                .topics
                .iter()
                .zip(&progress.newest_sent_us)
                .zip(&streams)
                .filter(|((t, _), s)| (t.distinct as usize) < s.records.len())
                .map(|((t, sent), _)| {
                    let out = t.newest_sent_us.max(start_us);
                    sent.load(Ordering::Relaxed).saturating_sub(out) as f64 / 1e6
                })
                .fold(0.0, f64::max);
            (tally.distinct(), diff)
        };
        let lag = probes
            .iter()
            .map(LagProbe::lag)
            .try_fold(0i64, |acc, l| l.map(|l| acc + l));
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let sample = Sample {
            t_s: now.duration_since(start).as_secs_f64(),
            sent: acked,
            out,
            in_rps: (acked - last.1.min(acked)) as f64 / dt,
            out_rps: (out - last.2.min(out)) as f64 / dt,
            lag,
            ts_diff_s,
            dns_qps: (dns - last.3.min(dns)) as f64 / dt,
        };
        last = (now, acked, out, dns);
        timeline.push(sample);
        if plan.progress {
            let l1 = CacheRatios::from(&fleet.stats()).l1_hit_ratio;
            eprintln!(
                "[{:>5.1}s] sent {:>10}  out {:>10} ({:>8}/s)  lag {:>8}  ts diff {:>5.1}s  dns {:>5.0} q/s{}",
                sample.t_s,
                report::thousands(acked),
                report::thousands(out),
                report::thousands(sample.out_rps as u64),
                lag.map_or_else(|| "-".into(), |l| report::thousands(l.max(0) as u64)),
                ts_diff_s,
                sample.dns_qps,
                if fleet.workers.is_empty() {
                    String::new()
                } else {
                    format!("  L1 hits {:.1}%", l1 * 100.0)
                }
            );
        }
        if out != last_out {
            last_out = out;
            last_change = now;
        }
        let fed = progress.done.load(Ordering::Relaxed);
        if fed && out + refused >= total {
            break;
        }
        if fed && now.duration_since(last_change) > plan.idle_timeout {
            eprintln!(
                "No new output for {:?}; giving up waiting",
                plan.idle_timeout
            );
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feed thread panicked"))??;
    let stats = fleet.stats();
    let workers = fleet.workers.len();
    fleet.stop()?;
    // Anything a stopping worker sent again shows up as a duplicate.
    std::thread::sleep(Duration::from_millis(500));
    let tally = watcher.finish();
    let in_topic: Vec<Vec<u64>> = progress.times.iter().map(|t| t.in_topic()).collect();
    let mut latencies = tally.latencies_from(&in_topic);
    let refused_list = progress.deliveries.refused();
    let lost: u64 = tally.missing(&refused_list).iter().sum();
    let elapsed_s = tally
        .last_out_ms
        .map_or(start.elapsed().as_secs_f64(), |last| {
            ((last as f64 * 1000.0 - start_us as f64) / 1e6).max(1e-3)
        });
    let dns_total = plan.dns_queries.map_or(0, |f| f()) - dns_start;
    let mut dns_qps_peak = dns_peak.peak();
    if dns_qps_peak == 0.0 && dns_total > 0 {
        // A run shorter than a second: its average is its peak.
        dns_qps_peak = dns_total as f64 / elapsed_s;
    }
    let budget_qps =
        f64::from(config.dns.qps) * workers as f64 * config.dns.servers.len().max(1) as f64;
    let summary = Summary {
        run_id,
        brokers: cluster.bootstrap(),
        workers,
        sent: progress.deliveries.acked(),
        refused: refused_list.len() as u64,
        elapsed_s,
        throughput_rps: tally.distinct() as f64 / elapsed_s,
        lost,
        duplicates: tally.topics.iter().map(|t| t.duplicates).sum(),
        dead_lettered: tally.topics.iter().map(|t| t.dead_lettered).sum(),
        latency_ms: Percentiles::of(&mut latencies),
        cache: CacheRatios::from(&stats),
        dns: DnsFigures {
            queries: dns_total,
            qps_peak: dns_qps_peak,
            qps_mean: dns_total as f64 / elapsed_s,
            budget_qps: if workers > 0 && config.dns.enabled {
                budget_qps
            } else {
                0.0
            },
            outcomes: stats.dns,
        },
        lag_peak: timeline.iter().filter_map(|s| s.lag).max().unwrap_or(0),
        ts_diff_peak_s: timeline.iter().map(|s| s.ts_diff_s).fold(0.0, f64::max),
        topics: tally.topics.clone(),
        timeline,
        sample_record: tally.sample.clone(),
        peak_rss_mb: report::peak_rss_mb(),
    };
    Ok((summary, tally))
}

/// What the feed thread needs to reach the cluster: the mock cluster
/// itself cannot move threads, so the thread connects by address.
struct ClusterRef {
    brokers: String,
    properties: std::collections::BTreeMap<String, String>,
}

impl ClusterRef {
    fn of(cluster: &Cluster) -> Self {
        let properties = match cluster {
            Cluster::External { properties, .. } => properties.clone(),
            Cluster::Embedded(_) => Default::default(),
        };
        Self {
            brokers: cluster.bootstrap(),
            properties,
        }
    }

    fn cluster(self) -> Cluster {
        Cluster::External {
            brokers: self.brokers,
            properties: self.properties,
        }
    }
}

//! `loadtest demo`: the whole fleet on one machine with nothing installed.
//!
//! An embedded mock Kafka cluster, demo GeoIP databases, a fake DNS server
//! with realistic latency and failures, Redis when one is reachable, and
//! several enricher workers per topic in one consumer group; synthetic Zeek
//! logs (or recorded ones) are replayed through them and counted by id.
//!
//! `loadtest demo --pipe` shows `enricher pipe` instead ([`pipe`]): a fixed
//! sample through the binary, the output checked ([`check`]).

mod check;
pub mod pipe;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::cluster::Cluster;
use crate::feed::Pace;
use crate::report::Summary;
use crate::run::{self, Plan};
use crate::synth::{self, Spec};
use crate::{geo, source};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The synthetic data set (ignored with `logs`).
    pub spec: Spec,
    /// Recorded Zeek logs to replay instead (files or directories).
    pub logs: Vec<PathBuf>,
    /// Records per second, all topics together (`None`: as fast as possible).
    pub rate: Option<f64>,
    /// Workers per topic.
    pub workers: usize,
    /// A Redis to use as L2; else `127.0.0.1:6379` when it answers, else none.
    pub redis_url: Option<String>,
    /// Budget of each worker, queries per second.
    pub dns_qps: u32,
    /// Where the demo databases are written (a temporary directory when `None`).
    pub dir: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            spec: Spec {
                records: 180_000,
                addresses: 3_000,
                ..Spec::default()
            },
            logs: Vec::new(),
            rate: Some(30_000.0),
            workers: 2,
            redis_url: None,
            dns_qps: 100,
            dir: None,
        }
    }
}

/// Runs the demo and returns its report.
///
/// # Errors
///
/// When a part cannot start.
pub fn run(options: &DemoOptions) -> anyhow::Result<Summary> {
    let tmp = tempfile::tempdir()?;
    let dir = options
        .dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dbs = geo::write(&dir).context("writing the demo GeoIP databases")?;
    let dns = crate::FakeDns::start()?;
    let redis = options.redis_url.clone().or_else(|| {
        crate::redis_reachable("127.0.0.1:6379").then(|| "redis://127.0.0.1:6379".to_string())
    });
    let sets = if options.logs.is_empty() {
        crate::sets_of(synth::generate(&options.spec))
    } else {
        let (sets, skipped) = source::load(&options.logs)?;
        if skipped > 0 {
            eprintln!("Skipped {skipped} lines that are not records");
        }
        sets
    };
    let records: usize = sets.iter().map(|s| s.records.len()).sum();
    let m = crate::realistic_dns();
    eprintln!(
        "Demo: {} records in {} topics, {} workers per topic, GeoIP {}, fake DNS {} ({} ms median, {}‰ silent), L2 {}",
        crate::report::thousands(records as u64),
        sets.len(),
        options.workers,
        dbs.city.display(),
        dns.addr(),
        m.median.as_millis(),
        m.silence_per_mille,
        redis
            .as_deref()
            .unwrap_or("off (no Redis on 127.0.0.1:6379)")
    );
    eprintln!(
        "Starting an embedded Kafka cluster; a new consumer group waits about 3 s for its first assignment"
    );
    let cluster = Cluster::embedded()?;
    let mut config = crate::worker_config(&dbs, Some(dns.addr()), redis.as_deref());
    config.dns.qps = options.dns_qps;
    let counter = || dns.queries();
    let plan = Plan {
        sets,
        topic_prefix: "bro_".into(),
        pace: options.rate.map_or(Pace::Flat, Pace::Rate),
        partitions: None,
        workers_per_topic: options.workers,
        worker_config: config,
        idle_timeout: Duration::from_secs(30),
        sample_every: Duration::from_secs(1),
        progress: true,
        dns_queries: Some(&counter),
    };
    let (summary, _) = run::execute(&cluster, plan)?;
    drop(dns);
    Ok(summary)
}

//! Enricher workers run in this process, built and driven exactly as the
//! `enricher run` binary does it: [`enricher::core::build`] then
//! [`enricher::kafka::run`] on a thread of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::Context;
use enricher::config::Config;
use enricher::core::{self, Core};
use enricher::kafka::{self, Health, RunReport};
use enricher::stats::Snapshot;

/// One worker: its core, its runtime, and the thread running its consumer.
pub struct Worker {
    /// The input topic.
    pub topic: String,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
    thread: Option<JoinHandle<anyhow::Result<RunReport>>>,
    core: Core,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// A runtime for one worker's lookups.
///
/// # Errors
///
/// When the runtime cannot be built.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("enricher-lookups")
        .enable_all()
        .build()?)
}

/// Builds a worker's core (GeoIP, DNS, caches) on `runtime`.
///
/// # Errors
///
/// When the config is not usable.
pub fn build_core(config: &Config, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Core> {
    runtime
        .block_on(async { core::build(config) })
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl Worker {
    /// Starts a worker with a fresh core.
    ///
    /// # Errors
    ///
    /// When the config is not usable.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let runtime = runtime()?;
        let core = build_core(config, &runtime)?;
        Self::start_with(config, core, runtime)
    }

    /// Starts a worker on a core built (and perhaps warmed) beforehand.
    ///
    /// # Errors
    ///
    /// When the worker thread cannot be spawned.
    pub fn start_with(
        config: &Config,
        core: Core,
        runtime: tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Health::default());
        let thread = {
            let (config, enricher, handle, stop, health) = (
                config.clone(),
                Arc::clone(&core.enricher),
                runtime.handle().clone(),
                Arc::clone(&stop),
                Arc::clone(&health),
            );
            std::thread::Builder::new()
                .name("enricher-consumer".into())
                .spawn(move || {
                    kafka::run(&config, enricher, handle, stop, health)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                })
                .context("spawning a worker thread")?
        };
        Ok(Self {
            topic: config.kafka.input_topic.clone(),
            stop,
            health,
            thread: Some(thread),
            core,
            runtime,
        })
    }

    /// The enricher's counters.
    pub fn stats(&self) -> Snapshot {
        self.core.enricher.stats().snapshot()
    }

    /// Whether the group has given it an assignment.
    pub fn assigned(&self) -> bool {
        self.health.assigned.load(Ordering::Relaxed)
    }

    /// Asks it to stop without waiting (SIGTERM's first half).
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops it the way SIGTERM does: drain, commit, leave the group.
    ///
    /// # Errors
    ///
    /// When the worker ended with an error or panicked.
    pub fn stop(mut self) -> anyhow::Result<RunReport> {
        self.signal_stop();
        let report = match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("worker thread panicked"))?,
            None => Ok(RunReport::default()),
        };
        drop(self.core);
        self.runtime.shutdown_background();
        report
    }
}

/// Workers for several topics, several per topic, one consumer group per topic.
#[derive(Debug, Default)]
pub struct Fleet {
    /// The workers.
    pub workers: Vec<Worker>,
}

impl Fleet {
    /// Starts `per_topic` workers for each `(input topic, group)`, each with
    /// `base` as its config.
    ///
    /// # Errors
    ///
    /// When a worker cannot start.
    pub fn start(
        base: &Config,
        topics: &[(String, String)],
        per_topic: usize,
    ) -> anyhow::Result<Self> {
        let mut workers = Vec::new();
        for (topic, group) in topics {
            let mut config = base.clone();
            config.kafka.input_topic = topic.clone();
            config.kafka.group_id = group.clone();
            config.kafka.output_topic = None;
            config.kafka.dlq_topic = None;
            for _ in 0..per_topic {
                workers.push(Worker::start(&config)?);
            }
        }
        Ok(Self { workers })
    }

    /// The enrichers' counters, summed.
    pub fn stats(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for w in &self.workers {
            add(&mut total, &w.stats());
        }
        total
    }

    /// Stops every worker (all asked at once, then each waited for).
    ///
    /// # Errors
    ///
    /// The first worker error.
    pub fn stop(self) -> anyhow::Result<RunReport> {
        for w in &self.workers {
            w.signal_stop();
        }
        let mut total = RunReport::default();
        for w in self.workers {
            let r = w.stop()?;
            total.consumed += r.consumed;
            total.produced += r.produced;
            total.dead_lettered += r.dead_lettered;
            total.retried += r.retried;
            total.commits += r.commits;
        }
        Ok(total)
    }
}

/// Adds `b` into `a`.
pub fn add(a: &mut Snapshot, b: &Snapshot) {
    a.records_in += b.records_in;
    a.enriched += b.enriched;
    a.rejected += b.rejected;
    a.deadline_hit += b.deadline_hit;
    a.not_an_address += b.not_an_address;
    a.cache.l1_hits += b.cache.l1_hits;
    a.cache.l1_misses += b.cache.l1_misses;
    a.cache.l2_hits += b.cache.l2_hits;
    a.cache.l2_misses += b.cache.l2_misses;
    a.cache.l2_unavailable += b.cache.l2_unavailable;
    a.dns.ok += b.dns.ok;
    a.dns.nxdomain += b.dns.nxdomain;
    a.dns.no_record += b.dns.no_record;
    a.dns.servfail += b.dns.servfail;
    a.dns.timeout += b.dns.timeout;
    a.dns.invalid += b.dns.invalid;
    a.dns.over_budget += b.dns.over_budget;
    a.dns.error += b.dns.error;
}

//! `enricher run`: consume one topic, a list or a pattern in a consumer
//! group, enrich, produce each record to its own topic's output, commit in
//! order. The files are the steps a record takes:
//!
//! ```text
//! consume.rs   consumer thread: poll --> acker.track --> Batch
//! lane.rs      lane thread:     enrich_cached --Done--> Output::send(opaque)
//!                                      '--Pending--> tokio task: enrich, Output::send_async
//! produce.rs   lane, task:      Output::send --> the producer (records, dead letters, resends)
//! delivery.rs  producer thread: delivery report --ok--> acks ----------.
//!                                      '--failed--> retries --.        |
//! partitions.rs consumer thread: settle: acks --> acker;  retries --> Output::resend (after a backoff)
//!                               forwards (delivered alerts) --> Output::forward: on to the output topic
//! commit.rs    every tick:      acker.commits_due --> commit (sync) --> acker.committed
//! rebalance.rs inside poll:     assign: a slot per partition (a route per new topic); revoke: hand off, drain, commit, release
//! route.rs     a topic's output, dead-letter and alerts names (resolved at its first assignment) and counts
//! clients.rs   the clients' configurations and their errors;  health.rs what the probes read
//! ```
//!
//! With `worker.enrich_threads = 0` the consumer thread runs the lane
//! itself. One thread owns the consumer and the acker, so the rebalance
//! callbacks (which librdkafka runs inside `poll`) can drain a revoked
//! partition by applying delivery reports themselves while they wait.
//! Records that miss L1 become tokio tasks that produce by themselves, so
//! they keep going while the consumer thread is busy in a rebalance. A
//! record's delivery opaque packs its partition's assignment slot and its
//! offset; the slot names the epoch, so reports from an earlier assignment
//! are fenced, and its topic's route (output, dead-letter and alerts topics,
//! named once when the topic is first assigned). A record that matched an
//! indicator goes to its alerts topic first; that delivery report hands it
//! back to the consumer thread, which sends it to the output topic, and that
//! delivery acknowledges the offset: committed only after both. A record too large to produce
//! is dead-lettered (without its payload if that is too large too), never
//! retried.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acker::{Acker, AckerConfig};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;

use crate::config::{Config, ConfigError};
use crate::enrich::{Enricher, Scratch};

mod clients;
mod commit;
mod consume;
mod delivery;
mod health;
mod lane;
mod partitions;
mod produce;
mod rebalance;
mod route;
mod streak;

pub use clients::check_clients;
pub(crate) use clients::configured;
pub use health::Health;

use consume::{Limits, Loop};
use lane::{Lane, Lanes};
use partitions::{Routing, Shared, State};
use produce::{Output, Resends};
use rebalance::WorkerContext;
use streak::{Messages, Streak};

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Records taken from the input topics.
    pub consumed: u64,
    /// Records produced to the output topics.
    pub produced: u64,
    /// Records produced to the dead-letter topics.
    pub dead_lettered: u64,
    /// Failed deliveries sent again.
    pub retried: u64,
    /// Offsets committed (partition commits that succeeded).
    pub commits: u64,
    /// Records taken and not delivered when the shutdown grace ran out: not
    /// committed, so the partition's next owner reads them again.
    pub undelivered: u64,
}

const COMMIT_FAILURES: Messages = Messages {
    started: "Offset commits failing; retrying at the next tick",
    ongoing: "Offset commits still failing",
    ended: "Offset commits succeed again",
};

/// Runs the worker until `stop` is set, then drains, commits and leaves the
/// group. Blocking: call it on its own thread. `runtime` runs the lookups
/// of records that miss L1.
pub fn run(
    config: &Config,
    enricher: Arc<Enricher>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
) -> Result<RunReport, WorkerError> {
    config.validate_run()?;
    let started = Output::start(config)?;
    let output = Arc::new(started.output);
    let slot = Arc::new(Mutex::new(None));
    let consumer = clients::consumer(config, WorkerContext::new(Arc::clone(&slot)))?;
    let acker = Acker::new(
        AckerConfig {
            commit_interval: Duration::from_millis(config.worker.commit_interval_ms),
            log_interval: Duration::from_secs(config.worker.progress_log_secs.max(1)),
        },
        Instant::now(),
    );
    let shared = Arc::new(Shared::new(
        State::new(
            acker,
            Resends::new(config),
            Streak::new(COMMIT_FAILURES),
            Routing::new(&config.kafka, !config.intel.files.is_empty()),
        ),
        Arc::clone(&output),
        started.deliveries,
        Duration::from_millis(config.worker.drain_timeout_ms),
        Arc::clone(&health),
    ));
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&shared));
    let inputs = config.kafka.inputs();
    consumer.subscribe(&inputs)?;
    tracing::info!(
        topics = ?inputs,
        group = %config.kafka.group_id,
        "Worker started"
    );
    let lane = || Lane {
        output: Arc::clone(&output),
        enricher: Arc::clone(&enricher),
        runtime: runtime.clone(),
        spares: Arc::clone(&shared.spares),
        max_record_bytes: config.input.max_record_bytes,
        preserve_order: config.worker.preserve_order,
        passthrough: config.worker.passthrough,
        scratch: Scratch::with_front(),
        out: Vec::with_capacity(64 * 1024),
        produced: 0,
    };
    // Passthrough copies on the consumer thread: handing records to another
    // thread would only add work.
    let threads = if config.worker.passthrough {
        0
    } else {
        config.worker.enrich_threads
    };
    let lanes = if threads > 0 {
        let (lanes, senders) =
            Lanes::start((0..threads).map(|_| lane()).collect()).map_err(|e| {
                ConfigError::new(
                    "worker.enrich_threads",
                    format!("cannot start a thread: {e}"),
                )
            })?;
        shared.set_lanes(senders);
        Some(lanes)
    } else {
        None
    };
    let mut worker = Loop::new(
        Arc::clone(&shared),
        Arc::clone(&enricher),
        lane(),
        lanes,
        Limits {
            per_partition: config.worker.max_in_flight_per_partition,
            total: config.worker.max_in_flight,
            shutdown_grace: Duration::from_millis(config.worker.shutdown_grace_ms),
        },
    );
    worker.run(&consumer, &stop);
    drop(worker);
    let state = shared.state();
    let (produced, dead_lettered, retried) = output.counts();
    let report = RunReport {
        consumed: state.consumed,
        produced,
        dead_lettered,
        retried,
        commits: state.commits,
        undelivered: state.undelivered,
    };
    drop(state);
    // Break the context's reference cycle before the clients are dropped.
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(report)
}

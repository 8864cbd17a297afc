//! `[kafka]` and `[worker]`: what `enricher run` reads and writes, and how
//! it paces, commits and stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, positive};

/// The most enrichment threads a worker may run (`worker.enrich_threads`).
pub const MAX_ENRICH_THREADS: usize = 64;

/// librdkafka properties the worker sets itself; overriding them would
/// break at-least-once delivery or the worker's own bookkeeping.
pub const RESERVED_PROPERTIES: [&str; 6] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
    "enable.idempotence",
    "statistics.interval.ms",
];

/// Compression of produced records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression, the default.
    None,
    /// LZ4: cheap on CPU.
    Lz4,
    /// Zstandard: smaller, more CPU.
    Zstd,
    /// Snappy.
    Snappy,
    /// Gzip.
    Gzip,
}

impl Compression {
    /// librdkafka's `compression.type` value.
    pub fn librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]` (`--brokers`).
    pub brokers: String,
    /// Consumer group id; every worker of one topic shares it (`--group`).
    pub group_id: String,
    /// The topic to enrich; `enricher run` needs it (`--input-topic`).
    pub input_topic: String,
    /// Where enriched records go; default `<input_topic>_enr` (`--output-topic`).
    pub output_topic: Option<String>,
    /// Where records that cannot be parsed go, with the reason in headers;
    /// default `<input_topic>_dlq` (`--dlq-topic`).
    pub dlq_topic: Option<String>,
    /// Compression of produced records: `none`, `lz4`, `zstd`, `snappy` or
    /// `gzip`. `none` by default, as in Logstash, Vector and Telegraf: lz4
    /// cost the worker about 1 µs a record and tansu 20 (loadtest bench);
    /// choose `lz4` or `zstd` where network or disk is dear (the chart does).
    pub compression: Compression,
    /// librdkafka's idempotent producer. Off by default: its in-flight cap
    /// (bundled librdkafka 2.12) busy-waits on a broker slower than the
    /// producer, a core burnt per worker (docs/decisions.md). Off, the
    /// producer sends one request at a time per broker
    /// (`max.in.flight.requests.per.connection = 1`), so records keep their
    /// order through retries, and a retry may write a record twice, which
    /// at-least-once delivery allows anyway.
    pub idempotence: bool,
    /// librdkafka properties for both consumer and producer, passed as they
    /// are (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `ssl.ca.location`, ...). See librdkafka's CONFIGURATION.md.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only (`session.timeout.ms`,
    /// `auto.offset.reset`, ...).
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (`linger.ms`,
    /// `message.timeout.ms`, ...).
    pub producer_properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "enricher".into(),
            input_topic: String::new(),
            output_topic: None,
            dlq_topic: None,
            compression: Compression::None,
            idempotence: false,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The output topic, defaulted from the input topic.
    pub fn output_topic(&self) -> String {
        self.output_topic
            .clone()
            .unwrap_or_else(|| format!("{}_enr", self.input_topic))
    }

    /// The dead-letter topic, defaulted from the input topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}_dlq", self.input_topic))
    }

    /// What every command accepts: no property the worker sets itself.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for (section, props) in [
            ("kafka.properties", &self.properties),
            ("kafka.consumer_properties", &self.consumer_properties),
            ("kafka.producer_properties", &self.producer_properties),
        ] {
            for key in props.keys() {
                if RESERVED_PROPERTIES.contains(&key.as_str()) {
                    return Err(ConfigError::new(
                        format!("{section}.{key}"),
                        "is set by the worker itself (at-least-once needs it); use the matching kafka key",
                    ));
                }
            }
        }
        Ok(())
    }

    /// What `enricher run` needs: somewhere to read from, and three distinct topics.
    pub(super) fn check_run(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::new("kafka.brokers", "must not be empty"));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::new("kafka.group_id", "must not be empty"));
        }
        if self.input_topic.trim().is_empty() {
            return Err(ConfigError::new(
                "kafka.input_topic",
                "must be set (--input-topic)",
            ));
        }
        let output = self.output_topic();
        if output == self.input_topic {
            return Err(ConfigError::new(
                "kafka.output_topic",
                "must differ from the input topic",
            ));
        }
        if self.dlq_topic() == self.input_topic || self.dlq_topic() == output {
            return Err(ConfigError::new(
                "kafka.dlq_topic",
                "must differ from the input and output topics",
            ));
        }
        Ok(())
    }
}

/// `[worker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Records of one partition taken but not yet produced, at most; the
    /// partition is paused at this bound and resumed at half of it.
    pub max_in_flight_per_partition: usize,
    /// Records taken but not yet produced, across partitions, at most. With
    /// a broker that takes L seconds to acknowledge a produce request, the
    /// worker moves at most this many / L records a second; the default is
    /// librdkafka's own producer queue bound.
    pub max_in_flight: usize,
    /// How often offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// On a rebalance, how long revoked partitions may drain their in-flight
    /// records before their offsets are committed and they are released, in milliseconds.
    pub drain_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long in-flight records may take before the
    /// final commit and exit, in milliseconds; when it runs out with records
    /// undelivered the worker exits 75. The Kubernetes termination grace
    /// period should be a few seconds longer.
    pub shutdown_grace_ms: u64,
    /// Failed deliveries are sent again after this delay (milliseconds),
    /// doubled while they keep failing, with jitter.
    pub resend_backoff_ms: u64,
    /// The longest delay between resends of failed deliveries (milliseconds).
    pub resend_backoff_max_ms: u64,
    /// Produce each partition's records in input order, to the same
    /// partition number of the output topic. Records that wait for lookups
    /// then hold up the records behind them.
    pub preserve_order: bool,
    /// Copy records to the output topic unchanged: no parsing, no lookups,
    /// no dead letters. The load test's ceiling, and a bypass while a
    /// dependency is being repaired.
    pub passthrough: bool,
    /// Threads that enrich and produce, fed by the consumer thread in
    /// batches (each partition always to the same thread, so
    /// `preserve_order` holds); 0 enriches on the consumer thread itself; at
    /// most 64. Passthrough always copies on the consumer thread.
    pub enrich_threads: usize,
    /// Bind address of `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`).
    pub metrics_addr: SocketAddr,
    /// How often librdkafka reports statistics (high watermarks, broker state), in milliseconds.
    pub stats_interval_ms: u64,
    /// How often each partition logs its progress, in seconds (0: never).
    pub progress_log_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_partition: 25_000,
            max_in_flight: 100_000,
            commit_interval_ms: 1_000,
            drain_timeout_ms: 10_000,
            shutdown_grace_ms: 25_000,
            resend_backoff_ms: 100,
            resend_backoff_max_ms: 10_000,
            preserve_order: false,
            passthrough: false,
            enrich_threads: 1,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9102)),
            stats_interval_ms: 5_000,
            progress_log_secs: 10,
        }
    }
}

impl WorkerConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive(
            "worker.max_in_flight_per_partition",
            self.max_in_flight_per_partition as u64,
        )?;
        positive("worker.max_in_flight", self.max_in_flight as u64)?;
        positive("worker.commit_interval_ms", self.commit_interval_ms)?;
        if self.enrich_threads > MAX_ENRICH_THREADS {
            return Err(ConfigError::new(
                "worker.enrich_threads",
                format!("must be at most {MAX_ENRICH_THREADS}"),
            ));
        }
        positive("worker.stats_interval_ms", self.stats_interval_ms)
    }

    /// What `enricher run` needs on top of [`WorkerConfig::check`].
    pub(super) fn check_run(&self) -> Result<(), ConfigError> {
        if self.max_in_flight_per_partition > self.max_in_flight {
            return Err(ConfigError::new(
                "worker.max_in_flight_per_partition",
                "is above worker.max_in_flight",
            ));
        }
        Ok(())
    }
}

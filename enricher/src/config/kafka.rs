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
    /// The topic to enrich (`--input-topic`); `enricher run` needs it or `input_topics`.
    pub input_topic: String,
    /// Several topics for one worker (`--input-topics a,b`), instead of
    /// `input_topic`; an entry starting with `^` is a regular expression
    /// (librdkafka's), and topics that match it later are picked up at the
    /// next metadata refresh (30 s unless `consumer_properties` sets
    /// `topic.metadata.refresh.interval.ms`). A matching topic shaped like
    /// an output (`output_topic_template`, `dlq_topic_template`,
    /// `intel_topic_template`, or a redrive's `<dlq>_parked`) is never
    /// consumed. Partitions are dealt out round robin over all the topics
    /// unless `consumer_properties` sets `partition.assignment.strategy`.
    pub input_topics: Vec<String>,
    /// Where enriched records go, with one literal input topic only;
    /// default `output_topic_template` (`--output-topic`).
    pub output_topic: Option<String>,
    /// Where records that cannot be parsed go, with the reason in headers,
    /// with one literal input topic only; default `dlq_topic_template` (`--dlq-topic`).
    pub dlq_topic: Option<String>,
    /// Each input topic's output topic, `{topic}` standing for the input topic's name.
    pub output_topic_template: String,
    /// Each input topic's dead-letter topic, `{topic}` standing for the input topic's name.
    pub dlq_topic_template: String,
    /// Where records that matched a threat-intelligence indicator
    /// (`intel.files`) also go, with one literal input topic only; empty
    /// turns alerts off; default `intel_topic_template` (`--intel-topic`).
    pub intel_topic: Option<String>,
    /// Each input topic's alerts topic, `{topic}` standing for the input
    /// topic's name; empty turns alerts off. A matched record goes there
    /// first, then to the output topic; its offset is committed once both
    /// are acknowledged. Used only with `intel.files`.
    pub intel_topic_template: String,
    /// Compression of produced records: `none`, `lz4`, `zstd`, `snappy` or
    /// `gzip`. `none` by default, as in Logstash, Vector and Telegraf (what
    /// lz4 costs: docs/benchmarks.md); choose `lz4` or `zstd` where network
    /// or disk is dear (the chart does).
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
            input_topics: Vec::new(),
            output_topic: None,
            dlq_topic: None,
            output_topic_template: DEFAULT_OUTPUT_TEMPLATE.into(),
            dlq_topic_template: DEFAULT_DLQ_TEMPLATE.into(),
            intel_topic: None,
            intel_topic_template: DEFAULT_INTEL_TEMPLATE.into(),
            compression: Compression::None,
            idempotence: false,
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The input topics as given: `input_topic`, or `input_topics`.
    pub fn inputs(&self) -> Vec<&str> {
        if self.input_topics.is_empty() {
            vec![self.input_topic.as_str()]
        } else {
            self.input_topics.iter().map(String::as_str).collect()
        }
    }

    /// Whether the worker subscribes to a pattern (an input starting with `^`).
    pub fn has_pattern(&self) -> bool {
        self.inputs().iter().any(|t| is_pattern(t))
    }

    /// The output topic of the first input topic (the only one, when the
    /// fixed `output_topic` applies).
    pub fn output_topic(&self) -> String {
        self.output_topic_for(self.inputs().first().copied().unwrap_or_default())
    }

    /// The dead-letter topic of the first input topic.
    pub fn dlq_topic(&self) -> String {
        self.dlq_topic_for(self.inputs().first().copied().unwrap_or_default())
    }

    /// Where `topic`'s enriched records go: `output_topic`, or the template.
    pub fn output_topic_for(&self, topic: &str) -> String {
        match &self.output_topic {
            Some(fixed) => fixed.clone(),
            None => self.output_topic_template.replace(TOPIC, topic),
        }
    }

    /// Where `topic`'s dead letters go: `dlq_topic`, or the template.
    pub fn dlq_topic_for(&self, topic: &str) -> String {
        match &self.dlq_topic {
            Some(fixed) => fixed.clone(),
            None => self.dlq_topic_template.replace(TOPIC, topic),
        }
    }

    /// Where `topic`'s matched records also go: `intel_topic`, or the
    /// template; `None` when alerts are off (either is empty).
    pub fn intel_topic_for(&self, topic: &str) -> Option<String> {
        match &self.intel_topic {
            Some(fixed) => (!fixed.is_empty()).then(|| fixed.clone()),
            None => (!self.intel_topic_template.is_empty())
                .then(|| self.intel_topic_template.replace(TOPIC, topic)),
        }
    }

    /// Whether `topic` is one the worker writes (an output or a dead-letter
    /// topic or an alerts topic by the templates, or a redrive's parking topic of one): a
    /// pattern that matches it must not consume it, or the worker would
    /// enrich its own output.
    pub fn is_own_output(&self, topic: &str) -> bool {
        let fixed = [&self.output_topic, &self.dlq_topic, &self.intel_topic]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .any(|t| t == topic || topic.strip_suffix(PARKED) == Some(t.as_str()));
        let shaped = |template: &str, name: &str| {
            template.split_once(TOPIC).is_some_and(|(head, tail)| {
                name.len() > head.len() + tail.len()
                    && name.starts_with(head)
                    && name.ends_with(tail)
            })
        };
        fixed
            || shaped(&self.output_topic_template, topic)
            || shaped(&self.dlq_topic_template, topic)
            || shaped(&self.intel_topic_template, topic)
            || topic
                .strip_suffix(PARKED)
                .is_some_and(|t| shaped(&self.dlq_topic_template, t))
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
        for (key, template) in [
            ("kafka.output_topic_template", &self.output_topic_template),
            ("kafka.dlq_topic_template", &self.dlq_topic_template),
            ("kafka.intel_topic_template", &self.intel_topic_template),
        ] {
            // An empty alerts template turns alerts off.
            if template.is_empty() && key == "kafka.intel_topic_template" {
                continue;
            }
            if template.matches(TOPIC).count() != 1 || template == TOPIC {
                return Err(ConfigError::new(
                    key,
                    "must hold `{topic}` once, with something around it",
                ));
            }
        }
        if self.output_topic_template == self.dlq_topic_template {
            return Err(ConfigError::new(
                "kafka.dlq_topic_template",
                "must differ from kafka.output_topic_template",
            ));
        }
        if [&self.output_topic_template, &self.dlq_topic_template]
            .contains(&&self.intel_topic_template)
        {
            return Err(ConfigError::new(
                "kafka.intel_topic_template",
                "must differ from kafka.output_topic_template and kafka.dlq_topic_template",
            ));
        }
        Ok(())
    }

    /// What `enricher run` needs: somewhere to read from, and distinct topics.
    pub(super) fn check_run(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::new("kafka.brokers", "must not be empty"));
        }
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::new("kafka.group_id", "must not be empty"));
        }
        let one = self.input_topics.is_empty();
        if one && self.input_topic.trim().is_empty() {
            return Err(ConfigError::new(
                "kafka.input_topic",
                "must be set (--input-topic), or kafka.input_topics",
            ));
        }
        if !one && !self.input_topic.is_empty() {
            return Err(ConfigError::new(
                "kafka.input_topics",
                "set either kafka.input_topic or kafka.input_topics, not both",
            ));
        }
        if self.input_topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::new(
                "kafka.input_topics",
                "must not hold an empty name",
            ));
        }
        let inputs = self.inputs();
        let single = inputs.len() == 1 && !is_pattern(inputs[0]);
        for (key, fixed) in [
            ("kafka.output_topic", &self.output_topic),
            ("kafka.dlq_topic", &self.dlq_topic),
            ("kafka.intel_topic", &self.intel_topic),
        ] {
            let off = key == "kafka.intel_topic" && fixed.as_deref() == Some("");
            if fixed.is_some() && !single && !off {
                return Err(ConfigError::new(
                    key,
                    "applies to one literal input topic only; with several topics or a pattern use the template",
                ));
            }
        }
        for input in inputs.iter().filter(|t| !is_pattern(t)) {
            let output = self.output_topic_for(input);
            let dlq = self.dlq_topic_for(input);
            if inputs.contains(&output.as_str()) {
                return Err(ConfigError::new(
                    if single {
                        "kafka.output_topic"
                    } else {
                        "kafka.input_topics"
                    },
                    format!("the output topic {output} is an input topic too"),
                ));
            }
            if inputs.contains(&dlq.as_str()) || dlq == output {
                return Err(ConfigError::new(
                    if single {
                        "kafka.dlq_topic"
                    } else {
                        "kafka.input_topics"
                    },
                    format!(
                        "the dead-letter topic {dlq} must differ from the input and output topics"
                    ),
                ));
            }
            if let Some(intel) = self.intel_topic_for(input)
                && (inputs.contains(&intel.as_str()) || intel == output || intel == dlq)
            {
                return Err(ConfigError::new(
                    if single && self.intel_topic.is_some() {
                        "kafka.intel_topic"
                    } else {
                        "kafka.intel_topic_template"
                    },
                    format!(
                        "the alerts topic {intel} must differ from the input, output and dead-letter topics"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What the templates replace by the input topic's name.
const TOPIC: &str = "{topic}";

/// The suffix of a redrive's parking topic (`enricher redrive`).
const PARKED: &str = "_parked";

/// `kafka.output_topic_template` unless configured.
const DEFAULT_OUTPUT_TEMPLATE: &str = "{topic}_enr";

/// `kafka.dlq_topic_template` unless configured.
const DEFAULT_DLQ_TEMPLATE: &str = "{topic}_dlq";

/// `kafka.intel_topic_template` unless configured.
const DEFAULT_INTEL_TEMPLATE: &str = "{topic}_intel";

/// Whether an input topic is a pattern (librdkafka subscribes to an entry
/// starting with `^` as a regular expression).
pub fn is_pattern(topic: &str) -> bool {
    topic.starts_with('^')
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(inputs: &[&str]) -> KafkaConfig {
        KafkaConfig {
            input_topics: inputs.iter().map(|t| t.to_string()).collect(),
            ..KafkaConfig::default()
        }
    }

    fn problem(k: &KafkaConfig) -> String {
        k.check()
            .and_then(|()| k.check_run())
            .map(|()| "ok".to_string())
            .unwrap_or_else(|e| e.key)
    }

    #[test]
    fn each_topic_has_its_own_output_and_dead_letters_by_the_templates() {
        let mut k = kafka(&["bro_conn", "bro_dns"]);
        assert_eq!(problem(&k), "ok");
        assert_eq!(k.output_topic_for("bro_dns"), "bro_dns_enr");
        assert_eq!(k.dlq_topic_for("bro_dns"), "bro_dns_dlq");
        k.output_topic_template = "enriched.{topic}".into();
        assert_eq!(k.output_topic_for("bro_dns"), "enriched.bro_dns");
        let one = KafkaConfig {
            input_topic: "a".into(),
            output_topic: Some("b".into()),
            ..KafkaConfig::default()
        };
        assert_eq!(
            (one.output_topic(), one.dlq_topic()),
            ("b".into(), "a_dlq".into())
        );
    }

    #[test]
    fn exactly_one_way_to_name_the_inputs_and_fixed_outputs_only_for_one_topic() {
        assert_eq!(problem(&KafkaConfig::default()), "kafka.input_topic");
        let mut both = kafka(&["a"]);
        both.input_topic = "b".into();
        assert_eq!(problem(&both), "kafka.input_topics");
        assert_eq!(problem(&kafka(&["a", ""])), "kafka.input_topics");
        let mut fixed = kafka(&["a", "b"]);
        fixed.output_topic = Some("out".into());
        assert_eq!(problem(&fixed), "kafka.output_topic");
        let mut fixed = kafka(&["^bro_.*"]);
        fixed.dlq_topic = Some("dead".into());
        assert_eq!(problem(&fixed), "kafka.dlq_topic");
        let mut fixed = kafka(&["a"]);
        fixed.dlq_topic = Some("dead".into());
        assert_eq!(problem(&fixed), "ok", "one literal topic in the list");
        assert_eq!(problem(&kafka(&["a", "a_enr"])), "kafka.input_topics");
        let mut t = kafka(&["a"]);
        t.output_topic_template = "out".into();
        assert_eq!(problem(&t), "kafka.output_topic_template");
        t.output_topic_template = "{topic}_dlq".into();
        assert_eq!(problem(&t), "kafka.dlq_topic_template");
    }

    #[test]
    fn a_pattern_never_consumes_what_the_worker_writes() {
        let k = kafka(&["^bro_.*"]);
        assert!(k.has_pattern());
        for own in [
            "bro_conn_enr",
            "bro_conn_dlq",
            "bro_conn_dlq_parked",
            "bro_conn_intel",
        ] {
            assert!(k.is_own_output(own), "{own}");
        }
        for input in ["bro_conn", "bro_enrx", "_enr", "bro_parked"] {
            assert!(!k.is_own_output(input), "{input}");
        }
        let mut k = kafka(&["^raw\\..*"]);
        k.output_topic_template = "enriched.{topic}".into();
        assert!(k.is_own_output("enriched.raw.conn"));
        assert!(!k.is_own_output("raw.conn"));
    }

    #[test]
    fn alerts_go_to_their_own_topic_unless_turned_off() {
        let mut k = kafka(&["a", "b"]);
        assert_eq!(k.intel_topic_for("b").as_deref(), Some("b_intel"));
        k.intel_topic_template = String::new();
        assert_eq!(problem(&k), "ok");
        assert_eq!(k.intel_topic_for("b"), None);
        k.intel_topic_template = "alerts".into();
        assert_eq!(problem(&k), "kafka.intel_topic_template");
        k.intel_topic_template = "{topic}_enr".into();
        assert_eq!(problem(&k), "kafka.intel_topic_template");
        k.intel_topic_template = "{topic}_intel".into();
        k.intel_topic = Some("alerts".into());
        assert_eq!(problem(&k), "kafka.intel_topic", "fixed: one topic only");
        k.intel_topic = Some(String::new());
        assert_eq!(problem(&k), "ok", "empty turns alerts off for any input");
        assert_eq!(k.intel_topic_for("a"), None);
        let mut one = kafka(&["a"]);
        one.intel_topic = Some("a_enr".into());
        assert_eq!(problem(&one), "kafka.intel_topic");
        one.intel_topic = Some("alerts".into());
        assert_eq!(problem(&one), "ok");
        assert_eq!(one.intel_topic_for("a").as_deref(), Some("alerts"));
        assert!(one.is_own_output("alerts"));
        let mut clash = kafka(&["a", "a_intel"]);
        assert_eq!(problem(&clash), "kafka.intel_topic_template");
        clash.intel_topic_template = String::new();
        assert_eq!(problem(&clash), "ok");
    }
}

//! The Kafka cluster a run talks to: librdkafka's mock cluster embedded in
//! this process, or any cluster given by `--brokers`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use test_support::kafka::MockKafka;

/// The topic config that asks the broker to stamp each record with the
/// time it appended it.
pub const LOG_APPEND_TIME: (&str, &str) = ("message.timestamp.type", "LogAppendTime");

/// An embedded mock cluster, or the address of a real one.
pub enum Cluster {
    /// librdkafka's mock cluster, alive as long as this value.
    Embedded(MockKafka),
    /// A cluster reached at these bootstrap servers.
    External {
        /// `host:port,...`
        brokers: String,
        /// Extra librdkafka properties (TLS, SASL) for every client.
        properties: BTreeMap<String, String>,
    },
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.bootstrap())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts an embedded mock cluster with one broker.
    ///
    /// # Errors
    ///
    /// When librdkafka cannot start it.
    pub fn embedded() -> anyhow::Result<Self> {
        Ok(Self::Embedded(MockKafka::start(1)?))
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> String {
        match self {
            Self::Embedded(mock) => mock.bootstrap().to_string(),
            Self::External { brokers, .. } => brokers.clone(),
        }
    }

    /// The extra librdkafka properties every client gets (TLS, SASL).
    pub fn properties(&self) -> BTreeMap<String, String> {
        match self {
            Self::External { properties, .. } => properties.clone(),
            Self::Embedded(_) => BTreeMap::new(),
        }
    }

    /// Whether the cluster lives in this process.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Embedded(_))
    }

    /// A client config with the bootstrap servers and extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        if let Self::External { properties, .. } = self {
            for (k, v) in properties {
                c.set(k, v);
            }
        }
        c
    }

    /// Creates a topic; one that exists already is left as it is.
    ///
    /// # Errors
    ///
    /// When the cluster refuses for another reason.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        self.create_topic_with(topic, partitions, &[])
    }

    /// Creates a topic with topic configs (`message.timestamp.type`, ...);
    /// one that exists already is left as it is. The mock cluster has no
    /// admin API and takes no configs: they are ignored there. Elsewhere it
    /// waits until the metadata shows every partition.
    ///
    /// # Errors
    ///
    /// When the cluster refuses for another reason.
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        match self {
            Self::Embedded(mock) => mock.create_topic(topic, partitions),
            Self::External { .. } => {
                let admin: AdminClient<DefaultClientContext> = self
                    .client_config()
                    .create()
                    .context("creating an admin client")?;
                let mut topic_spec = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
                for (k, v) in configs {
                    topic_spec = topic_spec.set(k, v);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let results = rt.block_on(admin.create_topics(
                    [&topic_spec],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
                ))?;
                for result in results {
                    match result {
                        Ok(_) => {}
                        Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
                    }
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while self.partitions(topic).unwrap_or(0) < partitions {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "topic {topic} did not show {partitions} partitions within 30 s"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            }
        }
    }

    /// Whether the cluster stamps records with the time it appended them
    /// when a topic asks for it (`message.timestamp.type=LogAppendTime`):
    /// a record sent with a timestamp from 1970 to a topic created so is
    /// read back. Kafka does; librdkafka's mock cluster and tansu 0.6.0 keep
    /// the producer's time (and the mock's produce answers carry a made-up
    /// append time of 1234 ms, so only reading back tells).
    ///
    /// # Errors
    ///
    /// When the probe topic cannot be created, written or read.
    pub fn honours_log_append_time(&self, probe_topic: &str) -> anyhow::Result<bool> {
        use rdkafka::Message as _;
        use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
        self.create_topic_with(probe_topic, 1, &[LOG_APPEND_TIME])?;
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            self.client_config().create()?;
        producer
            .send(
                BaseRecord::<(), [u8]>::to(probe_topic)
                    .payload(b"probe".as_slice())
                    .partition(0)
                    .timestamp(1_000),
            )
            .map_err(|(e, _)| anyhow::anyhow!("producing the timestamp probe: {e}"))?;
        producer.flush(Duration::from_secs(30))?;
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", format!("{probe_topic}-reader"))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(probe_topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) {
                let now_ms = crate::feed::now_us() as i64 / 1000;
                return Ok(match msg.timestamp() {
                    rdkafka::Timestamp::LogAppendTime(ms) => (ms - now_ms).abs() < 3_600_000,
                    _ => false,
                });
            }
        }
        anyhow::bail!("the timestamp probe did not come back within 30 s")
    }

    /// The number of partitions of `topic` (0 when it does not exist).
    ///
    /// # Errors
    ///
    /// When metadata cannot be fetched.
    pub fn partitions(&self, topic: &str) -> anyhow::Result<i32> {
        let consumer: BaseConsumer = self.client_config().create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32))
    }
}

/// Reads a consumer group's lag on a set of topics: high watermarks minus
/// committed offsets, summed over partitions.
pub struct LagProbe {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl LagProbe {
    /// A probe for `group` on `(topic, partitions)` pairs.
    ///
    /// # Errors
    ///
    /// When the client cannot be created.
    pub fn new(cluster: &Cluster, group: &str, topics: &[(String, i32)]) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = cluster
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for p in 0..*partitions {
                tpl.add_partition(topic, p);
            }
        }
        Ok(Self { consumer, tpl })
    }

    /// Records in the topics not yet committed by the group, or `None` when
    /// the cluster did not answer in time.
    pub fn lag(&self) -> Option<i64> {
        let committed = self
            .consumer
            .committed_offsets(self.tpl.clone(), Duration::from_secs(2))
            .ok()?;
        let mut lag = 0;
        for e in committed.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                .ok()?;
            let done = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag += (high - done).max(0);
        }
        Some(lag)
    }
}

/// Reads how many records a set of topics holds: their high watermarks,
/// summed, in one ListOffsets request (the latest offset of every
/// partition) rather than one a partition. Cheap enough to ask every 100 ms
/// while a pass is timed: on 128 partitions of two topics the per-partition
/// reads were 256 requests a sample, answered by the very broker thread
/// the pass measures.
pub struct Watermarks {
    consumer: BaseConsumer,
    topics: Vec<(String, i32)>,
    latest: TopicPartitionList,
}

impl Watermarks {
    /// A probe of `topics`, each with `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the client cannot be created.
    pub fn new(cluster: &Cluster, topics: &[String], partitions: i32) -> anyhow::Result<Self> {
        let mut latest = TopicPartitionList::new();
        for topic in topics {
            for p in 0..partitions {
                // As a timestamp, -1 (`Offset::End`) asks for the latest offset.
                latest.add_partition_offset(topic, p, Offset::End)?;
            }
        }
        Ok(Self {
            consumer: cluster.client_config().create()?,
            topics: topics.iter().map(|t| (t.clone(), partitions)).collect(),
            latest,
        })
    }

    /// The records in all the topics, or `None` when the cluster did not
    /// answer in time.
    pub fn total(&self) -> Option<u64> {
        if let Ok(answer) = self
            .consumer
            .offsets_for_times(self.latest.clone(), Duration::from_secs(2))
        {
            let ends: Option<u64> = answer
                .elements()
                .iter()
                .map(|e| match (e.error(), e.offset()) {
                    (Ok(()), Offset::Offset(o)) => Some(o.max(0) as u64),
                    _ => None,
                })
                .sum();
            if ends.is_some() {
                return ends;
            }
        }
        let mut total = 0;
        for (topic, partitions) in &self.topics {
            for p in 0..*partitions {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(2))
                    .ok()?;
                total += high.max(0) as u64;
            }
        }
        Some(total)
    }
}

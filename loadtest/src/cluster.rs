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
        match self {
            Self::Embedded(mock) => mock.create_topic(topic, partitions),
            Self::External { .. } => {
                let admin: AdminClient<DefaultClientContext> = self
                    .client_config()
                    .create()
                    .context("creating an admin client")?;
                let topic_spec = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
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
                Ok(())
            }
        }
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
/// summed. Cheap enough to ask every 100 ms while a pass is timed.
pub struct Watermarks {
    consumer: BaseConsumer,
    topics: Vec<(String, i32)>,
}

impl Watermarks {
    /// A probe of `topics`, each with `partitions` partitions.
    ///
    /// # Errors
    ///
    /// When the client cannot be created.
    pub fn new(cluster: &Cluster, topics: &[String], partitions: i32) -> anyhow::Result<Self> {
        Ok(Self {
            consumer: cluster.client_config().create()?,
            topics: topics.iter().map(|t| (t.clone(), partitions)).collect(),
        })
    }

    /// The records in all the topics, or `None` when the cluster did not
    /// answer in time.
    pub fn total(&self) -> Option<u64> {
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

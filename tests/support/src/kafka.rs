//! Kafka brokers started by the test, and the clients a test needs around
//! them ([`Kafka`]): produce records tagged with ids, read a whole topic
//! back, read a group's committed offsets.
//!
//! - [`MockKafka`]: librdkafka's mock cluster, in this process. Fast, with
//!   fault injection. It keeps only 5 MiB or 100,000 messages per partition
//!   and drops older ones silently, so tests keep their topics well under
//!   that. A new group waits about 3 s for its first assignment.
//! - [`Tansu`]: an independent Kafka-compatible broker (tansu, SQLite
//!   storage) as a child process, which answers at a real broker's pace and
//!   can be stopped (SIGTERM), killed (SIGKILL) and restarted on its storage.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// A mock Kafka cluster in this process; brokers listen on loopback, so other
/// processes can connect to [`MockKafka::bootstrap`] too.
pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

/// One message for [`MockKafka::produce_messages`], sent as it is.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The partition it goes to.
    pub partition: i32,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload; `None` sends a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Received {
    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.payload.as_deref().unwrap_or_default()).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// What a test does with any broker: topics, produce, read back, commits.
pub trait Kafka {
    /// The cluster's `bootstrap.servers`.
    fn bootstrap(&self) -> &str;

    /// Creates a topic with `partitions` partitions.
    fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()>;

    /// A producer for test records.
    fn producer(&self) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            // Room for oversized test records (the default is 1,000,000 bytes).
            .set("message.max.bytes", "33554432")
            .create()
            .context("creating a test producer")
    }

    /// Produces the messages exactly as given (a `None` payload is a
    /// tombstone, an empty one is an empty message; up to 32 MiB each), in
    /// order, and waits until all are delivered.
    fn produce_messages(&self, topic: &str, messages: &[Outgoing]) -> anyhow::Result<usize> {
        let producer = self.producer()?;
        for (i, message) in messages.iter().enumerate() {
            let mut headers = rdkafka::message::OwnedHeaders::new();
            for (key, value) in &message.headers {
                headers = headers.insert(rdkafka::message::Header {
                    key,
                    value: Some(value.as_slice()),
                });
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(message.partition)
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &message.payload {
                record = record.payload(payload.as_slice());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => bail!("producing test message {i}: {e}"),
                }
            }
        }
        producer
            .flush(Duration::from_secs(30))
            .context("flushing test messages")?;
        if producer.in_flight_count() > 0 {
            bail!("{} test messages not delivered", producer.in_flight_count());
        }
        Ok(messages.len())
    }

    /// Produces the payloads (keyed by their index, with the index in a
    /// `test.seq` header, round-robin over `partitions`), and waits until
    /// all are delivered.
    fn produce<I, P>(&self, topic: &str, partitions: i32, payloads: I) -> anyhow::Result<usize>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let producer = self.producer()?;
        let mut n = 0usize;
        for (i, payload) in payloads.into_iter().enumerate() {
            let key = i.to_string();
            let partition = (i % partitions.max(1) as usize) as i32;
            let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "test.seq",
                value: Some(key.as_str()),
            });
            let mut record = BaseRecord::to(topic)
                .payload(payload.as_ref())
                .key(key.as_bytes())
                .headers(headers)
                .partition(partition);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => bail!("producing test record {i}: {e}"),
                }
            }
            n += 1;
        }
        producer
            .flush(Duration::from_secs(30))
            .context("flushing test records")?;
        if producer.in_flight_count() > 0 {
            bail!("{} test records not delivered", producer.in_flight_count());
        }
        Ok(n)
    }

    /// Reads every partition of `topic` from the beginning until `expected`
    /// records came, or nothing new came for `quiet` (then returns what it has).
    fn read_all(
        &self,
        topic: &str,
        expected: usize,
        quiet: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("reader-{topic}-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating a test reader")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .context("fetching metadata")?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let mut last = Instant::now();
        while out.len() < expected && last.elapsed() < quiet {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    out.push(Received {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (h.key.to_string(), h.value.unwrap_or_default().to_vec())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Some(Err(e)) => tracing::debug!(error = %e, "reader"),
                None => {}
            }
        }
        Ok(out)
    }

    /// A client to read offsets with, in `group` (`""`: none). Made afresh
    /// by default; a broker may keep them.
    fn reader(&self, group: &str) -> anyhow::Result<std::sync::Arc<BaseConsumer>> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        if !group.is_empty() {
            config.set("group.id", group);
        }
        Ok(std::sync::Arc::new(config.create()?))
    }

    /// The offsets `group` committed on `topic`, by partition (absent: none).
    fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .reader(group)?
            .committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// The high watermark of each partition.
    fn high_watermarks(&self, topic: &str, partitions: i32) -> anyhow::Result<BTreeMap<i32, i64>> {
        let reader = self.reader("")?;
        let mut out = BTreeMap::new();
        for p in 0..partitions {
            let (_, high) = reader.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            out.insert(p, high);
        }
        Ok(out)
    }
}

impl MockKafka {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(brokers).context("starting the mock cluster")?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Self { cluster, bootstrap })
    }

    /// The cluster's `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The cluster, for error injection (`request_errors`, `broker_down`, ...).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))
    }
}

impl Kafka for MockKafka {
    fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        MockKafka::create_topic(self, topic, partitions)
    }
}

/// Where [`Tansu::binary`] looks when `TANSU_BIN` is not set: where
/// `scripts/tansu.sh` installs it.
const TANSU_INSTALLED: &str = ".cache/enricher-tools/bin/tansu";
/// How long a start or restart waits for the broker's port.
const TANSU_STARTUP: Duration = Duration::from_secs(15);

/// tansu, an independent Kafka-compatible broker, as a child process on a
/// free loopback port, its SQLite storage in a temporary directory that
/// outlives [`stop`](Self::stop), [`kill`](Self::kill) and
/// [`restart`](Self::restart). Dropping the value kills the process.
///
/// The binary is `$TANSU_BIN`, else `~/.cache/enricher-tools/bin/tansu`
/// (where `scripts/tansu.sh` installs it), else `tansu` on `PATH`. Its
/// output goes to `tansu.log` in the temporary directory.
pub struct Tansu {
    port: u16,
    bootstrap: String,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<std::process::Child>>,
    /// One reading client per group (`""`: none), kept: a broker busy with
    /// a worker's backlog answers a new client's first requests slowly.
    readers: std::sync::Mutex<BTreeMap<String, std::sync::Arc<BaseConsumer>>>,
}

impl Tansu {
    /// The tansu binary, or an error that says how to install it.
    pub fn binary() -> anyhow::Result<std::path::PathBuf> {
        if let Some(path) = std::env::var_os("TANSU_BIN") {
            return Ok(path.into());
        }
        if let Some(home) = std::env::var_os("HOME") {
            let path = std::path::Path::new(&home).join(TANSU_INSTALLED);
            if path.exists() {
                return Ok(path);
            }
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("tansu"))
                .find(|p| p.exists())
        });
        on_path.context("tansu not found: run scripts/tansu.sh (it installs it) or set TANSU_BIN")
    }

    /// Starts a broker and waits until its port accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tansu-test-")
            .tempdir()
            .context("creating a temporary dir for tansu")?;
        let port = crate::free_port();
        let broker = Self {
            port,
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
            child: std::sync::Mutex::new(None),
            readers: std::sync::Mutex::new(BTreeMap::new()),
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))?;
        let url = format!("tcp://{}", self.bootstrap);
        let child = std::process::Command::new(Self::binary()?)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tansu")?;
        *self.lock_child() = Some(child);
        let deadline = Instant::now() + TANSU_STARTUP;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.lock_child().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("tansu exited with {status}: {}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "tansu did not listen within {TANSU_STARTUP:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The broker's process id while it runs (for its CPU time in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(std::process::Child::id)
    }

    /// The last lines of the broker's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, as in a maintenance window: tansu answers the requests in
    /// flight with an error while it stops. Waits for the exit (SIGKILL
    /// after 10 s).
    pub fn stop(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL: the broker vanishes; its storage stays for a restart.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage (stopping it
    /// first if it runs).
    pub fn restart(&self) -> anyhow::Result<()> {
        self.kill();
        self.launch()
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<std::process::Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Kafka for Tansu {
    fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Kept, one per group: a broker busy with a worker's backlog answers a
    /// new client's first requests slowly.
    fn reader(&self, group: &str) -> anyhow::Result<std::sync::Arc<BaseConsumer>> {
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reader) = readers.get(group) {
            return Ok(std::sync::Arc::clone(reader));
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        if !group.is_empty() {
            config.set("group.id", group);
        }
        let reader = std::sync::Arc::new(config.create::<BaseConsumer>()?);
        readers.insert(group.to_string(), std::sync::Arc::clone(&reader));
        Ok(reader)
    }

    /// Batches of many records: tansu stores each batch as it came, and
    /// reading back tens of thousands of 5 ms batches takes it minutes.
    fn producer(&self) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "100")
            .set("batch.num.messages", "10000")
            .set("enable.idempotence", "true")
            .create()
            .context("creating a test producer")
    }

    /// Through the admin API (CreateTopics), which the mock does not have;
    /// waits until the metadata shows every partition.
    fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .context("creating an admin client")?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        // The admin futures are driven by librdkafka's thread: any executor
        // will do, and a thread of its own works inside or outside a runtime.
        let results = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(anyhow::Error::from)?
                        .block_on(admin.create_topics([&new], &AdminOptions::new()))
                        .map_err(anyhow::Error::from)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the admin thread panicked"))?
        })?;
        for result in results {
            result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
            if metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("topic {topic} did not show {partitions} partitions");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Counts the `"id":N` values in records: how many distinct ids, and how
/// many records repeated an id already seen.
pub fn count_ids(records: &[Received], key: &str) -> (std::collections::BTreeSet<u64>, usize) {
    let needle = format!("\"{key}\":");
    let mut ids = std::collections::BTreeSet::new();
    let mut duplicates = 0;
    for r in records {
        let text = r.text();
        let Some(start) = text.find(&needle) else {
            continue;
        };
        let digits: String = text[start + needle.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(id) = digits.parse()
            && !ids.insert(id)
        {
            duplicates += 1;
        }
    }
    (ids, duplicates)
}

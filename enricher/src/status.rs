//! `enricher status`: the fleet at a glance, from the brokers alone.
//!
//! For every input topic that has an output topic (`T` and `T_enr`): the
//! group's committed offsets against the high watermarks (lag in records),
//! the lag in seconds (the timestamp of the newest input record minus that
//! of the newest record the group has committed past; 0 when caught up),
//! dead letters in `T_dlq`, and, between two refreshes, the rates and the
//! partitions whose commits stand still although they have lag. It needs
//! no metrics pipeline: it works on any cluster, and when Prometheus is
//! down.
//!
//! ```text
//! metadata --> pairs (T, T_enr) --> watermarks (T, T_enr, T_dlq)
//!                                --> committed offsets of the group (OffsetFetch)
//!                                --> timestamps at hw-1 and committed-1 (one fetch each)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::kafka::configured;

/// How long one request to the brokers may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What `enricher status` looks at.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties (TLS, SASL).
    pub properties: BTreeMap<String, String>,
    /// Only input topics whose whole name matches.
    pub topics: Option<regex::Regex>,
    /// The group of a topic's workers; `{topic}` is replaced by its name.
    /// With several, a topic's group is the first one that has committed
    /// offsets for it (dedicated workers, then a shared one), else the first.
    pub group_templates: Vec<String>,
    /// A partition whose committed offset has not moved for this long while
    /// it has lag is marked stalled.
    pub stall_after: Duration,
}

/// One partition of an input topic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed).
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// High watermark minus committed offset (from the low watermark when
    /// nothing is committed).
    pub lag_records: i64,
    /// How many seconds the enriched stream trails the raw one here.
    pub lag_seconds: f64,
    /// The committed offset has not moved for `stall_after` although the
    /// partition has lag (known only between refreshes).
    pub stalled: bool,
    #[serde(skip)]
    low_watermark: i64,
}

/// One input topic and its output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopicStatus {
    /// The input topic.
    pub topic: String,
    /// The output topic.
    pub output: String,
    /// The consumer group.
    pub group: String,
    /// Records behind, all partitions.
    pub lag_records: i64,
    /// The largest lag in seconds of any partition.
    pub lag_seconds: f64,
    /// Records in the dead-letter topic (high minus low watermarks; 0 when
    /// it does not exist).
    pub dead_letters: i64,
    /// Input records per second since the last refresh.
    pub in_per_sec: Option<f64>,
    /// Output records per second since the last refresh.
    pub out_per_sec: Option<f64>,
    /// Dead letters per second since the last refresh.
    pub dead_letters_per_sec: Option<f64>,
    /// Partitions, in order.
    pub partitions: Vec<PartitionStatus>,
    #[serde(skip)]
    totals: Totals,
}

/// Sums of high watermarks, for the rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    input: i64,
    output: i64,
    dead: i64,
}

/// One refresh.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    /// Unix seconds when it was taken.
    pub at: f64,
    /// Every pair, by input topic.
    pub topics: Vec<TopicStatus>,
}

impl Snapshot {
    /// The largest lag in seconds of any topic (0 without topics).
    pub fn max_lag_seconds(&self) -> f64 {
        self.topics
            .iter()
            .map(|t| t.lag_seconds)
            .fold(0.0, f64::max)
    }

    /// The table `enricher status` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rate = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.0}"));
        let _ = writeln!(
            out,
            "{:<28} {:<28} {:>4} {:>12} {:>9} {:>9} {:>9} {:>10} {:>7}  stalled",
            "topic", "group", "part", "lag records", "lag secs", "in/s", "out/s", "dead", "dead/s"
        );
        for t in &self.topics {
            let stalled: Vec<String> = t
                .partitions
                .iter()
                .filter(|p| p.stalled)
                .map(|p| p.partition.to_string())
                .collect();
            let _ = writeln!(
                out,
                "{:<28} {:<28} {:>4} {:>12} {:>9.1} {:>9} {:>9} {:>10} {:>7}  {}",
                format!("{} -> {}", t.topic, t.output),
                t.group,
                t.partitions.len(),
                t.lag_records,
                t.lag_seconds,
                rate(t.in_per_sec),
                rate(t.out_per_sec),
                t.dead_letters,
                rate(t.dead_letters_per_sec),
                if stalled.is_empty() {
                    "-".to_string()
                } else {
                    stalled.join(",")
                },
            );
        }
        if self.topics.is_empty() {
            out.push_str("(no input topic with an _enr output topic)\n");
        }
        out
    }
}

/// Reads the cluster; keeps what a refresh needs from the one before.
pub struct Status {
    opts: StatusOptions,
    reader: BaseConsumer,
    /// The last refresh's totals, and when it was taken.
    last: Option<(Instant, HashMap<String, Totals>)>,
    /// Per (topic, partition): the committed offset and since when it has
    /// not moved.
    still: HashMap<(String, i32), (Option<i64>, Instant)>,
}

impl Status {
    /// Connects a reader to the cluster (nothing is sent yet).
    ///
    /// # Errors
    ///
    /// When librdkafka refuses the properties.
    pub fn new(opts: StatusOptions) -> anyhow::Result<Self> {
        let reader = client(&opts, "enricher-status")
            .create()
            .context("creating the Kafka client")?;
        Ok(Self {
            opts,
            reader,
            last: None,
            still: HashMap::new(),
        })
    }

    /// Takes one snapshot; rates and stalls are against the one before.
    ///
    /// # Errors
    ///
    /// When the cluster does not answer.
    pub fn refresh(&mut self) -> anyhow::Result<Snapshot> {
        let now = Instant::now();
        let metadata = self
            .reader
            .fetch_metadata(None, TIMEOUT)
            .context("reading the cluster's metadata")?;
        let partitions: BTreeMap<String, i32> = metadata
            .topics()
            .iter()
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect();
        let inputs: Vec<(&String, i32)> = partitions
            .iter()
            .filter(|(name, _)| !name.starts_with("__"))
            .filter(|(name, _)| partitions.contains_key(&format!("{name}_enr")))
            .filter(|(name, _)| self.opts.topics.as_ref().is_none_or(|re| re.is_match(name)))
            .map(|(name, &n)| (name, n))
            .collect();
        let mut topics = Vec::with_capacity(inputs.len());
        for (name, count) in inputs {
            topics.push(self.topic(name, count, &partitions)?);
        }
        self.timestamps(&mut topics)?;
        // Rates and stalls, against the last refresh.
        let last = self.last.take();
        let mut totals = HashMap::new();
        for t in &mut topics {
            if let Some((then, before)) = &last
                && let Some(b) = before.get(&t.topic)
            {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                let rate = |now: i64, then: i64| Some((now - then).max(0) as f64 / secs);
                t.in_per_sec = rate(t.totals.input, b.input);
                t.out_per_sec = rate(t.totals.output, b.output);
                t.dead_letters_per_sec = rate(t.totals.dead, b.dead);
            }
            totals.insert(t.topic.clone(), t.totals);
            for p in &mut t.partitions {
                let key = (t.topic.clone(), p.partition);
                let since = match self.still.get(&key) {
                    Some((c, since)) if *c == p.committed => *since,
                    _ => now,
                };
                self.still.insert(key, (p.committed, since));
                p.stalled = p.lag_records > 0 && now.duration_since(since) >= self.opts.stall_after;
            }
        }
        self.last = Some((now, totals));
        Ok(Snapshot {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            topics,
        })
    }

    /// Watermarks and committed offsets of one pair.
    fn topic(
        &self,
        name: &str,
        count: i32,
        all: &BTreeMap<String, i32>,
    ) -> anyhow::Result<TopicStatus> {
        let output = format!("{name}_enr");
        let dlq = format!("{name}_dlq");
        let (group, committed) = self.group_of(name, count)?;
        let sum = |topic: &str| -> anyhow::Result<(i64, i64)> {
            let n = all.get(topic).copied().unwrap_or(0);
            let (mut low, mut high) = (0, 0);
            for p in 0..n {
                let (l, h) = self.watermarks(topic, p)?;
                low += l;
                high += h;
            }
            Ok((low, high))
        };
        let (_, out_high) = sum(&output)?;
        let (dead_low, dead_high) = sum(&dlq)?;
        let mut partitions = Vec::with_capacity(count as usize);
        let mut input = 0;
        for p in 0..count {
            let (low, high) = self.watermarks(name, p)?;
            input += high;
            let c = committed.get(&p).copied();
            let from = c.unwrap_or(low).max(low);
            partitions.push(PartitionStatus {
                partition: p,
                committed: c,
                high_watermark: high,
                lag_records: (high - from).max(0),
                lag_seconds: 0.0,
                stalled: false,
                low_watermark: low,
            });
        }
        Ok(TopicStatus {
            topic: name.to_string(),
            output,
            group,
            lag_records: partitions.iter().map(|p| p.lag_records).sum(),
            lag_seconds: 0.0,
            dead_letters: dead_high - dead_low,
            in_per_sec: None,
            out_per_sec: None,
            dead_letters_per_sec: None,
            partitions,
            totals: Totals {
                input,
                output: out_high,
                dead: dead_high,
            },
        })
    }

    fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        self.reader
            .fetch_watermarks(topic, partition, TIMEOUT)
            .with_context(|| format!("reading the watermarks of {topic}/{partition}"))
    }

    /// The group of input topic `name` and its committed offsets: the first
    /// of the templates' groups that has committed any, else the first.
    fn group_of(&self, name: &str, count: i32) -> anyhow::Result<(String, HashMap<i32, i64>)> {
        let mut first = None;
        for template in &self.opts.group_templates {
            let group = template.replace("{topic}", name);
            let committed = self.committed(&group, name, count)?;
            if !committed.is_empty() {
                return Ok((group, committed));
            }
            first.get_or_insert((group, committed));
        }
        first.context("no --group-template")
    }

    /// The group's committed offsets (OffsetFetch; the group is not joined).
    fn committed(&self, group: &str, topic: &str, count: i32) -> anyhow::Result<HashMap<i32, i64>> {
        let consumer: BaseConsumer = client(&self.opts, group)
            .create()
            .context("creating the Kafka client")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, TIMEOUT)
            .with_context(|| format!("reading the committed offsets of group {group}"))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// The lag in seconds of every partition with lag: the newest record's
    /// timestamp minus that of the newest record committed past (or, with
    /// nothing committed, of the oldest record there is).
    fn timestamps(&self, topics: &mut [TopicStatus]) -> anyhow::Result<()> {
        let mut newest = Vec::new();
        let mut committed = Vec::new();
        for t in topics.iter() {
            for p in t.partitions.iter().filter(|p| p.lag_records > 0) {
                newest.push((t.topic.clone(), p.partition, p.high_watermark - 1));
                let at = match p.committed {
                    Some(c) if c > p.low_watermark => c - 1,
                    _ => p.low_watermark,
                };
                committed.push((t.topic.clone(), p.partition, at));
            }
        }
        let newest = self.read_timestamps(&newest)?;
        let committed = self.read_timestamps(&committed)?;
        for t in topics.iter_mut() {
            for p in &mut t.partitions {
                let key = (t.topic.clone(), p.partition);
                if let (Some(n), Some(c)) = (newest.get(&key), committed.get(&key)) {
                    p.lag_seconds = ((n - c) as f64 / 1000.0).max(0.0);
                }
            }
            t.lag_seconds = t
                .partitions
                .iter()
                .map(|p| p.lag_seconds)
                .fold(0.0, f64::max);
        }
        Ok(())
    }

    /// The timestamp (Unix millis) of the record at each (topic, partition,
    /// offset), read with one assignment.
    fn read_timestamps(
        &self,
        at: &[(String, i32, i64)],
    ) -> anyhow::Result<HashMap<(String, i32), i64>> {
        let mut found = HashMap::new();
        if at.is_empty() {
            return Ok(found);
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in at {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .context("building the assignment")?;
        }
        self.reader.assign(&tpl).context("assigning partitions")?;
        let deadline = Instant::now() + TIMEOUT;
        while found.len() < at.len() && Instant::now() < deadline {
            match self.reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_string(), m.partition());
                    if let Some(ts) = m.timestamp().to_millis() {
                        found.entry(key).or_insert(ts);
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "Reading a timestamp"),
                None => {}
            }
        }
        self.reader.unassign().context("unassigning partitions")?;
        Ok(found)
    }
}

fn client(opts: &StatusOptions, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    configured(c, &opts.brokers, &opts.properties)
}

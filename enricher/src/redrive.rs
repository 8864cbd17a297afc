//! `enricher redrive`: dead letters back to their source topic after a fix.
//!
//! A batch tool, not a daemon: it reads the dead-letter topic in a group of
//! its own from that group's committed offsets (the oldest record when
//! there are none) up to the high watermarks current when it started, so
//! the letters a redriven record may earn again meanwhile wait for the next
//! run. Each record that passes the filters goes back to its source topic
//! (the `enricher.source.topic` header the worker writes, or `--to`) with
//! its original bytes, key and headers and an `enricher.redrive.count`
//! header one higher; a record that would pass `max_attempts`, or that has
//! no payload or no known source, goes to `<from>_parked` as it is. Offsets
//! are committed only after every record of a batch was delivered, so a
//! second run redrives nothing twice (and a failed run, at worst, again).
//!
//! ```text
//! <from> --(group, committed offsets .. start watermarks)--> filter (reason, time)
//!    --> source topic, enricher.redrive.count + 1       (count <= max_attempts)
//!    '-> <from>_parked, as it is                         (over, no payload, no source)
//!    --> flush, every delivery confirmed --> commit the batch's offsets
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::kafka::configured;

/// How long one request to the brokers may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reader may wait for a record it knows is there.
const IDLE: Duration = Duration::from_secs(30);
/// Records produced between two flushes and commits.
const BATCH: usize = 1_000;

/// The header that says why a record was dead-lettered.
pub const REASON: &str = "enricher.reason";
/// The header that names the topic a dead letter came from.
pub const SOURCE_TOPIC: &str = "enricher.source.topic";
/// The header that names the partition a dead letter came from.
pub const SOURCE_PARTITION: &str = "enricher.source.partition";
/// The header that says how often a record was redriven.
pub const COUNT: &str = "enricher.redrive.count";
/// The header of a dead letter sent without its payload.
const PAYLOAD_DROPPED: &str = "enricher.payload_dropped";
/// The headers the worker adds to a dead letter: taken off on the way back,
/// so a record goes back with its own headers only.
const DEAD_LETTER_HEADERS: [&str; 6] = [
    REASON,
    "enricher.error",
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    "enricher.source.offset",
    PAYLOAD_DROPPED,
];

/// What `enricher redrive` does.
#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties (TLS, SASL).
    pub properties: BTreeMap<String, String>,
    /// The dead-letter topic to read.
    pub from: String,
    /// Send here instead of each record's `enricher.source.topic`.
    pub to: Option<String>,
    /// Only records with one of these `enricher.reason` values (all when
    /// empty).
    pub reasons: BTreeSet<String>,
    /// Only records with a timestamp at or after this (Unix millis).
    pub since: Option<i64>,
    /// Only records with a timestamp at or before this (Unix millis); a
    /// partition stops at its first newer record.
    pub until: Option<i64>,
    /// Count, move and commit nothing.
    pub dry_run: bool,
    /// Move at most this many records.
    pub max: Option<u64>,
    /// A record already redriven this many times is parked instead.
    pub max_attempts: u32,
    /// The group whose committed offsets say what was looked at.
    pub group: String,
}

/// The group `enricher redrive` reads `from` in unless given one: one per
/// dead-letter topic and set of reasons, so a run for one reason does not
/// hide the records of another from a later run.
pub fn default_group(from: &str, reasons: &BTreeSet<String>) -> String {
    if reasons.is_empty() {
        format!("enricher-redrive-{from}")
    } else {
        let reasons: Vec<&str> = reasons.iter().map(String::as_str).collect();
        format!("enricher-redrive-{from}-{}", reasons.join("+"))
    }
}

/// Where parked records of `from` go.
pub fn parked_topic(from: &str) -> String {
    format!("{from}_parked")
}

/// Records of one reason that went (or, in a dry run, would go) to one topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Moved {
    /// Their `enricher.reason` (`unknown` without one).
    pub reason: String,
    /// Where they went.
    pub to: String,
    /// They went to the parked topic.
    pub parked: bool,
    /// How many.
    pub records: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// The dead-letter topic.
    pub from: String,
    /// The group.
    pub group: String,
    /// Nothing was moved or committed.
    pub dry_run: bool,
    /// Records read.
    pub read: u64,
    /// Records left out by `--reason`, `--since` (committed past).
    pub skipped: u64,
    /// Records sent back to a source topic.
    pub redriven: u64,
    /// Records sent to the parked topic.
    pub parked: u64,
    /// By reason and destination.
    pub moved: Vec<Moved>,
    /// Every partition reached its start watermark (or `--until`); false
    /// when `--max` stopped the run first.
    pub complete: bool,
}

impl Report {
    /// The report `enricher redrive` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run { "would move" } else { "moved" };
        let _ = writeln!(
            out,
            "{} (group {}): read {}, skipped {}, {verb} {} back, {} parked{}",
            self.from,
            self.group,
            self.read,
            self.skipped,
            self.redriven,
            self.parked,
            if self.complete {
                ""
            } else {
                " (stopped at --max)"
            },
        );
        if !self.moved.is_empty() {
            let _ = writeln!(out, "{:<24} {:<32} {:>10}", "reason", "to", "records");
        }
        for m in &self.moved {
            let _ = writeln!(
                out,
                "{:<24} {:<32} {:>10}{}",
                m.reason,
                m.to,
                m.records,
                if m.parked { "  parked" } else { "" }
            );
        }
        out
    }
}

/// Counts failed deliveries; the batch's offsets are committed only when
/// there were none.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((e, m)) = result {
            tracing::error!(error = %e, topic = m.topic(), "Redriven record not delivered");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where one record goes.
struct Plan {
    topic: String,
    partition: Option<i32>,
    headers: OwnedHeaders,
    parked: bool,
}

/// Runs one redrive.
///
/// # Errors
///
/// When the topic does not exist, the cluster does not answer, or a record
/// is not delivered (then that batch's offsets are not committed).
pub fn run(opts: &RedriveOptions) -> anyhow::Result<Report> {
    let consumer: BaseConsumer = client(opts)
        .set("group.id", &opts.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .context("creating the Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .context("reading the cluster's metadata")?;
    let Some(count) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == opts.from)
        .map(|t| t.partitions().len() as i32)
        .filter(|&n| n > 0)
    else {
        bail!("topic {} does not exist", opts.from);
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..count {
        tpl.add_partition(&opts.from, p);
    }
    let committed = consumer
        .committed_offsets(tpl, TIMEOUT)
        .with_context(|| format!("reading the committed offsets of group {}", opts.group))?;
    let mut stop = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..count {
        let (low, high) = consumer
            .fetch_watermarks(&opts.from, p, TIMEOUT)
            .with_context(|| format!("reading the watermarks of {}/{p}", opts.from))?;
        let start = committed
            .find_partition(&opts.from, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low)
            .max(low);
        if start < high {
            stop.insert(p, high);
            assignment
                .add_partition_offset(&opts.from, p, Offset::Offset(start))
                .context("building the assignment")?;
        }
    }
    let producer: BaseProducer<Deliveries> = client(opts)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Deliveries::default())
        .context("creating the Kafka producer")?;
    let mut run = Run {
        opts,
        producer,
        parked_topic: parked_topic(&opts.from),
        next: HashMap::new(),
        in_batch: 0,
        moved: BTreeMap::new(),
        report: Report {
            from: opts.from.clone(),
            group: opts.group.clone(),
            dry_run: opts.dry_run,
            read: 0,
            skipped: 0,
            redriven: 0,
            parked: 0,
            moved: Vec::new(),
            complete: true,
        },
    };
    if !stop.is_empty() {
        consumer
            .assign(&assignment)
            .context("assigning partitions")?;
        run.read(&consumer, &mut stop)?;
        run.commit(&consumer)?;
    }
    let Run {
        mut report, moved, ..
    } = run;
    report.moved = moved
        .into_iter()
        .map(|((reason, to, parked), records)| Moved {
            reason,
            to,
            parked,
            records,
        })
        .collect();
    Ok(report)
}

/// One run's clients and tallies.
struct Run<'a> {
    opts: &'a RedriveOptions,
    producer: BaseProducer<Deliveries>,
    parked_topic: String,
    /// Per partition, the offset to commit: past the last record handled.
    next: HashMap<i32, i64>,
    /// Records produced since the last commit.
    in_batch: usize,
    /// (reason, to, parked) -> records.
    moved: BTreeMap<(String, String, bool), u64>,
    report: Report,
}

impl Run<'_> {
    /// Reads until every partition in `stop` reached its offset there (or
    /// `--until`, or `--max`).
    fn read(
        &mut self,
        consumer: &BaseConsumer,
        stop: &mut HashMap<i32, i64>,
    ) -> anyhow::Result<()> {
        let mut last = Instant::now();
        while !stop.is_empty() {
            if self.opts.max.is_some_and(|max| self.moved_count() >= max) {
                self.report.complete = false;
                return Ok(());
            }
            let message = match consumer.poll(Duration::from_millis(100)) {
                None => {
                    if last.elapsed() > IDLE {
                        bail!(
                            "no record came from {} for {} s although its partitions {:?} have more",
                            self.opts.from,
                            IDLE.as_secs(),
                            stop.keys().collect::<BTreeSet<_>>()
                        );
                    }
                    continue;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The end: offsets held by transaction markers are
                    // never delivered.
                    stop.remove(&p);
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Reading dead letters");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            last = Instant::now();
            let p = message.partition();
            let Some(&end) = stop.get(&p) else {
                continue;
            };
            if message.offset() >= end {
                stop.remove(&p);
                continue;
            }
            let ts = message.timestamp().to_millis();
            if let (Some(until), Some(ts)) = (self.opts.until, ts)
                && ts > until
            {
                // Left for a later run: this offset is not committed past.
                stop.remove(&p);
                continue;
            }
            self.report.read += 1;
            self.handle(&message, ts)?;
            self.next.insert(p, message.offset() + 1);
            if message.offset() + 1 >= end {
                stop.remove(&p);
            }
            if self.in_batch >= BATCH {
                self.commit(consumer)?;
            }
        }
        Ok(())
    }

    fn moved_count(&self) -> u64 {
        self.report.redriven + self.report.parked
    }

    /// Skips, redrives or parks one record.
    fn handle(&mut self, m: &BorrowedMessage<'_>, ts: Option<i64>) -> anyhow::Result<()> {
        let reason = header(m, REASON).unwrap_or("unknown").to_string();
        let wanted = self.opts.reasons.is_empty() || self.opts.reasons.contains(&reason);
        let recent = match (self.opts.since, ts) {
            (Some(since), Some(ts)) => ts >= since,
            _ => true,
        };
        if !(wanted && recent) {
            self.report.skipped += 1;
            return Ok(());
        }
        let plan = self.plan(m);
        if plan.parked {
            self.report.parked += 1;
        } else {
            self.report.redriven += 1;
        }
        *self
            .moved
            .entry((reason, plan.topic.clone(), plan.parked))
            .or_default() += 1;
        if self.opts.dry_run {
            return Ok(());
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(&plan.topic).headers(plan.headers);
        if let Some(p) = plan.partition {
            record = record.partition(p);
        }
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(payload) = m.payload() {
            record = record.payload(payload);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(e).with_context(|| format!("producing to {}", plan.topic));
                }
            }
        }
        self.in_batch += 1;
        Ok(())
    }

    /// Where a dead letter goes, with which headers.
    fn plan(&self, m: &BorrowedMessage<'_>) -> Plan {
        let count = header(m, COUNT)
            .and_then(|c| c.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let source = header(m, SOURCE_TOPIC);
        let to = self.opts.to.as_deref().or(source);
        let keep_whole = || {
            let mut headers = OwnedHeaders::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    headers = headers.insert(h);
                }
            }
            headers
        };
        let Some(to) = to.filter(|_| {
            count < self.opts.max_attempts
                && m.payload().is_some()
                && header(m, PAYLOAD_DROPPED).is_none()
        }) else {
            return Plan {
                topic: self.parked_topic.clone(),
                partition: None,
                headers: keep_whole(),
                parked: true,
            };
        };
        // Back to the partition it came from, unless sent elsewhere.
        let partition = if self.opts.to.is_none() {
            header(m, SOURCE_PARTITION).and_then(|p| p.parse().ok())
        } else {
            None
        };
        let mut headers = OwnedHeaders::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                if h.key != COUNT && !DEAD_LETTER_HEADERS.contains(&h.key) {
                    headers = headers.insert(h);
                }
            }
        }
        let count = (count + 1).to_string();
        headers = headers.insert(Header {
            key: COUNT,
            value: Some(count.as_str()),
        });
        Plan {
            topic: to.to_string(),
            partition,
            headers,
            parked: false,
        }
    }

    /// Waits for every delivery of the batch, then commits its offsets.
    fn commit(&mut self, consumer: &BaseConsumer) -> anyhow::Result<()> {
        if self.opts.dry_run || self.next.is_empty() {
            return Ok(());
        }
        self.producer
            .flush(Duration::from_secs(60))
            .context("waiting for the redriven records' deliveries")?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} records not delivered; this batch's offsets are not committed");
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &self.next {
            tpl.add_partition_offset(&self.opts.from, p, Offset::Offset(o))
                .context("building the commit")?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing the offsets of group {}", self.opts.group))?;
        self.in_batch = 0;
        Ok(())
    }
}

/// A header's value as text (`None`: absent, empty or not UTF-8).
fn header<'m>(m: &'m BorrowedMessage<'_>, key: &str) -> Option<&'m str> {
    let headers = m.headers()?;
    headers
        .iter()
        .filter(|h| h.key == key)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn client(opts: &RedriveOptions) -> ClientConfig {
    configured(ClientConfig::new(), &opts.brokers, &opts.properties)
}

/// A `--since` or `--until` as Unix millis: RFC 3339
/// (`2026-12-03T08:00:00Z`, `2026-12-03 09:00:00+01:00`) or a time before
/// `now_ms` (`90s`, `30m`, `2h`, `7d`).
///
/// # Errors
///
/// A line saying what is expected.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!("`{text}` is neither RFC 3339 (2026-12-03T08:00:00Z) nor an age (90s, 30m, 2h, 7d)")
    };
    if let Some(ms) = rfc3339(text) {
        return Ok(ms);
    }
    if let Some(unit) = text.chars().last().filter(char::is_ascii_alphabetic) {
        let digits = &text[..text.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let number: i64 = digits.parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        return Ok(now_ms.saturating_sub(number.saturating_mul(secs * 1_000)));
    }
    Err(bad())
}

/// RFC 3339 to Unix millis (`T` or a space between date and time; `Z` or
/// an offset).
fn rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_secs = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let secs = num(i + 1..i + 3)? * 3_600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("1970-01-01T00:00:00Z", now), Ok(0));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14 23:13:20.25+01:00", now),
            Ok(1_700_000_000_250)
        );
        assert_eq!(
            parse_time("2024-02-29T00:00:00-00:30", now),
            Ok(1_709_166_600_000)
        );
        assert_eq!(parse_time("90s", now), Ok(now - 90_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("7d", now), Ok(now - 604_800_000));
        for bad in [
            "",
            "2h30m",
            "yesterday",
            "2023-11-14",
            "2023-13-01T00:00:00Z",
            "5w",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_are_per_topic_and_set_of_reasons() {
        let none = BTreeSet::new();
        assert_eq!(default_group("a_dlq", &none), "enricher-redrive-a_dlq");
        let two: BTreeSet<String> = ["parse".to_string(), "enrich".to_string()].into();
        assert_eq!(
            default_group("a_dlq", &two),
            "enricher-redrive-a_dlq-enrich+parse"
        );
        assert_eq!(parked_topic("bro_conn_dlq"), "bro_conn_dlq_parked");
    }
}

//! Every metric name and label of the acker, in one place.
//!
//! Gauges carry the labels [`TOPIC`] and [`PARTITION`] and are set by
//! [`crate::Acker::publish`]; counters are counted as the events happen.
//!
//! `metrics` 0.24 cannot unregister a series. When a partition is released or
//! lost, its lag, timestamp-diff and in-flight gauges are set to 0 once (this
//! consumer holds nothing back on it any more, so sums over instances stay
//! right), its offset gauges keep their last value, and none is touched
//! again. To make them disappear, give the exporter an idle timeout for
//! gauges of a few publish intervals
//! (`PrometheusBuilder::idle_timeout(MetricKindMask::GAUGE, Some(..))`).

/// Label: the topic name.
pub const TOPIC: &str = "topic";
/// Label: the partition number.
pub const PARTITION: &str = "partition";
/// Label of [`COMMITS`]: `ok` or `failed`.
pub const RESULT: &str = "result";

/// The last offset committed (the next offset the group will read). Gauge.
pub const COMMITTED_OFFSET: &str = "acker_committed_offset";
/// The partition's high watermark (the offset after its newest record). Gauge.
pub const HIGH_WATERMARK: &str = "acker_high_watermark";
/// High watermark minus committed offset, never negative. Gauge.
pub const CONSUMER_LAG: &str = "acker_consumer_lag_records";
/// How many seconds the group trails the partition: 0 when it has committed
/// everything up to the high watermark, otherwise now minus the Kafka
/// timestamp of the oldest record not yet committed. Gauge.
pub const TIMESTAMP_DIFF: &str = "acker_timestamp_diff_seconds";
/// Now minus the Kafka timestamp of the last committed record, in seconds:
/// the time since the last record, which grows on a quiet topic too. Gauge.
pub const COMMITTED_AGE: &str = "acker_committed_record_age_seconds";
/// The partition's newest record timestamp minus that of the last committed
/// record, in seconds. Gauge.
pub const SOURCE_TIMESTAMP_DIFF: &str = "acker_source_timestamp_diff_seconds";
/// Records tracked and not yet acked. Gauge.
pub const IN_FLIGHT: &str = "acker_in_flight";
/// Commits reported back, by [`RESULT`]. Counter.
pub const COMMITS: &str = "acker_commits_total";
/// Acks ignored because their epoch is stale or their partition is no longer
/// assigned. Counter.
pub const ACKS_FENCED: &str = "acker_acks_fenced_total";

/// Every series with its help text (the `# HELP` line), for
/// [`describe`]; all are gauges but [`COMMITS`] and [`ACKS_FENCED`].
pub const HELP: [(&str, &str); 9] = [
    (
        COMMITTED_OFFSET,
        "Last committed offset (the next offset the group reads).",
    ),
    (
        HIGH_WATERMARK,
        "The partition's high watermark (the offset after its newest record).",
    ),
    (
        CONSUMER_LAG,
        "High watermark minus committed offset, never negative.",
    ),
    (
        TIMESTAMP_DIFF,
        "Seconds the enriched stream trails the raw one: 0 when committed up to the high watermark, else the age of the oldest record not yet committed.",
    ),
    (
        COMMITTED_AGE,
        "Seconds since the timestamp of the last committed record.",
    ),
    (
        SOURCE_TIMESTAMP_DIFF,
        "The newest consumed record's timestamp minus that of the last committed record, in seconds.",
    ),
    (IN_FLIGHT, "Records tracked and not yet acked."),
    (COMMITS, "Offset commits reported back, by result."),
    (
        ACKS_FENCED,
        "Acks ignored: their assignment is stale or their partition no longer assigned.",
    ),
];

/// Registers the help text of every series with the installed recorder.
pub fn describe() {
    for (name, help) in HELP {
        if name == COMMITS || name == ACKS_FENCED {
            ::metrics::describe_counter!(name, help);
        } else {
            ::metrics::describe_gauge!(name, help);
        }
    }
}

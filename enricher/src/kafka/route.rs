//! A topic's route: its output and dead-letter topic names, resolved once
//! when the worker is first assigned one of its partitions, and the counts
//! of its records. Every record carries its topic's route, so none formats
//! a topic name, and the loop publishes the counts with a `topic` label.

use std::sync::Arc;

use crate::config::KafkaConfig;
use crate::metrics as m;
use crate::stats::Counter;

/// One input topic's output and dead-letter topics, resolved once when its
/// first partition is assigned (no record formats a topic name), and the
/// counts of its records, which the loop publishes with a `topic` label.
#[derive(Debug)]
pub(super) struct Route {
    /// The input topic.
    pub(super) input: Arc<str>,
    /// Where its enriched records go.
    pub(super) output: Arc<str>,
    /// Where its dead letters go.
    pub(super) dlq: Arc<str>,
    /// What the consumer thread counts.
    pub(super) counts: Counts,
}

/// A route's counts, written by the consumer thread for every record, on a
/// cache line of their own: the lanes read the route's names for every
/// record, and would otherwise miss the line the consumer just wrote.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Counts {
    /// Records taken.
    pub(super) received: Counter,
    /// Records delivered enriched.
    pub(super) enriched: Counter,
    /// Records delivered unchanged (passthrough, tombstones).
    pub(super) passed: Counter,
}

impl Route {
    /// The route of `input`, per the configuration.
    pub(super) fn new(kafka: &KafkaConfig, input: &str) -> Self {
        Self {
            input: input.into(),
            output: kafka.output_topic_for(input).into(),
            dlq: kafka.dlq_topic_for(input).into(),
            counts: Counts::default(),
        }
    }

    /// Counts a delivered record.
    pub(super) fn delivered(&self, outcome: Outcome) {
        match outcome {
            Outcome::Enriched => self.counts.enriched.inc(),
            Outcome::Passed => self.counts.passed.inc(),
            Outcome::Counted => {}
        }
    }

    /// Copies the counts into the exporter (on the loop's tick).
    pub(super) fn publish(&self) {
        let topic = Arc::clone(&self.input);
        metrics::counter!(m::RECORDS_RECEIVED, "topic" => Arc::clone(&topic))
            .absolute(self.counts.received.get());
        metrics::counter!(m::RECORDS, "outcome" => "enriched", "topic" => Arc::clone(&topic))
            .absolute(self.counts.enriched.get());
        metrics::counter!(m::RECORDS, "outcome" => "passed", "topic" => topic)
            .absolute(self.counts.passed.get());
    }
}

/// How a delivered record counts: its route counts the first two when the
/// report is settled; dead letters and dropped records are counted where
/// they happen (they are rare, and carry a reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Enriched and delivered.
    Enriched,
    /// Delivered unchanged.
    Passed,
    /// Counted already.
    Counted,
}

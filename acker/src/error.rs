//! Why a record could not be tracked, and what became of an ack.

use crate::partition::Epoch;

/// Why [`crate::Acker::track`] (or [`crate::PartitionState::track`]) refused a
/// record. A refused record is not covered by any commit: the caller must not
/// process it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// The partition is not assigned to this consumer (never assigned,
    /// released, or lost).
    #[error("partition is not assigned")]
    Unassigned,
    /// The record was taken under an earlier assignment of the partition.
    #[error("record of epoch {given}, partition is at epoch {current}")]
    StaleEpoch {
        /// The epoch the caller passed.
        given: Epoch,
        /// The partition's current epoch.
        current: Epoch,
    },
    /// The partition was revoked and is draining: it takes acks, not records.
    #[error("partition is revoked and draining")]
    Revoked,
    /// The offset is not above the last tracked one: the consumer went back
    /// (a seek, an offset reset). Everything from the first tracked offset up
    /// to `last` was already taken once; to process it again, assign the
    /// partition anew (a fresh epoch).
    #[error("offset {offset} is not above the last tracked offset {last}")]
    NotIncreasing {
        /// The refused offset.
        offset: i64,
        /// The last offset tracked in this epoch.
        last: i64,
    },
    /// A negative offset, or `i64::MAX` (whose successor cannot be committed).
    #[error("offset {0} is not a record offset")]
    InvalidOffset(i64),
}

impl TrackError {
    /// A fixed label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unassigned => "unassigned",
            Self::StaleEpoch { .. } => "stale_epoch",
            Self::Revoked => "revoked",
            Self::NotIncreasing { .. } => "not_increasing",
            Self::InvalidOffset(_) => "invalid_offset",
        }
    }
}

/// What an ack did. Only [`AckResult::Acked`] changed any state; every other
/// outcome was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AckResult {
    /// The record is marked done; the commit point may have moved.
    Acked,
    /// The record was acked before. Offsets below the commit point are
    /// reported so too: the state no longer tells them from compaction gaps.
    Duplicate,
    /// No such record in this epoch: never tracked (an ack before its
    /// track, a compaction gap, or an offset past the last tracked).
    Untracked,
    /// The ack carries the epoch of an earlier assignment of the partition.
    Fenced,
    /// The partition is not assigned (released or lost).
    Unassigned,
}

impl AckResult {
    /// A fixed label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Duplicate => "duplicate",
            Self::Untracked => "untracked",
            Self::Fenced => "fenced",
            Self::Unassigned => "unassigned",
        }
    }
}

//! Which offset a consumer may commit when records finish out of order.
//!
//! ```text
//! consumer --track(tp, epoch, offset, ts)--> Acker --> PartitionState per partition
//!                                              |        [lowest unacked .. last tracked]
//! delivery report --ack(tp, epoch, offset)--> -'        commit point = lowest unacked,
//!                                                        or last tracked + 1
//! tick --commits_due(now)--> [Commit { tp, epoch, offset }] --> consumer commit
//!      <--committed / commit_failed(tp, epoch, offset)--'
//! ```
//!
//! A partition's offset is committed only when that record and every earlier
//! one has been acked (at-least-once). Each assignment of a partition gets a
//! new [`Epoch`]; acks of an earlier one are fenced, so an offset never goes
//! back after a rebalance. Offsets follow Kafka's convention: a commit names
//! the next record to read. Nothing here knows about rdkafka: topics,
//! partitions, offsets and timestamps are plain values, and time is passed in
//! (`now: Instant` for intervals, `now_ms` Unix millis for timestamp diffs).
//!
//! ```
//! use std::time::Instant;
//! use acker::{AckResult, Acker, AckerConfig, TopicPartition};
//!
//! let t0 = Instant::now();
//! let mut acker = Acker::new(AckerConfig::default(), t0);
//! let tp = TopicPartition::new("bro_conn", 1);
//! let epoch = acker.assign(tp.clone());
//! for offset in [10, 11, 13] {
//!     acker.track(&tp, epoch, offset, Some(1_700_000_000_000))?;
//! }
//! assert_eq!(acker.ack(&tp, epoch, 11), AckResult::Acked);
//! assert!(acker.commits_due(t0, true).is_empty()); // 10 is still in flight
//! assert_eq!(acker.ack(&tp, epoch, 10), AckResult::Acked);
//! let commit = acker.commits_due(t0, true).remove(0);
//! assert_eq!(commit.offset, 13); // the next record to read
//! acker.committed(&commit.tp, commit.epoch, commit.offset);
//! # Ok::<(), acker::TrackError>(())
//! ```

#![forbid(unsafe_code)]

mod acker;
mod error;
pub mod metrics;
mod partition;

pub use crate::acker::{Acker, AckerConfig, Commit, LagReport, Progress, TopicPartition};
pub use crate::error::{AckResult, TrackError};
pub use crate::partition::{Epoch, PartitionState, Stamp};

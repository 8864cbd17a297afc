//! What every hot-reloaded file shares: noticing that it was replaced, and
//! the task that checks on an interval.
//!
//! ```text
//! tokio interval --tick--> spawn_blocking(check) --> stamp(path) != seen? --> read, validate, swap
//! ```
//!
//! The GeoIP databases, the public suffix list and the indicator files and
//! tables each own their check; this module only says when to run it.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Identity of a file on disk, to notice a replacement without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The file's [`Stamp`]; `None` when it cannot be read (gone, for now).
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Runs `check` on a blocking thread every `interval` (a check that
/// overruns delays the next one); ends when the handle is aborted or
/// dropped with the runtime.
pub(crate) fn spawn_poller<T: Send + 'static>(
    interval: Duration,
    check: impl Fn() -> T + Clone + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tokio::task::spawn_blocking(check.clone()).await.is_err() {
                return;
            }
        }
    })
}

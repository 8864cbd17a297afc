//! Hot reload of the indicator files and tables, with the discipline of the
//! GeoIP files: polled for a replacement, parsed and checked off the hot
//! path, swapped in whole while records flow.
//!
//! ```text
//! tick --> stamps of intel.files (one part) and of each tables[i] (a part each)
//!      --> a changed part: parse + index on a blocking thread
//!            ok  --> Lists of the new part and the unchanged ones --> Enricher::set_lists
//!            bad --> error log naming the file and line, reloads{result="rejected"};
//!                    the old part keeps serving
//! ```
//!
//! Indicators and table rows are matched while a record is spliced and are
//! cached nowhere (see `matches`), so a swap needs no generation: the next
//! record written sees the new lists, a record being written the old ones.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Enricher;
use crate::config::{Config, ConfigError, TableConfig};
use crate::intel::{IntelSet, Table};
use crate::metrics as m;
use crate::reload::{Stamp, stamp};

/// The files behind the lists in use, and how they looked when last read.
#[derive(Debug)]
pub struct ListsWatcher {
    enricher: Arc<Enricher>,
    files: Vec<PathBuf>,
    tables: Vec<TableConfig>,
    member: String,
    seen: Mutex<Seen>,
}

/// The stamps of each part's files when last read (or last rejected).
#[derive(Debug)]
struct Seen {
    files: Vec<Option<Stamp>>,
    tables: Vec<Option<Stamp>>,
}

/// What one check for replacements did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Parts (the indicator set, a table) read anew and swapped in.
    pub swapped: usize,
    /// Parts whose replacement was rejected; the old one keeps serving.
    pub rejected: usize,
}

impl ListsWatcher {
    /// Reads `intel.files` and `tables` and puts them in use in `enricher`;
    /// `None` when none is configured. An unreadable file or a bad line is
    /// an error naming the key, the file and the line.
    pub fn load(enricher: &Arc<Enricher>, config: &Config) -> Result<Option<Self>, ConfigError> {
        if config.intel.files.is_empty() && config.tables.is_empty() {
            return Ok(None);
        }
        // Stamped before reading, so a change made while reading is seen.
        let seen = Seen {
            files: config.intel.files.iter().map(|f| stamp(f)).collect(),
            tables: config.tables.iter().map(|t| stamp(&t.path)).collect(),
        };
        let set = IntelSet::load(&config.intel.files)
            .map_err(|e| ConfigError::new("intel.files", e.to_string()))?;
        let tables = config
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                load_table(t)
                    .map_err(|e| ConfigError::new(table_key(i), e.to_string()))
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            files = config.intel.files.len(),
            indicators = set.len(),
            skipped = set.skipped(),
            duplicates = set.duplicates(),
            tables = tables.len(),
            "Indicator set and tables loaded"
        );
        enricher.set_lists(Some(enricher.lists(
            Arc::new(set),
            tables,
            &config.intel.field,
        )));
        Ok(Some(Self {
            enricher: Arc::clone(enricher),
            files: config.intel.files.clone(),
            tables: config.tables.clone(),
            member: config.intel.field.clone(),
            seen: Mutex::new(seen),
        }))
    }

    /// Checks every file for a replacement; reads the parts that changed
    /// and swaps the lists once if any was good. A part with a missing
    /// file is left as it is until the file is back. Blocking: run it on a
    /// blocking thread (see [`ListsWatcher::spawn`]).
    pub fn reload_changed(&self) -> Reloaded {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = Reloaded::default();
        let Some(current) = self.enricher.lists_in_use() else {
            return done;
        };
        let mut set = Arc::clone(current.set());
        let mut tables = current.tables().to_vec();

        let now: Vec<Option<Stamp>> = self.files.iter().map(|f| stamp(f)).collect();
        if now != seen.files && now.iter().all(Option::is_some) {
            // Remembered even if the load fails, so a bad file is reported
            // once, not at every check; a further change retries.
            seen.files = now;
            match IntelSet::load(&self.files) {
                Ok(fresh) => {
                    tracing::info!(
                        indicators = fresh.len(),
                        skipped = fresh.skipped(),
                        duplicates = fresh.duplicates(),
                        "Indicator set reloaded"
                    );
                    set = Arc::new(fresh);
                    counted(&mut done, "intel.files", true);
                }
                Err(error) => {
                    tracing::error!(
                        key = "intel.files",
                        %error,
                        "Indicator file replacement rejected; the previous set keeps serving"
                    );
                    counted(&mut done, "intel.files", false);
                }
            }
        }
        for (i, t) in self.tables.iter().enumerate() {
            let now = stamp(&t.path);
            let Some(last) = seen.tables.get_mut(i) else {
                continue;
            };
            if now.is_none() || *last == now {
                continue;
            }
            *last = now;
            let key = table_key(i);
            match (load_table(t), tables.get_mut(i)) {
                (Ok(fresh), Some(slot)) => {
                    tracing::info!(key, rows = fresh.len(), "Table reloaded");
                    *slot = Arc::new(fresh);
                    counted(&mut done, &key, true);
                }
                (Ok(_), None) => {}
                (Err(error), _) => {
                    tracing::error!(
                        key,
                        %error,
                        "Table replacement rejected; the previous one keeps serving"
                    );
                    counted(&mut done, &key, false);
                }
            }
        }
        if done.swapped > 0 {
            self.enricher
                .set_lists(Some(self.enricher.lists(set, tables, &self.member)));
        }
        done
    }

    /// Polls the files every `interval` on a blocking thread and swaps in
    /// replaced ones; ends when the returned handle is aborted or dropped
    /// with the runtime.
    pub fn spawn(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let watcher = Arc::clone(self);
        crate::reload::spawn_poller(interval, move || watcher.reload_changed())
    }
}

fn load_table(t: &TableConfig) -> Result<Table, crate::intel::IntelError> {
    Table::load(&t.path, t.key.as_deref(), &t.fields)
}

fn table_key(i: usize) -> String {
    format!("tables[{i}]")
}

fn counted(done: &mut Reloaded, key: &str, ok: bool) {
    let result = if ok {
        done.swapped += 1;
        "ok"
    } else {
        done.rejected += 1;
        "rejected"
    };
    metrics::counter!(m::INTEL_RELOADS, "key" => key.to_string(), "result" => result).increment(1);
}

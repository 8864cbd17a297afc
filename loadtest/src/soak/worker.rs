//! The worker under test, running: `enricher run` as a child process
//! ([`crate::process::WorkerProcess`]) or in this process
//! ([`crate::fleet::Worker`]), behind the few questions the soak asks of it.

use std::path::Path;

use enricher::config::Config;

use super::WorkerKind;
use crate::fleet;
use crate::process::{WorkerProcess, metric, proc_status_mb};

/// The worker under test, running.
pub(super) enum Running {
    /// `enricher run` as a child process, and the binary it runs.
    Child(WorkerProcess, String),
    /// In this process.
    InProcess(fleet::Worker),
}

impl Running {
    /// Starts the worker `kind` says on `config`; a child's config and log
    /// go into `dir`.
    pub(super) fn start(kind: &WorkerKind, config: &Config, dir: &Path) -> anyhow::Result<Self> {
        match kind {
            WorkerKind::InProcess => Ok(Self::InProcess(fleet::Worker::start(config)?)),
            WorkerKind::Process(path) => Ok(Self::Child(
                WorkerProcess::spawn(path, config, dir, "enricher", &[])?,
                path.display().to_string(),
            )),
        }
    }

    /// `<binary> run (pid N, metrics on ADDR)` or `in-process`.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Child(c, path) => format!(
                "{path} run (pid {}, metrics on {})",
                c.proc.pid(),
                c.metrics_addr()
            ),
            Self::InProcess(_) => "in-process".to_string(),
        }
    }

    /// Resident memory, MiB: the child's, or this whole process's.
    pub(super) fn rss_mb(&self) -> f64 {
        match self {
            Self::Child(c, _) => c.proc.rss_mb(),
            Self::InProcess(_) => proc_status_mb(None, "VmRSS:").unwrap_or(0.0),
        }
    }

    /// The kernel's high-water mark of resident memory, MiB.
    pub(super) fn peak_rss_mb(&self) -> f64 {
        match self {
            Self::Child(c, _) => c.proc.peak_rss_mb(),
            Self::InProcess(_) => proc_status_mb(None, "VmHWM:").unwrap_or(0.0),
        }
    }

    /// Assigned its partitions (a child: `/readyz` answers 200).
    pub(super) fn ready(&self) -> bool {
        match self {
            Self::Child(c, _) => c.ready(),
            Self::InProcess(w) => w.assigned(),
        }
    }

    /// The last lines of a child's log, for an error message.
    pub(super) fn log_tail(&self) -> String {
        match self {
            Self::Child(c, _) => c.proc.log_tail(),
            Self::InProcess(_) => String::new(),
        }
    }

    /// Fails when a child has exited.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Child(c, _) => c.proc.check_alive(),
            Self::InProcess(_) => Ok(()),
        }
    }

    /// L1 hits over L1 lookups so far (`None`: none, or not readable).
    pub(super) fn l1_hit_ratio(&self) -> Option<f64> {
        let (hits, misses) = match self {
            Self::Child(c, _) => {
                let text = c.metrics()?;
                let read = |result: &str| {
                    metric(
                        &text,
                        enricher::metrics::CACHE,
                        &["tier=\"l1\"", &format!("result=\"{result}\"")],
                    )
                };
                (read("hit")?, read("miss")?)
            }
            Self::InProcess(w) => {
                let c = w.stats().cache;
                (c.l1_hits as f64, c.l1_misses as f64)
            }
        };
        (hits + misses > 0.0).then(|| hits / (hits + misses))
    }

    /// Stops the worker the way Kubernetes does (SIGTERM, then SIGKILL
    /// after the grace period) and says how it ended.
    pub(super) fn stop(self) -> anyhow::Result<String> {
        match self {
            Self::InProcess(w) => {
                let report = w.stop()?;
                Ok(format!(
                    "stopped: consumed {}, produced {}",
                    report.consumed, report.produced
                ))
            }
            Self::Child(c, _) => c.stop(),
        }
    }
}

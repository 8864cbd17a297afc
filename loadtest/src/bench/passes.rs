//! One timed pass: a fresh process in a fresh group reads the whole input;
//! its output is counted by id and its CPU read between the first and the
//! last output seen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::Watermarks;
use crate::feed::{Pace, Progress};
use crate::process::{Proc, WorkerProcess};
use crate::report;
use crate::run;
use crate::watch::{Expect, Tally, Watcher};

use super::{Bench, Input, Mode, Pass, Timing};

impl Bench<'_> {
    /// One pass: a fresh process in a fresh group reads the whole input
    /// into output topics of its own, its output timed.
    pub(super) fn measure(
        &mut self,
        input: &Input,
        mode: Mode,
        round: usize,
    ) -> anyhow::Result<Pass> {
        let n = self.options.data.records.len() as u64;
        // The pass's own name: its outputs are `<name>_enr` and `<name>_dlq`.
        let name = format!("bench_{}_{round}_{}", mode.name(), self.run_id);
        let outputs = self.create_outputs(&name, self.partitions, &[])?;
        let probe = Watermarks::new(&self.broker.cluster, &outputs, self.partitions)?;
        let mut warmup_s = 0.0;
        let mut run_id = input.run_id.clone();
        let (timing, exit) = match mode {
            Mode::Peer => {
                let python = self
                    .options
                    .python
                    .as_ref()
                    .map_err(|why| anyhow::anyhow!("{why}"))?;
                let properties = self.broker.cluster.properties();
                let mut peer = crate::peer::spawn(&crate::peer::PeerRun {
                    python,
                    dir: &self.dir,
                    brokers: &self.broker.cluster.bootstrap(),
                    properties: &properties,
                    input: &input.topic,
                    output: &outputs[0],
                    group: &format!("bench-{name}"),
                    city: &self.dbs.city,
                    asn: &self.dbs.asn,
                    idle_exit_secs: 120,
                })?;
                let timing = self.time_pass(&mut peer, &probe, 0, n)?;
                (timing, peer.stop(Duration::from_secs(30))?)
            }
            Mode::Warm => {
                // Its own input topic: warmed through it, then paused while
                // the data set is preloaded after the warm-up records, then
                // resumed, so the pass reads a backlog with every address in L1.
                self.broker.cluster.create_topic(&name, self.partitions)?;
                let config = self.worker_config_with(&name, &name, false, true)?;
                let mut worker = self.spawn_worker(&config)?;
                worker.wait_ready(Duration::from_secs(60))?;
                let started = Instant::now();
                self.warm_up(&mut worker, config.dns.qps, &name, self.partitions, &probe)?;
                warmup_s = started.elapsed().as_secs_f64();
                let base = probe.total().context("reading the output's watermarks")?;
                run_id = run::run_id();
                worker.proc.signal("STOP")?;
                let preloaded = self.send(
                    &name,
                    &run_id,
                    Arc::new(self.options.data.records.clone()),
                    self.partitions,
                    Pace::Flat,
                    &Progress::new(1),
                );
                worker.proc.signal("CONT")?;
                preloaded?;
                let timing = self.time_pass(&mut worker.proc, &probe, base, n)?;
                self.worker_peak_rss_mb = self.worker_peak_rss_mb.max(worker.proc.peak_rss_mb());
                (timing, worker.stop()?)
            }
            Mode::Passthrough | Mode::Cold => {
                let config = self.worker_config(&input.topic, &name, mode == Mode::Passthrough)?;
                let mut worker = self.spawn_worker(&config)?;
                let timing = self.time_pass(&mut worker.proc, &probe, 0, n)?;
                self.worker_peak_rss_mb = self.worker_peak_rss_mb.max(worker.proc.peak_rss_mb());
                (timing, worker.stop()?)
            }
        };
        let tally = self.count(&name, &run_id, n as usize, false)?;
        let lost: u64 = tally.missing(&[]).iter().sum();
        let duplicates = tally.topics.iter().map(|t| t.duplicates).sum();
        let span_s = match (tally.first_out_ms, tally.last_out_ms) {
            (Some(a), Some(b)) => ((b - a) as f64 / 1000.0).max(1e-3),
            _ => f64::INFINITY,
        };
        Ok(Pass {
            mode,
            round,
            rps: tally.distinct() as f64 / span_s,
            lost,
            duplicates,
            dns_qps_peak: timing.dns_qps_peak,
            worker_cpu_us_per_record: timing.worker_cpu_us,
            cpu_us_per_record: timing.whole_cpu_us,
            warmup_s,
            exit,
        })
    }

    /// Watches the outputs' high watermarks until `n` records beyond `base`
    /// are out, reading the process's CPU and the broker's as they go. Only
    /// the watermarks are read while the pass runs: the reader that checks
    /// every record runs after the process has stopped, so it takes no CPU
    /// from the pass it measures.
    pub(super) fn time_pass(
        &self,
        subject: &mut Proc,
        probe: &Watermarks,
        base: u64,
        n: u64,
    ) -> anyhow::Result<Timing> {
        let dns_before = self.dns.queries();
        let mut dns_peak = report::PeakRate::default();
        // CPU time is read from the first output seen to the last, so the
        // wait for the group's first assignment (idle, but the broker's and
        // the clients' timers tick) is not charged to the records.
        let mut worker = CpuPerRecord::default();
        let mut whole = CpuPerRecord::default();
        let cpu = subject.cpu_seconds();
        worker.sample(0, cpu);
        whole.sample(0, cpu.zip(self.broker.cpu_seconds()).map(|(a, b)| a + b));
        let mut last_change = (Instant::now(), 0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            dns_peak.sample(now, self.dns.queries() - dns_before);
            let out = probe
                .total()
                .map_or(last_change.1, |t| t.saturating_sub(base));
            let cpu = subject.cpu_seconds();
            worker.sample(out, cpu);
            whole.sample(out, cpu.zip(self.broker.cpu_seconds()).map(|(a, b)| a + b));
            if out >= n {
                break;
            }
            subject.check_alive()?;
            if out != last_change.1 {
                last_change = (now, out);
            } else if now.duration_since(last_change.0) > Duration::from_secs(60) {
                eprintln!(
                    "  no output for 60 s; giving up on this pass{}",
                    subject.log_tail()
                );
                break;
            }
        }
        Ok(Timing {
            worker_cpu_us: worker.us_per_record().unwrap_or(0.0),
            whole_cpu_us: whole.us_per_record(),
            dns_qps_peak: dns_peak.peak(),
        })
    }

    /// Reads `<name>_enr` and `<name>_dlq` from the start and counts the
    /// records of `run_id` until all `n` are seen or nothing new comes.
    pub(super) fn count(
        &self,
        name: &str,
        run_id: &str,
        n: usize,
        timed: bool,
    ) -> anyhow::Result<Tally> {
        let data = &self.options.data;
        let expect = vec![Expect {
            topic: name.to_string(),
            input_len: data.records[..n].iter().map(|r| r.len() as u32).collect(),
            expect_geo: data.expect_geo[..n].to_vec(),
        }];
        let watcher = if timed {
            Watcher::start_timed(&self.broker.cluster, run_id, expect)?
        } else {
            Watcher::start(&self.broker.cluster, run_id, expect)?
        };
        let quiet = if self.broker.cluster.is_embedded() {
            10
        } else {
            30
        };
        let mut last_change = (Instant::now(), 0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let distinct = watcher.tally().distinct();
            if distinct >= n as u64 {
                break;
            }
            if distinct != last_change.1 {
                last_change = (Instant::now(), distinct);
            } else if last_change.0.elapsed() > Duration::from_secs(quiet) {
                break;
            }
        }
        Ok(watcher.finish())
    }

    /// Feeds the records that hold every address of the data set through
    /// the worker's input topic, again and again, until a whole round finds
    /// every address in L1 (a lookup over the DNS budget is cached for a
    /// second only, so it waits a second between rounds), or 90 s passed.
    pub(super) fn warm_up(
        &self,
        worker: &mut WorkerProcess,
        dns_qps: u32,
        topic: &str,
        partitions: i32,
        probe: &Watermarks,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        // Fed no faster than the DNS budget takes their new addresses: a
        // lookup that cannot get a slot is answered `over_budget` and
        // cached for a second only, so a round sent at once would mostly
        // come back for another.
        let addresses_per_record = self.cover_addresses as f64 / self.cover.len().max(1) as f64;
        let rate = f64::from(dns_qps.max(1)) * 0.9 / addresses_per_record.max(1.0);
        for round in 0.. {
            let misses_before = worker.l1_misses().unwrap_or(0.0);
            let out_before = probe.total().context("reading the output's watermarks")?;
            self.send(
                topic,
                &format!("warmup-{round}"),
                Arc::clone(&self.cover),
                partitions,
                Pace::Rate(rate),
                &Progress::new(1),
            )?;
            let want = out_before + self.cover.len() as u64;
            let by = Instant::now() + Duration::from_secs(60);
            // After a round sent at the budget's pace, one more finds the
            // few addresses it could not look up at once.
            while probe.total().unwrap_or(0) < want {
                worker.proc.check_alive()?;
                anyhow::ensure!(
                    Instant::now() < by,
                    "the warm-up records did not come out within 60 s{}",
                    worker.proc.log_tail()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let misses = worker.l1_misses().unwrap_or(0.0) - misses_before;
            tracing::info!(round, misses, records = self.cover.len(), "Warm-up round");
            if misses <= 0.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                eprintln!(
                    "  warm-up: {misses} L1 misses still in round {round} after 90 s; going on"
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1_100));
        }
        Ok(())
    }

    /// Sends the first `n` records of the data set flat out to `topic`, whose
    /// worker is running, and returns the records out per second between
    /// the first and the last output timestamp.
    pub(super) fn calibrate(
        &self,
        worker: &mut WorkerProcess,
        topic: &str,
        partitions: i32,
        probe: &Watermarks,
        n: usize,
    ) -> anyhow::Result<f64> {
        let run_id = run::run_id();
        let data = &self.options.data;
        let base = probe.total().context("reading the output's watermarks")?;
        self.send(
            topic,
            &run_id,
            Arc::new(data.records[..n].to_vec()),
            partitions,
            Pace::Flat,
            &Progress::new(1),
        )?;
        self.wait_out(worker, probe, base + n as u64)?;
        let tally = self.count(topic, &run_id, n, false)?;
        let lost: u64 = tally.missing(&[]).iter().sum();
        anyhow::ensure!(
            lost == 0,
            "{lost} records of the calibration did not come out"
        );
        Ok(match (tally.first_out_ms, tally.last_out_ms) {
            (Some(a), Some(b)) => tally.distinct() as f64 / ((b - a) as f64 / 1000.0).max(1e-3),
            _ => 0.0,
        })
    }

    /// Waits until the outputs hold `want` records (or nothing new came out
    /// for 60 s).
    pub(super) fn wait_out(
        &self,
        worker: &mut WorkerProcess,
        probe: &Watermarks,
        want: u64,
    ) -> anyhow::Result<()> {
        let mut last_change = (Instant::now(), 0);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let out = probe.total().unwrap_or(last_change.1);
            if out >= want {
                return Ok(());
            }
            worker.proc.check_alive()?;
            if out != last_change.1 {
                last_change = (Instant::now(), out);
            } else if last_change.0.elapsed() > Duration::from_secs(60) {
                eprintln!("  no new output for 60 s; counting what came out");
                return Ok(());
            }
        }
    }
}

/// CPU time per record between the first and the last of a series of
/// output counts.
#[derive(Debug, Default)]
pub(super) struct CpuPerRecord {
    /// The last sample before any output: the start when a pass is over
    /// within one sample.
    before: Option<(f64, u64)>,
    first: Option<(f64, u64)>,
    last: Option<(f64, u64)>,
}

impl CpuPerRecord {
    /// Notes CPU time `cpu` (seconds; `None`: not known) against `out`
    /// records out so far.
    pub(super) fn sample(&mut self, out: u64, cpu: Option<f64>) {
        let Some(now) = cpu else {
            return;
        };
        if out == 0 {
            self.before = Some((now, 0));
            return;
        }
        if self.first.is_none() {
            self.first = Some((now, out));
        }
        self.last = Some((now, out));
    }

    /// µs of CPU per record between the first and last samples with
    /// output (from the last sample before any output when all came out
    /// within one sample); `None` without records between two samples.
    pub(super) fn us_per_record(&self) -> Option<f64> {
        let per = |(c0, n0): (f64, u64), (c1, n1): (f64, u64)| {
            (n1 > n0).then(|| (c1 - c0) * 1e6 / (n1 - n0) as f64)
        };
        match (self.before, self.first, self.last) {
            (_, Some(first), Some(last)) if last.1 > first.1 => per(first, last),
            (Some(before), _, Some(last)) => per(before, last),
            _ => None,
        }
    }
}

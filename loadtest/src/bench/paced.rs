//! The paced phases: a fresh worker fed live at a fixed rate, end-to-end
//! latency from the time each record was in the input topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::{Cluster, LOG_APPEND_TIME, Watermarks};
use crate::feed::{self, FeedSettings, Pace, Progress, Stream, Tag};
use crate::report::{self, Percentiles, Sample};
use crate::run;

use super::{Bench, CALIBRATION_RECORDS, Paced};

impl Bench<'_> {
    /// A fresh worker (warmed first when `warm`) fed live at `rate` (`None`:
    /// half the maximum measured live first) for `latency_secs`: end-to-end
    /// latency from the time each record was in the input topic.
    pub(super) fn paced(&mut self, warm: bool, rate: Option<f64>) -> anyhow::Result<Paced> {
        let data = &self.options.data;
        let cache = if warm { "warm" } else { "cold" };
        let name = format!("bench_paced_{cache}_{}", self.run_id);
        // Room for a calibration and the paced records: the mock cluster
        // keeps 5 MiB a partition (read as they come, but the bench's
        // reader starts from the beginning).
        let calibration = data.records.len().min(CALIBRATION_RECORDS);
        let partitions = self.partitions_for(
            calibration + data.records.len(),
            data.records[..calibration]
                .iter()
                .map(Vec::len)
                .sum::<usize>()
                + data.bytes(),
        );
        // The broker stamps the input and output records with the time it
        // appended them, where it does so at all (see `latency_from`).
        let stamp: &[(&str, &str)] = &[LOG_APPEND_TIME];
        self.broker
            .cluster
            .create_topic_with(&name, partitions, stamp)?;
        let outputs = self.create_outputs(&name, partitions, stamp)?;
        let config = self.worker_config_with(&name, &name, false, warm)?;
        let mut worker = self.spawn_worker(&config)?;
        worker.wait_ready(Duration::from_secs(60))?;
        let probe = Watermarks::new(&self.broker.cluster, &outputs, partitions)?;
        let mut warmup_s = 0.0;
        if warm {
            let started = Instant::now();
            self.warm_up(&mut worker, config.dns.qps, &name, partitions, &probe)?;
            warmup_s = started.elapsed().as_secs_f64();
        }
        // The maximum measured live: the feed flat out, the worker and the
        // broker at work together, as the paced phase will have them (a
        // pass reads a preloaded backlog with nothing else running).
        let live_max_rps = match rate {
            Some(_) => None,
            None => {
                let max = self.calibrate(&mut worker, &name, partitions, &probe, calibration)?;
                eprintln!(
                    "  live maximum: {} records/s ({} records flat out, {cache} cache)",
                    report::thousands(max as u64),
                    report::thousands(calibration as u64)
                );
                Some(max)
            }
        };
        let rate = rate
            .or(live_max_rps.map(|m| m / 2.0))
            .unwrap_or(1_000.0)
            .max(1_000.0);
        let count = ((rate * self.options.latency_secs) as usize).clamp(1, data.records.len());
        let records: Vec<Vec<u8>> = data.records[..count].to_vec();
        eprintln!(
            "  paced phase: {} records at {} records/s, {cache} cache{}",
            report::thousands(count as u64),
            report::thousands(rate as u64),
            if warm {
                format!(" (warm-up {warmup_s:.1} s)")
            } else {
                String::new()
            }
        );
        let run_id = run::run_id();
        // Only the outputs' watermarks are read while the feed runs: the
        // reader that counts every record, and takes each one's output
        // timestamp, runs after the worker has stopped, so that it takes no
        // CPU from the feed, the broker and the worker it measures.
        let base = probe.total().context("reading the output's watermarks")?;
        let progress = Progress::timed(&[count], self.log_append_time);
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            topic: name.clone(),
            ts: Arc::new(vec![None; count]),
            records: Arc::new(records),
            partitions,
        };
        let feeder = {
            let (progress, stop, run_id) =
                (Arc::clone(&progress), Arc::clone(&stop), run_id.clone());
            // The mock cluster cannot move between threads: the thread
            // reaches it by address.
            let (brokers, cluster_properties) = (
                self.broker.cluster.bootstrap(),
                self.broker.cluster.properties(),
            );
            // The idempotent producer's start held the first records of a
            // paced feed 400-600 ms in its queue on the mock cluster, and
            // released them in one burst that the worker then queued: a
            // start-up transient of the feed, not of the worker. Off, a
            // retry may write a record twice; it would show as a duplicate.
            let mut properties: Vec<(String, String)> = self
                .feed_properties()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            properties.push(("enable.idempotence".into(), "false".into()));
            std::thread::Builder::new()
                .name("loadtest-feed".into())
                .spawn(move || {
                    let cluster = Cluster::External {
                        brokers,
                        properties: cluster_properties,
                    };
                    let streams = [stream];
                    let order = feed::send_order(&streams, Pace::Rate(rate));
                    let properties: Vec<(&str, &str)> = properties
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    feed::feed_with(
                        &cluster,
                        &run_id,
                        &streams,
                        &order,
                        Pace::Rate(rate),
                        &progress,
                        &stop,
                        &FeedSettings {
                            producer_properties: &properties,
                            tag: Tag::Key,
                        },
                    )
                })?
        };
        let start = Instant::now();
        let cpu_start = worker.proc.cpu_seconds();
        let dns_start = self.dns.queries();
        let mut dns_peak = report::PeakRate::default();
        let mut timeline = Vec::new();
        let mut last = (start, 0u64, 0u64, dns_start);
        let mut last_change = Instant::now();
        let mut fed_at = None;
        loop {
            // Twice a second: enough for the timeline, and little load on
            // the broker it measures.
            std::thread::sleep(Duration::from_millis(500));
            let now = Instant::now();
            let dns = self.dns.queries();
            dns_peak.sample(now, dns - dns_start);
            let acked = progress.deliveries.acked();
            let out = probe.total().map_or(last.2, |t| t.saturating_sub(base));
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
            let sample = Sample {
                t_s: now.duration_since(start).as_secs_f64(),
                sent: acked,
                out,
                in_rps: acked.saturating_sub(last.1) as f64 / dt,
                out_rps: out.saturating_sub(last.2) as f64 / dt,
                // Records in the input not yet seen out: the group's
                // committed lag would trail by a commit interval, and
                // reading it asks a slow broker for every partition.
                lag: Some(acked.saturating_sub(out) as i64),
                ts_diff_s: 0.0,
                dns_qps: dns.saturating_sub(last.3) as f64 / dt,
            };
            if out != last.2 {
                last_change = now;
            }
            last = (now, acked, out, dns);
            timeline.push(sample);
            let fed = progress.done.load(Ordering::Relaxed);
            if fed && fed_at.is_none() {
                fed_at = Some(now);
            }
            if fed && out + progress.deliveries.refused_count() >= count as u64 {
                break;
            }
            worker.proc.check_alive()?;
            if now.duration_since(last_change) > Duration::from_secs(60) {
                eprintln!("  no new output for 60 s; counting what came out");
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        feeder
            .join()
            .map_err(|_| anyhow::anyhow!("the feed thread panicked"))??;
        let feed_s = fed_at
            .unwrap_or_else(Instant::now)
            .duration_since(start)
            .as_secs_f64();
        let worker_cpu_us = cpu_start
            .zip(worker.proc.cpu_seconds())
            .map_or(0.0, |(a, b)| (b - a) * 1e6 / count.max(1) as f64);
        self.worker_peak_rss_mb = self.worker_peak_rss_mb.max(worker.proc.peak_rss_mb());
        let exit = worker.stop()?;
        let tally = self.count(&name, &run_id, count, true)?;
        let refused = progress.deliveries.refused();
        let times = &progress.times[0];
        let mut latencies = tally.latencies_from(&[times.in_topic()]);
        Ok(Paced {
            cache: cache.into(),
            records: count as u64,
            live_max_rps,
            rate_asked: rate,
            rate_held: progress.deliveries.acked() as f64 / feed_s.max(1e-3),
            warmup_s,
            lost: tally.missing(&refused).iter().sum(),
            duplicates: tally.topics.iter().map(|t| t.duplicates).sum(),
            latency_ms: Percentiles::of(&mut latencies),
            feed_queue_ms: Percentiles::of(&mut times.queue_ms()),
            worker_cpu_us,
            lag_peak: timeline.iter().filter_map(|s| s.lag).max().unwrap_or(0),
            dns_qps_peak: dns_peak.peak(),
            exit,
            timeline,
        })
    }
}

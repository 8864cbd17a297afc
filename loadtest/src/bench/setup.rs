//! The parts a pass needs: topic names, the feed, the input preloaded once,
//! the output topics, a worker's configuration and process, and the cover
//! records that warm a worker's L1.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use enricher::config::Config;

use crate::feed::{self, FeedSettings, Pace, Progress, Stream, Tag};
use crate::process::WorkerProcess;
use crate::run;

use super::{Bench, Input, WARM_DNS_QPS};

impl Bench<'_> {
    pub(super) fn next_name(&mut self, what: &str) -> String {
        self.started += 1;
        format!("{what}-{}", self.started)
    }

    /// The partitions of a topic for `records` records of `bytes` bytes.
    pub(super) fn partitions_for(&self, records: usize, bytes: usize) -> i32 {
        match self.options.partitions {
            Some(p) => p,
            None if self.broker.cluster.is_embedded() => run::mock_partitions(records, bytes),
            None => self.partitions,
        }
    }

    /// Producer properties of the feed on this broker.
    pub(super) fn feed_properties(&self) -> Vec<(&'static str, &'static str)> {
        if self.broker.is_tansu() {
            // tansu stores each batch as it came and reads back many small
            // ones slowly (test_support's `Tansu::producer`); the
            // idempotent producer spins while a slow broker answers
            // (docs/decisions.md), which would take a core from the worker.
            vec![("enable.idempotence", "false"), ("linger.ms", "20")]
        } else {
            Vec::new()
        }
    }

    /// Sends `records` to `topic` under `run_id`, paced, and waits for every
    /// acknowledgement.
    pub(super) fn send(
        &self,
        topic: &str,
        run_id: &str,
        records: Arc<Vec<Vec<u8>>>,
        partitions: i32,
        pace: Pace,
        progress: &Arc<Progress>,
    ) -> anyhow::Result<()> {
        let stream = Stream {
            topic: topic.to_string(),
            ts: Arc::new(vec![None; records.len()]),
            records,
            partitions,
        };
        let order = feed::send_order(std::slice::from_ref(&stream), pace);
        feed::feed_with(
            &self.broker.cluster,
            run_id,
            std::slice::from_ref(&stream),
            &order,
            pace,
            progress,
            &AtomicBool::new(false),
            &FeedSettings {
                producer_properties: &self.feed_properties(),
                tag: Tag::Key,
            },
        )?;
        anyhow::ensure!(
            progress.deliveries.refused_count() == 0,
            "{} records were refused by the broker",
            progress.deliveries.refused_count()
        );
        Ok(())
    }

    pub(super) fn preload_input(&self) -> anyhow::Result<Input> {
        let run_id = run::run_id();
        let topic = format!("bench_input_{run_id}");
        self.broker.cluster.create_topic(&topic, self.partitions)?;
        self.send(
            &topic,
            &run_id,
            Arc::new(self.options.data.records.clone()),
            self.partitions,
            Pace::Flat,
            &Progress::new(1),
        )?;
        Ok(Input { topic, run_id })
    }

    pub(super) fn create_outputs(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<[String; 2]> {
        let outputs = [format!("{name}_enr"), format!("{name}_dlq")];
        for t in &outputs {
            self.broker
                .cluster
                .create_topic_with(t, partitions, configs)?;
        }
        Ok(outputs)
    }

    pub(super) fn worker_config(
        &self,
        input: &str,
        name: &str,
        passthrough: bool,
    ) -> anyhow::Result<Config> {
        self.worker_config_with(input, name, passthrough, false)
    }

    /// A worker's config; a worker to be warmed up (`warm`) gets a DNS
    /// budget of [`WARM_DNS_QPS`] and a twentieth of that in flight, so that
    /// its warm-up takes a round or two of the addresses instead of a round
    /// a second at the budget (the consumer takes them in bursts, and a
    /// lookup that cannot get a slot is cached for a second only). Once
    /// warm it asks DNS nothing while it is measured.
    pub(super) fn worker_config_with(
        &self,
        input: &str,
        name: &str,
        passthrough: bool,
        warm: bool,
    ) -> anyhow::Result<Config> {
        let mut config = self.base.clone();
        if warm {
            config.dns.qps = config.dns.qps.max(WARM_DNS_QPS);
            config.dns.burst = config.dns.burst.max(WARM_DNS_QPS / 10);
            config.dns.max_in_flight = config.dns.max_in_flight.max((WARM_DNS_QPS / 20) as usize);
        }
        config.kafka.input_topic = input.to_string();
        config.kafka.output_topic = Some(format!("{name}_enr"));
        config.kafka.dlq_topic = Some(format!("{name}_dlq"));
        config.kafka.group_id = format!("bench-{name}");
        config.worker.passthrough = passthrough;
        config.worker.metrics_addr = crate::process::free_addr()?;
        Ok(config)
    }

    pub(super) fn spawn_worker(&mut self, config: &Config) -> anyhow::Result<WorkerProcess> {
        let name = self.next_name("worker");
        WorkerProcess::spawn(
            &self.options.enricher,
            config,
            &self.dir,
            &name,
            &self.options.worker_env,
        )
    }
}

/// The records that between them hold every address of `records` (the
/// first record in which each quoted string that reads as an IP address
/// appears), and how many addresses that is. Fed through a worker, they put
/// every address in its L1.
pub fn cover(records: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for record in records {
        let mut new = false;
        for text in quoted(record) {
            if text.len() <= 45
                && let Ok(text) = std::str::from_utf8(text)
                && let Ok(ip) = text.parse::<IpAddr>()
            {
                new |= seen.insert(ip);
            }
        }
        if new {
            out.push(record.clone());
        }
    }
    (out, seen.len())
}

/// The contents of the JSON strings of `record` (escapes left as they are).
fn quoted(record: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = None;
    let mut escaped = false;
    let mut spans = Vec::new();
    for (i, &b) in record.iter().enumerate() {
        match (start, b) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), b'\\') => escaped = true,
            (Some(s), b'"') => {
                spans.push(&record[s..i]);
                start = None;
            }
            (None, b'"') => start = Some(i + 1),
            _ => {}
        }
    }
    spans.into_iter()
}

/// The settings of `base` that are not the worker's defaults, as `key=value`
/// (topics, group and brokers left out), then the environment given.
pub(super) fn worker_settings(base: &Config, env: &[(String, String)]) -> Vec<String> {
    let defaults = Config::default();
    let mut out = Vec::new();
    let maps = [
        (
            "kafka.properties",
            &base.kafka.properties,
            &defaults.kafka.properties,
        ),
        (
            "kafka.consumer_properties",
            &base.kafka.consumer_properties,
            &defaults.kafka.consumer_properties,
        ),
        (
            "kafka.producer_properties",
            &base.kafka.producer_properties,
            &defaults.kafka.producer_properties,
        ),
    ];
    for (section, map, default) in maps {
        for (k, v) in map {
            if default.get(k) != Some(v) && !k.contains("password") && !k.contains("secret") {
                out.push(format!("{section}.\"{k}\"={v}"));
            }
        }
    }
    let w = &base.worker;
    let dw = &defaults.worker;
    for (key, value, default) in [
        (
            "worker.commit_interval_ms",
            w.commit_interval_ms,
            dw.commit_interval_ms,
        ),
        (
            "worker.stats_interval_ms",
            w.stats_interval_ms,
            dw.stats_interval_ms,
        ),
        (
            "worker.shutdown_grace_ms",
            w.shutdown_grace_ms,
            dw.shutdown_grace_ms,
        ),
        (
            "worker.progress_log_secs",
            w.progress_log_secs,
            dw.progress_log_secs,
        ),
    ] {
        if value != default {
            out.push(format!("{key}={value}"));
        }
    }
    for (key, value, default) in [
        ("dns.qps", base.dns.qps, defaults.dns.qps),
        ("dns.burst", base.dns.burst, defaults.dns.burst),
    ] {
        if value != default {
            out.push(format!("{key}={value}"));
        }
    }
    out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    out
}

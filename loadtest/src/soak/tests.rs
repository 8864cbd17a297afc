//! The soak end to end on tiny settings, and its arithmetic.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use enricher::config::Config;

use super::*;
use crate::process::metric;

/// Tiny settings: a few seconds, a small pool, four partitions, the
/// worker in this process (another package's binary may not be built).
fn tiny() -> SoakOptions {
    SoakOptions {
        duration: Duration::from_secs(6),
        rate: Some(1_500.0),
        burst: Duration::from_secs(2),
        idle: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(60),
        calibration_records: 2_000,
        partitions: 4,
        spec: Spec {
            records: 2_000,
            addresses: 200,
            ..Spec::default()
        },
        worker: WorkerKind::InProcess,
        sample_every: Duration::from_millis(250),
        progress: false,
        ..SoakOptions::default()
    }
}

#[test]
fn two_bursts_lose_nothing_and_the_lag_returns_to_zero_after_each() {
    let summary = run(&tiny()).unwrap();
    assert_eq!(summary.bursts.len(), 2);
    assert_eq!(summary.sent, 6_000, "{}", summary.table());
    assert_eq!(summary.lost, 0, "{}", summary.table());
    assert!(summary.drained_every_burst, "{}", summary.table());
    assert!(summary.bursts.iter().all(|b| b.drain_s.is_some()));
    assert!(summary.ok());
    let rss = summary.rss;
    assert!(rss.start_mb > 0.0 && rss.max_mb >= rss.start_mb, "{rss:?}");
    assert!(summary.timeline.iter().any(|s| s.phase == "idle 2"));
    assert!(
        summary.worker_exit.starts_with("stopped"),
        "{}",
        summary.worker_exit
    );
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["bursts"][1]["records"], 3_000);
}

#[test]
fn without_a_rate_the_soak_runs_at_half_a_calibrated_maximum() {
    let summary = run(&SoakOptions {
        duration: Duration::from_secs(1),
        rate: None,
        burst: Duration::from_secs(1),
        idle: Duration::ZERO,
        ..tiny()
    })
    .unwrap();
    let calibration = summary.calibration.unwrap();
    assert_eq!(calibration.records, 2_000);
    assert_eq!(calibration.lost, 0);
    assert!(calibration.max_rps > 0.0);
    assert_eq!(summary.rate_rps, (calibration.max_rps / 2.0).max(1.0));
    assert_eq!(summary.bursts.len(), 1);
    assert_eq!(summary.lost, 0, "{}", summary.table());
    assert!(summary.drained_every_burst, "{}", summary.table());
}

#[test]
fn bursts_fill_the_duration() {
    let s = Duration::from_secs;
    assert_eq!(burst_count(s(600), s(30), s(10)), 15);
    assert_eq!(burst_count(s(601), s(30), s(10)), 16);
    assert_eq!(burst_count(s(6), s(2), s(1)), 2);
    assert_eq!(burst_count(s(0), s(2), s(1)), 1);
}

#[test]
fn the_slope_is_per_hour_and_flat_when_flat() {
    let flat: Vec<(f64, f64)> = (0..100).map(|t| (f64::from(t), 40.0)).collect();
    assert!(slope_per_hour(&flat).abs() < 1e-9);
    let growing: Vec<(f64, f64)> = (0..100)
        .map(|t| (f64::from(t), 40.0 + f64::from(t) / 60.0))
        .collect();
    assert!((slope_per_hour(&growing) - 60.0).abs() < 1e-6);
    assert!(slope_per_hour(&[(1.0, 2.0)]).abs() < 1e-9);
}

#[test]
fn metrics_are_read_by_name_and_labels() {
    let text = "# TYPE enricher_cache_requests_total counter\n\
                enricher_cache_requests_total{tier=\"l1\",result=\"hit\"} 90\n\
                enricher_cache_requests_total{tier=\"l1\",result=\"miss\"} 10\n\
                enricher_cache_requests_total_other 5\n";
    let name = enricher::metrics::CACHE;
    assert_eq!(
        metric(text, name, &["tier=\"l1\"", "result=\"hit\""]),
        Some(90.0)
    );
    assert_eq!(metric(text, name, &["result=\"miss\""]), Some(10.0));
    assert_eq!(metric(text, name, &["tier=\"l2\""]), None);
}

#[test]
fn a_missing_enricher_binary_says_how_to_build_it() {
    let error = check_binary(Path::new("/nonexistent/enricher"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cargo build --release -p enricher"),
        "{error}"
    );
    assert!(error.contains("--enricher"), "{error}");
}

#[test]
fn the_generated_worker_config_is_one_enricher_run_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = crate::geo::write(dir.path()).unwrap();
    let mut config = crate::worker_config(&dbs, Some("127.0.0.1:5353".parse().unwrap()), None);
    config.kafka.brokers = "127.0.0.1:9092".into();
    config.kafka.input_topic = "soak_x".into();
    config.kafka.group_id = "soak-x".into();
    config.worker.metrics_addr = "127.0.0.1:9999".parse().unwrap();
    let text = worker_config_toml(&config).unwrap();
    let read = Config::from_toml(&text).unwrap();
    assert_eq!(read, config);
    read.validate_run().unwrap();
}

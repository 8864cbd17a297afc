//! `loadtest bench` end to end on a small data set: every mode runs with the
//! worker as a process of its own, nothing is lost, and the `--json`
//! summary carries the keys docs/load-testing.md promises.
//!
//! The worker is the `enricher` binary of the same build
//! (`target/<profile>/enricher`): a workspace build or test run builds it;
//! `cargo build -p enricher` does alone.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;

use loadtest::bench::{self, BenchOptions, Broker, Mode};
use loadtest::synth::{self, Spec};

/// `target/<profile>/enricher`: this test runs from `target/<profile>/deps/`.
fn enricher() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let profile_dir = me.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join(format!("enricher{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: `cargo build -p enricher` in this profile (a workspace test run builds it)",
        path.display()
    );
    path
}

#[test]
fn a_small_bench_runs_every_mode_as_a_process_loses_nothing_and_reports_every_key() {
    let spec = Spec {
        records: 3_000,
        addresses: 200,
        ..Spec::default()
    };
    let summary = bench::run(&BenchOptions {
        data: loadtest::one_set(synth::generate(&spec)),
        rounds: 1,
        dns_qps: 500,
        dns_burst: 50,
        latency_secs: 0.5,
        latency_rate: None,
        modes: vec![Mode::Passthrough, Mode::Warm, Mode::Cold, Mode::Peer],
        broker: Broker::Mock,
        partitions: None,
        enricher: enricher(),
        // The peer needs a Python with its modules: skipped here, said so.
        python: Err("not in this test".into()),
        worker_env: Vec::new(),
    })
    .unwrap();
    assert_eq!(summary.passes.len(), 3, "the peer is skipped");
    for pass in &summary.passes {
        assert_eq!((pass.lost, pass.duplicates), (0, 0), "{pass:?}");
        assert!(pass.rps > 0.0, "{pass:?}");
        assert!(pass.worker_cpu_us_per_record >= 0.0, "{pass:?}");
        assert!(
            pass.cpu_us_per_record.is_some(),
            "the mock's CPU is known: {pass:?}"
        );
    }
    assert_eq!((summary.lost, summary.duplicates), (0, 0));
    assert!(summary.dns_qps_peak <= summary.dns_budget_qps + f64::from(summary.dns_burst));
    assert!(summary.peer.starts_with("skipped"), "{}", summary.peer);
    assert_eq!(
        summary.latency_from, "delivery_report",
        "the mock does not stamp"
    );
    let warm = summary.paced_warm.as_ref().unwrap();
    assert!(warm.records > 0 && warm.lost == 0, "{warm:?}");

    let json = serde_json::to_value(&summary).unwrap();
    for key in [
        "passthrough_rps",
        "warm_rps",
        "cold_rps",
        "warm_ratio",
        "cold_ratio",
        "p50_ms",
        "p99_ms",
        "warm_p50_ms",
        "warm_p99_ms",
        "dns_qps_peak",
        "dns_budget_qps",
        "lost",
        "duplicates",
        "peak_rss_mb",
        "passthrough_cpu_us",
        "warm_cpu_us",
        "cold_cpu_us",
        "passthrough_worker_cpu_us",
        "warm_worker_cpu_us",
        "cold_worker_cpu_us",
    ] {
        assert!(
            json.get(key).is_some_and(|v| v.is_number()),
            "{key} in {json}"
        );
    }
    for key in [
        "peer_rps",
        "peer_cpu_us",
        "worker_cpu_ratio_to_peer",
        "rps_ratio_to_peer",
    ] {
        assert!(
            json.get(key).is_some_and(|v| v.is_null()),
            "{key} in {json}"
        );
    }
}

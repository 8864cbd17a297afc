//! `loadtest bench` end to end on a small data set: every mode runs, nothing
//! is lost, and the `--json` summary carries the keys the README promises.

#![allow(missing_docs, clippy::unwrap_used)]

use loadtest::bench::{self, BenchOptions, Mode};
use loadtest::synth::{self, Spec};

#[test]
fn a_small_bench_runs_every_mode_loses_nothing_and_reports_every_key() {
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
        modes: vec![Mode::Passthrough, Mode::Warm, Mode::Cold],
    })
    .unwrap();
    assert_eq!(summary.passes.len(), 3);
    for pass in &summary.passes {
        assert_eq!((pass.lost, pass.duplicates), (0, 0), "{pass:?}");
        assert!(pass.rps > 0.0 && pass.cpu_us_per_record >= 0.0, "{pass:?}");
    }
    assert_eq!((summary.lost, summary.duplicates), (0, 0));
    assert!(summary.dns_qps_peak <= summary.dns_budget_qps + f64::from(summary.dns_burst));

    let json = serde_json::to_value(&summary).unwrap();
    for key in [
        "passthrough_rps",
        "warm_rps",
        "cold_rps",
        "warm_ratio",
        "cold_ratio",
        "p99_ms",
        "dns_qps_peak",
        "dns_budget_qps",
        "lost",
        "duplicates",
        "peak_rss_mb",
        "passthrough_cpu_us",
        "warm_cpu_us",
        "cold_cpu_us",
    ] {
        assert!(
            json.get(key).is_some_and(|v| v.is_number()),
            "{key} in {json}"
        );
    }
}

//! What the exporter shows: gauges stay while they mean something.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn gauges_set_once_stay_exported_past_the_idle_timeout() {
    let dbs = write_dbs();
    // Never queried here: the upstream only has to exist for its gauges.
    let c = config(&dbs, Some("127.0.0.1:9".parse().unwrap()), None);
    let idle = Duration::from_millis(300);
    let recorder = enricher::http::recorder(idle).unwrap();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    enricher::metrics::describe();
    let core = build(&c);
    // The worker's loop publishes on its tick; run it for several idle periods.
    for _ in 0..12 {
        enricher::telemetry::publish(&core.enricher);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = handle.render();
    for series in [
        "enricher_dns_budget_qps{upstream=\"127.0.0.1:9\"} 100000",
        "enricher_dns_in_flight{upstream=\"127.0.0.1:9\"} 0",
        &format!("enricher_geoip_build_timestamp_seconds{{db=\"city\"}} {BUILD_EPOCH}"),
        &format!("enricher_geoip_build_timestamp_seconds{{db=\"asn\"}} {BUILD_EPOCH}"),
        "enricher_geoip_age_seconds{db=\"asn\"}",
        "enricher_l1_entries",
        "# HELP enricher_dns_budget_qps The configured queries-per-second budget",
        "enricher_build_info{version=\"",
    ] {
        assert!(shown.contains(series), "{series} missing from:\n{shown}");
    }
}

//! Copies the running worker's state into the series that
//! [`metrics`](crate::metrics) names: the core's counters and gauges, the
//! build, and the process's own series. Called on the exporter's tick
//! (the Kafka leg's loop), never per record.

use crate::enrich::Enricher;
use crate::metrics as m;
use crate::process;

/// The revision of this build (`ENRICHER_REVISION` when it was compiled).
const REVISION: &str = match option_env!("ENRICHER_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Copies the core's counters into the exporter (absolute values: the
/// counters only grow), with the process's series. Records received and
/// by outcome are the Kafka leg's (it counts them per input topic).
pub fn publish(enricher: &Enricher) {
    let s = enricher.stats().snapshot();
    metrics::counter!(m::PTR_DEADLINE).absolute(s.deadline_hit);
    metrics::counter!(m::NOT_AN_ADDRESS).absolute(s.not_an_address);
    for (tier, result, v) in [
        ("l1", "hit", s.cache.l1_hits),
        ("l1", "miss", s.cache.l1_misses),
        ("l2", "hit", s.cache.l2_hits),
        ("l2", "miss", s.cache.l2_misses),
        ("l2", "unavailable", s.cache.l2_unavailable),
    ] {
        metrics::counter!(m::CACHE, "tier" => tier, "result" => result).absolute(v);
    }
    enricher.publish_gauges();
    metrics::gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => REVISION)
        .set(1.0);
    let (entries, bytes) = enricher.l1_size();
    metrics::gauge!(m::L1_ENTRIES).set(entries as f64);
    metrics::gauge!(m::L1_BYTES).set(bytes as f64);
    process::publish();
}

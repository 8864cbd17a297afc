//! Every metric name and label, in one place. The README's metrics table is
//! written from this module; keep them in step.
//!
//! The hot path counts into plain atomics ([`crate::stats::Stats`]); the
//! exporter copies them into these names. Histograms and events that happen
//! per miss, per reload or per commit go straight to the `metrics` facade.

/// Records by outcome: `in` (read), `enriched` (written with their
/// enrichment), `rejected` (unparseable: dead-lettered or sent to the
/// reject stream), `deadline` (written without a PTR that was still being
/// looked up). Counter. Dead-lettered records also count under
/// `outcome="dead_lettered"` with a `reason` label.
pub const RECORDS: &str = "enricher_records_total";
/// Records taken from Kafka and not yet durably produced. Gauge.
pub const IN_FLIGHT: &str = "enricher_in_flight";
/// Deliveries that failed after librdkafka's own retries (sent again after
/// a backoff), by `error` (librdkafka's code name). Counter.
pub const PRODUCE_ERRORS: &str = "enricher_produce_errors_total";
/// Errors the consumer reported, by `error` (librdkafka's code name). Counter.
pub const CONSUMER_ERRORS: &str = "enricher_consumer_errors_total";
/// Field values that were not an address (hostnames in DNS answers, `-`). Counter.
pub const NOT_AN_ADDRESS: &str = "enricher_not_an_address_total";
/// Cache lookups by `tier` (`l1`, `l2`) and `result` (`hit`, `miss`). Counter.
pub const CACHE: &str = "enricher_cache_requests_total";
/// Entries in the L1 cache. Gauge.
pub const L1_ENTRIES: &str = "enricher_l1_entries";
/// Bytes held by the L1 cache (its weighted size). Gauge.
pub const L1_BYTES: &str = "enricher_l1_bytes";
/// Upstream PTR queries by `upstream` and `outcome` (`ok`, `nxdomain`,
/// `servfail`, `timeout`, `no_record`, `invalid`, `error`). Counter.
pub const DNS_QUERIES: &str = "enricher_dns_queries_total";
/// PTR lookups not sent because the upstream's budget was spent, by `upstream`. Counter.
pub const DNS_OVER_BUDGET: &str = "enricher_dns_over_budget_total";
/// The configured queries-per-second budget of each `upstream`. Gauge.
pub const DNS_BUDGET_QPS: &str = "enricher_dns_budget_qps";
/// PTR queries in flight per `upstream` (against its concurrency cap). Gauge.
pub const DNS_IN_FLIGHT: &str = "enricher_dns_in_flight";
/// Latency of one upstream lookup, by `kind` (`dns`, `redis`, `geoip`), in seconds. Histogram.
pub const LOOKUP_SECONDS: &str = "enricher_lookup_duration_seconds";
/// Redis circuit state: 0 closed, 1 open, 2 half-open. Gauge.
pub const REDIS_CIRCUIT: &str = "enricher_redis_circuit_state";
/// Redis operations by `op` (`mget`, `set`) and `result` (`ok`, `error`, `timeout`, `skipped`). Counter.
pub const REDIS_OPS: &str = "enricher_redis_ops_total";
/// GeoIP database reloads by `db` (`city`, `asn`) and `result` (`ok`, `rejected`). Counter.
pub const GEOIP_RELOADS: &str = "enricher_geoip_reloads_total";
/// Build time of the GeoIP database in use, by `db`, as a Unix timestamp. Gauge.
pub const GEOIP_BUILD: &str = "enricher_geoip_build_timestamp_seconds";
/// Age of the GeoIP database in use (now minus its build time), by `db`, in seconds. Gauge.
pub const GEOIP_AGE: &str = "enricher_geoip_age_seconds";

/// Copies the core's counters into the exporter (absolute values: the
/// counters only grow). Called on an interval, not per record.
pub fn publish(enricher: &crate::enrich::Enricher) {
    let s = enricher.stats().snapshot();
    for (outcome, v) in [
        ("in", s.records_in),
        ("enriched", s.enriched),
        ("rejected", s.rejected),
        ("deadline", s.deadline_hit),
    ] {
        metrics::counter!(RECORDS, "outcome" => outcome).absolute(v);
    }
    metrics::counter!(NOT_AN_ADDRESS).absolute(s.not_an_address);
    for (tier, result, v) in [
        ("l1", "hit", s.cache.l1_hits),
        ("l1", "miss", s.cache.l1_misses),
        ("l2", "hit", s.cache.l2_hits),
        ("l2", "miss", s.cache.l2_misses),
        ("l2", "unavailable", s.cache.l2_unavailable),
    ] {
        metrics::counter!(CACHE, "tier" => tier, "result" => result).absolute(v);
    }
    enricher.publish_gauges();
    let (entries, bytes) = enricher.l1_size();
    metrics::gauge!(L1_ENTRIES).set(entries as f64);
    metrics::gauge!(L1_BYTES).set(bytes as f64);
}

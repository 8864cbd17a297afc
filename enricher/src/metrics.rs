//! Every metric name and label, in one place. The README's metrics table is
//! written from this module; keep them in step.
//!
//! The hot path counts into plain atomics (`stats::Stats`); the exporter
//! copies them into these names (`telemetry`). Histograms and events that happen
//! per miss, per reload or per commit go straight to the `metrics` facade.
//!
//! Three prefixes: `enricher_` for the worker's own series, `acker_` for the
//! offset tracking (a crate of its own, usable without the worker), and
//! `process_` for the process's, under the names every Prometheus client
//! library uses, so existing dashboards read them.

/// Records taken from the input, by `topic` (the input topic). Counter.
pub const RECORDS_RECEIVED: &str = "enricher_records_received_total";
/// Records by final outcome and `topic` (the input topic), counted once
/// each when the broker has acknowledged it: `enriched`, `passed` (copied
/// unchanged: passthrough mode, tombstones), `dead_lettered` (with a
/// `reason`), `dropped` (a dead letter too large even without its payload). Received minus the sum of
/// outcomes is what is in flight (plus, after a crash, what is redone).
/// Counter.
pub const RECORDS: &str = "enricher_records_total";
/// Records written before their PTR lookup finished (the per-record lookup
/// deadline passed). Counter.
pub const PTR_DEADLINE: &str = "enricher_ptr_deadline_total";
/// Records taken from Kafka and not yet durably produced. Gauge.
pub const IN_FLIGHT: &str = "enricher_in_flight";
/// Deliveries that failed after librdkafka's own retries (sent again after
/// a backoff), by `error` (librdkafka's code name). Counter.
pub const PRODUCE_ERRORS: &str = "enricher_produce_errors_total";
/// Errors the consumer reported, by `error` (librdkafka's code name). Counter.
pub const CONSUMER_ERRORS: &str = "enricher_consumer_errors_total";
/// librdkafka's global client errors (all brokers down, transport
/// failures), by `error`. Counter.
pub const CLIENT_ERRORS: &str = "enricher_kafka_client_errors_total";
/// Field values that were not an address (hostnames in DNS answers, `-`). Counter.
pub const NOT_AN_ADDRESS: &str = "enricher_not_an_address_total";
/// Values of `[domains]` and `[urls]` fields that were not a host name (or
/// URL), by `field`. Counter.
pub const NOT_A_DOMAIN: &str = "enricher_not_a_domain_total";
/// Reloads of `domains.public_suffix_list` by `result` (`ok`,
/// `rejected`: the file is not a list; the previous one keeps serving). Counter.
pub const PSL_RELOADS: &str = "enricher_public_suffix_reloads_total";
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
/// Records' matches against threat-intelligence indicators, by `source`
/// (the indicator's feed) and `type` (`addr`, `subnet`, `domain`, `url`,
/// `hash`). Counter.
pub const INTEL_MATCHES: &str = "enricher_intel_matches_total";
/// Indicators in the set in use, by `type`. Gauge.
pub const INTEL_INDICATORS: &str = "enricher_intel_indicators";
/// Age of the indicator set in use (now minus its newest file's
/// modification time), in seconds. Gauge.
pub const INTEL_AGE: &str = "enricher_intel_age_seconds";
/// Reloads of the indicator files and tables by `key` (`intel.files`,
/// `tables[0]`) and `result` (`ok`, `rejected`). Counter.
pub const INTEL_RELOADS: &str = "enricher_intel_reloads_total";
/// Matched records delivered to their input topic's alerts topic
/// (`kafka.intel_topic_template`), by `topic` (the input topic). Counter.
pub const INTEL_ALERTS: &str = "enricher_intel_alerts_total";

/// Build information, always 1, by `version` and `revision` (the git
/// revision the image was built from, `ENRICHER_REVISION` at build time).
/// Gauge.
pub const BUILD_INFO: &str = "enricher_build_info";

/// CPU time of the process, user and system, in seconds. Gauge (a float;
/// read it with `rate()` like a counter).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// Resident memory of the process, in bytes. Gauge.
pub const PROCESS_RESIDENT: &str = "process_resident_memory_bytes";
/// Virtual memory of the process, in bytes. Gauge.
pub const PROCESS_VIRTUAL: &str = "process_virtual_memory_bytes";
/// Threads of the process. Gauge.
pub const PROCESS_THREADS: &str = "process_threads";
/// Open file descriptors. Gauge.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// The limit on open file descriptors. Gauge.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// When the process started, as a Unix timestamp. Gauge.
pub const PROCESS_START: &str = "process_start_time_seconds";

/// What kind of series a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution in buckets.
    Histogram,
}

/// Every series of the worker with its kind and help text (the `# HELP`
/// line); the acker's are in [`acker::metrics::HELP`].
pub const HELP: [(&str, Kind, &str); 36] = [
    (
        RECORDS_RECEIVED,
        Kind::Counter,
        "Records taken from the input, by input topic.",
    ),
    (
        RECORDS,
        Kind::Counter,
        "Records by final outcome and input topic once the broker has them: enriched, passed, dead_lettered (by reason), dropped.",
    ),
    (
        PTR_DEADLINE,
        Kind::Counter,
        "Records written before their PTR lookup finished.",
    ),
    (
        IN_FLIGHT,
        Kind::Gauge,
        "Records taken from Kafka and not yet durably produced.",
    ),
    (
        PRODUCE_ERRORS,
        Kind::Counter,
        "Deliveries that failed after librdkafka's retries and were sent again after a backoff, by error.",
    ),
    (
        CONSUMER_ERRORS,
        Kind::Counter,
        "Errors the consumer reported, by error.",
    ),
    (
        CLIENT_ERRORS,
        Kind::Counter,
        "librdkafka's global client errors (all brokers down, transport failures), by error.",
    ),
    (
        NOT_AN_ADDRESS,
        Kind::Counter,
        "Field values that were not an address.",
    ),
    (
        NOT_A_DOMAIN,
        Kind::Counter,
        "Values of domain and URL fields that were not a host name (or URL), by field.",
    ),
    (
        PSL_RELOADS,
        Kind::Counter,
        "Reloads of the public suffix list file, by result (ok, rejected).",
    ),
    (
        CACHE,
        Kind::Counter,
        "Cache lookups by tier (l1, l2) and result.",
    ),
    (L1_ENTRIES, Kind::Gauge, "Entries in the in-process cache."),
    (L1_BYTES, Kind::Gauge, "Bytes held by the in-process cache."),
    (
        DNS_QUERIES,
        Kind::Counter,
        "Upstream PTR queries by upstream and outcome.",
    ),
    (
        DNS_OVER_BUDGET,
        Kind::Counter,
        "PTR lookups not sent because the upstream's budget was spent.",
    ),
    (
        DNS_BUDGET_QPS,
        Kind::Gauge,
        "The configured queries-per-second budget of each upstream.",
    ),
    (
        DNS_IN_FLIGHT,
        Kind::Gauge,
        "PTR queries in flight per upstream.",
    ),
    (
        LOOKUP_SECONDS,
        Kind::Histogram,
        "Latency of one upstream lookup by kind (dns, redis, geoip), in seconds.",
    ),
    (
        REDIS_CIRCUIT,
        Kind::Gauge,
        "Redis circuit state: 0 closed, 1 open, 2 half-open.",
    ),
    (
        REDIS_OPS,
        Kind::Counter,
        "Redis operations by op and result.",
    ),
    (
        GEOIP_RELOADS,
        Kind::Counter,
        "GeoIP database reloads by db and result.",
    ),
    (
        GEOIP_BUILD,
        Kind::Gauge,
        "Build time of the GeoIP database in use, as a Unix timestamp.",
    ),
    (
        GEOIP_AGE,
        Kind::Gauge,
        "Age of the GeoIP database in use, in seconds.",
    ),
    (
        INTEL_MATCHES,
        Kind::Counter,
        "Matches against threat-intelligence indicators by source and type.",
    ),
    (
        INTEL_INDICATORS,
        Kind::Gauge,
        "Indicators in the set in use, by type.",
    ),
    (
        INTEL_AGE,
        Kind::Gauge,
        "Age of the indicator set in use (its newest file), in seconds.",
    ),
    (
        INTEL_RELOADS,
        Kind::Counter,
        "Reloads of the indicator files and tables by key and result.",
    ),
    (
        INTEL_ALERTS,
        Kind::Counter,
        "Matched records delivered to the alerts topic, by input topic.",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Build information, always 1, by version and revision.",
    ),
    (
        PROCESS_CPU,
        Kind::Gauge,
        "Total user and system CPU time spent in seconds.",
    ),
    (
        PROCESS_RESIDENT,
        Kind::Gauge,
        "Resident memory size in bytes.",
    ),
    (
        PROCESS_VIRTUAL,
        Kind::Gauge,
        "Virtual memory size in bytes.",
    ),
    (
        PROCESS_THREADS,
        Kind::Gauge,
        "Number of OS threads in the process.",
    ),
    (
        PROCESS_OPEN_FDS,
        Kind::Gauge,
        "Number of open file descriptors.",
    ),
    (
        PROCESS_MAX_FDS,
        Kind::Gauge,
        "Maximum number of open file descriptors.",
    ),
    (
        PROCESS_START,
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    ),
];

/// Registers the help text of every series, the worker's and the acker's,
/// with the installed recorder. Call once after installing it.
pub fn describe() {
    for (name, kind, help) in HELP {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    acker::metrics::describe();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_names_every_series() {
        let readme = include_str!("../../README.md");
        let names = HELP
            .iter()
            .map(|(name, _, _)| *name)
            .chain(acker::metrics::HELP.iter().map(|(name, _)| *name));
        for name in names {
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} is not in the README"
            );
        }
    }
}

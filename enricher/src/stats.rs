//! Counters the hot path bumps: plain relaxed atomics, read by the exit
//! summary of `enricher pipe` and copied into Prometheus by the exporter.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter of the enrichment core.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read.
    pub records_in: Counter,
    /// Records written with their enrichment.
    pub enriched: Counter,
    /// Records rejected (unparseable, too large, ...).
    pub rejected: Counter,
    /// Records whose PTR wait hit the per-record deadline.
    pub deadline_hit: Counter,
    /// IP field values that were not an address.
    pub not_an_address: Counter,
    /// L1 hits.
    pub l1_hits: Counter,
    /// L1 misses.
    pub l1_misses: Counter,
    /// L2 (Redis) hits.
    pub l2_hits: Counter,
    /// L2 misses.
    pub l2_misses: Counter,
    /// L2 reads skipped or failed (circuit open, timeout).
    pub l2_unavailable: Counter,
    /// Upstream PTR lookups, by outcome: see [`Stats::dns`].
    pub dns_ok: Counter,
    /// NXDOMAIN answers.
    pub dns_nxdomain: Counter,
    /// Empty answers.
    pub dns_no_record: Counter,
    /// SERVFAIL and other error codes.
    pub dns_servfail: Counter,
    /// Timeouts.
    pub dns_timeout: Counter,
    /// Invalid (refused by the sanitiser) answers.
    pub dns_invalid: Counter,
    /// Lookups not sent because the budget was spent.
    pub dns_over_budget: Counter,
    /// Other resolver errors.
    pub dns_error: Counter,
}

impl Stats {
    /// The counter of one DNS outcome label.
    pub fn dns(&self, label: &str) -> &Counter {
        match label {
            "ok" => &self.dns_ok,
            "nxdomain" => &self.dns_nxdomain,
            "no_record" => &self.dns_no_record,
            "servfail" => &self.dns_servfail,
            "timeout" => &self.dns_timeout,
            "invalid" => &self.dns_invalid,
            "over_budget" => &self.dns_over_budget,
            _ => &self.dns_error,
        }
    }

    /// A plain copy, for the exit summary and tests.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records_in: self.records_in.get(),
            enriched: self.enriched.get(),
            rejected: self.rejected.get(),
            deadline_hit: self.deadline_hit.get(),
            not_an_address: self.not_an_address.get(),
            cache: CacheSnapshot {
                l1_hits: self.l1_hits.get(),
                l1_misses: self.l1_misses.get(),
                l2_hits: self.l2_hits.get(),
                l2_misses: self.l2_misses.get(),
                l2_unavailable: self.l2_unavailable.get(),
            },
            dns: DnsSnapshot {
                ok: self.dns_ok.get(),
                nxdomain: self.dns_nxdomain.get(),
                no_record: self.dns_no_record.get(),
                servfail: self.dns_servfail.get(),
                timeout: self.dns_timeout.get(),
                invalid: self.dns_invalid.get(),
                over_budget: self.dns_over_budget.get(),
                error: self.dns_error.get(),
            },
        }
    }
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Records read.
    pub records_in: u64,
    /// Records written enriched.
    pub enriched: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records that hit the per-record lookup deadline.
    pub deadline_hit: u64,
    /// Field values that were not an address.
    pub not_an_address: u64,
    /// Cache counters.
    pub cache: CacheSnapshot,
    /// Upstream DNS lookups by outcome.
    pub dns: DnsSnapshot,
}

/// Cache counters in a [`Snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheSnapshot {
    /// L1 hits.
    pub l1_hits: u64,
    /// L1 misses.
    pub l1_misses: u64,
    /// L2 hits.
    pub l2_hits: u64,
    /// L2 misses.
    pub l2_misses: u64,
    /// L2 skipped or failed.
    pub l2_unavailable: u64,
}

/// DNS counters in a [`Snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsSnapshot {
    /// Names found.
    pub ok: u64,
    /// NXDOMAIN.
    pub nxdomain: u64,
    /// No PTR record.
    pub no_record: u64,
    /// SERVFAIL.
    pub servfail: u64,
    /// Timed out.
    pub timeout: u64,
    /// Refused by the sanitiser.
    pub invalid: u64,
    /// Not sent: over budget.
    pub over_budget: u64,
    /// Other errors.
    pub error: u64,
}

impl DnsSnapshot {
    /// Queries actually sent upstream.
    pub fn sent(&self) -> u64 {
        self.ok
            + self.nxdomain
            + self.no_record
            + self.servfail
            + self.timeout
            + self.invalid
            + self.error
    }
}

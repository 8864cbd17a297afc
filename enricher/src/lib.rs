//! The enrichment core of the fleet: given a network-log record (Zeek JSON,
//! Zeek TSV or generic JSON), produce the same record with every IP address
//! enriched by GeoIP and reverse DNS.
//!
//! ```text
//! bytes --> record::json::scan ----------> addresses (ip::canonical)
//!                                             |
//!                       enrich: L1 (moka) --miss--> one fill per address
//!                                             |        |-> cache::RedisCache (L2, batched MGET)
//!                                             |        |-> dns::Dns (PTR, budget, TTL per outcome)
//!                                             |        '-> geoip::GeoIp (mmdb, hot reload)
//!                                             v
//! output::Splicer: original bytes up to the closing brace + enrichment + "}"
//! ```
//!
//! Nothing here knows about Kafka: `enricher pipe` drives the same core from
//! standard input ([`pipe`]).

#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod dns;
pub mod enrich;
pub mod geoip;
pub mod http;
pub mod ip;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod pipe;
pub mod process;
pub mod record;
pub mod stats;
pub mod status;
pub mod worker;

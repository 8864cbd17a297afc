//! Integration tests of the enrichment core against real parts: `.mmdb`
//! files written by the tests, a hickory DNS server on loopback, and a real
//! `redis-server` on a free port. Each test starts its own.

#![allow(missing_docs, clippy::unwrap_used)]

mod alerts;
mod bad_input;
mod cache;
mod chaos;
mod dns;
mod domains;
mod faults;
mod geoip;
mod geoip_kinds;
mod intel;
mod kafka;
mod pipe;
mod records;
mod redrive;
mod security;
mod status;
mod tansu;
mod telemetry;
mod topics;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enricher::config::Config;
use enricher::core::{self, Core};
use enricher::enrich::{Enricher, Scratch};
use serde_json::Value;
use tempfile::TempDir;
use test_support::mmdb;

/// Waits up to 10 s for `done`, polling every 10 ms.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Keys in a Redis server's current database.
pub fn dbsize(redis: &test_support::RedisServer) -> usize {
    let reply = redis.command(&["DBSIZE"]).unwrap();
    reply.trim().trim_start_matches(':').parse().unwrap()
}

/// A build time that is plausible (not in the future).
pub const BUILD_EPOCH: u64 = 1_700_000_000;

/// A temp dir holding the standard City and ASN fixtures.
pub struct Dbs {
    pub dir: TempDir,
    pub city: PathBuf,
    pub asn: PathBuf,
}

pub fn write_dbs() -> Dbs {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    mmdb::write_atomically(
        &city,
        &mmdb::city_db_bytes(&mmdb::standard_city(), BUILD_EPOCH),
    )
    .unwrap();
    mmdb::write_atomically(
        &asn,
        &mmdb::asn_db_bytes(&mmdb::standard_asn(), BUILD_EPOCH),
    )
    .unwrap();
    Dbs { dir, city, asn }
}

/// A config with the fixtures, the given DNS server (or none) and Redis (or none).
pub fn config(dbs: &Dbs, dns: Option<SocketAddr>, redis: Option<String>) -> Config {
    let mut c = Config::default();
    c.geoip.city = Some(dbs.city.clone());
    c.geoip.asn = Some(dbs.asn.clone());
    c.geoip.reload_interval_ms = 0;
    match dns {
        Some(addr) => {
            c.dns.servers = vec![addr];
            c.dns.timeout_ms = 300;
            c.dns.qps = 100_000;
            c.dns.burst = 100_000;
            c.dns.max_in_flight = 1_000;
        }
        None => c.dns.enabled = false,
    }
    if let Some(url) = redis {
        c.redis.url = url;
        c.redis.timeout_ms = 200;
    }
    c.output.provenance = true;
    c
}

pub fn build(c: &Config) -> Core {
    core::build(c).unwrap()
}

/// Enriches one line and parses the output (tests only: the core never parses to a Value).
pub async fn enrich(e: &Arc<Enricher>, line: &str) -> Value {
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    e.enrich(line.as_bytes(), &mut scratch, &mut out)
        .await
        .unwrap();
    assert!(out.ends_with(b"}\n"), "one line per record");
    assert!(
        out.starts_with(line.trim_end().trim_end_matches('}').as_bytes()),
        "original bytes kept"
    );
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("invalid JSON out ({e}): {}", String::from_utf8_lossy(&out)))
}

pub fn conn(orig: &str, resp: &str) -> String {
    format!(
        r#"{{"_path":"conn","ts":1700000000.5,"uid":"C1","id.orig_h":"{orig}","id.orig_p":1234,"id.resp_h":"{resp}","id.resp_p":443,"proto":"tcp"}}"#
    )
}

/// The members a test compares when only provenance may differ.
pub fn without(v: &Value, suffix: &str) -> Value {
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|k, _| !k.ends_with(suffix));
    }
    v
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}

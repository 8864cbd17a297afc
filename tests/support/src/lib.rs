//! Real servers and fixtures for the fleet's tests.
//!
//! Every helper starts its own server on a free loopback port, so tests can run
//! in parallel without sharing state:
//!
//! ```text
//! RedisServer  -- a real `redis-server` child process (std::process, usable from sync and async tests)
//! DnsServer    -- an in-process hickory-server answering PTR queries over UDP, with scripted
//!                 answers (synthetic names, NXDOMAIN, SERVFAIL, silence, delays) and query counters
//! mmdb         -- real MaxMind DB files in the GeoIP2 City / Country / GeoLite2 ASN layouts,
//!                 a standard fixture, and corrupt variants for reload tests
//! TestPki      -- a throwaway CA and a loopback server certificate (PEM files) for TLS tests
//! zeek         -- Zeek log records written as Zeek's JSON and TSV writers do, and a seeded Rng
//! ```

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Once;

mod dns;
pub mod kafka;
pub mod mmdb;
mod redis;
mod tls;
pub mod zeek;

pub use dns::{Answer, Behaviour, DnsServer, Mix, synth_name};
pub use redis::RedisServer;
pub use tls::TestPki;

/// Returns a loopback TCP port that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and dropping the listener, so another
/// process may take it before the caller binds it; servers started here retry with a
/// new port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// Installs a `tracing` subscriber that writes through the test harness's capture.
///
/// The filter comes from `RUST_LOG` (nothing is shown when it is unset). Safe to call
/// from every test: only the first call installs anything.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Another crate's test may already have set a global subscriber; that is fine.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port should be free");
    }

    #[test]
    fn init_tracing_is_idempotent() {
        init_tracing();
        init_tracing();
        tracing::info!("Tracing works");
    }
}

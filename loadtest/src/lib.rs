//! The load-test harness of the enrichment fleet: replays recorded Zeek logs
//! or synthetic load through enricher workers, counts every record at the
//! other end, and benchmarks enrichment against a plain copy.
//!
//! ```text
//! source (recorded logs) --.                                   .--> watch: lost, duplicates,
//! gen (synthetic, Zipf) ---+--> feed --> <topic> --> fleet ----+    dead letters, latency
//!                          |   (tagged)   (cluster)  (workers) '--> report / plot
//! geo (demo .mmdb) --------'                  ^           |
//! fake DNS (test-support, Mix) <-------------------------'
//! ```
//!
//! Workers are built and run through the enricher's public API
//! ([`enricher::core::build`], [`enricher::kafka::run`]), exactly as the
//! `enricher run` binary does; `bench` and `soak` run that binary itself as
//! a child process ([`process`]), so that its CPU and memory are its own,
//! and `bench` runs the Python peer beside it ([`peer`]).

#![forbid(unsafe_code)]

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod feed;
pub mod fleet;
pub mod geo;
pub mod peer;
pub mod plot;
pub mod process;
pub mod report;
pub mod run;
pub mod soak;
pub mod source;
pub mod synth;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use enricher::config::Config;

/// The fake upstream DNS of demos and benchmarks: 20 ms median, 80 ms p99,
/// 5% NXDOMAIN, 0.5% SERVFAIL, 1% never answered.
pub fn realistic_dns() -> test_support::Mix {
    test_support::Mix {
        median: Duration::from_millis(20),
        p99: Duration::from_millis(80),
        nxdomain_per_mille: 50,
        servfail_per_mille: 5,
        silence_per_mille: 10,
    }
}

/// The fake upstream DNS ([`realistic_dns`]) of demos, replays, soaks and
/// benchmarks, on a runtime of its own; both stop when this is dropped.
pub struct FakeDns {
    server: test_support::DnsServer,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeDns {
    /// Starts it on a free loopback port.
    ///
    /// # Errors
    ///
    /// When the runtime or the server cannot start.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(test_support::Behaviour::default().with_mix(realistic_dns()))
    }

    /// Starts one answering as `behaviour` says, on a free loopback port.
    ///
    /// # Errors
    ///
    /// When the runtime or the server cannot start.
    pub fn start_with(behaviour: test_support::Behaviour) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-dns")
            .enable_all()
            .build()?;
        let server = runtime.block_on(test_support::DnsServer::start(behaviour))?;
        Ok(Self {
            server,
            runtime: Some(runtime),
        })
    }
}

impl std::ops::Deref for FakeDns {
    type Target = test_support::DnsServer;

    fn deref(&self) -> &Self::Target {
        &self.server
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A worker config for in-process workers: the demo databases, the given
/// DNS server and Redis, commits every 500 ms. Brokers, topics and group
/// are filled in per topic by the run.
pub fn worker_config(
    dbs: &geo::Databases,
    dns: Option<SocketAddr>,
    redis_url: Option<&str>,
) -> Config {
    let mut c = Config::default();
    c.geoip.city = Some(dbs.city.clone());
    c.geoip.asn = Some(dbs.asn.clone());
    match dns {
        Some(addr) => c.dns.servers = vec![addr],
        None => c.dns.enabled = false,
    }
    if let Some(url) = redis_url {
        c.redis.url = url.to_string();
    }
    c.worker.commit_interval_ms = 500;
    c.worker.stats_interval_ms = 1_000;
    c.worker.progress_log_secs = 0;
    c.kafka
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    c.kafka
        .consumer_properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    c
}

/// Groups synthetic records into one data set per log type.
pub fn sets_of(records: Vec<synth::Generated>) -> Vec<source::LogSet> {
    let mut sets: Vec<source::LogSet> = Vec::new();
    for r in records {
        let i = match sets.iter().position(|s| s.path == r.path) {
            Some(i) => i,
            None => {
                sets.push(source::LogSet {
                    path: r.path.to_string(),
                    ..source::LogSet::default()
                });
                sets.len() - 1
            }
        };
        sets[i].push(r.json.into_bytes(), Some(r.ts), r.expect_geo);
    }
    sets
}

/// Generated records as one set (the benchmark's single topic), named
/// `synthetic`.
pub fn one_set(records: Vec<synth::Generated>) -> source::LogSet {
    let mut set = source::LogSet {
        path: "synthetic".into(),
        ..source::LogSet::default()
    };
    for r in records {
        set.push(r.json.into_bytes(), Some(r.ts), r.expect_geo);
    }
    set
}

/// Whether a Redis answers `PING` at `url`'s host and port within 300 ms.
pub fn redis_reachable(host_port: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let Some(addr) = host_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

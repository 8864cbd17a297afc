//! A scripted DNS server for reverse lookups, built on hickory-server, over loopback UDP.
//!
//! ```text
//! test --Behaviour (answers, latency, Mix)--> DnsServer (handle: counters, set_behaviour)
//!                                                 |  shared state
//! resolver --UDP PTR query--> hickory Server --> handler: classify, wait, encode the answer
//! ```

mod handler;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hickory_server::Server;
use tokio::net::UdpSocket;

use handler::{Handler, Shared, lock};

/// What the server answers to a PTR query for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A PTR record naming [`synth_name`] of the address, e.g. `1.2.3.4` ->
    /// `host-1-2-3-4.example.test.`.
    Synth,
    /// A PTR record with this fixed target.
    ///
    /// The text is split on `.` and each part is sent as raw label bytes, unvalidated
    /// (spaces, quotes, control characters, non-ASCII UTF-8 all go on the wire as is), so
    /// sanitiser tests can receive hostile names. Only what DNS cannot carry is lost:
    /// empty labels are skipped, a label is cut to 63 bytes, and labels that would take
    /// the name past 255 bytes are dropped. An empty string gives the root name `.`.
    Name(String),
    /// `NXDOMAIN` with an SOA in the authority section whose TTL and minimum are the
    /// behaviour's `negative_ttl`, so a resolver reports that as the negative TTL.
    NxDomain,
    /// `SERVFAIL` with no records.
    ServFail,
    /// No answer at all: the query is dropped and the client times out.
    Silence,
    /// Waits this long (on top of the behaviour's `latency`), then answers as the inner
    /// answer says. Concurrent queries are not held up.
    Delay(Duration, Box<Answer>),
}

/// The server's script: an answer per address, a default, latency and TTLs.
///
/// Change it at run time with [`DnsServer::set_behaviour`]; queries already waiting out a
/// latency or delay keep the behaviour they started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// The answer for addresses without an override.
    pub default: Answer,
    /// Answers for particular addresses (matched exactly as parsed from the query name:
    /// an `ip6.arpa.` query for `::ffff:1.2.3.4` is an IPv6 address).
    pub overrides: HashMap<IpAddr, Answer>,
    /// Delay applied before answering every query, PTR or not.
    pub latency: Duration,
    /// TTL of PTR records, in seconds.
    pub ttl: u32,
    /// TTL and minimum of the SOA sent with `NXDOMAIN`, in seconds.
    pub negative_ttl: u32,
    /// A realistic upstream for load tests: random latency and a share of failures for
    /// addresses without an override, on top of `default` and `latency`.
    pub mix: Option<Mix>,
}

/// A load-test upstream: each query waits a log-normal latency, and each address is, for
/// good, one that answers `NXDOMAIN`, `SERVFAIL`, nothing at all, or `default`.
///
/// Which addresses fail is decided by a hash of the address, so a failing address fails
/// every time, as on a real network, and the resolver's negative caching shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Half of the queries are answered faster than this.
    pub median: Duration,
    /// 99% of the queries are answered faster than this (at least `median`).
    pub p99: Duration,
    /// Addresses answered with `NXDOMAIN`, per thousand.
    pub nxdomain_per_mille: u32,
    /// Addresses answered with `SERVFAIL`, per thousand.
    pub servfail_per_mille: u32,
    /// Addresses never answered (the client times out), per thousand.
    pub silence_per_mille: u32,
}

impl Mix {
    /// The answer an address always gets under this mix.
    pub fn answer_for(&self, ip: IpAddr, default: &Answer) -> Answer {
        let bucket = (splitmix(hash_ip(ip)) % 1000) as u32;
        let nx = self.nxdomain_per_mille;
        let sf = nx + self.servfail_per_mille;
        let si = sf + self.silence_per_mille;
        if bucket < nx {
            Answer::NxDomain
        } else if bucket < sf {
            Answer::ServFail
        } else if bucket < si {
            Answer::Silence
        } else {
            default.clone()
        }
    }

    /// A latency drawn from the log-normal distribution with this median and p99;
    /// `draw` is any 64-bit number, spread by a hash.
    pub fn latency(&self, draw: u64) -> Duration {
        let median = self.median.as_secs_f64();
        if median <= 0.0 {
            return Duration::ZERO;
        }
        // z of the 99th percentile of the standard normal distribution.
        const Z99: f64 = 2.326_347_874;
        let sigma = (self.p99.as_secs_f64().max(median) / median).ln() / Z99;
        // Box-Muller from two uniform draws in (0, 1].
        let a = splitmix(draw);
        let b = splitmix(a);
        let u1 = ((a >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        // Capped at 20 medians, so a draw far in the tail cannot hold a query for minutes.
        Duration::from_secs_f64((median * (sigma * z).exp()).min(median * 20.0))
    }
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ splitmix((n >> 64) as u64)
        }
    }
}

/// SplitMix64's output function: a cheap, well-spread hash of a 64-bit number.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Default for Behaviour {
    /// [`Answer::Synth`] for everything, no latency, `ttl` 300, `negative_ttl` 60.
    fn default() -> Self {
        Self {
            default: Answer::Synth,
            overrides: HashMap::new(),
            latency: Duration::ZERO,
            ttl: 300,
            negative_ttl: 60,
            mix: None,
        }
    }
}

impl Behaviour {
    /// The default behaviour with another default answer.
    pub fn answering(default: Answer) -> Self {
        Self {
            default,
            ..Self::default()
        }
    }

    /// Adds (or replaces) the answer for one address.
    #[must_use]
    pub fn with_override(mut self, ip: IpAddr, answer: Answer) -> Self {
        self.overrides.insert(ip, answer);
        self
    }

    /// Sets the latency applied before every answer.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets a load-test mix of latency and failures.
    #[must_use]
    pub fn with_mix(mut self, mix: Mix) -> Self {
        self.mix = Some(mix);
        self
    }

    /// Sets the PTR TTL and the negative (SOA) TTL, in seconds.
    #[must_use]
    pub fn with_ttls(mut self, ttl: u32, negative_ttl: u32) -> Self {
        self.ttl = ttl;
        self.negative_ttl = negative_ttl;
        self
    }
}

/// The PTR target [`Answer::Synth`] gives for an address.
///
/// IPv4 dashes the dotted quad: `1.2.3.4` -> `host-1-2-3-4.example.test.`. IPv6 writes
/// the 32 hex nibbles in address order, lower case, no separators: `2001:db8::1` ->
/// `host-20010db8000000000000000000000001.example.test.` (always a valid hostname label,
/// unlike a colon-to-dash form of `::1`).
pub fn synth_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("host-{a}-{b}-{c}-{d}.example.test.")
        }
        IpAddr::V6(v6) => format!("host-{:032x}.example.test.", u128::from(v6)),
    }
}

/// A DNS server on `127.0.0.1` UDP answering PTR queries as its [`Behaviour`] says.
///
/// It runs on the tokio runtime that called [`start`](Self::start), serving queries
/// concurrently (a delayed answer does not hold up others). `in-addr.arpa.` and
/// `ip6.arpa.` names are parsed back into the address to pick the answer; a PTR query for
/// any other name gets `NXDOMAIN`, any other query type or opcode gets `REFUSED` (after
/// the latency, like every answer). Dropping the value stops the server, which is how a
/// test kills DNS mid-run; [`shutdown`](Self::shutdown) does the same and waits for it.
///
/// Note that hickory-resolver answers `127.x` and `::1` itself: use other addresses.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<Server<Handler>>,
}

impl DnsServer {
    /// Starts a server on a free `127.0.0.1` UDP port.
    ///
    /// # Errors
    ///
    /// Fails when the socket cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start(behaviour: Behaviour) -> anyhow::Result<Self> {
        Self::start_on(0, behaviour).await
    }

    /// Starts a server on a given `127.0.0.1` UDP port (0 for any), e.g. to bring DNS
    /// back on the address a dropped server had.
    ///
    /// # Errors
    ///
    /// Fails when the socket cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start_on(port: u16, behaviour: Behaviour) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}/udp for the DNS server"))?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Arc::new(behaviour)),
            total: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        });
        let mut server = Server::new(Handler {
            shared: Arc::clone(&shared),
        });
        server.register_socket(socket);
        tracing::debug!(%addr, "Test DNS server started");
        Ok(Self {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// The server's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the behaviour for queries received from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = Arc::new(behaviour);
    }

    /// A copy of the current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        Behaviour::clone(&lock(&self.shared.behaviour))
    }

    /// Queries received since start or the last [`reset_counts`](Self::reset_counts),
    /// whatever their type, counted on arrival (before any latency), including silenced
    /// ones.
    pub fn queries(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// PTR queries received for one address (as parsed from the query name).
    pub fn queries_for(&self, ip: IpAddr) -> u64 {
        lock(&self.shared.per_ip).get(&ip).copied().unwrap_or(0)
    }

    /// The most queries held at once (received, and not yet answered or
    /// silenced) since start or the last [`reset_counts`](Self::reset_counts).
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Sets all counters back to zero.
    pub fn reset_counts(&self) {
        let mut per_ip = lock(&self.shared.per_ip);
        per_ip.clear();
        self.shared.total.store(0, Ordering::SeqCst);
        self.shared.peak.store(
            self.shared.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// Stops the server and waits until its socket is closed; queries in flight are
    /// dropped unanswered.
    pub async fn shutdown(mut self) {
        if let Some(mut server) = self.server.take()
            && let Err(error) = server.shutdown_gracefully().await
        {
            tracing::debug!(%error, "Test DNS server stopped with an error");
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Cancelling stops the receive loop; dropping the server aborts its tasks
            // (and with them any query still waiting out a delay).
            server.shutdown_token().cancel();
        }
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .field("queries", &self.queries())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;

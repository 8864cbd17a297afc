//! Reverse DNS (PTR) through hickory-resolver, polite to its upstreams.
//!
//! Each upstream nameserver gets its own resolver, a cap on queries in flight
//! and a queries-per-second budget (a GCRA rate limiter, so bursts are bounded
//! too). A lookup that cannot get a slot within `budget_wait` returns
//! [`PtrOutcome::OverBudget`] at once instead of queueing: the record goes on
//! without its PTR and the pipeline never stalls behind DNS. hickory's own
//! cache is off (`cache_size = 0`); the enricher's cache is the only one, with
//! a TTL per outcome ([`TtlPolicy`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::udp::UdpClientStream;
use hickory_resolver::net::xfer::DnsExchange;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{ConnectionProvider, PoolContext, Resolver};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::DnsConfig;
use crate::metrics as m;

/// The result of one PTR lookup, as cached and written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtrOutcome {
    /// A valid hostname, lower-case without the trailing dot, with the
    /// record's TTL in seconds.
    Name {
        /// The sanitised hostname.
        name: Box<str>,
        /// The answer's TTL, before clamping.
        ttl_secs: u32,
    },
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no PTR record.
    NoRecord,
    /// The server answered SERVFAIL (or REFUSED, or another error code).
    ServFail,
    /// No answer within the timeout.
    Timeout,
    /// The answer was not a valid hostname (hostile or broken server).
    Invalid,
    /// The upstream's budget was spent; the query was not sent.
    OverBudget,
    /// Any other resolver failure (no connection, malformed response).
    Error,
}

impl PtrOutcome {
    /// The fixed label used in provenance, metrics and Redis.
    pub fn label(&self) -> &'static str {
        match self {
            PtrOutcome::Name { .. } => "ok",
            PtrOutcome::NxDomain => "nxdomain",
            PtrOutcome::NoRecord => "no_record",
            PtrOutcome::ServFail => "servfail",
            PtrOutcome::Timeout => "timeout",
            PtrOutcome::Invalid => "invalid",
            PtrOutcome::OverBudget => "over_budget",
            PtrOutcome::Error => "error",
        }
    }

    /// Parses a label written by [`PtrOutcome::label`] (not `ok`).
    pub fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "nxdomain" => PtrOutcome::NxDomain,
            "no_record" => PtrOutcome::NoRecord,
            "servfail" => PtrOutcome::ServFail,
            "timeout" => PtrOutcome::Timeout,
            "invalid" => PtrOutcome::Invalid,
            "over_budget" => PtrOutcome::OverBudget,
            "error" => PtrOutcome::Error,
            _ => return None,
        })
    }

    /// True when the outcome came from (or is about) an answer worth sharing
    /// through Redis: everything but `over_budget`, which is local to this
    /// worker's budget.
    pub fn shareable(&self) -> bool {
        !matches!(self, PtrOutcome::OverBudget)
    }
}

/// How long each outcome stays cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Floor for a positive answer's TTL.
    pub min: Duration,
    /// Ceiling for a positive answer's TTL.
    pub max: Duration,
    /// NXDOMAIN and empty answers.
    pub nxdomain: Duration,
    /// SERVFAIL, invalid answers and other errors.
    pub servfail: Duration,
    /// Timeouts.
    pub timeout: Duration,
    /// Over budget (L1 only, never shared).
    pub over_budget: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self::from_config(&DnsConfig::default())
    }
}

impl TtlPolicy {
    /// The TTLs of `[dns]`.
    pub fn from_config(dns: &DnsConfig) -> Self {
        Self {
            min: Duration::from_secs(dns.min_ttl_secs),
            max: Duration::from_secs(dns.max_ttl_secs),
            nxdomain: Duration::from_secs(dns.nxdomain_ttl_secs),
            servfail: Duration::from_secs(dns.servfail_ttl_secs),
            timeout: Duration::from_secs(dns.timeout_ttl_secs),
            over_budget: Duration::from_secs(dns.over_budget_ttl_secs),
        }
    }

    /// The cache lifetime of an outcome.
    pub fn ttl(&self, outcome: &PtrOutcome) -> Duration {
        match outcome {
            PtrOutcome::Name { ttl_secs, .. } => {
                Duration::from_secs(u64::from(*ttl_secs)).clamp(self.min, self.max)
            }
            PtrOutcome::NxDomain | PtrOutcome::NoRecord => self.nxdomain,
            PtrOutcome::ServFail | PtrOutcome::Invalid | PtrOutcome::Error => self.servfail,
            PtrOutcome::Timeout => self.timeout,
            PtrOutcome::OverBudget => self.over_budget,
        }
    }
}

/// Settings for [`Dns::new`].
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// Upstream nameservers; empty means the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Time to wait for one answer.
    pub timeout: Duration,
    /// Retries after a timeout or SERVFAIL (hickory's `attempts`; 0 sends exactly one packet).
    pub retries: usize,
    /// Queries in flight per upstream, at most.
    pub max_in_flight: usize,
    /// Queries per second per upstream, at most (sustained).
    pub qps: u32,
    /// Queries that may be sent at once after a quiet spell.
    pub burst: u32,
    /// Longest a lookup waits for a budget slot or an in-flight permit
    /// before giving up with `over_budget`.
    pub budget_wait: Duration,
    /// Longest accepted hostname, in bytes.
    pub max_name_len: usize,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self::from_config(&DnsConfig::default())
    }
}

impl DnsOptions {
    /// The resolver's settings from `[dns]` (its TTLs are [`TtlPolicy::from_config`]'s).
    pub fn from_config(dns: &DnsConfig) -> Self {
        Self {
            servers: dns.servers.clone(),
            timeout: Duration::from_millis(dns.timeout_ms),
            retries: dns.retries,
            max_in_flight: dns.max_in_flight,
            qps: dns.qps,
            burst: dns.burst,
            budget_wait: Duration::from_millis(dns.budget_wait_ms),
            max_name_len: dns.max_name_len,
        }
    }
}

/// Why DNS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsSetupError {
    /// No servers were given and the system configuration names none.
    #[error("no DNS servers configured and none found in the system configuration: {0}")]
    NoServers(String),
    /// The resolver could not be built.
    #[error("cannot build the DNS resolver for {server}: {source}")]
    Resolver {
        /// The upstream.
        server: SocketAddr,
        /// hickory's error.
        source: NetError,
    },
}

/// A generic cell rate algorithm limiter: the theoretical arrival time of
/// the next query advances by `interval` per query and may lag the clock by
/// at most `burst` intervals.
#[derive(Debug)]
struct Gcra {
    interval: Duration,
    tolerance: Duration,
    tat: Mutex<Instant>,
}

impl Gcra {
    fn new(qps: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / qps.max(1);
        Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the next slot if it starts within `max_wait`; returns the
    /// wait before the query may go.
    fn reserve(&self, now: Instant, max_wait: Duration) -> Option<Duration> {
        let mut tat = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*tat).max(now);
        // The slot opens `tolerance` before the theoretical arrival time.
        let allowed_at = start.checked_sub(self.tolerance).unwrap_or(now).max(now);
        let wait = allowed_at - now;
        if wait > max_wait {
            return None;
        }
        *tat = start + self.interval;
        Some(wait)
    }
}

/// hickory's UDP stream resends an unanswered query every 333 ms within the
/// timeout (up to three packets), whatever `attempts` says. This provider
/// builds the same stream with one packet per query, so the budget counts
/// what the upstream really receives.
#[derive(Clone, Default)]
struct OnePacketUdp(TokioRuntimeProvider);

impl ConnectionProvider for OnePacketUdp {
    type Conn = DnsExchange<TokioRuntimeProvider>;
    type FutureConn = Pin<Box<dyn Future<Output = Result<Self::Conn, NetError>> + Send + 'static>>;
    type RuntimeProvider = TokioRuntimeProvider;

    fn new_connection(
        &self,
        ip: IpAddr,
        config: &ConnectionConfig,
        cx: &PoolContext,
    ) -> Result<Self::FutureConn, NetError> {
        if !matches!(config.protocol, ProtocolConfig::Udp) {
            return self.0.new_connection(ip, config, cx);
        }
        let remote = SocketAddr::new(ip, config.port);
        let timeout = cx.options.timeout;
        let bind = config.bind_addr;
        let provider = self.0.clone();
        Ok(Box::pin(async move {
            Ok(UdpClientStream::builder(remote, provider)
                .with_timeout(Some(timeout))
                .with_max_retries(1)
                .with_bind_addr(bind)
                .exchange())
        }))
    }

    fn runtime_provider(&self) -> &Self::RuntimeProvider {
        &self.0
    }
}

struct Upstream {
    addr: SocketAddr,
    label: String,
    resolver: Resolver<OnePacketUdp>,
    permits: Semaphore,
    budget: Gcra,
}

/// The PTR resolver with its budgets.
pub struct Dns {
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    opts: DnsOptions,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field(
                "upstreams",
                &self.upstreams.iter().map(|u| u.addr).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// Builds one resolver per upstream. Must run inside a tokio runtime.
    pub fn new(opts: DnsOptions) -> Result<Self, DnsSetupError> {
        let servers = if opts.servers.is_empty() {
            system_servers()?
        } else {
            opts.servers.clone()
        };
        let mut upstreams = Vec::with_capacity(servers.len());
        for addr in servers {
            let mut conn = ConnectionConfig::udp();
            conn.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![conn]);
            let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
            let mut ropts = ResolverOpts::default();
            ropts.timeout = opts.timeout;
            ropts.attempts = opts.retries;
            ropts.cache_size = 0;
            ropts.num_concurrent_reqs = 1;
            ropts.edns0 = true;
            let resolver = Resolver::builder_with_config(config, OnePacketUdp::default())
                .with_options(ropts)
                .build()
                .map_err(|source| DnsSetupError::Resolver {
                    server: addr,
                    source,
                })?;
            let label = addr.to_string();
            upstreams.push(Upstream {
                addr,
                label,
                resolver,
                permits: Semaphore::new(opts.max_in_flight.max(1)),
                budget: Gcra::new(opts.qps, opts.burst),
            });
        }
        Ok(Self {
            upstreams,
            next: AtomicUsize::new(0),
            opts,
        })
    }

    /// The upstreams in use.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams.iter().map(|u| u.addr).collect()
    }

    /// Sets each upstream's budget and in-flight gauges. Called on the
    /// exporter's interval, so a gauge that does not change stays exported.
    pub fn publish_gauges(&self) {
        for u in &self.upstreams {
            metrics::gauge!(m::DNS_BUDGET_QPS, "upstream" => u.label.clone())
                .set(f64::from(self.opts.qps));
            let in_flight = self.opts.max_in_flight.max(1) - u.permits.available_permits();
            metrics::gauge!(m::DNS_IN_FLIGHT, "upstream" => u.label.clone()).set(in_flight as f64);
        }
    }

    /// Total queries per second allowed across all upstreams.
    pub fn budget_qps(&self) -> u64 {
        u64::from(self.opts.qps) * self.upstreams.len() as u64
    }

    /// Looks up the PTR of `ip`. Never waits longer than `budget_wait` plus
    /// the query timeout times (retries + 1).
    pub async fn lookup(&self, ip: IpAddr) -> PtrOutcome {
        let deadline = Instant::now() + self.opts.budget_wait;
        let Some((upstream, wait)) = self.reserve() else {
            metrics::counter!(m::DNS_OVER_BUDGET, "upstream" => "all").increment(1);
            return PtrOutcome::OverBudget;
        };
        let permit = match tokio::time::timeout_at(deadline, upstream.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                metrics::counter!(m::DNS_OVER_BUDGET, "upstream" => upstream.label.clone())
                    .increment(1);
                return PtrOutcome::OverBudget;
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        // hickory enforces the timeout per attempt; this outer bound only
        // guards against a resolver that never returns.
        let bound = self.opts.timeout * (self.opts.retries as u32 + 1) + Duration::from_millis(100);
        let outcome = match tokio::time::timeout(bound, upstream.resolver.reverse_lookup(ip)).await
        {
            Ok(Ok(lookup)) => self.answer(lookup.answers()),
            Ok(Err(error)) => classify(&error),
            Err(_) => PtrOutcome::Timeout,
        };
        drop(permit);
        metrics::histogram!(m::LOOKUP_SECONDS, "kind" => "dns")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(m::DNS_QUERIES, "upstream" => upstream.label.clone(), "outcome" => outcome.label())
            .increment(1);
        outcome
    }

    /// Picks the upstream whose next budget slot comes first, round robin
    /// among those free now.
    fn reserve(&self) -> Option<(&Upstream, Duration)> {
        let n = self.upstreams.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        for i in 0..n {
            let upstream = &self.upstreams[(start + i) % n];
            if let Some(wait) = upstream.budget.reserve(now, Duration::ZERO) {
                return Some((upstream, wait));
            }
        }
        for i in 0..n {
            let upstream = &self.upstreams[(start + i) % n];
            if let Some(wait) = upstream.budget.reserve(now, self.opts.budget_wait) {
                return Some((upstream, wait));
            }
        }
        None
    }

    fn answer(&self, records: &[hickory_resolver::proto::rr::Record]) -> PtrOutcome {
        let Some((ptr, ttl)) = records.iter().find_map(|r| match &r.data {
            RData::PTR(ptr) => Some((&ptr.0, r.ttl)),
            _ => None,
        }) else {
            return PtrOutcome::NoRecord;
        };
        let labels: Vec<&[u8]> = ptr.iter().collect();
        match sanitize(&labels, self.opts.max_name_len) {
            Some(name) => PtrOutcome::Name {
                name: name.into(),
                ttl_secs: ttl,
            },
            None => PtrOutcome::Invalid,
        }
    }
}

fn classify(error: &NetError) -> PtrOutcome {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if no.response_code == ResponseCode::NXDomain =>
        {
            PtrOutcome::NxDomain
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => PtrOutcome::NoRecord,
        NetError::Dns(DnsError::ResponseCode(_)) => PtrOutcome::ServFail,
        NetError::Timeout => PtrOutcome::Timeout,
        _ => PtrOutcome::Error,
    }
}

fn system_servers() -> Result<Vec<SocketAddr>, DnsSetupError> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| DnsSetupError::NoServers(e.to_string()))?;
    let mut servers: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        let port = ns.connections.first().map_or(53, |c| c.port);
        let addr = SocketAddr::new(ns.ip, port);
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    if servers.is_empty() {
        return Err(DnsSetupError::NoServers(
            "resolv.conf lists no nameserver".into(),
        ));
    }
    Ok(servers)
}

/// Turns the labels of a PTR target into a safe hostname: letters, digits,
/// `-` and `_` only, each label 1 to 63 bytes, lower-cased, joined by dots,
/// at most `max_len` bytes. Anything else (spaces, quotes, control bytes,
/// a huge name) is refused, so a hostile server cannot inject into output.
pub fn sanitize(labels: &[&[u8]], max_len: usize) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let mut name = String::new();
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        if name.len() > max_len {
            return None;
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_accepts_hostnames_and_refuses_the_rest() {
        assert_eq!(
            sanitize(&[b"Host-1", b"Example", b"com"], 253).as_deref(),
            Some("host-1.example.com")
        );
        assert_eq!(
            sanitize(&[b"_dmarc", b"x"], 253).as_deref(),
            Some("_dmarc.x")
        );
        assert_eq!(sanitize(&[], 253), None);
        assert_eq!(sanitize(&[b"a\"b"], 253), None);
        assert_eq!(sanitize(&[b"a b"], 253), None);
        assert_eq!(sanitize(&[b"a\x00"], 253), None);
        assert_eq!(sanitize(&[&[b'a'; 64]], 253), None);
        let long: Vec<&[u8]> = std::iter::repeat_n(&b"abcdefghij"[..], 30).collect();
        assert_eq!(sanitize(&long, 253), None);
        assert_eq!(sanitize(&long[..5], 253).map(|s| s.len()), Some(54));
    }

    #[test]
    fn ttl_policy_clamps_positive_answers() {
        let p = TtlPolicy::default();
        let name = |ttl_secs| PtrOutcome::Name {
            name: "a".into(),
            ttl_secs,
        };
        assert_eq!(p.ttl(&name(1)), p.min);
        assert_eq!(p.ttl(&name(u32::MAX)), p.max);
        assert_eq!(p.ttl(&name(1000)), Duration::from_secs(1000));
        assert_eq!(p.ttl(&PtrOutcome::NxDomain), p.nxdomain);
        assert_eq!(p.ttl(&PtrOutcome::Timeout), p.timeout);
    }

    #[test]
    fn labels_round_trip() {
        for o in [
            PtrOutcome::NxDomain,
            PtrOutcome::NoRecord,
            PtrOutcome::ServFail,
            PtrOutcome::Timeout,
            PtrOutcome::Invalid,
            PtrOutcome::OverBudget,
            PtrOutcome::Error,
        ] {
            assert_eq!(PtrOutcome::from_label(o.label()), Some(o));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gcra_allows_the_burst_then_the_rate() {
        let g = Gcra::new(10, 5);
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(g.reserve(now, Duration::ZERO), Some(Duration::ZERO));
        }
        assert_eq!(g.reserve(now, Duration::ZERO), None);
        assert_eq!(
            g.reserve(now, Duration::from_millis(100)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(g.reserve(now, Duration::from_millis(150)), None);
        // Over a second of steady demand, no more than qps slots are granted.
        tokio::time::advance(Duration::from_secs(10)).await;
        let start = Instant::now();
        let mut granted = 0;
        for ms in 0..1000 {
            if g.reserve(start + Duration::from_millis(ms), Duration::ZERO)
                .is_some()
            {
                granted += 1;
            }
        }
        assert!(granted <= 5 + 10, "granted {granted}");
        assert!(granted >= 10, "granted {granted}");
    }
}

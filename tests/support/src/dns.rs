//! A scripted DNS server for reverse lookups, built on hickory-server, over loopback UDP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::domain::Label;
use hickory_proto::rr::rdata::{PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::UdpSocket;

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

/// State shared between the test's handle and the request handler.
struct Shared {
    behaviour: Mutex<Arc<Behaviour>>,
    total: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, u64>>,
    in_flight: AtomicU64,
    peak: AtomicU64,
}

/// Counts one query as held from its arrival until it is dropped.
struct Held<'a>(&'a Shared);

impl<'a> Held<'a> {
    fn new(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Handler {
    shared: Arc<Shared>,
}

/// What a query asks for, as far as this server cares.
enum Target {
    /// A PTR query for a whole address.
    Ptr(IpAddr),
    /// A PTR query for a name that is not a whole `in-addr.arpa.` / `ip6.arpa.` address.
    UnknownName,
    /// Anything else: another type, opcode, or not exactly one query.
    Unsupported,
}

/// The message to send, once delays are over.
enum Reply {
    Ptr(Name),
    NxDomain,
    Code(ResponseCode),
    Silence,
}

fn classify(request: &Request) -> Target {
    let queries = request.queries.queries();
    if request.metadata.op_code != OpCode::Query || queries.len() != 1 {
        return Target::Unsupported;
    }
    let query = &queries[0];
    if query.query_type() != RecordType::PTR {
        return Target::Unsupported;
    }
    match query.original().name().parse_arpa_name() {
        Ok(net) if net.prefix_len() == net.max_prefix_len() => Target::Ptr(net.addr()),
        _ => Target::UnknownName,
    }
}

/// Builds a name from raw label bytes, keeping as much as DNS can carry.
fn raw_name(text: &str) -> Name {
    let mut name = Name::root();
    for part in text.split('.').filter(|part| !part.is_empty()) {
        let bytes = &part.as_bytes()[..part.len().min(63)];
        let Ok(label) = Label::from_raw_bytes(bytes) else {
            continue;
        };
        match name.clone().append_label(label) {
            Ok(longer) => name = longer,
            Err(_) => break,
        }
    }
    name
}

/// The zone whose SOA goes with a negative answer for `name`.
fn soa_record(name: &Name, negative_ttl: u32) -> Record {
    let zone = ["in-addr.arpa.", "ip6.arpa."]
        .into_iter()
        .map(|zone| Name::from_ascii(zone).expect("static zone name"))
        .find(|zone| zone.zone_of(name))
        .unwrap_or_else(Name::root);
    let soa = SOA::new(
        Name::from_ascii("ns.example.test.").expect("static name"),
        Name::from_ascii("hostmaster.example.test.").expect("static name"),
        1,
        3600,
        600,
        86_400,
        negative_ttl,
    );
    Record::from_rdata(zone, negative_ttl, RData::SOA(soa))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let nth = self.shared.total.fetch_add(1, Ordering::SeqCst);
        let _held = Held::new(&self.shared);
        let behaviour = Arc::clone(&lock(&self.shared.behaviour));
        let target = classify(request);
        if let Target::Ptr(ip) = target {
            *lock(&self.shared.per_ip).entry(ip).or_insert(0) += 1;
        }

        let mut latency = behaviour.latency;
        if let Some(mix) = &behaviour.mix {
            latency += mix.latency(nth);
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let reply = match target {
            Target::Unsupported => Reply::Code(ResponseCode::Refused),
            Target::UnknownName => Reply::NxDomain,
            Target::Ptr(ip) => {
                let mixed;
                let mut answer = match (behaviour.overrides.get(&ip), &behaviour.mix) {
                    (Some(answer), _) => answer,
                    (None, Some(mix)) => {
                        mixed = mix.answer_for(ip, &behaviour.default);
                        &mixed
                    }
                    (None, None) => &behaviour.default,
                };
                while let Answer::Delay(delay, inner) = answer {
                    tokio::time::sleep(*delay).await;
                    answer = inner;
                }
                match answer {
                    Answer::Synth => Reply::Ptr(
                        Name::from_ascii(synth_name(ip)).expect("synthetic names are valid"),
                    ),
                    Answer::Name(text) => Reply::Ptr(raw_name(text)),
                    Answer::NxDomain => Reply::NxDomain,
                    Answer::ServFail => Reply::Code(ResponseCode::ServFail),
                    Answer::Silence => Reply::Silence,
                    Answer::Delay(..) => unreachable!("delays were waited out above"),
                }
            }
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = true;

        // Echo EDNS so a resolver that offered a bigger UDP payload gets one.
        let response_edns = request.edns.as_ref().map(|request_edns| {
            let mut edns = Edns::new();
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }

        let query_name = request
            .queries
            .queries()
            .first()
            .map(|query| query.original().name().clone())
            .unwrap_or_else(Name::root);
        let mut answers = Vec::new();
        let mut soa = Vec::new();
        match reply {
            Reply::Silence => {
                return ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                });
            }
            Reply::Ptr(target) => {
                answers.push(Record::from_rdata(
                    query_name,
                    behaviour.ttl,
                    RData::PTR(PTR(target)),
                ));
            }
            Reply::NxDomain => {
                metadata.response_code = ResponseCode::NXDomain;
                soa.push(soa_record(&query_name, behaviour.negative_ttl));
            }
            Reply::Code(code) => metadata.response_code = code,
        }

        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            soa.iter(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "Test DNS server failed to send a response");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::Instant;

    use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::net::{DnsError, NetError, NoRecords};
    use hickory_resolver::{Resolver, TokioResolver};

    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4));
    const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    /// One UDP query per lookup (`attempts = 0`), no resolver cache.
    fn resolver(addr: SocketAddr, timeout: Duration) -> TokioResolver {
        let mut server = NameServerConfig::udp(addr.ip());
        server.connections[0].port = addr.port();
        let config = ResolverConfig::from_parts(None, vec![], vec![server]);
        let mut options = ResolverOpts::default();
        options.attempts = 0;
        options.cache_size = 0;
        options.timeout = timeout;
        options.use_hosts_file = ResolveHosts::Never;
        Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .expect("building a resolver")
    }

    async fn start(behaviour: Behaviour) -> (DnsServer, TokioResolver) {
        crate::init_tracing();
        let server = DnsServer::start(behaviour).await.expect("starting DNS");
        let resolver = resolver(server.addr(), Duration::from_secs(2));
        (server, resolver)
    }

    /// The PTR targets and TTLs of a successful lookup.
    async fn ptr(resolver: &TokioResolver, ip: IpAddr) -> Result<Vec<(Name, u32)>, NetError> {
        let lookup = resolver.reverse_lookup(ip).await?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::PTR(PTR(name)) => Some((name.clone(), record.ttl)),
                _ => None,
            })
            .collect())
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("valid name")
    }

    #[test]
    fn synthetic_names() {
        assert_eq!(synth_name(V4), "host-1-2-3-4.example.test.");
        assert_eq!(
            synth_name(V6),
            "host-20010db8000000000000000000000001.example.test."
        );
    }

    #[tokio::test]
    async fn answers_ptr_for_ipv4_and_ipv6() {
        let (server, resolver) = start(Behaviour::default()).await;
        assert_eq!(
            ptr(&resolver, V4).await.expect("IPv4 PTR"),
            vec![(name("host-1-2-3-4.example.test."), 300)]
        );
        assert_eq!(
            ptr(&resolver, V6).await.expect("IPv6 PTR"),
            vec![(
                name("host-20010db8000000000000000000000001.example.test."),
                300
            )]
        );
        assert_eq!(server.queries(), 2);
        assert_eq!(server.queries_for(V4), 1);
        assert_eq!(server.queries_for(V6), 1);
    }

    #[tokio::test]
    async fn fixed_names_and_ttl() {
        let behaviour = Behaviour::default()
            .with_ttls(42, 7)
            .with_override(V4, Answer::Name("mail.example.org".into()));
        let (_server, resolver) = start(behaviour).await;
        assert_eq!(
            ptr(&resolver, V4).await.expect("PTR"),
            vec![(name("mail.example.org."), 42)]
        );
    }

    #[tokio::test]
    async fn hostile_names_go_out_as_raw_labels() {
        let hostile = "evil\"name <script>\n.ex\u{e4}mple..test";
        let behaviour = Behaviour::answering(Answer::Name(hostile.into()));
        let (_server, resolver) = start(behaviour).await;
        let answers = ptr(&resolver, V4).await.expect("PTR");
        let labels: Vec<&[u8]> = answers[0].0.iter().collect();
        assert_eq!(
            labels,
            vec![
                &b"evil\"name <script>\n"[..],
                "ex\u{e4}mple".as_bytes(),
                b"test"
            ]
        );

        // Too long for DNS: labels are cut to 63 bytes and the name stops before 255.
        assert_eq!(
            raw_name(&"a".repeat(100)).iter().next().map(<[u8]>::len),
            Some(63)
        );
        let long = vec!["b".repeat(60); 10].join(".");
        assert!(raw_name(&long).len() <= 255);
        assert!(raw_name("").is_root());
    }

    #[tokio::test]
    async fn nxdomain_reports_the_negative_ttl() {
        let behaviour = Behaviour::answering(Answer::NxDomain).with_ttls(300, 42);
        let (server, resolver) = start(behaviour).await;
        for ip in [V4, V6] {
            match ptr(&resolver, ip).await {
                Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
                    response_code,
                    negative_ttl,
                    ..
                }))) => {
                    assert_eq!(response_code, ResponseCode::NXDomain);
                    assert_eq!(negative_ttl, Some(42));
                }
                other => panic!("expected NXDOMAIN, got {other:?}"),
            }
        }
        assert_eq!(server.queries(), 2);
    }

    #[tokio::test]
    async fn servfail() {
        let (server, resolver) = start(Behaviour::answering(Answer::ServFail)).await;
        match ptr(&resolver, V4).await {
            Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))) => {}
            other => panic!("expected SERVFAIL, got {other:?}"),
        }
        assert_eq!(server.queries(), 1, "attempts = 0 sends one query");
    }

    #[tokio::test]
    async fn silence_times_out() {
        crate::init_tracing();
        let server = DnsServer::start(Behaviour::answering(Answer::Silence))
            .await
            .expect("starting DNS");
        let resolver = resolver(server.addr(), Duration::from_millis(300));
        let started = Instant::now();
        match ptr(&resolver, V4).await {
            Err(NetError::Timeout) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(server.queries_for(V4), 1);
    }

    #[tokio::test]
    async fn latency_slows_every_answer() {
        let latency = Duration::from_millis(300);
        let (server, resolver) = start(Behaviour::default().with_latency(latency)).await;
        let started = Instant::now();
        ptr(&resolver, V4).await.expect("PTR");
        assert!(started.elapsed() >= latency);

        let impatient = resolver_for(&server, Duration::from_millis(100));
        assert!(matches!(ptr(&impatient, V4).await, Err(NetError::Timeout)));
    }

    fn resolver_for(server: &DnsServer, timeout: Duration) -> TokioResolver {
        resolver(server.addr(), timeout)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delayed_answer_does_not_hold_up_others() {
        let slow = Answer::Delay(Duration::from_millis(800), Box::new(Answer::Synth));
        let (_server, resolver) = start(Behaviour::default().with_override(V4, slow)).await;
        let resolver = Arc::new(resolver);

        let slow_lookup = tokio::spawn({
            let resolver = Arc::clone(&resolver);
            async move {
                let started = Instant::now();
                ptr(&resolver, V4).await.expect("slow PTR");
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        ptr(&resolver, V4_OTHER).await.expect("fast PTR");
        let fast = started.elapsed();
        let slow = slow_lookup.await.expect("slow lookup task");

        assert!(
            fast < Duration::from_millis(400),
            "fast lookup took {fast:?}"
        );
        assert!(
            slow >= Duration::from_millis(800),
            "slow lookup took {slow:?}"
        );
    }

    #[tokio::test]
    async fn behaviour_changes_at_run_time_and_counts_reset() {
        let (server, resolver) = start(Behaviour::default()).await;
        ptr(&resolver, V4).await.expect("PTR");
        assert_eq!(server.behaviour(), Behaviour::default());

        server.set_behaviour(Behaviour::answering(Answer::ServFail));
        assert!(ptr(&resolver, V4).await.is_err());
        assert_eq!(server.queries_for(V4), 2);
        assert_eq!(server.queries_for(V4_OTHER), 0);

        server.reset_counts();
        assert_eq!(server.queries(), 0);
        assert_eq!(server.queries_for(V4), 0);

        server.set_behaviour(Behaviour::default());
        ptr(&resolver, V4_OTHER).await.expect("PTR");
        assert_eq!(server.queries(), 1);
        assert_eq!(server.queries_for(V4_OTHER), 1);
    }

    #[tokio::test]
    async fn other_queries_are_refused_or_unknown() {
        let (server, resolver) = start(Behaviour::default()).await;
        match resolver.ipv4_lookup("www.example.test.").await {
            Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))) => {}
            other => panic!("expected REFUSED, got {other:?}"),
        }
        // A PTR for a partial address is not an address: NXDOMAIN.
        match resolver.reverse_lookup("3.2.1.in-addr.arpa.").await {
            Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
                response_code: ResponseCode::NXDomain,
                negative_ttl: Some(60),
                ..
            }))) => {}
            other => panic!("expected NXDOMAIN, got {other:?}"),
        }
        assert_eq!(server.queries(), 2);
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let (server, _) = start(Behaviour::default()).await;
        let resolver = resolver_for(&server, Duration::from_millis(300));
        ptr(&resolver, V4).await.expect("PTR");
        let port = server.addr().port();
        drop(server);
        tokio::task::yield_now().await;
        let error = ptr(&resolver, V4)
            .await
            .expect_err("no answer once dropped");
        tracing::info!(%error, "Lookup against a dropped server");

        // The port can be taken again, e.g. to bring DNS back.
        let again = DnsServer::start_on(port, Behaviour::default())
            .await
            .expect("restarting on the same port");
        assert_eq!(again.addr().port(), port);
        ptr(&resolver, V4).await.expect("PTR after restart");
    }

    #[tokio::test]
    async fn shutdown_stops_it() {
        let (server, _) = start(Behaviour::default()).await;
        let resolver = resolver_for(&server, Duration::from_millis(300));
        server.shutdown().await;
        assert!(ptr(&resolver, V4).await.is_err());
    }

    #[test]
    fn a_mix_fails_the_same_share_of_addresses_every_time_and_spreads_latency() {
        let mix = Mix {
            median: Duration::from_millis(20),
            p99: Duration::from_millis(80),
            nxdomain_per_mille: 50,
            servfail_per_mille: 10,
            silence_per_mille: 10,
        };
        let answers: Vec<Answer> = (0..20_000u32)
            .map(|n| mix.answer_for(IpAddr::V4(Ipv4Addr::from(n * 7919)), &Answer::Synth))
            .collect();
        let share = |a: Answer| answers.iter().filter(|x| **x == a).count() as f64 / 20_000.0;
        assert!((share(Answer::NxDomain) - 0.05).abs() < 0.01);
        assert!((share(Answer::ServFail) - 0.01).abs() < 0.005);
        assert!((share(Answer::Silence) - 0.01).abs() < 0.005);
        assert_eq!(
            mix.answer_for(V4, &Answer::Synth),
            mix.answer_for(V4, &Answer::Synth)
        );
        let mut latencies: Vec<Duration> = (0..20_000).map(|n| mix.latency(n)).collect();
        latencies.sort();
        let median = latencies[10_000].as_secs_f64() * 1000.0;
        let p99 = latencies[19_800].as_secs_f64() * 1000.0;
        assert!((17.0..23.0).contains(&median), "median {median} ms");
        assert!((65.0..95.0).contains(&p99), "p99 {p99} ms");
    }
}

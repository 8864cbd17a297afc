//! The shared tier of the cache: Redis, batched, behind a circuit breaker.
//!
//! Only PTR outcomes go to Redis. They are what is expensive (a network round
//! trip to a nameserver that has a budget); GeoIP answers come from a local
//! file in well under a microsecond and may differ between workers during a
//! database rollout, so they stay in L1.
//!
//! Reads from all concurrent records are gathered by one task into a single
//! `MGET` (no added latency: it takes what is queued when it wakes), writes
//! into a pipelined batch of `SET key value EX ttl`. The value carries its
//! absolute expiry (`<unix secs>|<outcome>`), so a reader knows how long the
//! answer stays good without a second command. When Redis fails, times out or
//! is unreachable the circuit opens: reads and writes are skipped (treated as
//! misses) for `open_for`, then one batch tries again. The connection manager
//! reconnects by itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, DnsConfig, RedisConfig};
use crate::dns::PtrOutcome;
use crate::metrics as m;
use crate::secrets::mask_secrets;

/// Settings for [`RedisCache::start`]. `Debug` masks the password.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db` or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Longest wait for one batch's reply.
    pub timeout: Duration,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one batch tries again.
    pub open_for: Duration,
    /// Most keys in one `MGET` or write pipeline.
    pub max_batch: usize,
    /// Password, used instead of the URL's.
    pub password: Option<String>,
    /// PEM CA certificate(s) trusted for `rediss://` instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Longest hostname accepted from Redis, in bytes: names read back are
    /// checked like DNS answers (`dns.max_name_len`), since Redis is shared.
    pub max_name_len: usize,
    /// Longest time an answer read from Redis is kept (`dns.max_ttl_secs`):
    /// an expiry far in the future, written by another process, is capped.
    pub max_ttl: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::new(&RedisConfig::default(), &DnsConfig::default())
    }
}

impl RedisOptions {
    /// The options of `[redis]`, when a URL is set: its names are checked
    /// and capped like those of `[dns]`.
    pub fn from_config(config: &Config) -> Option<Self> {
        (!config.redis.url.is_empty()).then(|| Self::new(&config.redis, &config.dns))
    }

    /// The options of `redis`, whatever its URL, with the name and TTL caps of `dns`.
    pub fn new(redis: &RedisConfig, dns: &DnsConfig) -> Self {
        Self {
            url: redis.url.clone(),
            key_prefix: redis.key_prefix.clone(),
            timeout: Duration::from_millis(redis.timeout_ms),
            failure_threshold: redis.failure_threshold,
            open_for: Duration::from_millis(redis.open_ms),
            max_batch: redis.max_batch,
            password: redis.password.clone(),
            tls_ca_file: redis.tls_ca_file.clone(),
            max_name_len: dns.max_name_len,
            max_ttl: Duration::from_secs(dns.max_ttl_secs),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &mask_secrets(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("failure_threshold", &self.failure_threshold)
            .field("open_for", &self.open_for)
            .field("max_batch", &self.max_batch)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("max_name_len", &self.max_name_len)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

/// Why a Redis client cannot be built from [`RedisOptions`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL does not parse, or does not fit the other options.
    #[error("{0}")]
    Url(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("{0}")]
    TlsCa(String),
}

impl ClientError {
    /// The config key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            ClientError::Url(_) => "redis.url",
            ClientError::TlsCa(_) => "redis.tls_ca_file",
        }
    }
}

/// Builds the client `opts` describe, without connecting: the URL, with
/// `password` instead of the URL's, and for `rediss://` the CA of
/// `tls_ca_file` (or the system's roots) trusted. Error texts never hold
/// the password.
pub fn client(opts: &RedisOptions) -> Result<redis::Client, ClientError> {
    use redis::IntoConnectionInfo;
    let url_error = |e: redis::RedisError| ClientError::Url(mask_secrets(&e.to_string()));
    let mut info = opts
        .url
        .as_str()
        .into_connection_info()
        .map_err(url_error)?;
    if let Some(password) = &opts.password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if tls {
        // rustls needs one process-wide crypto provider; this build has ring.
        // An error means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let Some(ca_file) = &opts.tls_ca_file else {
        return redis::Client::open(info).map_err(url_error);
    };
    if !tls {
        return Err(ClientError::TlsCa(
            "is set but redis.url does not start with rediss://".into(),
        ));
    }
    let pem = std::fs::read(ca_file)
        .map_err(|e| ClientError::TlsCa(format!("cannot read {}: {e}", ca_file.display())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ClientError::TlsCa(format!(
            "{} holds no PEM certificate",
            ca_file.display()
        )));
    }
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(info, certs).map_err(|e| {
        ClientError::TlsCa(format!(
            "{}: {}",
            ca_file.display(),
            mask_secrets(&e.to_string())
        ))
    })
}

/// Checks that `opts` make a client, as [`client`] does but without reading
/// `tls_ca_file` (it may exist only where the worker runs).
pub fn check(opts: &RedisOptions) -> Result<(), ClientError> {
    let opts = RedisOptions {
        tls_ca_file: None,
        ..opts.clone()
    };
    client(&opts).map(drop)
}

/// The circuit breaker's state, exported as a `state` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CircuitState {
    /// Requests go to Redis.
    Closed = 0,
    /// Redis is skipped.
    Open = 1,
    /// One batch is trying Redis again.
    HalfOpen = 2,
}

impl CircuitState {
    /// Every state, in the order of their values.
    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// The `state` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// One series per state, 1 for the current one and 0 for the others, so a
/// query or an alert reads `{state="open"} == 1`.
fn publish_circuit(current: CircuitState) {
    for state in CircuitState::ALL {
        metrics::gauge!(m::REDIS_CIRCUIT, "state" => state.label()).set(if state == current {
            1.0
        } else {
            0.0
        });
    }
}

/// What a read from Redis gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L2Read {
    /// A cached outcome and how long it stays valid.
    Hit(PtrOutcome, Duration),
    /// Not in Redis (or expired).
    Miss,
    /// Redis was not asked (circuit open) or failed.
    Unavailable,
}

struct GetReq {
    ip: IpAddr,
    reply: oneshot::Sender<L2Read>,
}

struct SetReq {
    ip: IpAddr,
    outcome: PtrOutcome,
    ttl: Duration,
}

/// A handle to the Redis tier; cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    gets: mpsc::Sender<GetReq>,
    sets: mpsc::Sender<SetReq>,
    state: Arc<AtomicU8>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Starts the batching task. Does not wait for Redis: a worker starts and
    /// serves even while Redis is down.
    pub fn start(opts: RedisOptions) -> Result<Self, ClientError> {
        let client = client(&opts)?;
        let (gets, get_rx) = mpsc::channel(opts.max_batch * 8);
        let (sets, set_rx) = mpsc::channel(opts.max_batch * 8);
        let state = Arc::new(AtomicU8::new(CircuitState::Closed as u8));
        let timeout = opts.timeout;
        let task = Batcher {
            client,
            conn: None,
            opts,
            state: Arc::clone(&state),
            failures: 0,
            opened_at: None,
        };
        tokio::spawn(task.run(get_rx, set_rx));
        Ok(Self {
            gets,
            sets,
            state,
            timeout,
        })
    }

    /// Sets the circuit-state gauge. Called on the exporter's interval, so
    /// a state that does not change stays exported.
    pub fn publish_gauges(&self) {
        publish_circuit(self.state());
    }

    /// The circuit's current state.
    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Relaxed) {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    /// Reads one address's outcome; joins the next batch.
    pub async fn get(&self, ip: IpAddr) -> L2Read {
        // Queued even while the circuit is open: the batcher answers at once
        // without touching the network, and decides when to try again.
        let (reply, rx) = oneshot::channel();
        if self.gets.try_send(GetReq { ip, reply }).is_err() {
            return L2Read::Unavailable;
        }
        // The batch itself is bounded by the op timeout; allow for queueing.
        match tokio::time::timeout(self.timeout * 4, rx).await {
            Ok(Ok(read)) => read,
            _ => L2Read::Unavailable,
        }
    }

    /// Queues a write; drops it when the queue is full (a lost cache write
    /// costs one extra lookup later, nothing more).
    pub fn put(&self, ip: IpAddr, outcome: PtrOutcome, ttl: Duration) {
        if !outcome.shareable() || ttl.is_zero() {
            return;
        }
        let _ = self.sets.try_send(SetReq { ip, outcome, ttl });
    }
}

struct Batcher {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    opts: RedisOptions,
    state: Arc<AtomicU8>,
    failures: u32,
    opened_at: Option<Instant>,
}

impl Batcher {
    async fn run(mut self, mut gets: mpsc::Receiver<GetReq>, mut sets: mpsc::Receiver<SetReq>) {
        let mut get_batch = Vec::with_capacity(self.opts.max_batch);
        let mut set_batch = Vec::with_capacity(self.opts.max_batch);
        self.publish(CircuitState::Closed);
        loop {
            tokio::select! {
                biased;
                n = gets.recv_many(&mut get_batch, self.opts.max_batch) => {
                    if n == 0 { return; }
                    self.mget(&mut get_batch).await;
                }
                n = sets.recv_many(&mut set_batch, self.opts.max_batch) => {
                    if n == 0 { return; }
                    self.set(&mut set_batch).await;
                }
            }
        }
    }

    /// Whether this batch may go to Redis; moves open -> half-open after the cool-down.
    fn allow(&mut self) -> bool {
        match self.opened_at {
            None => true,
            Some(at) if at.elapsed() >= self.opts.open_for => {
                self.publish(CircuitState::HalfOpen);
                true
            }
            Some(_) => false,
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        if self.opened_at.take().is_some() {
            tracing::info!("Redis is back; circuit closed");
        }
        self.publish(CircuitState::Closed);
    }

    fn failed(&mut self, what: &str) {
        self.failures += 1;
        if self.opened_at.is_some() || self.failures >= self.opts.failure_threshold {
            if self.opened_at.is_none() {
                tracing::warn!(
                    error = what,
                    open_for_ms = self.opts.open_for.as_millis() as u64,
                    "Redis failing; circuit open, serving from L1 and direct lookups"
                );
            }
            self.opened_at = Some(Instant::now());
            self.publish(CircuitState::Open);
        }
    }

    fn publish(&self, state: CircuitState) {
        self.state.store(state as u8, Ordering::Relaxed);
        publish_circuit(state);
    }

    async fn connection(&mut self) -> Option<ConnectionManager> {
        if let Some(conn) = &self.conn {
            return Some(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.opts.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(self.opts.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let attempt = ConnectionManager::new_with_config(self.client.clone(), config);
        match tokio::time::timeout(self.opts.timeout.max(Duration::from_millis(500)), attempt).await
        {
            Ok(Ok(conn)) => {
                self.conn = Some(conn.clone());
                Some(conn)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("connect timed out");
                None
            }
        }
    }

    fn key(&self, ip: IpAddr) -> String {
        format!("{}{ip}", self.opts.key_prefix)
    }

    async fn mget(&mut self, batch: &mut Vec<GetReq>) {
        let reqs = std::mem::take(batch);
        if !self.allow() {
            count_op("mget", "skipped", reqs.len());
            for req in reqs {
                let _ = req.reply.send(L2Read::Unavailable);
            }
            return;
        }
        let Some(mut conn) = self.connection().await else {
            for req in reqs {
                let _ = req.reply.send(L2Read::Unavailable);
            }
            return;
        };
        let keys: Vec<String> = reqs.iter().map(|r| self.key(r.ip)).collect();
        let started = Instant::now();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        let result = tokio::time::timeout(
            self.opts.timeout,
            cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
        )
        .await;
        metrics::histogram!(m::LOOKUP_SECONDS, "kind" => "redis")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(values)) if values.len() == reqs.len() => {
                self.succeeded();
                count_op("mget", "ok", 1);
                let now = unix_now();
                for (req, value) in reqs.into_iter().zip(values) {
                    let read = value
                        .as_deref()
                        .and_then(|v| decode(v, now, self.opts.max_name_len, self.opts.max_ttl))
                        .unwrap_or(L2Read::Miss);
                    let _ = req.reply.send(read);
                }
            }
            other => {
                let what = match other {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "MGET returned the wrong number of values".into(),
                    Err(_) => "timed out".into(),
                };
                count_op(
                    "mget",
                    if what == "timed out" {
                        "timeout"
                    } else {
                        "error"
                    },
                    1,
                );
                self.failed(&what);
                for req in reqs {
                    let _ = req.reply.send(L2Read::Unavailable);
                }
            }
        }
    }

    async fn set(&mut self, batch: &mut Vec<SetReq>) {
        let reqs = std::mem::take(batch);
        if !self.allow() {
            count_op("set", "skipped", reqs.len());
            return;
        }
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let now = unix_now();
        let mut pipe = redis::pipe();
        for req in &reqs {
            let secs = req.ttl.as_secs().max(1);
            pipe.cmd("SET")
                .arg(self.key(req.ip))
                .arg(encode(&req.outcome, now + secs))
                .arg("EX")
                .arg(secs)
                .ignore();
        }
        match tokio::time::timeout(self.opts.timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                self.succeeded();
                count_op("set", "ok", reqs.len());
            }
            Ok(Err(e)) => {
                count_op("set", "error", reqs.len());
                self.failed(&e.to_string());
            }
            Err(_) => {
                count_op("set", "timeout", reqs.len());
                self.failed("timed out");
            }
        }
    }
}

fn count_op(op: &'static str, result: &'static str, n: usize) {
    metrics::counter!(m::REDIS_OPS, "op" => op, "result" => result).increment(n as u64);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `<expires unix secs>|=<hostname>` or `<expires unix secs>|<outcome label>`.
fn encode(outcome: &PtrOutcome, expires: u64) -> String {
    match outcome {
        PtrOutcome::Name { name, .. } => format!("{expires}|={name}"),
        other => format!("{expires}|{}", other.label()),
    }
}

fn decode(value: &[u8], now: u64, max_name_len: usize, max_ttl: Duration) -> Option<L2Read> {
    let text = std::str::from_utf8(value).ok()?;
    let (expires, rest) = text.split_once('|')?;
    let expires: u64 = expires.parse().ok()?;
    if expires <= now {
        return Some(L2Read::Miss);
    }
    let remaining = Duration::from_secs(expires - now).min(max_ttl);
    let outcome = match rest.strip_prefix('=') {
        // Redis is shared: re-check what another process wrote.
        Some(name) => {
            let labels: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
            PtrOutcome::Name {
                name: crate::dns::sanitize(&labels, max_name_len)?.into(),
                ttl_secs: u32::try_from(remaining.as_secs()).unwrap_or(u32::MAX),
            }
        }
        None => PtrOutcome::from_label(rest)?,
    };
    Some(L2Read::Hit(outcome, remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_expiry_far_ahead_is_capped_at_max_ttl() {
        // Another process (or anyone who can write to Redis) set an entry
        // to live for a year: it is kept no longer than dns.max_ttl_secs.
        let v = encode(
            &PtrOutcome::Name {
                name: "host.example.test".into(),
                ttl_secs: 0,
            },
            1_000 + 365 * 86_400,
        );
        let Some(L2Read::Hit(PtrOutcome::Name { ttl_secs, .. }, remaining)) =
            decode(v.as_bytes(), 1_000, 253, Duration::from_secs(3_600))
        else {
            panic!("a hit");
        };
        assert_eq!(remaining, Duration::from_secs(3_600));
        assert_eq!(ttl_secs, 3_600);
    }

    #[test]
    fn values_round_trip() {
        let name = PtrOutcome::Name {
            name: "host.example.test".into(),
            ttl_secs: 300,
        };
        let v = encode(&name, 1_000);
        assert_eq!(v, "1000|=host.example.test");
        assert_eq!(
            decode(v.as_bytes(), 900, 253, DAY),
            Some(L2Read::Hit(
                PtrOutcome::Name {
                    name: "host.example.test".into(),
                    ttl_secs: 100
                },
                Duration::from_secs(100)
            ))
        );
        assert_eq!(decode(v.as_bytes(), 1_000, 253, DAY), Some(L2Read::Miss));
        let nx = encode(&PtrOutcome::NxDomain, 50);
        assert_eq!(
            decode(nx.as_bytes(), 40, 253, DAY),
            Some(L2Read::Hit(PtrOutcome::NxDomain, Duration::from_secs(10)))
        );
        assert_eq!(decode(b"garbage", 0, 253, DAY), None);
        assert_eq!(decode(b"99|=bad name\"", 0, 253, DAY), None);
        assert_eq!(decode(b"99|what", 0, 253, DAY), None);
    }

    #[test]
    fn names_from_redis_are_bounded_like_dns_answers() {
        let v = encode(
            &PtrOutcome::Name {
                name: "host-1.example.test".into(),
                ttl_secs: 300,
            },
            1_000,
        );
        assert!(decode(v.as_bytes(), 900, 19, DAY).is_some());
        assert_eq!(
            decode(v.as_bytes(), 900, 18, DAY),
            None,
            "over dns.max_name_len"
        );
        let huge = format!("1000|={}", vec!["a".repeat(63); 5].join("."));
        assert_eq!(decode(huge.as_bytes(), 900, 253, DAY), None);
        assert_eq!(decode(b"1000|=a..b", 900, 253, DAY), None, "empty label");
        assert_eq!(
            decode(b"1000|=a\x1b[31m", 900, 253, DAY),
            None,
            "control bytes"
        );
    }
}

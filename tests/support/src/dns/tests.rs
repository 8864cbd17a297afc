//! The DNS server against a real resolver: every scripted answer, latency,
//! counters, shutdown and restart on the same port.

use std::net::Ipv6Addr;
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::{Resolver, TokioResolver};

use super::handler::raw_name;
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

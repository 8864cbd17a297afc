//! The `loadtest` binary: parses arguments and calls the library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loadtest::bench::{self, BenchOptions};
use loadtest::cluster::Cluster;
use loadtest::demo::{self, DemoOptions};
use loadtest::feed::Pace;
use loadtest::report::Summary;
use loadtest::run::{self, Plan};
use loadtest::soak::{self, SoakOptions, WorkerKind};
use loadtest::source::{self, LogSet};
use loadtest::synth::{self, Spec};
use loadtest::{geo, plot};
use test_support::{Behaviour, DnsServer, Mix};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load tests, demos and benchmarks for the enricher fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole fleet on this machine with nothing installed: embedded Kafka,
    /// demo GeoIP, fake DNS, several workers; replays logs and reports.
    /// With --pipe: `enricher pipe` on a fixed sample, its output checked.
    Demo(DemoArgs),
    /// Replays recorded Zeek logs (JSON or TSV, plain or gzip) through a
    /// cluster and counts every record at the other end.
    Replay(ReplayArgs),
    /// Benchmarks passthrough, warm and cold enrichment and the Python peer
    /// on the same broker (embedded, tansu or yours) and data.
    Bench(BenchArgs),
    /// Writes synthetic Zeek conn, dns and ssl logs.
    Gen(GenArgs),
    /// Runs the fake DNS server until interrupted, printing queries per second.
    Dns(DnsArgs),
    /// Runs one `enricher run` worker for a long time in bursts at half its
    /// measured maximum: its RSS, the lag after each burst, nothing lost.
    Soak(SoakArgs),
}

/// The shape of synthetic data.
#[derive(Args, Debug, Clone)]
struct SpecArgs {
    /// Records to generate.
    #[arg(long)]
    records: Option<usize>,
    /// Distinct addresses.
    #[arg(long)]
    addresses: Option<usize>,
    /// Zipf exponent of address popularity (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Share of IPv6 addresses.
    #[arg(long, default_value_t = 0.1)]
    ipv6_share: f64,
    /// Share of private addresses.
    #[arg(long, default_value_t = 0.3)]
    private_share: f64,
    /// Seed.
    #[arg(long, default_value_t = 0x5eed_2024_0e71_c4e5)]
    seed: u64,
}

impl SpecArgs {
    fn spec(&self, records: usize, addresses: usize) -> Spec {
        Spec {
            records: self.records.unwrap_or(records),
            addresses: self.addresses.unwrap_or(addresses),
            zipf: self.zipf,
            ipv6_share: self.ipv6_share,
            private_share: self.private_share,
            seed: self.seed,
            ..Spec::default()
        }
    }
}

/// Where the report goes.
#[derive(Args, Debug, Clone)]
struct OutputArgs {
    /// Print the report as one JSON object on standard output.
    #[arg(long)]
    json: bool,
    /// Draw throughput, lag and timestamp diff over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Replay recorded Zeek logs from this directory instead of synthetic ones.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Records per second, all topics together (0: as fast as possible).
    #[arg(long, default_value_t = 30_000.0)]
    rate: f64,
    /// Workers per topic, in one consumer group.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Redis for the shared cache (default: 127.0.0.1:6379 when it answers).
    #[arg(long)]
    redis_url: Option<String>,
    /// Each worker's DNS budget, queries per second.
    #[arg(long, default_value_t = 100)]
    dns_qps: u32,
    /// Show `enricher pipe` instead: a fixed Zeek JSON and TSV sample (three
    /// lines broken on purpose) through the binary, the output checked.
    #[arg(long, conflicts_with = "dir")]
    pipe: bool,
    /// With --pipe: write the files to DIR (created if missing), not a new
    /// temporary directory.
    #[arg(long, value_name = "DIR", requires = "pipe")]
    out: Option<PathBuf>,
    /// With --pipe: the `enricher` binary (default: the one next to this
    /// binary).
    #[arg(long, value_name = "PATH", requires = "pipe")]
    enricher: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Log files or directories (`*.json`, `*.log`, optionally `.gz`).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Kafka bootstrap servers (default: an embedded mock cluster with workers).
    #[arg(long)]
    brokers: Option<String>,
    /// librdkafka property for every client (TLS, SASL), repeatable: `key=value`.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Input topics are this prefix plus the log type.
    #[arg(long, default_value = "bro_")]
    topic_prefix: String,
    /// Records per second, all topics together.
    #[arg(long, conflicts_with = "speedup")]
    rate: Option<f64>,
    /// Pace by the records' own `ts`, this many times faster than recorded.
    #[arg(long)]
    speedup: Option<f64>,
    /// Partitions of topics the replay creates.
    #[arg(long)]
    partitions: Option<i32>,
    /// Workers per topic run in this process (default: 2 on the embedded
    /// cluster, 0 with `--brokers`, where your fleet does the work).
    #[arg(long)]
    workers: Option<usize>,
    /// Consumer group of an external fleet, for the lag readings.
    #[arg(long, default_value = "enricher")]
    group: String,
    /// City .mmdb for in-process workers (default: the demo database).
    #[arg(long)]
    geoip_city: Option<PathBuf>,
    /// ASN .mmdb for in-process workers (default: the demo database).
    #[arg(long)]
    geoip_asn: Option<PathBuf>,
    /// Upstream DNS for in-process workers (default: the fake DNS server).
    #[arg(long)]
    dns_server: Option<SocketAddr>,
    /// Redis for in-process workers.
    #[arg(long)]
    redis_url: Option<String>,
    /// Give up when nothing new has come out for this many seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Benchmark recorded Zeek logs from this directory instead of synthetic ones.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The broker to start: `mock` (librdkafka's mock cluster in this
    /// process) or `tansu` (the installed tansu, a process of its own).
    #[arg(long, default_value = "mock", conflicts_with = "brokers")]
    broker: BrokerKind,
    /// Run against this cluster instead of starting one.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// librdkafka property for every client, worker and peer included (TLS,
    /// SASL), repeatable: `key=value`.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property, requires = "brokers")]
    properties: Vec<(String, String)>,
    /// Partitions of every topic (default: from the data size on the mock
    /// cluster, 8 elsewhere).
    #[arg(long)]
    partitions: Option<i32>,
    /// The `enricher` binary the worker runs as (default: the one next to
    /// this binary).
    #[arg(long, value_name = "PATH")]
    enricher: Option<PathBuf>,
    /// The Python for the peer pass, with confluent-kafka and maxminddb
    /// (default: $ENRICHER_PEER_PYTHON, else .venv/bin/python).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// An environment variable for every worker process, repeatable
    /// (`ENRICHER_KAFKA__CONSUMER_PROPERTIES__FETCH.WAIT.MAX.MS=10`): a
    /// setting to try without editing anything.
    #[arg(long = "worker-env", value_name = "KEY=VALUE", value_parser = parse_property)]
    worker_env: Vec<(String, String)>,
    /// Rounds of the modes (the report takes the median).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The worker's DNS budget, queries per second.
    #[arg(long, default_value_t = 500)]
    dns_qps: u32,
    /// The worker's DNS burst.
    #[arg(long, default_value_t = 50)]
    dns_burst: u32,
    /// Seconds of each paced latency phase.
    #[arg(long, default_value_t = 5.0)]
    latency_secs: f64,
    /// Records per second of the paced phases instead of half the rates
    /// measured (with `--rounds 0`: only the paced phases, to try settings).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Modes to run in each round (ratios need passthrough, the peer's
    /// warm; one mode alone is for profiling).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "passthrough,warm,cold,peer"
    )]
    modes: Vec<bench::Mode>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args, Debug)]
struct GenArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// `json` (one record per line, log types mixed) or `tsv` (one file per log type).
    #[arg(long, default_value = "json")]
    format: String,
    /// Directory to write `<type>.json` or `<type>.log` files into (default:
    /// JSON to standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the demo GeoIP databases into `--out`.
    #[arg(long, requires = "out")]
    geoip: bool,
}

#[derive(Args, Debug)]
struct DnsArgs {
    /// UDP port on 127.0.0.1 (0: any).
    #[arg(long, default_value_t = 5353)]
    port: u16,
    /// Median latency, ms.
    #[arg(long, default_value_t = 20)]
    median_ms: u64,
    /// 99th percentile latency, ms.
    #[arg(long, default_value_t = 80)]
    p99_ms: u64,
    /// Addresses answered NXDOMAIN, per thousand.
    #[arg(long, default_value_t = 50)]
    nxdomain: u32,
    /// Addresses answered SERVFAIL, per thousand.
    #[arg(long, default_value_t = 5)]
    servfail: u32,
    /// Addresses never answered, per thousand.
    #[arg(long, default_value_t = 10)]
    silence: u32,
}

#[derive(Args, Debug)]
struct SoakArgs {
    /// Minutes of bursts and idle spells together, at least.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Records per second during a burst (default: half the maximum a
    /// calibration pass measures first).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of each burst of load.
    #[arg(long, default_value_t = 30.0)]
    burst_secs: f64,
    /// Seconds of quiet after each burst (longer until the lag is 0).
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Longest an idle spell waits for the lag to reach 0, seconds.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    /// Records of the calibration pass (sent flat out).
    #[arg(long, default_value_t = 300_000)]
    calibration_records: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 64)]
    partitions: i32,
    /// Distinct synthetic records, sent over and over.
    #[arg(long, default_value_t = 100_000)]
    pool: usize,
    /// Distinct addresses in the pool's records.
    #[arg(long, default_value_t = 5_000)]
    addresses: usize,
    /// Zipf exponent of address popularity (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// The worker's DNS budget, queries per second.
    #[arg(long, default_value_t = 500)]
    dns_qps: u32,
    /// The worker's DNS burst.
    #[arg(long, default_value_t = 50)]
    dns_burst: u32,
    /// The `enricher` binary (default: the one next to this binary).
    #[arg(long, value_name = "PATH")]
    enricher: Option<PathBuf>,
    /// Run the worker in this process instead; RSS is then the whole process.
    #[arg(long, conflicts_with = "enricher")]
    in_process: bool,
    /// Print the report as one JSON object on standard output.
    #[arg(long)]
    json: bool,
}

/// The brokers `loadtest bench` can start itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BrokerKind {
    /// librdkafka's mock cluster, in this process.
    Mock,
    /// tansu, an independent Kafka-compatible broker, as a child process.
    Tansu,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

fn main() -> ExitCode {
    // The worker's variables (ENRICHER_LOG, ENRICHER_LOG_FORMAT); RUST_LOG
    // still works as before.
    let level = std::env::var("ENRICHER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    if let Err(e) = enricher::logging::init(level.as_deref(), None, "warn") {
        eprintln!("loadtest: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo_cmd(args),
        Command::Replay(args) => replay_cmd(args),
        Command::Bench(args) => bench_cmd(args),
        Command::Gen(args) => gen_cmd(args).map(|()| true),
        Command::Dns(args) => dns_cmd(args).map(|()| true),
        Command::Soak(args) => soak_cmd(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints a run's report; true when nothing was lost.
fn finish(summary: &Summary, output: &OutputArgs, title: &str) -> anyhow::Result<bool> {
    if output.json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        print!("{}", summary.table());
    }
    if let Some(path) = &output.plot {
        plot::svg(path, title, &summary.timeline)?;
        eprintln!("Plot written to {}", path.display());
    }
    Ok(summary.lost == 0)
}

fn demo_cmd(args: DemoArgs) -> anyhow::Result<bool> {
    if args.pipe {
        let enricher = match args.enricher {
            Some(path) => path,
            None => loadtest::process::enricher_beside_me()?,
        };
        return demo::pipe::run(&demo::pipe::PipeOptions {
            enricher,
            out: args.out,
        });
    }
    let defaults = DemoOptions::default();
    let options = DemoOptions {
        spec: args
            .spec
            .spec(defaults.spec.records, defaults.spec.addresses),
        logs: args.dir.into_iter().collect(),
        rate: (args.rate > 0.0).then_some(args.rate),
        workers: args.workers.max(1),
        redis_url: args.redis_url,
        dns_qps: args.dns_qps,
        dir: None,
    };
    let summary = demo::run(&options)?;
    finish(&summary, &args.output, "loadtest demo")
}

fn replay_cmd(args: ReplayArgs) -> anyhow::Result<bool> {
    let (sets, skipped) = source::load(&args.inputs)?;
    if skipped > 0 {
        eprintln!("Skipped {skipped} lines that are not records");
    }
    let cluster = match &args.brokers {
        Some(brokers) => Cluster::External {
            brokers: brokers.clone(),
            properties: args.properties.iter().cloned().collect::<BTreeMap<_, _>>(),
        },
        None => Cluster::embedded()?,
    };
    let workers = args
        .workers
        .unwrap_or(if cluster.is_embedded() { 2 } else { 0 });
    let tmp = tempfile::tempdir()?;
    let demo_dbs = geo::write(tmp.path())?;
    let dbs = geo::Databases {
        city: args.geoip_city.unwrap_or(demo_dbs.city),
        asn: args.geoip_asn.unwrap_or(demo_dbs.asn),
    };
    let fake_dns = match (args.dns_server, workers) {
        (None, 1..) => Some(loadtest::FakeDns::start()?),
        _ => None,
    };
    let dns_addr = args.dns_server.or(fake_dns.as_deref().map(DnsServer::addr));
    let mut config = loadtest::worker_config(&dbs, dns_addr, args.redis_url.as_deref());
    config.kafka.group_id = args.group.clone();
    for (k, v) in &args.properties {
        config.kafka.properties.insert(k.clone(), v.clone());
    }
    let records: usize = sets.iter().map(|s| s.records.len()).sum();
    eprintln!(
        "Replaying {} records of {} log types to {} ({} workers per topic in this process)",
        loadtest::report::thousands(records as u64),
        sets.len(),
        cluster.bootstrap(),
        workers
    );
    let counter = || fake_dns.as_deref().map_or(0, DnsServer::queries);
    let pace = match (args.rate, args.speedup) {
        (Some(rate), _) => Pace::Rate(rate),
        (None, Some(factor)) => Pace::Speedup(factor),
        (None, None) => Pace::Flat,
    };
    let plan = Plan {
        sets,
        topic_prefix: args.topic_prefix,
        pace,
        partitions: args
            .partitions
            .or(if cluster.is_embedded() { None } else { Some(8) }),
        workers_per_topic: workers,
        worker_config: config,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        sample_every: Duration::from_secs(1),
        progress: true,
        dns_queries: fake_dns.as_ref().map(|_| &counter as &dyn Fn() -> u64),
    };
    let (summary, _) = run::execute(&cluster, plan)?;
    drop(fake_dns);
    finish(&summary, &args.output, "loadtest replay")
}

fn bench_cmd(args: BenchArgs) -> anyhow::Result<bool> {
    let data = match &args.dir {
        Some(dir) => {
            let (sets, _) = source::load(std::slice::from_ref(dir))?;
            let mut all = LogSet {
                path: "recorded".into(),
                ..LogSet::default()
            };
            for s in sets {
                for ((r, ts), g) in s.records.into_iter().zip(s.ts).zip(s.expect_geo) {
                    all.push(r, ts, g);
                }
            }
            all
        }
        // On the mock cluster 600,000 records make passes of 3-6 s: long
        // enough that one record waiting a DNS timeout (1 s) at the end, or
        // the first fetches' ramp, does not decide the figure. A real broker
        // moves a tenth of that: 200,000 records make passes of 8-20 s.
        None => {
            let records = if args.brokers.is_none() && args.broker == BrokerKind::Mock {
                600_000
            } else {
                200_000
            };
            loadtest::one_set(synth::generate(&args.spec.spec(records, 2_000)))
        }
    };
    let broker = match (&args.brokers, args.broker) {
        (Some(brokers), _) => bench::Broker::External {
            brokers: brokers.clone(),
            properties: args.properties.iter().cloned().collect(),
        },
        (None, BrokerKind::Mock) => bench::Broker::Mock,
        (None, BrokerKind::Tansu) => bench::Broker::Tansu,
    };
    let enricher = match args.enricher {
        Some(path) => path,
        None => loadtest::process::enricher_beside_me()?,
    };
    let python = if args.modes.contains(&bench::Mode::Peer) {
        loadtest::peer::find_python(args.python.as_deref())
    } else {
        Err("not asked for (--modes)".to_string())
    };
    let summary = bench::run(&BenchOptions {
        data,
        rounds: if args.latency_rate.is_some() {
            args.rounds
        } else {
            args.rounds.max(1)
        },
        dns_qps: args.dns_qps,
        dns_burst: args.dns_burst,
        latency_secs: args.latency_secs,
        latency_rate: args.latency_rate,
        modes: args.modes,
        broker,
        partitions: args.partitions,
        enricher,
        python,
        worker_env: args.worker_env,
    })?;
    if args.output.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if let Some(path) = &args.output.plot {
        plot::svg(path, "loadtest bench: paced phase", &summary.paced.timeline)?;
        eprintln!("Plot written to {}", path.display());
    }
    Ok(summary.lost == 0)
}

fn gen_cmd(args: GenArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let spec = args.spec.spec(100_000, 5_000);
    match (args.format.as_str(), &args.out) {
        ("json", None) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for r in synth::generate(&spec) {
                writeln!(out, "{}", r.json)?;
            }
            out.flush()?;
        }
        ("json", Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            let mut files: BTreeMap<&str, std::io::BufWriter<std::fs::File>> = BTreeMap::new();
            for r in synth::generate(&spec) {
                if !files.contains_key(r.path) {
                    let f = std::fs::File::create(dir.join(format!("{}.json", r.path)))?;
                    files.insert(r.path, std::io::BufWriter::new(f));
                }
                if let Some(f) = files.get_mut(r.path) {
                    writeln!(f, "{}", r.json)?;
                }
            }
            for f in files.values_mut() {
                f.flush()?;
            }
        }
        ("tsv", Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            for (path, text) in synth::to_tsv(&spec) {
                std::fs::write(dir.join(format!("{path}.log")), text)?;
            }
        }
        ("tsv", None) => anyhow::bail!("--format tsv writes one file per log type: give --out DIR"),
        (other, _) => anyhow::bail!("--format must be json or tsv, not {other:?}"),
    }
    if args.geoip
        && let Some(dir) = &args.out
    {
        let dbs = geo::write(dir)?;
        eprintln!("Wrote {} and {}", dbs.city.display(), dbs.asn.display());
    }
    Ok(())
}

fn dns_cmd(args: DnsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mix = Mix {
            median: Duration::from_millis(args.median_ms),
            p99: Duration::from_millis(args.p99_ms),
            nxdomain_per_mille: args.nxdomain,
            servfail_per_mille: args.servfail,
            silence_per_mille: args.silence,
        };
        let server = DnsServer::start_on(args.port, Behaviour::default().with_mix(mix))
            .await
            .context("starting the fake DNS server")?;
        eprintln!(
            "Fake DNS on {} (udp): PTR for every address as host-a-b-c-d.example.test., {} ms median, {} ms p99, {}‰ NXDOMAIN, {}‰ SERVFAIL, {}‰ silent. Ctrl-C stops.",
            server.addr(),
            args.median_ms,
            args.p99_ms,
            args.nxdomain,
            args.servfail,
            args.silence
        );
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    let q = server.queries();
                    if q != last {
                        eprintln!("{} queries ({}/s)", q, q - last);
                        last = q;
                    }
                }
            }
        }
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn soak_cmd(args: SoakArgs) -> anyhow::Result<bool> {
    let positive = |name: &str, v: f64| {
        anyhow::ensure!(v.is_finite() && v > 0.0, "{name} must be greater than 0");
        Ok(())
    };
    positive("--minutes", args.minutes)?;
    positive("--burst-secs", args.burst_secs)?;
    anyhow::ensure!(args.idle_secs >= 0.0, "--idle-secs must not be negative");
    if let Some(rate) = args.rate {
        positive("--rate", rate)?;
    }
    let worker = match (args.in_process, args.enricher) {
        (true, _) => WorkerKind::InProcess,
        (false, Some(path)) => WorkerKind::Process(path),
        (false, None) => WorkerKind::Process(soak::enricher_beside_me()?),
    };
    let defaults = SoakOptions::default();
    let summary = soak::run(&SoakOptions {
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        rate: args.rate,
        burst: Duration::from_secs_f64(args.burst_secs),
        idle: Duration::from_secs_f64(args.idle_secs),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        calibration_records: args.calibration_records,
        partitions: args.partitions,
        spec: Spec {
            records: args.pool,
            addresses: args.addresses,
            zipf: args.zipf,
            ..defaults.spec
        },
        dns_qps: args.dns_qps,
        dns_burst: args.dns_burst,
        worker,
        ..defaults
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    Ok(summary.ok())
}

//! The `enricher` binary: parses arguments and calls the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Args, Parser, Subcommand};
use enricher::config::{Config, ConfigError, DbAttributes, GeoIpDatabase, TableConfig};
use enricher::kafka::{self, Health};
use enricher::pipe::{self, PipeOptions};
use enricher::splice::Naming;

/// Exit code for a usage or configuration error (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;
/// Exit code when an input cannot be read (BSD `EX_NOINPUT`).
const EX_NOINPUT: u8 = 66;
/// Exit code when a port cannot be bound (BSD `EX_UNAVAILABLE`).
const EX_UNAVAILABLE: u8 = 69;
/// Exit code when the worker stopped with records taken but not delivered
/// (BSD `EX_TEMPFAIL`): the grace ran out, or a second signal came. Their
/// offsets were not committed, so the partition's next owner reads them
/// again.
const EX_TEMPFAIL: u8 = 75;
/// After `worker.shutdown_grace_ms`, the drain's last steps (flush, final
/// commit, leaving the group) get this long before the process exits
/// anyway: inside the chart's termination grace, which is 5 s longer.
const FINAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Parser, Debug)]
#[command(
    name = "enricher",
    version,
    about = "Enriches network logs with GeoIP and reverse DNS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter: `info`, `debug`, `enricher=debug,librdkafka=warn`
    /// (default: `ENRICHER_LOG`, else `info`).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// `text` or `json` (default: `ENRICHER_LOG_FORMAT`, else `text`).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrich records from files or standard input to standard output (NDJSON).
    Pipe(PipeArgs),
    /// Consume a Kafka topic, enrich, produce to the output topic, commit in order.
    Run(RunArgs),
    /// Validate a config file and print the effective configuration, secrets masked.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// For every topic with an `_enr` output: lag in records and seconds,
    /// rates and dead letters, read from the brokers alone.
    Status(StatusArgs),
    /// Send dead letters back to their source topic after a fix (a batch
    /// run up to the watermarks current at its start).
    Redrive(RedriveArgs),
}

#[derive(Args, Debug)]
struct RedriveArgs {
    /// Bootstrap brokers, `host:port[,host:port]`.
    #[arg(long)]
    brokers: String,
    /// A librdkafka property for the clients (TLS, SASL), repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// The dead-letter topic to read.
    #[arg(long, value_name = "TOPIC")]
    from: String,
    /// Send here instead of each record's `enricher.source.topic`.
    #[arg(long, value_name = "TOPIC")]
    to: Option<String>,
    /// Only records with this `enricher.reason`, repeatable.
    #[arg(long = "reason", value_name = "REASON")]
    reasons: Vec<String>,
    /// Only records from this time on: RFC 3339 or an age (`2h`, `7d`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records up to this time: RFC 3339 or an age (`30m`).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Print the counts by reason; move and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Move at most N records.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// A record already redriven this many times goes to `<from>_parked`.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_attempts: u32,
    /// The group that remembers what was read (default
    /// `enricher-redrive-<from>`, `-<reason>+<reason>` appended with
    /// `--reason`).
    #[arg(long)]
    group: Option<String>,
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Bootstrap brokers, `host:port[,host:port]`.
    #[arg(long)]
    brokers: String,
    /// A librdkafka property for the clients (TLS, SASL), repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Only input topics whose whole name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    topics: Option<String>,
    /// The consumer group of a topic's workers; `{topic}` is its name (the
    /// chart's default). Repeatable, for dedicated and shared workers: each
    /// topic shows the first group that has committed offsets for it
    /// (`--group-template 'enricher-{topic}' --group-template enricher-small-logs`).
    #[arg(long = "group-template", default_value = "enricher-{topic}")]
    group_templates: Vec<String>,
    /// Refresh every SECS seconds, like `top`, with rates since the last one.
    #[arg(long, value_name = "SECS")]
    watch: Option<f64>,
    /// One JSON object per refresh, for scripts.
    #[arg(long)]
    json: bool,
    /// Exit 1 when any topic's lag in seconds is over this.
    #[arg(long, value_name = "SECS")]
    max_lag_secs: Option<f64>,
    /// Mark a partition stalled when its commits stand still this long
    /// although it has lag (seen between refreshes).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    stall_secs: f64,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

/// `enricher status`: one snapshot (exit 1 when a topic is over
/// `--max-lag-secs`), or a refresh every `--watch` seconds until stopped.
fn run_status(args: StatusArgs) -> ExitCode {
    let topics = match args
        .topics
        .as_deref()
        .map(|t| regex::Regex::new(&format!("^(?:{t})$")))
    {
        None => None,
        Some(Ok(re)) => Some(re),
        Some(Err(e)) => {
            eprintln!("enricher: --topics: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let watch = match args.watch {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            eprintln!("enricher: --watch: must be a positive number of seconds");
            return ExitCode::from(EX_USAGE);
        }
        w => w.map(std::time::Duration::from_secs_f64),
    };
    let opts = enricher::status::StatusOptions {
        brokers: args.brokers,
        properties: args.properties.into_iter().collect(),
        topics,
        group_templates: args.group_templates,
        stall_after: std::time::Duration::from_secs_f64(args.stall_secs.max(0.0)),
    };
    let mut status = match enricher::status::Status::new(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("enricher: {e:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    loop {
        let snapshot = match status.refresh() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("enricher: {e:#}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        if args.json {
            match serde_json::to_string(&snapshot) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("enricher: {e}"),
            }
        } else {
            if watch.is_some() {
                // Like `top`: the table redrawn in place.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", snapshot.table());
        }
        let Some(every) = watch else {
            let over = args
                .max_lag_secs
                .is_some_and(|max| snapshot.max_lag_seconds() > max);
            return if over {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        };
        std::thread::sleep(every);
    }
}

/// `enricher redrive`: one batch run; exit 0 with its report, 64 for bad
/// arguments, 69 when the cluster fails it.
fn run_redrive(args: RedriveArgs) -> ExitCode {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let time = |flag: &str, text: &Option<String>| -> Result<Option<i64>, ExitCode> {
        text.as_deref()
            .map(|t| enricher::redrive::parse_time(t, now_ms))
            .transpose()
            .map_err(|e| {
                eprintln!("enricher: {flag}: {e}");
                ExitCode::from(EX_USAGE)
            })
    };
    let (since, until) = match (time("--since", &args.since), time("--until", &args.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let reasons: std::collections::BTreeSet<String> = args.reasons.into_iter().collect();
    let opts = enricher::redrive::RedriveOptions {
        brokers: args.brokers,
        properties: args.properties.into_iter().collect(),
        group: args
            .group
            .unwrap_or_else(|| enricher::redrive::default_group(&args.from, &reasons)),
        from: args.from,
        to: args.to,
        reasons,
        since,
        until,
        dry_run: args.dry_run,
        max: args.max,
        max_attempts: args.max_attempts,
    };
    match enricher::redrive::run(&opts) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("enricher: {e}"),
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("enricher: {e:#}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// Flags shared by every command that enriches; each overrides a config key.
#[derive(Args, Debug, Default)]
struct EnrichArgs {
    /// TOML config file; flags override its keys.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// City or Country .mmdb (geoip.city).
    #[arg(long, value_name = "PATH")]
    geoip_city: Option<PathBuf>,
    /// ASN .mmdb (geoip.asn).
    #[arg(long, value_name = "PATH")]
    geoip_asn: Option<PathBuf>,
    /// Any .mmdb, with every attribute its type holds; repeatable (adds to
    /// geoip.databases).
    #[arg(long = "geoip", value_name = "PATH")]
    geoip: Vec<PathBuf>,
    /// Upstream nameserver, repeatable (dns.servers).
    #[arg(long = "dns-server", value_name = "HOST:PORT")]
    dns_servers: Vec<SocketAddr>,
    /// No PTR lookups (dns.enabled = false).
    #[arg(long, conflicts_with = "dns_servers")]
    no_dns: bool,
    /// Shared cache (redis.url).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// `flat`, `nested` or `ecs` member names (output.naming).
    #[arg(long, value_parser = parse_naming)]
    naming: Option<Naming>,
    /// Write provenance members (output.provenance).
    #[arg(long)]
    provenance: bool,
    /// Threat-intelligence indicator file, repeatable; replaces intel.files.
    #[arg(long = "intel", value_name = "PATH")]
    intel: Vec<PathBuf>,
    /// Enrichment table (CSV, first column the key), repeatable; replaces tables.
    #[arg(long = "table", value_name = "PATH")]
    tables: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    enrich: EnrichArgs,
    /// Bootstrap brokers, `host:port[,host:port]` (kafka.brokers).
    #[arg(long)]
    brokers: Option<String>,
    /// Consumer group (kafka.group_id).
    #[arg(long)]
    group: Option<String>,
    /// Topic to enrich (kafka.input_topic).
    #[arg(long)]
    input_topic: Option<String>,
    /// Several topics to enrich, comma-separated; `^` starts a pattern (kafka.input_topics).
    #[arg(long, value_delimiter = ',', value_name = "TOPICS")]
    input_topics: Vec<String>,
    /// Output topic, default `<input>_enr` (kafka.output_topic).
    #[arg(long)]
    output_topic: Option<String>,
    /// Dead-letter topic, default `<input>_dlq` (kafka.dlq_topic).
    #[arg(long)]
    dlq_topic: Option<String>,
    /// Alerts topic for records that match `--intel`, default `<input>_intel`; empty: none (kafka.intel_topic).
    #[arg(long)]
    intel_topic: Option<String>,
    /// Bind address of /metrics, /healthz, /readyz (worker.metrics_addr).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
}

#[derive(Args, Debug)]
struct PipeArgs {
    #[command(flatten)]
    enrich: EnrichArgs,
    /// Where rejected records go, as JSON lines (pipe.reject); default standard error.
    #[arg(long, value_name = "PATH")]
    reject: Option<PathBuf>,
    /// Records in flight at once (pipe.concurrency).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Write only the records that matched an indicator (a retro sweep).
    #[arg(long)]
    only_matches: bool,
    /// Input files, plain or gzip; `-` or none reads standard input.
    files: Vec<PathBuf>,
}

fn parse_naming(s: &str) -> Result<Naming, String> {
    match s {
        "flat" => Ok(Naming::Flat),
        "nested" => Ok(Naming::Nested),
        "ecs" => Ok(Naming::Ecs),
        _ => Err(format!("{s:?} is not flat, nested or ecs")),
    }
}

impl EnrichArgs {
    /// Defaults, then the file, then `ENRICHER_*` variables, then flags.
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(p) = &self.geoip_city {
            config.geoip.city = Some(p.clone());
        }
        if let Some(p) = &self.geoip_asn {
            config.geoip.asn = Some(p.clone());
        }
        config
            .geoip
            .databases
            .extend(self.geoip.iter().map(|path| GeoIpDatabase {
                path: path.clone(),
                attributes: DbAttributes::default(),
            }));
        if !self.dns_servers.is_empty() {
            config.dns.servers = self.dns_servers.clone();
            config.dns.enabled = true;
        }
        if self.no_dns {
            config.dns.enabled = false;
        }
        if let Some(url) = &self.redis_url {
            config.redis.url = url.clone();
        }
        if let Some(n) = &self.naming {
            config.output.naming = n.clone();
        }
        if self.provenance {
            config.output.provenance = true;
        }
        if !self.intel.is_empty() {
            config.intel.files = self.intel.clone();
        }
        if !self.tables.is_empty() {
            config.tables = self
                .tables
                .iter()
                .map(|path| TableConfig {
                    path: path.clone(),
                    ..TableConfig::default()
                })
                .collect();
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(e) =
        enricher::logging::init(cli.log_level.as_deref(), cli.log_format.as_deref(), "info")
    {
        eprintln!("enricher: {e}");
        return ExitCode::from(EX_USAGE);
    }
    match cli.command {
        Command::CheckConfig { file } => {
            match Config::load(Some(&file), std::env::vars())
                .and_then(|c| enricher::core::check(&c).map(|()| c))
            {
                Ok(config) => {
                    print!("{}", config.to_masked_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => usage_error(&e),
            }
        }
        Command::Pipe(args) => run_pipe(args),
        Command::Run(args) => run_worker(args),
        Command::Status(args) => run_status(args),
        Command::Redrive(args) => run_redrive(args),
    }
}

fn run_worker(args: RunArgs) -> ExitCode {
    let mut config = match args.enrich.load() {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let k = &mut config.kafka;
    if let Some(v) = args.brokers {
        k.brokers = v;
    }
    if let Some(v) = args.group {
        k.group_id = v;
    }
    if let Some(v) = args.input_topic {
        k.input_topic = v;
    }
    if !args.input_topics.is_empty() {
        k.input_topics = args.input_topics;
    }
    if args.output_topic.is_some() {
        k.output_topic = args.output_topic;
    }
    if args.dlq_topic.is_some() {
        k.dlq_topic = args.dlq_topic;
    }
    if args.intel_topic.is_some() {
        k.intel_topic = args.intel_topic;
    }
    if let Some(v) = args.metrics_addr {
        config.worker.metrics_addr = v;
    }
    if let Err(e) = config
        .validate_run()
        .and_then(|()| enricher::core::check(&config))
        .and_then(|()| kafka::check_clients(&config))
    {
        return usage_error(&e);
    }
    let recorder = match enricher::http::install_recorder() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("enricher: cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let core = match runtime.block_on(async { enricher::core::build(&config) }) {
        Ok(core) => core,
        Err(e) => return usage_error(&e),
    };
    let health = Arc::new(Health::default());
    let server = runtime.block_on(enricher::http::serve(
        config.worker.metrics_addr,
        recorder,
        Arc::clone(&health),
    ));
    if let Err(e) = server {
        eprintln!(
            "enricher: cannot bind worker.metrics_addr {}: {e}",
            config.worker.metrics_addr
        );
        return ExitCode::from(EX_UNAVAILABLE);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let grace = std::time::Duration::from_millis(config.worker.shutdown_grace_ms);
    runtime.spawn(wait_for_signal(Arc::clone(&stop), grace + FINAL_WINDOW));
    let handle = runtime.handle().clone();
    let enricher = Arc::clone(&core.enricher);
    let worker = std::thread::Builder::new()
        .name("consumer".into())
        .spawn(move || kafka::run(&config, enricher, handle, stop, health));
    let result = match worker {
        Ok(w) => w.join(),
        Err(e) => {
            eprintln!("enricher: cannot start the consumer thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(Ok(report)) if report.undelivered > 0 => {
            tracing::warn!(
                ?report,
                "Worker exited with records undelivered; the next owner reads them again"
            );
            ExitCode::from(EX_TEMPFAIL)
        }
        Ok(Ok(report)) => {
            tracing::info!(?report, "Worker exited");
            ExitCode::SUCCESS
        }
        Ok(Err(kafka::WorkerError::Config(e))) => usage_error(&e),
        Ok(Err(e)) => {
            eprintln!("enricher: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("enricher: the consumer thread panicked");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT lead to the same drain. A second signal during the
/// drain exits at once, and so does a drain still running `deadline` after
/// the first: both with [`EX_TEMPFAIL`], committing nothing more (whatever
/// was not committed is read again by the next owner).
async fn wait_for_signal(stop: Arc<AtomicBool>, deadline: std::time::Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::select! {
        _ = term.recv() => tracing::warn!("Second signal; exiting at once, committing nothing more"),
        _ = int.recv() => tracing::warn!("Second signal; exiting at once, committing nothing more"),
        () = tokio::time::sleep(deadline) => tracing::error!(
            deadline_ms = deadline.as_millis() as u64,
            "Shutdown still running past its grace; exiting, committing nothing more"
        ),
    }
    std::process::exit(i32::from(EX_TEMPFAIL));
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("enricher: {e}");
    ExitCode::from(EX_USAGE)
}

fn run_pipe(args: PipeArgs) -> ExitCode {
    let mut config = match args.enrich.load() {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if let Some(r) = &args.reject {
        config.pipe.reject = Some(r.clone());
    }
    if let Some(c) = args.concurrency {
        config.pipe.concurrency = c;
    }
    if args.only_matches && config.intel.files.is_empty() {
        return usage_error(&ConfigError::new(
            "intel.files",
            "--only-matches needs indicator files (--intel PATH)",
        ));
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let core = match enricher::core::build(&config) {
            Ok(core) => core,
            Err(e) => return usage_error(&e),
        };
        let mut reject: Box<dyn Write + Send> = match &config.pipe.reject {
            Some(path) => match std::fs::File::create(path) {
                Ok(f) => Box::new(std::io::BufWriter::new(f)),
                Err(e) => {
                    return usage_error(&ConfigError::new(
                        "pipe.reject",
                        format!("cannot create {}: {e}", path.display()),
                    ));
                }
            },
            None => Box::new(std::io::stderr()),
        };
        let opts = PipeOptions {
            inputs: args.files,
            concurrency: config.pipe.concurrency,
            max_record_bytes: config.input.max_record_bytes,
            only_matches: args.only_matches,
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout);
        let result = pipe::run(core.enricher.clone(), opts, &mut out, &mut *reject).await;
        let _ = reject.flush();
        drop(out);
        match result {
            Ok(summary) => {
                let _ = pipe::write_summary(&mut std::io::stderr(), &summary);
                ExitCode::SUCCESS
            }
            // `enricher pipe ... | head`: the reader has what it wanted.
            Err(e) if e.is_closed_output() => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("enricher: {e}");
                let _ =
                    pipe::write_summary(&mut std::io::stderr(), &core.enricher.stats().snapshot());
                ExitCode::from(EX_NOINPUT)
            }
        }
    })
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("enricher: cannot start the runtime: {e}"))
        .ok()
}

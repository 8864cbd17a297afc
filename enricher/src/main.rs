//! The `enricher` binary: parses arguments and calls the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use enricher::config::{Config, ConfigError};
use enricher::output::Naming;
use enricher::pipe::{self, PipeOptions};

/// Exit code for a usage or configuration error (BSD `EX_USAGE`).
const EX_USAGE: u8 = 64;
/// Exit code when an input cannot be read (BSD `EX_NOINPUT`).
const EX_NOINPUT: u8 = 66;

#[derive(Parser, Debug)]
#[command(
    name = "enricher",
    version,
    about = "Enriches network logs with GeoIP and reverse DNS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrich records from files or standard input to standard output (NDJSON).
    Pipe(PipeArgs),
    /// Validate a config file and print the effective configuration, secrets masked.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
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
    /// Upstream nameserver, repeatable (dns.servers).
    #[arg(long = "dns-server", value_name = "HOST:PORT")]
    dns_servers: Vec<SocketAddr>,
    /// No PTR lookups (dns.enabled = false).
    #[arg(long, conflicts_with = "dns_servers")]
    no_dns: bool,
    /// Shared cache (redis.url).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// `flat` or `nested` member names (output.naming).
    #[arg(long, value_parser = parse_naming)]
    naming: Option<Naming>,
    /// Write provenance members (output.provenance).
    #[arg(long)]
    provenance: bool,
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
    /// Input files, plain or gzip; none reads standard input.
    files: Vec<PathBuf>,
}

fn parse_naming(s: &str) -> Result<Naming, String> {
    match s {
        "flat" => Ok(Naming::Flat),
        "nested" => Ok(Naming::Nested),
        _ => Err(format!("{s:?} is not flat or nested")),
    }
}

impl EnrichArgs {
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(p) = &self.geoip_city {
            config.geoip.city = Some(p.clone());
        }
        if let Some(p) = &self.geoip_asn {
            config.geoip.asn = Some(p.clone());
        }
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
    init_logging();
    match cli.command {
        Command::CheckConfig { file } => {
            match Config::from_file(&file).and_then(|c| c.validate().map(|()| c)) {
                Ok(config) => {
                    print!("{}", config.to_masked_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => usage_error(&e),
            }
        }
        Command::Pipe(args) => run_pipe(args),
    }
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("enricher: {e}");
    ExitCode::from(EX_USAGE)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ENRICHER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("ENRICHER_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("enricher: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let core = match enricher::worker::build(&config) {
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
            Err(e) => {
                eprintln!("enricher: {e}");
                let _ =
                    pipe::write_summary(&mut std::io::stderr(), &core.enricher.stats().snapshot());
                ExitCode::from(EX_NOINPUT)
            }
        }
    })
}

//! `loadtest demo --pipe`: `enricher pipe` end to end on a fixed sample, with
//! nothing installed, and a report that checks what came out.
//!
//! ```text
//! geo: demo City + ASN .mmdb ---------------------------.
//! synth: Zeek JSON + TSV, 3 lines broken on purpose ----+--> enricher pipe --> enriched.jsonl
//! FakeDns on loopback (5 ms, NXDOMAIN, two silent) -----'                 '--> rejects.jsonl
//!                                                   check: the output against the sample
//! ```
//!
//! Everything goes to a new temporary directory (or `--out DIR`), which is
//! kept so the files can be looked at afterwards. The sample comes from a
//! fixed seed, so every run enriches the same records. The check
//! ([`super::check`]) compares the output with what the sample, the demo
//! databases and the DNS server's script say it must be.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use enricher::record::tsv::{TsvLine, TsvReader};
use serde_json::Value;
use test_support::zeek::Rng;
use test_support::{Answer, Behaviour};

use crate::synth::{self, Spec};
use crate::{FakeDns, geo};

/// The seed of everything random: the same sample on every run.
const SEED: u64 = 0x5eed_2024_0e71_c4e5;
/// Zeek JSON records in `sample.json` (conn, dns and ssl, mixed).
const JSON_RECORDS: usize = 1_500;
/// Zeek TSV rows in `sample.log`: a conn block, then a dns block.
const TSV_RECORDS: usize = 500;
/// Distinct addresses the sample draws from.
const ADDRESSES: usize = 400;
/// The single-address fields the enricher enriches by default.
pub(super) const ADDRESS_FIELDS: [&str; 2] = ["id.orig_h", "id.resp_h"];

/// What `demo --pipe` runs.
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// The `enricher` binary.
    pub enricher: PathBuf,
    /// Where the files go (created if missing); a new temporary directory,
    /// kept, when `None`.
    pub out: Option<PathBuf>,
}

/// Writes the databases and the sample, runs `enricher pipe` over it,
/// prints the report; true when the output is what it must be.
///
/// # Errors
///
/// When a file cannot be written or read, the DNS server cannot start, or
/// `enricher pipe` fails.
pub fn run(options: &PipeOptions) -> anyhow::Result<bool> {
    crate::process::check_binary(&options.enricher)?;
    let dir = match &options.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("enricher-demo-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    let mut files = Files::in_dir(&dir);
    let dbs = geo::write(&dir).context("writing the demo GeoIP databases")?;
    files.geoip = format!("{}, {}", file_name(&dbs.city), file_name(&dbs.asn));
    let sample = Sample::generate();
    files.write(files.json, &sample.json)?;
    files.write(files.tsv, &sample.tsv)?;
    let behaviour = dns_behaviour(&sample, &mut Rng(SEED ^ 2));
    let run = run_enricher(&options.enricher, &files, &dbs, behaviour.clone())?;
    super::check::report(&files, &sample, &behaviour, &run)
}

/// The demo's files, all in one directory.
pub(super) struct Files {
    pub(super) dir: PathBuf,
    /// The GeoIP databases' names.
    pub(super) geoip: String,
    pub(super) json: &'static str,
    pub(super) tsv: &'static str,
    pub(super) enriched: &'static str,
    pub(super) rejects: &'static str,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            geoip: String::new(),
            json: "sample.json",
            tsv: "sample.log",
            enriched: "enriched.jsonl",
            rejects: "rejects.jsonl",
        }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// The lines of one file.
    pub(super) fn read_lines(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let path = self.path(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text.lines().map(str::to_owned).collect())
    }
}

/// A line broken on purpose, and the reject reason the enricher must give it.
pub(super) struct Broken {
    pub(super) file: &'static str,
    pub(super) line: usize,
    pub(super) reason: &'static str,
}

/// The generated sample: the files' bytes and what the check compares with.
pub(super) struct Sample {
    json: Vec<u8>,
    tsv: Vec<u8>,
    /// Uids of the good records in input order (the JSON file first).
    pub(super) uids: Vec<String>,
    /// Good records per log type.
    pub(super) per_path: BTreeMap<String, usize>,
    /// Addresses in address fields and DNS answers, with how often they occur.
    pub(super) addresses: HashMap<IpAddr, usize>,
    pub(super) broken: Vec<Broken>,
}

impl Sample {
    /// Synthetic records from [`synth`]: JSON of every type with two broken
    /// lines among them, then TSV conn and dns blocks with a row short of a
    /// column.
    fn generate() -> Self {
        let mut sample = Self {
            json: Vec::new(),
            tsv: Vec::new(),
            uids: Vec::new(),
            per_path: BTreeMap::new(),
            addresses: HashMap::new(),
            broken: Vec::new(),
        };
        let records = synth::generate(&Spec {
            records: JSON_RECORDS,
            addresses: ADDRESSES,
            seed: SEED,
            ..Spec::default()
        });
        let mut utf8_broken = false;
        for (i, record) in records.iter().enumerate() {
            let broken: Option<(&str, Vec<u8>)> = if i == 400 {
                // A record cut off mid-write.
                let json = record.json.as_bytes();
                Some(("truncated", json[..json.len() / 2].to_vec()))
            } else if i >= 900 && !utf8_broken && record.path == "dns" {
                // Latin-1 bytes in a query name.
                utf8_broken = true;
                let json = record.json.as_bytes();
                let at = json
                    .windows(9)
                    .position(|w| w == b"\"query\":\"")
                    .map_or(0, |p| p + 9);
                Some((
                    "invalid_utf8",
                    [&json[..at], b"caf\xe9-\xff", &json[at..]].concat(),
                ))
            } else {
                None
            };
            if let Some((reason, bytes)) = broken {
                sample.json.extend_from_slice(&bytes);
                sample.json.push(b'\n');
                sample.broken.push(Broken {
                    file: "sample.json",
                    line: sample.json.iter().filter(|&&b| b == b'\n').count(),
                    reason,
                });
            }
            sample.json.extend_from_slice(record.json.as_bytes());
            sample.json.push(b'\n');
            sample.add_json(record.json.as_bytes());
        }

        let logs = synth::to_tsv(&Spec {
            records: TSV_RECORDS,
            addresses: ADDRESSES,
            weights: [7, 3, 0],
            seed: SEED ^ 1,
            ..Spec::default()
        });
        let mut tsv = String::new();
        for (path, text) in logs {
            let mut reader = TsvReader::new();
            let mut out = Vec::new();
            let mut rows = 0;
            for line in text.lines() {
                let row = reader.line(line.as_bytes(), &mut out).ok() == Some(TsvLine::Row);
                if row && path == "conn" && rows == 250 {
                    // A row without its last column.
                    tsv.push_str(&line[..line.rfind('\t').unwrap_or(line.len())]);
                    tsv.push('\n');
                    sample.broken.push(Broken {
                        file: "sample.log",
                        line: tsv.lines().count(),
                        reason: "tsv_columns",
                    });
                }
                tsv.push_str(line);
                tsv.push('\n');
                if row {
                    rows += 1;
                    sample.add_json(&out);
                }
            }
            tsv.push_str("#close\t2023-11-15-00-00-00\n");
        }
        sample.tsv = tsv.into_bytes();
        sample
    }

    /// Counts one good record, as JSON.
    fn add_json(&mut self, json: &[u8]) {
        let Ok(record) = serde_json::from_slice::<Value>(json) else {
            return;
        };
        let text = |key: &str| record.get(key).and_then(Value::as_str).unwrap_or_default();
        self.uids.push(text("uid").to_owned());
        *self.per_path.entry(text("_path").to_owned()).or_default() += 1;
        let answers = record
            .get("answers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let fields = ADDRESS_FIELDS.iter().filter_map(|f| record.get(*f));
        for ip in fields.chain(answers).filter_map(Value::as_str) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                *self.addresses.entry(ip).or_default() += 1;
            }
        }
    }
}

/// The DNS server's script: 5 ms per answer, PTR names for most addresses,
/// NXDOMAIN for about a tenth of the public ones, and two fairly popular
/// ones that never answer.
fn dns_behaviour(sample: &Sample, rng: &mut Rng) -> Behaviour {
    let mut public: Vec<(usize, IpAddr)> = sample
        .addresses
        .iter()
        .filter(|(ip, _)| geo::covers(**ip))
        .map(|(ip, n)| (*n, *ip))
        .collect();
    // Most popular first; the same order on every run.
    public.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut behaviour = Behaviour::default().with_latency(Duration::from_millis(5));
    for &(_, ip) in &public {
        if rng.chance(0.1) {
            behaviour = behaviour.with_override(ip, Answer::NxDomain);
        }
    }
    for rank in [12, 40] {
        if let Some(&(_, ip)) = public.get(rank) {
            behaviour = behaviour.with_override(ip, Answer::Silence);
        }
    }
    behaviour
}

/// What a run of `enricher pipe` took.
pub(super) struct Run {
    pub(super) elapsed: Duration,
    /// Queries the DNS server received, retransmissions included.
    pub(super) dns_queries: u64,
}

/// Starts the DNS server, runs `enricher pipe` in the demo directory with
/// its standard output going to `enriched.jsonl` and its standard error
/// (the summary) passed through, and counts the queries the server got.
fn run_enricher(
    enricher: &Path,
    files: &Files,
    dbs: &geo::Databases,
    behaviour: Behaviour,
) -> anyhow::Result<Run> {
    let dns = FakeDns::start_with(behaviour).context("starting the DNS server")?;
    // A budget suited to a local resolver; the defaults (100 queries/s with a
    // burst of 50) suit a shared corporate one.
    let config = files.path("demo.toml");
    std::fs::write(
        &config,
        "# Written by the demo: a DNS budget for a local resolver.\n[dns]\nqps = 500\nburst = 200\nbudget_wait_ms = 200\n",
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let (city, asn) = (file_name(&dbs.city), file_name(&dbs.asn));
    let server = dns.addr().to_string();
    let args = [
        "pipe",
        "--config",
        "demo.toml",
        "--geoip-city",
        &city,
        "--geoip-asn",
        &asn,
        "--dns-server",
        &server,
        "--provenance",
        "--reject",
        files.rejects,
        files.json,
        files.tsv,
    ];
    let out = files.path(files.enriched);
    let stdout = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    println!("$ cd {}", files.dir.display());
    println!("$ enricher {} > {}", args.join(" "), files.enriched);
    std::io::stdout()
        .flush()
        .context("writing to standard output")?;

    let started = Instant::now();
    let status = Command::new(enricher)
        .args(args)
        .current_dir(&files.dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {}", enricher.display()))?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("enricher pipe failed ({status}); its messages are above");
    }
    Ok(Run {
        elapsed,
        dns_queries: dns.queries(),
    })
}

/// The last part of `path`.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

//! `demo`: runs `enricher pipe` end to end on a fresh machine, with nothing installed.
//!
//! ```text
//! mmdb fixtures (City, ASN) -------------------------.
//! synthetic Zeek logs (JSON + TSV, 3 broken lines) ---+--> enricher pipe --> enriched.jsonl
//! DnsServer on loopback (5 ms, NXDOMAIN, silence) ---'                  '--> rejects.jsonl
//! ```
//!
//! Everything goes to a new temporary directory (or `--dir DIR`), which is kept so the
//! files can be looked at afterwards. The sample comes from a fixed seed, so every run
//! enriches the same records. The report checks the output against what the sample and
//! the fixtures say it must be, and the demo fails when it does not match. The `enricher`
//! binary is expected next to this one (`cargo build --release -p enricher`).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde_json::Value;
use test_support::mmdb::{self, CityRecord};
use test_support::zeek::{CIPHERS, DOMAINS, Record, Rng, SERVICES, Val, conn_fields, dns_fields};
use test_support::{Answer, Behaviour, DnsServer, synth_name};

const USAGE: &str = "\
usage: demo [--dir DIR]

Writes GeoIP databases and a synthetic Zeek sample, starts a loopback DNS server,
runs `enricher pipe` over the sample and reports what came out.

  --dir DIR   write the files to DIR (created if missing), not a new temporary directory";

/// The seed of everything random: the same sample on every run.
const SEED: u64 = 0x5eed_2024_0e71_c4e5;
/// Zeek JSON records in `sample.json` (conn, dns and ssl, mixed).
const JSON_RECORDS: usize = 1_500;
/// Zeek TSV rows in `sample.log`: a conn block, then a dns block.
const TSV_ROWS: [(&str, usize); 2] = [("conn", 350), ("dns", 150)];
/// Build time written to the databases' metadata (2024-01-01).
const BUILD_EPOCH: u64 = 1_704_067_200;
/// The single-address fields the enricher enriches by default.
const ADDRESS_FIELDS: [&str; 2] = ["id.orig_h", "id.resp_h"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let Some(dir) = parse_args(std::env::args_os().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let enricher = enricher_binary()?;
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        }
        None => tempfile::Builder::new()
            .prefix("enricher-demo-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    let files = Files::in_dir(&dir);

    let geo = GeoFixture::new();
    geo.write(&files)?;
    let pools = Pools::new(&mut Rng(SEED));
    let sample = Sample::generate(&pools, &mut Rng(SEED ^ 1));
    sample.write(&files)?;
    let behaviour = dns_behaviour(&pools, &mut Rng(SEED ^ 2));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let run = runtime.block_on(run_enricher(&enricher, &files, behaviour.clone()))?;
    report(&files, &geo, &sample, &behaviour, &run)
}

/// `None` for `--help`, else the `--dir` argument if any.
fn parse_args(mut args: impl Iterator<Item = OsString>) -> anyhow::Result<Option<Option<PathBuf>>> {
    let mut dir = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--dir") => match args.next() {
                Some(value) => dir = Some(PathBuf::from(value)),
                None => bail!("--dir needs a directory\n\n{USAGE}"),
            },
            _ => bail!("unexpected argument {arg:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(dir))
}

/// The `enricher` binary built next to this one.
fn enricher_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding the demo's own executable")?;
    let path = me.with_file_name(format!("enricher{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} does not exist: build it first with `cargo build --release -p enricher` \
             (scripts/demo.sh builds both)",
            path.display()
        );
    }
    Ok(path)
}

/// The demo's files, all in one directory.
struct Files {
    dir: PathBuf,
    city: &'static str,
    asn: &'static str,
    json: &'static str,
    tsv: &'static str,
    enriched: &'static str,
    rejects: &'static str,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            city: "GeoIP2-City-demo.mmdb",
            asn: "GeoLite2-ASN-demo.mmdb",
            json: "sample.json",
            tsv: "sample.log",
            enriched: "enriched.jsonl",
            rejects: "rejects.jsonl",
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    fn read_lines(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let path = self.path(name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", path.display()))
    }
}

/// The databases: the shared fixture plus a German range, and ASNs for every demo range.
struct GeoFixture {
    city: Vec<(IpNet, CityRecord)>,
    asn: Vec<(IpNet, u32, &'static str)>,
}

impl GeoFixture {
    fn new() -> Self {
        let net = |text: &str| text.parse::<IpNet>().expect("demo networks are valid");
        let mut city = mmdb::standard_city();
        city.push((
            net("198.51.100.0/24"),
            CityRecord::new("DE", "Germany", Some("Frankfurt am Main"))
                .with_subdivision("HE")
                .with_location(50.1109, 8.6821, "Europe/Berlin")
                .with_postal("60311"),
        ));
        let mut asn = mmdb::standard_asn();
        // Documentation AS numbers (RFC 5398), like the fixture's 64500.
        asn.extend([
            (net("198.51.100.0/24"), 64501, "Demo Transit GmbH"),
            (net("81.2.69.0/24"), 64502, "Demo Hosting Ltd"),
            (net("2001:db8::/32"), 65537, "Demo IPv6 Networks Inc"),
        ]);
        Self { city, asn }
    }

    fn write(&self, files: &Files) -> anyhow::Result<()> {
        files.write(files.city, &mmdb::city_db_bytes(&self.city, BUILD_EPOCH))?;
        files.write(files.asn, &mmdb::asn_db_bytes(&self.asn, BUILD_EPOCH))
    }

    /// The country the City database gives `ip` (later entries win, as in the writer).
    fn country(&self, ip: IpAddr) -> Option<&str> {
        let (_, record) = self.city.iter().rev().find(|(net, _)| net.contains(&ip))?;
        Some(&record.country_iso)
    }
}

/// The addresses the sample draws from, each list shuffled into a popularity order.
struct Pools {
    public_v4: Vec<IpAddr>,
    public_v6: Vec<IpAddr>,
    internal_v4: Vec<IpAddr>,
    internal_v6: Vec<IpAddr>,
    resolvers: Vec<IpAddr>,
}

impl Pools {
    fn new(rng: &mut Rng) -> Self {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let v6 = |net: u16, host: u16| {
            let [a, b, c] = if net == 0 {
                [0x2001, 0xdb8, 0xcafe]
            } else {
                [0xfd12, 0x3456, 0x789a]
            };
            IpAddr::V6(Ipv6Addr::new(a, b, c, host % 4, 0, 0, 0, host))
        };
        let ranges = [
            ([203, 0, 113], 80),
            ([198, 51, 100], 60),
            ([81, 2, 69], 60),
            ([89, 160, 20], 60),
        ];
        let mut public_v4: Vec<IpAddr> = ranges
            .iter()
            .flat_map(|&([a, b, c], count)| (1..=count).map(move |d| v4(a, b, c, d)))
            .collect();
        let mut public_v6: Vec<IpAddr> = (1..=40).map(|host| v6(0, host)).collect();
        let mut internal_v4: Vec<IpAddr> = (0..40)
            .map(|n| v4(10, 0, 1 + n % 3, 10 + n))
            .chain((2..22).map(|d| v4(192, 168, 1, d)))
            .collect();
        rng.shuffle(&mut public_v4);
        rng.shuffle(&mut public_v6);
        rng.shuffle(&mut internal_v4);
        Self {
            public_v4,
            public_v6,
            internal_v4,
            internal_v6: (1..=8).map(|host| v6(1, host)).collect(),
            // Mostly the home router, sometimes the office resolver or Google's.
            resolvers: vec![
                v4(192, 168, 1, 1),
                v4(192, 168, 1, 1),
                v4(10, 0, 0, 53),
                v4(8, 8, 8, 8),
            ],
        }
    }
}

/// The DNS server's script: 5 ms per answer, PTR names for most addresses, NXDOMAIN for
/// about a tenth of the public ones, and two fairly popular ones that never answer.
fn dns_behaviour(pools: &Pools, rng: &mut Rng) -> Behaviour {
    let mut behaviour = Behaviour::default().with_latency(Duration::from_millis(5));
    for &ip in pools.public_v4.iter().chain(&pools.public_v6) {
        if rng.chance(0.1) {
            behaviour = behaviour.with_override(ip, Answer::NxDomain);
        }
    }
    for ip in [pools.public_v4[12], pools.public_v4[40]] {
        behaviour = behaviour.with_override(ip, Answer::Silence);
    }
    behaviour
}

/// Makes records in time order.
struct Generator<'a> {
    pools: &'a Pools,
    rng: &'a mut Rng,
    ts_micros: u64,
}

impl Generator<'_> {
    /// A record with the next timestamp, a fresh Zeek uid, and the connection's 4-tuple.
    fn start(&mut self, path: &'static str, orig: IpAddr, resp: IpAddr, resp_p: u16) -> Record {
        const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        self.ts_micros += self.rng.range(100, 1_500_000);
        let uid: String = std::iter::once('C')
            .chain((0..17).map(|_| char::from(self.rng.pick(BASE62))))
            .collect();
        let mut r = Record::new(path);
        r.num(
            "ts",
            "time",
            format!(
                "{}.{:06}",
                self.ts_micros / 1_000_000,
                self.ts_micros % 1_000_000
            ),
        );
        r.str("uid", "string", uid);
        r.str("id.orig_h", "addr", orig.to_string());
        r.num("id.orig_p", "port", self.rng.range(32_768, 61_000));
        r.str("id.resp_h", "addr", resp.to_string());
        r.num("id.resp_p", "port", resp_p);
        r
    }

    /// Originator and responder: internal to (mostly) public, a tenth over IPv6.
    fn endpoints(&mut self) -> (IpAddr, IpAddr) {
        let pools = self.pools;
        if self.rng.chance(0.1) {
            (
                self.rng.pick(&pools.internal_v6),
                self.rng.skewed(&pools.public_v6),
            )
        } else if self.rng.chance(0.08) {
            (
                self.rng.skewed(&pools.internal_v4),
                self.rng.skewed(&pools.internal_v4),
            )
        } else {
            (
                self.rng.skewed(&pools.internal_v4),
                self.rng.skewed(&pools.public_v4),
            )
        }
    }

    fn conn(&mut self) -> Record {
        let (orig, resp) = self.endpoints();
        let (proto, port, service) = self.rng.pick(&SERVICES);
        let mut r = self.start("conn", orig, resp, port);
        conn_fields(&mut r, self.rng, proto, service, (true, false));
        r
    }

    /// A lookup through a resolver: most answers are a CNAME then one to three distinct
    /// addresses; a few are NXDOMAIN, with no answers at all.
    fn dns(&mut self) -> Record {
        let orig = self.rng.skewed(&self.pools.internal_v4);
        let resolver = self.rng.pick(&self.pools.resolvers);
        let mut r = self.start("dns", orig, resolver, 53);
        let aaaa = self.rng.chance(0.2);
        let nxdomain = self.rng.chance(0.08);
        let query = if nxdomain {
            "wpad.example.invalid"
        } else {
            self.rng.skewed(&DOMAINS)
        };
        dns_fields(&mut r, self.rng, query, aaaa, nxdomain);
        let (mut answers, mut ttls) = (Vec::new(), Vec::new());
        if !nxdomain && self.rng.chance(0.6) {
            answers.push(format!("edge-{}.cdn.example.net", self.rng.range(1, 9)));
            ttls.push("300.0");
        }
        let pool = if aaaa {
            &self.pools.public_v6
        } else {
            &self.pools.public_v4
        };
        let wanted = if nxdomain {
            0
        } else {
            self.rng.range(1, 4) as usize
        };
        let mut addresses: Vec<IpAddr> = Vec::new();
        while addresses.len() < wanted {
            let ip = self.rng.skewed(pool);
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        answers.extend(addresses.iter().map(IpAddr::to_string));
        ttls.extend(addresses.iter().map(|_| "60.0"));
        let list = |items: Vec<Val>| {
            if nxdomain {
                Val::Unset
            } else {
                Val::List(items)
            }
        };
        r.set(
            "answers",
            "vector[string]",
            list(answers.into_iter().map(Val::Str).collect()),
        );
        r.set(
            "TTLs",
            "vector[interval]",
            list(ttls.iter().map(|t| Val::Num((*t).into())).collect()),
        );
        r.flag("rejected", false);
        r
    }

    fn ssl(&mut self) -> Record {
        let (orig, resp) = self.endpoints();
        let mut r = self.start("ssl", orig, resp, 443);
        let tls13 = self.rng.chance(0.7);
        r.str("version", "string", if tls13 { "TLSv13" } else { "TLSv12" });
        r.str("cipher", "string", self.rng.pick(&CIPHERS));
        r.str("curve", "string", "x25519");
        r.str("server_name", "string", self.rng.skewed(&DOMAINS));
        r.flag("resumed", self.rng.chance(0.3));
        r.flag("established", true);
        r.str(
            "ssl_history",
            "string",
            if tls13 { "CsiI" } else { "CsxknGIi" },
        );
        r
    }
}

/// A line broken on purpose, and the reject reason the enricher must give it.
struct Broken {
    file: &'static str,
    line: usize,
    reason: &'static str,
}

/// The generated sample: the files' bytes and what the report checks against.
struct Sample {
    json: Vec<u8>,
    tsv: Vec<u8>,
    /// Uids of the good records in input order (the JSON file first).
    uids: Vec<String>,
    /// Good records per log type.
    per_path: BTreeMap<&'static str, usize>,
    /// Distinct addresses in address fields and DNS answers.
    addresses: HashSet<IpAddr>,
    broken: Vec<Broken>,
}

impl Sample {
    fn generate(pools: &Pools, rng: &mut Rng) -> Self {
        let mut generator = Generator {
            pools,
            rng,
            ts_micros: 1_700_000_000_000_000,
        };
        let mut sample = Self {
            json: Vec::new(),
            tsv: Vec::new(),
            uids: Vec::new(),
            per_path: BTreeMap::new(),
            addresses: HashSet::new(),
            broken: Vec::new(),
        };

        let mut lines = 0;
        for i in 0..JSON_RECORDS {
            let record = match (i, generator.rng.unit()) {
                // One of each type first, for the top of the report.
                (0, _) => generator.conn(),
                (1, _) => generator.dns(),
                (2, _) => generator.ssl(),
                (_, p) if p < 0.55 => generator.conn(),
                (_, p) if p < 0.8 => generator.dns(),
                _ => generator.ssl(),
            };
            let broken: Option<(&str, Vec<u8>)> = match i {
                // A record cut off mid-write.
                400 => {
                    let json = generator.conn().to_json();
                    Some(("truncated", json.as_bytes()[..json.len() / 2].to_vec()))
                }
                // Latin-1 bytes in a query name.
                900 => {
                    let json = generator.dns().to_json().into_bytes();
                    let at = json
                        .windows(9)
                        .position(|w| w == b"\"query\":\"")
                        .map_or(0, |p| p + 9);
                    Some((
                        "invalid_utf8",
                        [&json[..at], b"caf\xe9-\xff", &json[at..]].concat(),
                    ))
                }
                _ => None,
            };
            if let Some((reason, bytes)) = broken {
                sample.json.extend_from_slice(&bytes);
                sample.json.push(b'\n');
                lines += 1;
                sample.broken.push(Broken {
                    file: "sample.json",
                    line: lines,
                    reason,
                });
            }
            sample.json.extend_from_slice(record.to_json().as_bytes());
            sample.json.push(b'\n');
            lines += 1;
            sample.add(&record);
        }

        let mut tsv = String::new();
        for (path, rows) in TSV_ROWS {
            for i in 0..rows {
                let record = if path == "conn" {
                    generator.conn()
                } else {
                    generator.dns()
                };
                if i == 0 {
                    tsv.push_str(&record.tsv_header());
                }
                if path == "conn" && i == 250 {
                    // A row without its last column.
                    let row = generator.conn().to_tsv();
                    tsv.push_str(&row[..row.rfind('\t').unwrap_or(row.len())]);
                    tsv.push('\n');
                    let line = tsv.lines().count();
                    sample.broken.push(Broken {
                        file: "sample.log",
                        line,
                        reason: "tsv_columns",
                    });
                }
                tsv.push_str(&record.to_tsv());
                tsv.push('\n');
                sample.add(&record);
            }
            tsv.push_str("#close\t2023-11-15-00-00-00\n");
        }
        sample.tsv = tsv.into_bytes();
        sample
    }

    fn add(&mut self, record: &Record) {
        self.uids.push(record.text("uid").to_owned());
        *self.per_path.entry(record.path).or_default() += 1;
        for (name, _, value) in &record.fields {
            let values = match value {
                Val::Str(_) if ADDRESS_FIELDS.contains(name) => std::slice::from_ref(value),
                Val::List(items) if *name == "answers" => items.as_slice(),
                _ => &[],
            };
            self.addresses.extend(values.iter().filter_map(|v| match v {
                Val::Str(text) => text.parse::<IpAddr>().ok(),
                _ => None,
            }));
        }
    }

    fn write(&self, files: &Files) -> anyhow::Result<()> {
        files.write(files.json, &self.json)?;
        files.write(files.tsv, &self.tsv)
    }
}

/// What a run of `enricher pipe` took.
struct Run {
    elapsed: Duration,
    /// Queries the DNS server received, retransmissions included.
    dns_queries: u64,
}

/// Starts the DNS server, runs `enricher pipe` in the demo directory with its standard
/// output going to `enriched.jsonl` and its standard error (the summary) passed
/// through, and counts the queries the server got.
async fn run_enricher(enricher: &Path, files: &Files, behaviour: Behaviour) -> anyhow::Result<Run> {
    let dns = DnsServer::start(behaviour)
        .await
        .context("starting the DNS server")?;
    // A budget suited to a local resolver; the defaults (100 queries/s with a
    // burst of 50) suit a shared corporate one.
    let config = files.path("demo.toml");
    std::fs::write(
        &config,
        "# Written by the demo: a DNS budget for a local resolver.\n[dns]\nqps = 500\nburst = 200\nbudget_wait_ms = 200\n",
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let args = [
        "pipe",
        "--config",
        "demo.toml",
        "--geoip-city",
        files.city,
        "--geoip-asn",
        files.asn,
        "--dns-server",
        &dns.addr().to_string(),
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
    let status = tokio::process::Command::new(enricher)
        .args(args)
        .current_dir(&files.dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .status()
        .await
        .with_context(|| format!("running {}", enricher.display()))?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("enricher pipe failed ({status}); its messages are above");
    }
    let dns_queries = dns.queries();
    dns.shutdown().await;
    Ok(Run {
        elapsed,
        dns_queries,
    })
}

/// What the enriched records say, and where they differ from what they must say.
#[derive(Default)]
struct Tally {
    records: usize,
    /// Address enrichments per provenance tier (`l1`, `dns`, ...).
    tiers: BTreeMap<String, usize>,
    in_answers: usize,
    ptr_names: usize,
    /// Why the other addresses have no PTR.
    ptr_status: BTreeMap<String, usize>,
    geo_checked: usize,
    /// Problems by kind: how many, and the first one.
    problems: BTreeMap<&'static str, (usize, String)>,
}

impl Tally {
    fn problem(&mut self, kind: &'static str, detail: String) {
        self.problems.entry(kind).or_insert((0, detail)).0 += 1;
    }

    /// Checks one address's enrichment (its members read through `get`): the country
    /// the database gives it, and a PTR exactly where the DNS server answers one.
    fn address<'v>(
        &mut self,
        ctx: (&GeoFixture, &Behaviour),
        ip: &str,
        get: impl Fn(&str) -> Option<&'v Value>,
        at: &str,
    ) {
        let (geo, behaviour) = ctx;
        let Ok(ip) = ip.parse::<IpAddr>() else { return };
        let text = |attr: &str| get(attr).and_then(Value::as_str);
        if let Some(tier) = text("tier") {
            *self.tiers.entry(tier.to_owned()).or_default() += 1;
        }
        // The sample's internal addresses: out of the default `public` GeoIP scope.
        let internal = match ip {
            IpAddr::V4(v4) => v4.is_private(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
        };
        let want = if internal { None } else { geo.country(ip) };
        self.geo_checked += usize::from(want.is_some());
        if text("country") != want {
            let got = text("country");
            self.problem(
                "wrong country",
                format!("{at}: {ip} has {got:?}, the database says {want:?}"),
            );
        }
        let answer = behaviour.overrides.get(&ip).unwrap_or(&behaviour.default);
        match (text("ptr"), text("ptr_status")) {
            (Some(name), _)
                if *answer == Answer::Synth && synth_name(ip).trim_end_matches('.') == name =>
            {
                self.ptr_names += 1;
            }
            (Some(name), _) => self.problem(
                "wrong PTR",
                format!("{at}: {ip} has {name:?}, the server answers {answer:?}"),
            ),
            (None, Some(status)) => *self.ptr_status.entry(status.to_owned()).or_default() += 1,
            (None, None) => self.problem("no ptr or ptr_status", format!("{at}: {ip}")),
        }
    }

    fn record(&mut self, ctx: (&GeoFixture, &Behaviour), record: &Value, at: &str) {
        self.records += 1;
        for field in ADDRESS_FIELDS {
            if let Some(ip) = record.get(field).and_then(Value::as_str) {
                let get = |attr: &str| record.get(format!("{field}_{attr}").as_str());
                self.address(ctx, ip, get, &format!("{at} {field}"));
            }
        }
        let addresses = record
            .get("answers")
            .and_then(Value::as_array)
            .map_or(0, |answers| {
                answers
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|a| a.parse::<IpAddr>().is_ok())
                    .count()
            });
        let enriched = record.get("answers_enr").and_then(Value::as_array);
        let count = enriched.map_or(0, Vec::len);
        if count != addresses {
            self.problem(
                "answers not enriched",
                format!("{at}: {addresses} addresses in answers, {count} in answers_enr"),
            );
        }
        for item in enriched.into_iter().flatten() {
            self.in_answers += 1;
            let ip = item.get("ip").and_then(Value::as_str).unwrap_or_default();
            self.address(ctx, ip, |attr| item.get(attr), &format!("{at} answers_enr"));
        }
    }
}

/// Reads the output back, checks it against the sample, and prints the report.
fn report(
    files: &Files,
    geo: &GeoFixture,
    sample: &Sample,
    behaviour: &Behaviour,
    run: &Run,
) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    let mut first = Vec::new();
    for (n, line) in files.read_lines(files.enriched)?.iter().enumerate() {
        let at = format!("{}:{}", files.enriched, n + 1);
        let Ok(record @ Value::Object(_)) = serde_json::from_str::<Value>(line) else {
            tally.problem("not a JSON object", at);
            continue;
        };
        let uid = record
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if sample.uids.get(n).is_none_or(|want| want != uid) {
            tally.problem("out of input order", format!("{at}: uid {uid:?}"));
        }
        tally.record((geo, behaviour), &record, &at);
        if first.len() < 3 {
            first.push(record);
        }
    }
    if tally.records != sample.uids.len() {
        let detail = format!(
            "{} records out of {} good ones in",
            tally.records,
            sample.uids.len()
        );
        tally.problem("records lost or added", detail);
    }

    let mut rejects = Vec::new();
    for line in files.read_lines(files.rejects)? {
        let reject: Value = serde_json::from_str(&line)
            .with_context(|| format!("{} holds {line:?}", files.rejects))?;
        let text = |key: &str| {
            reject
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let line = reject
            .get("line")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        rejects.push((text("source"), line as usize, text("reason"), text("error")));
    }
    for broken in &sample.broken {
        let rejected = rejects.iter().any(|(file, line, reason, _)| {
            (file.as_str(), *line, reason.as_str()) == (broken.file, broken.line, broken.reason)
        });
        if !rejected {
            tally.problem(
                "not rejected",
                format!("{}:{} ({})", broken.file, broken.line, broken.reason),
            );
        }
    }
    if rejects.len() != sample.broken.len() {
        tally.problem(
            "rejected by mistake",
            format!(
                "{} rejects for {} broken lines",
                rejects.len(),
                sample.broken.len()
            ),
        );
    }

    let mut out = String::new();
    let per_path: Vec<String> = sample
        .per_path
        .iter()
        .map(|(path, n)| format!("{n} {path}"))
        .collect();
    writeln!(out, "\nFiles in {}:", files.dir.display())?;
    writeln!(out, "  GeoIP     {}, {}", files.city, files.asn)?;
    writeln!(
        out,
        "  input     {} (Zeek JSON), {} (Zeek TSV): {} records ({}) + {} broken lines",
        files.json,
        files.tsv,
        sample.uids.len(),
        per_path.join(", "),
        sample.broken.len()
    )?;
    writeln!(out, "  output    {}, {}", files.enriched, files.rejects)?;
    writeln!(out, "\nThe first {} enriched records:", first.len())?;
    for record in &first {
        writeln!(out, "{}", serde_json::to_string_pretty(record)?)?;
    }
    let secs = run.elapsed.as_secs_f64();
    writeln!(
        out,
        "\nRecords:   {} enriched in {secs:.2} s; {} rejected:",
        tally.records,
        rejects.len()
    )?;
    for (file, line, reason, error) in &rejects {
        writeln!(
            out,
            "  {:<16} {reason:<13} {error}",
            format!("{file}:{line}")
        )?;
    }
    let joined = |counts: &BTreeMap<String, usize>| {
        let parts: Vec<String> = counts.iter().map(|(key, n)| format!("{key} {n}")).collect();
        parts.join(", ")
    };
    let lookups: usize = tally.tiers.values().sum();
    writeln!(
        out,
        "Addresses: {lookups} enriched ({} of them in answers_enr), {} distinct; provenance tier: {}",
        tally.in_answers,
        sample.addresses.len(),
        joined(&tally.tiers)
    )?;
    writeln!(
        out,
        "PTR:       {} names; none for: {}",
        tally.ptr_names,
        joined(&tally.ptr_status)
    )?;
    writeln!(
        out,
        "DNS:       the loopback server got {} queries for those {lookups} addresses",
        run.dns_queries
    )?;
    if tally.ptr_status.contains_key("over_budget") {
        writeln!(
            out,
            "           (over_budget: the demo's budget, dns.qps 500 with a burst of 200, was spent in \
             the cold start; those addresses are tried again after dns.over_budget_ttl_secs)"
        )?;
    }
    if tally.problems.is_empty() {
        writeln!(
            out,
            "Checks:    passed: every record valid JSON and in input order, {} countries as in the \
             database, every PTR as the server answers it, the {} broken lines rejected",
            tally.geo_checked,
            sample.broken.len()
        )?;
    } else {
        writeln!(out, "Checks:    FAILED")?;
        for (kind, (count, first)) in &tally.problems {
            writeln!(out, "  {kind}: {count}, first {first}")?;
        }
    }
    print!("{out}");
    std::io::stdout()
        .flush()
        .context("writing to standard output")?;
    if !tally.problems.is_empty() {
        bail!(
            "the enriched output is not what the sample and fixtures say it must be (see Checks)"
        );
    }
    Ok(())
}

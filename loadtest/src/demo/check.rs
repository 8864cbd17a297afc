//! The check of `loadtest demo --pipe`: reads `enriched.jsonl` and
//! `rejects.jsonl` back, compares them with what the sample, the demo
//! databases ([`crate::geo`]) and the DNS server's script say they must be,
//! and prints the report.
//!
//! ```text
//! enriched.jsonl --> Tally: order by uid, country per address, PTR or its status --.
//! rejects.jsonl ---> every broken line rejected with its reason, nothing else -----+--> report
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;

use anyhow::Context;
use serde_json::Value;
use test_support::{Answer, Behaviour, synth_name};

use super::pipe::{ADDRESS_FIELDS, Files, Run, Sample};
use crate::geo;

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
        behaviour: &Behaviour,
        ip: &str,
        get: impl Fn(&str) -> Option<&'v Value>,
        at: &str,
    ) {
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
        let want = if internal { None } else { geo::country(ip) };
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

    fn record(&mut self, behaviour: &Behaviour, record: &Value, at: &str) {
        self.records += 1;
        for field in ADDRESS_FIELDS {
            if let Some(ip) = record.get(field).and_then(Value::as_str) {
                let get = |attr: &str| record.get(format!("{field}_{attr}").as_str());
                self.address(behaviour, ip, get, &format!("{at} {field}"));
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
            self.address(
                behaviour,
                ip,
                |attr| item.get(attr),
                &format!("{at} answers_enr"),
            );
        }
    }
}

/// Reads the output back, checks it against the sample, and prints the
/// report; true when every check passed.
///
/// # Errors
///
/// When a file cannot be read or the report cannot be written.
pub(super) fn report(
    files: &Files,
    sample: &Sample,
    behaviour: &Behaviour,
    run: &Run,
) -> anyhow::Result<bool> {
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
        tally.record(behaviour, &record, &at);
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
    writeln!(out, "  GeoIP     {}", files.geoip)?;
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
        eprintln!(
            "loadtest demo --pipe: the enriched output is not what the sample and fixtures say it must be (see Checks)"
        );
    }
    Ok(tally.problems.is_empty())
}

//! Recorded Zeek logs: files or directories of JSON or TSV logs, plain or
//! gzip, grouped into one data set per log type (`_path`, or TSV `#path`).
//!
//! TSV rows are turned into the JSON objects Zeek's JSON writer emits, by the
//! enricher's own converter, so a replay sends what a Zeek Kafka plugin would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use enricher::record::tsv::{TsvLine, TsvReader};

/// The records of one log type, in file order.
#[derive(Debug, Clone, Default)]
pub struct LogSet {
    /// Zeek log type, e.g. `dns`.
    pub path: String,
    /// One JSON object per record, without a trailing newline.
    pub records: Vec<Vec<u8>>,
    /// Each record's `ts` in seconds, when it has one.
    pub ts: Vec<Option<f64>>,
    /// Whether each record is expected to gain GeoIP members (unknown for
    /// recorded logs: `false`).
    pub expect_geo: Vec<bool>,
}

impl LogSet {
    /// Adds one record.
    pub fn push(&mut self, record: Vec<u8>, ts: Option<f64>, expect_geo: bool) {
        self.records.push(record);
        self.ts.push(ts);
        self.expect_geo.push(expect_geo);
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }
}

/// What is read of a JSON record to group and pace it.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "_path", borrow)]
    path: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    ts: Option<Ts<'a>>,
}

/// Zeek writes `ts` as epoch seconds, or as ISO 8601 with
/// `LogAscii::json_timestamps = JSON::TS_ISO8601`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Ts<'a> {
    Seconds(f64),
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
}

impl Ts<'_> {
    fn seconds(&self) -> Option<f64> {
        match self {
            Ts::Seconds(s) => Some(*s),
            Ts::Text(t) => iso8601(t),
        }
    }
}

/// `2018-03-24T17:15:20.600843Z` -> Unix seconds (UTC only).
fn iso8601(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

/// Reads every log file under `inputs` (files, or directories read one level
/// deep) whose name ends in `.json`, `.log`, `.ndjson`, optionally `.gz`.
/// Lines that are not records (empty, or JSON without `_path` in a file
/// whose name does not give the type) are counted as `skipped`.
///
/// # Errors
///
/// When a file cannot be read or decompressed.
pub fn load(inputs: &[PathBuf]) -> anyhow::Result<(Vec<LogSet>, usize)> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_log(p))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(input.clone());
        }
    }
    anyhow::ensure!(!files.is_empty(), "no log files in {inputs:?}");
    let mut sets: BTreeMap<String, LogSet> = BTreeMap::new();
    let mut skipped = 0;
    for file in &files {
        skipped +=
            read_file(file, &mut sets).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok((
        sets.into_values()
            .filter(|s| !s.records.is_empty())
            .collect(),
        skipped,
    ))
}

fn is_log(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".json", ".log", ".ndjson", ".jsonl"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The log type a file name suggests: `dns.json.gz` -> `dns`.
fn type_from_name(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("log");
    name.split('.').next().unwrap_or("log").to_string()
}

fn read_file(path: &Path, sets: &mut BTreeMap<String, LogSet>) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let fallback = type_from_name(path);
    let mut tsv = TsvReader::new();
    let mut tsv_path = fallback.clone();
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in BufReader::with_capacity(1 << 16, reader).split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let json = if line[0] == b'{' {
            line
        } else {
            if let Some(rest) = line.strip_prefix(b"#path\t") {
                tsv_path = String::from_utf8_lossy(rest).into_owned();
            }
            match tsv.line(&line, &mut out) {
                Ok(TsvLine::Header) => continue,
                Ok(TsvLine::Row) => out.clone(),
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            }
        };
        let (path, ts) = match serde_json::from_slice::<Head<'_>>(&json) {
            Ok(head) => (
                head.path
                    .map(|p| p.into_owned())
                    .unwrap_or_else(|| tsv_path.clone()),
                head.ts.and_then(|t| t.seconds()),
            ),
            Err(_) => {
                skipped += 1;
                continue;
            }
        };
        sets.entry(path.clone())
            .or_insert_with(|| LogSet {
                path,
                ..LogSet::default()
            })
            .push(json, ts, false);
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn json_and_gzip_tsv_files_are_grouped_by_log_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("mixed.json"),
            "{\"_path\":\"dns\",\"ts\":1.5,\"id.orig_h\":\"10.0.0.1\"}\n\n\
             {\"_path\":\"ssl\",\"ts\":2.0}\nnot json\n",
        )
        .expect("write");
        let tsv = "#separator \\x09\n#path\tconn\n#fields\tts\tid.orig_h\n#types\ttime\taddr\n\
                   1.25\t10.0.0.2\n1.5\t10.0.0.3\n";
        let file = std::fs::File::create(dir.path().join("conn.log.gz")).expect("create");
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(tsv.as_bytes()).expect("gzip");
        gz.finish().expect("gzip");
        std::fs::write(dir.path().join("README.txt"), "ignored").expect("write");

        let (sets, skipped) = load(&[dir.path().to_path_buf()]).expect("load");
        assert_eq!(skipped, 1);
        let names: Vec<&str> = sets.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(names, ["conn", "dns", "ssl"]);
        assert_eq!(sets[0].records.len(), 2);
        assert_eq!(
            String::from_utf8_lossy(&sets[0].records[0]),
            r#"{"_path":"conn","ts":1.25,"id.orig_h":"10.0.0.2"}"#
        );
        assert_eq!(sets[0].ts, [Some(1.25), Some(1.5)]);
        assert_eq!(iso8601("2018-03-24T17:15:20.5Z"), Some(1_521_911_720.5));
    }
}

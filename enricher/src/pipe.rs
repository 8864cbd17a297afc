//! `enricher pipe`: records from files or standard input, enriched NDJSON to
//! standard output, in input order.
//!
//! A reader thread cuts the input into chunks of lines (gzip is detected by
//! its magic bytes; an over-long line is cut off and rejected without being
//! held in memory). The driver enriches each record synchronously when L1
//! has all its addresses; otherwise the record waits in an ordered window
//! (at most `concurrency` records) while its lookups run, and later records
//! that finish are held until it is written. Records that cannot be parsed
//! go to the reject stream with their file, line, reason and bytes; nothing
//! is dropped silently.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::enrich::{Enricher, Ready, Scratch};
use crate::record::RecordError;
use crate::record::tsv::{TsvLine, TsvReader};
use crate::splice::write_str;
use crate::stats::Snapshot;

impl InputError {
    /// Whether standard output was closed by its reader (`enricher pipe |
    /// head`): the end of the run, not an error.
    pub fn is_closed_output(&self) -> bool {
        &*self.source_name == "stdout" && self.error.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Settings for [`run`].
#[derive(Debug, Clone, Default)]
pub struct PipeOptions {
    /// Input files; `-` or none reads standard input.
    pub inputs: Vec<PathBuf>,
    /// Records in flight at once.
    pub concurrency: usize,
    /// Longest line read; longer ones are rejected as `too_large`.
    pub max_record_bytes: usize,
    /// Write only the records that matched an indicator (the retro sweep,
    /// `--only-matches`); the others are counted, not written.
    pub only_matches: bool,
}

/// Lines of one input, cut out of one buffer.
struct Chunk {
    source: Arc<str>,
    data: Vec<u8>,
    /// (start, end, line number, too large)
    lines: Vec<(usize, usize, u64, bool)>,
}

/// An input that failed to open or read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {error}")]
pub struct InputError {
    /// The file (or `-`).
    pub source_name: String,
    /// The I/O error.
    pub error: io::Error,
}

const CHUNK_LINES: usize = 1_024;

fn open(path: Option<&PathBuf>) -> io::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = match path {
        Some(p) if p.as_os_str() != "-" => Box::new(File::open(p)?),
        // `-` is standard input, as for cat, jq and Vector's stdin source.
        _ => Box::new(io::stdin()),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, raw);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    })
}

/// Reads every input into chunks; runs on its own thread.
fn read_inputs(inputs: Vec<PathBuf>, max_line: usize, tx: mpsc::Sender<Result<Chunk, InputError>>) {
    let sources: Vec<Option<PathBuf>> = if inputs.is_empty() {
        vec![None]
    } else {
        inputs.into_iter().map(Some).collect()
    };
    for path in sources {
        let name: Arc<str> = path
            .as_ref()
            .map_or_else(|| "-".to_string(), |p| p.display().to_string())
            .into();
        let fail = |error| InputError {
            source_name: name.to_string(),
            error,
        };
        let mut reader = match open(path.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(fail(e)));
                return;
            }
        };
        let mut line_no = 0u64;
        let mut chunk = new_chunk(&name);
        loop {
            let start = chunk.data.len();
            line_no += 1;
            match read_line(&mut reader, &mut chunk.data, max_line) {
                Ok(None) => break,
                Ok(Some(too_large)) => {
                    let mut end = chunk.data.len();
                    if chunk.data.get(end.wrapping_sub(1)) == Some(&b'\n') {
                        end -= 1;
                    }
                    if chunk.data.get(end.wrapping_sub(1)) == Some(&b'\r') {
                        end -= 1;
                    }
                    chunk.lines.push((start, end, line_no, too_large));
                    if chunk.lines.len() >= CHUNK_LINES || chunk.data.len() >= 1 << 20 {
                        let full = std::mem::replace(&mut chunk, new_chunk(&name));
                        if tx.blocking_send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Ok(chunk));
                    let _ = tx.blocking_send(Err(fail(e)));
                    return;
                }
            }
        }
        if !chunk.lines.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
    }
}

fn new_chunk(name: &Arc<str>) -> Chunk {
    Chunk {
        source: Arc::clone(name),
        data: Vec::with_capacity(256 * 1024),
        lines: Vec::with_capacity(CHUNK_LINES),
    }
}

/// Appends one line (with its newline) to `buf`, keeping at most `max`
/// bytes of it. `Ok(None)` at end of input, else whether it was cut.
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    let mut taken = 0usize;
    let mut too_large = false;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(any.then_some(too_large));
        }
        any = true;
        let (used, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let keep = used.min((max + 1).saturating_sub(taken));
        if keep < used {
            too_large = true;
        }
        buf.extend_from_slice(&available[..keep]);
        taken += keep;
        reader.consume(used);
        if done {
            return Ok(Some(too_large));
        }
    }
}

enum Slot {
    Pending,
    Ready(Vec<u8>),
}

/// Runs the pipe to the end of its inputs. Returns the counters; rejects go
/// to `reject`.
pub async fn run(
    enricher: Arc<Enricher>,
    opts: PipeOptions,
    out: &mut (dyn Write + Send),
    reject: &mut (dyn Write + Send),
) -> Result<Snapshot, InputError> {
    let (tx, mut rx) = mpsc::channel(4);
    let inputs = opts.inputs.clone();
    let max_line = opts.max_record_bytes;
    let reader = std::thread::Builder::new()
        .name("pipe-reader".into())
        .spawn(move || read_inputs(inputs, max_line, tx))
        .map_err(|error| InputError {
            source_name: "-".into(),
            error,
        })?;
    let concurrency = opts.concurrency.max(1);
    let stats = Arc::clone(enricher.stats());
    let mut scratch = Scratch::with_front();
    let mut tsv = TsvReader::new();
    let mut tsv_json = Vec::new();
    let mut window: VecDeque<Slot> = VecDeque::new();
    // Sequence number of window[0].
    let mut head_seq = 0u64;
    let mut next_seq = 0u64;
    let mut pending = FuturesUnordered::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut input_error = None;
    let io_err = |error: io::Error| InputError {
        source_name: "stdout".into(),
        error,
    };

    'chunks: while let Some(chunk) = rx.recv().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                input_error = Some(e);
                break 'chunks;
            }
        };
        for &(start, end, line_no, too_large) in &chunk.lines {
            let line = chunk.data.get(start..end).unwrap_or_default();
            let record: Result<Option<&[u8]>, RecordError> = if too_large {
                Err(RecordError::TooLarge {
                    limit: opts.max_record_bytes,
                    size: line.len(),
                })
            } else {
                classify(line, &mut tsv, &mut tsv_json)
            };
            let record = match record {
                Ok(None) => continue,
                Ok(Some(r)) => r,
                Err(error) => {
                    stats.records_in.inc();
                    stats.rejected.inc();
                    write_reject(reject, &chunk.source, line_no, &error, line).map_err(io_err)?;
                    continue;
                }
            };
            stats.records_in.inc();
            let direct = window.is_empty();
            let target: &mut Vec<u8> = if direct { &mut buf } else { &mut Vec::new() };
            let mark = target.len();
            let result = enricher.enrich_cached(record, &mut scratch, target);
            if opts.only_matches && result == Ok(Ready::Done) && !scratch.matched() {
                target.truncate(mark);
            }
            match result {
                Ok(Ready::Done) if direct => {
                    if buf.len() >= 64 * 1024 {
                        out.write_all(&buf).map_err(io_err)?;
                        buf.clear();
                    }
                }
                Ok(Ready::Done) => {
                    let done = std::mem::take(target);
                    window.push_back(Slot::Ready(done));
                    next_seq += 1;
                }
                Ok(Ready::Pending) => {
                    target.truncate(mark);
                    if direct {
                        // Everything before this record is written already.
                        head_seq = next_seq;
                    }
                    let seq = next_seq;
                    next_seq += 1;
                    window.push_back(Slot::Pending);
                    let enricher = Arc::clone(&enricher);
                    let owned = record.to_vec();
                    let only_matches = opts.only_matches;
                    pending.push(async move {
                        let mut scratch = Scratch::default();
                        let mut out = Vec::with_capacity(owned.len() + 256);
                        let result = enricher.enrich(&owned, &mut scratch, &mut out).await;
                        if only_matches && !scratch.matched() {
                            out.clear();
                        }
                        (seq, result.map(|()| out))
                    });
                }
                Err(error) => {
                    stats.rejected.inc();
                    write_reject(reject, &chunk.source, line_no, &error, line).map_err(io_err)?;
                }
            }
            // Take in what finished; wait when the window is full.
            while let Some(Some(done)) = pending.next().now_or_never() {
                place(&mut window, head_seq, done);
            }
            while window.len() >= concurrency {
                if let Some(done) = pending.next().await {
                    place(&mut window, head_seq, done);
                }
                flush(&mut window, &mut head_seq, &mut buf);
            }
            flush(&mut window, &mut head_seq, &mut buf);
            if window.is_empty() {
                head_seq = next_seq;
            }
        }
        if !buf.is_empty() {
            out.write_all(&buf).map_err(io_err)?;
            buf.clear();
        }
    }
    while let Some(done) = pending.next().await {
        place(&mut window, head_seq, done);
        flush(&mut window, &mut head_seq, &mut buf);
    }
    flush(&mut window, &mut head_seq, &mut buf);
    out.write_all(&buf).map_err(io_err)?;
    out.flush().map_err(io_err)?;
    drop(rx);
    let _ = reader.join();
    match input_error {
        Some(e) => Err(e),
        None => Ok(stats.snapshot()),
    }
}

/// Sorts a line into a header (`None`), a JSON record, or a TSV row
/// converted to JSON in `tsv_json`.
fn classify<'a>(
    line: &'a [u8],
    tsv: &mut TsvReader,
    tsv_json: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>, RecordError> {
    let first = line.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(RecordError::Empty),
        Some(b'{') => Ok(Some(line)),
        Some(b'#') => match tsv.line(line, tsv_json)? {
            TsvLine::Header => Ok(None),
            TsvLine::Row => Ok(Some(tsv_json.as_slice())),
        },
        Some(_) if tsv.has_header() => match tsv.line(line, tsv_json)? {
            TsvLine::Header => Ok(None),
            TsvLine::Row => Ok(Some(tsv_json.as_slice())),
        },
        // No header yet, and tab-separated like a Zeek row: say so, rather
        // than let the JSON scanner call it "not an object".
        Some(&first) if first != b'[' && memchr::memchr(b'\t', line).is_some() => {
            Err(RecordError::TsvNoHeader)
        }
        // Neither JSON nor TSV: let the JSON scanner name the problem.
        Some(_) => Ok(Some(line)),
    }
}

fn place(
    window: &mut VecDeque<Slot>,
    head_seq: u64,
    (seq, result): (u64, Result<Vec<u8>, RecordError>),
) {
    let Some(slot) = usize::try_from(seq - head_seq)
        .ok()
        .and_then(|i| window.get_mut(i))
    else {
        return;
    };
    // The record parsed once already; a second parse cannot fail. Should it,
    // write the record out unchanged rather than lose it.
    *slot = Slot::Ready(result.unwrap_or_default());
}

fn flush(window: &mut VecDeque<Slot>, head_seq: &mut u64, buf: &mut Vec<u8>) {
    while let Some(Slot::Ready(_)) = window.front() {
        if let Some(Slot::Ready(bytes)) = window.pop_front() {
            buf.extend_from_slice(&bytes);
        }
        *head_seq += 1;
    }
}

fn write_reject(
    w: &mut (dyn Write + Send),
    source: &str,
    line: u64,
    error: &RecordError,
    raw: &[u8],
) -> io::Result<()> {
    let mut rec = Vec::with_capacity(raw.len() + 128);
    rec.extend_from_slice(b"{\"source\":");
    write_str(&mut rec, source);
    rec.extend_from_slice(b",\"line\":");
    rec.extend_from_slice(itoa::Buffer::new().format(line).as_bytes());
    rec.extend_from_slice(b",\"reason\":");
    write_str(&mut rec, error.label());
    rec.extend_from_slice(b",\"error\":");
    write_str(&mut rec, &error.to_string());
    match std::str::from_utf8(raw) {
        Ok(text) => {
            rec.extend_from_slice(b",\"raw\":");
            write_str(&mut rec, text);
        }
        Err(_) => {
            rec.extend_from_slice(b",\"raw_base64\":\"");
            base64_into(raw, &mut rec);
            rec.push(b'"');
        }
    }
    rec.extend_from_slice(b"}\n");
    w.write_all(&rec)
}

/// Standard base64 with padding; small enough not to need a crate.
fn base64_into(data: &[u8], out: &mut Vec<u8>) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in data.chunks(3) {
        let b = [
            c[0],
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63]);
        out.push(T[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63]
        } else {
            b'='
        });
    }
}

/// Writes the exit summary.
pub fn write_summary(w: &mut dyn Write, s: &Snapshot) -> io::Result<()> {
    writeln!(
        w,
        "enricher pipe: {} records in, {} enriched, {} rejected, {} waited past the lookup deadline",
        s.records_in, s.enriched, s.rejected, s.deadline_hit
    )?;
    writeln!(
        w,
        "  cache: l1 {} hits / {} misses; l2 {} hits / {} misses / {} unavailable",
        s.cache.l1_hits,
        s.cache.l1_misses,
        s.cache.l2_hits,
        s.cache.l2_misses,
        s.cache.l2_unavailable
    )?;
    let d = &s.dns;
    writeln!(
        w,
        "  dns: {} queries sent ({} ok, {} nxdomain, {} no_record, {} servfail, {} timeout, {} invalid, {} error); {} over budget",
        d.sent(),
        d.ok,
        d.nxdomain,
        d.no_record,
        d.servfail,
        d.timeout,
        d.invalid,
        d.error,
        d.over_budget
    )?;
    writeln!(w, "  {} field values were not an address", s.not_an_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64_into(input.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out).expect("ascii"), want);
        }
    }

    #[test]
    fn a_tsv_row_before_any_header_is_rejected_as_such() {
        let mut tsv = TsvReader::new();
        let mut out = Vec::new();
        let row = b"1.5\tC1\t10.0.0.1\t81.2.69.142";
        assert_eq!(
            classify(row, &mut tsv, &mut out),
            Err(RecordError::TsvNoHeader)
        );
        // Anything else that is not an object is left to the JSON scanner.
        for line in [&b"[1,\t2]"[..], b"1.5 C1", b"x"] {
            assert_eq!(classify(line, &mut tsv, &mut out), Ok(Some(line)));
        }
        assert_eq!(
            classify(
                b"#fields\tts\tuid\tid.orig_h\tid.resp_h",
                &mut tsv,
                &mut out
            ),
            Ok(None)
        );
        assert_eq!(
            classify(row, &mut tsv, &mut out),
            Ok(Some(
                &br#"{"ts":"1.5","uid":"C1","id.orig_h":"10.0.0.1","id.resp_h":"81.2.69.142"}"#[..]
            ))
        );
    }

    #[test]
    fn long_lines_are_cut_not_held() {
        let data = format!("{}\nshort\n", "x".repeat(10_000));
        let mut reader = io::Cursor::new(data.into_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 100).expect("read"),
            Some(true)
        );
        assert_eq!(buf.len(), 101);
        buf.clear();
        assert_eq!(
            read_line(&mut reader, &mut buf, 100).expect("read"),
            Some(false)
        );
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf, 100).expect("read"), None);
    }
}

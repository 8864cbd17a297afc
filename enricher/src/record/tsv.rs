//! Zeek TSV rows turned into the JSON objects Zeek's own JSON writer emits.
//!
//! Producing the same member names and value types as Zeek's JSON writer means
//! a TSV record and a JSON record of the same event go through the same scan
//! and come out with the same enrichment.

use memchr::{memchr, memchr2, memmem};

use super::RecordError;
use super::json::is_number;
use crate::splice::write_escaped;

/// What a line fed to [`TsvReader::line`] turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsvLine {
    /// A `#` header line: the reader's state was updated, nothing written.
    Header,
    /// A data row: one JSON object was written.
    Row,
}

/// How a Zeek scalar type is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    /// `time`, `interval`, `double`, `count`, `int`, `port`.
    Number,
    /// `bool`, written by Zeek as `T` or `F`.
    Bool,
    /// `addr`, `subnet`, `string`, `enum` and anything unknown.
    Str,
}

/// How a column is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// One value.
    Scalar(Scalar),
    /// A `set[..]` or `vector[..]`: an array of the inner type.
    List(Scalar),
}

impl Column {
    fn parse(ty: &[u8]) -> Self {
        let inner = ty
            .strip_prefix(b"set[")
            .or_else(|| ty.strip_prefix(b"vector["))
            .and_then(|rest| rest.strip_suffix(b"]"));
        match inner {
            Some(inner) => Self::List(Scalar::parse(inner)),
            None => Self::Scalar(Scalar::parse(ty)),
        }
    }
}

impl Scalar {
    fn parse(ty: &[u8]) -> Self {
        match ty {
            b"time" | b"interval" | b"double" | b"count" | b"int" | b"port" => Self::Number,
            b"bool" => Self::Bool,
            _ => Self::Str,
        }
    }
}

/// Converts Zeek TSV lines to JSON objects, remembering the current header.
///
/// Feed it every line of a log in order: header lines (`#fields`, `#types`,
/// `#path`, ...) update the state, and a new header block mid-stream applies
/// to the rows after it. Buffers are reused, so converting a row does not
/// allocate once the output has grown to fit.
#[derive(Debug, Clone)]
pub struct TsvReader {
    separator: Vec<u8>,
    set_separator: Vec<u8>,
    empty_field: Vec<u8>,
    unset_field: Vec<u8>,
    /// `"_path":"<path>"` ready to copy, or empty when no path is known.
    path_member: Vec<u8>,
    /// `"<name>":` for each column, ready to copy.
    keys: Vec<Vec<u8>>,
    /// Column types in order; columns past its end are strings.
    types: Vec<Column>,
    has_fields: bool,
    /// Bytes of a value after decoding its `\xNN` escapes.
    scratch: Vec<u8>,
}

impl Default for TsvReader {
    fn default() -> Self {
        Self {
            separator: b"\t".to_vec(),
            set_separator: b",".to_vec(),
            empty_field: b"(empty)".to_vec(),
            unset_field: b"-".to_vec(),
            path_member: Vec::new(),
            keys: Vec::new(),
            types: Vec::new(),
            has_fields: false,
            scratch: Vec::new(),
        }
    }
}

impl TsvReader {
    /// A reader with Zeek's default separators and no header yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the header without header lines (for Kafka topics whose messages
    /// are bare TSV rows): field names and optional types (`string` when
    /// absent or when `types` is shorter than `fields`), and the path.
    pub fn with_fields(fields: &[&str], types: Option<&[&str]>, path: Option<&str>) -> Self {
        let mut reader = Self::new();
        reader.set_fields(fields.iter().map(|f| f.as_bytes()));
        if let Some(types) = types {
            reader.types = types.iter().map(|t| Column::parse(t.as_bytes())).collect();
        }
        if let Some(path) = path {
            reader.set_path(path.as_bytes());
        }
        reader
    }

    /// Whether a `#fields` header (or [`TsvReader::with_fields`]) has named
    /// the columns, so data rows can be converted.
    pub fn has_header(&self) -> bool {
        self.has_fields
    }

    /// Feeds one line (without its line ending; a trailing `'\r'` is
    /// tolerated). A header line updates the state and returns
    /// [`TsvLine::Header`]. A data row is written to `out` (cleared first) as
    /// one JSON object with no trailing newline, returning [`TsvLine::Row`].
    pub fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<TsvLine, RecordError> {
        out.clear();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(RecordError::Empty);
        }
        if line.first() == Some(&b'#') {
            self.header(line);
            return Ok(TsvLine::Header);
        }
        if !self.has_fields {
            return Err(RecordError::TsvNoHeader);
        }
        let found = split(line, &self.separator).count();
        if found != self.keys.len() {
            return Err(RecordError::TsvColumns {
                expected: self.keys.len(),
                found,
            });
        }

        let Self {
            separator,
            set_separator,
            empty_field,
            unset_field,
            path_member,
            keys,
            types,
            scratch,
            ..
        } = self;
        out.push(b'{');
        out.extend_from_slice(path_member);
        let mut first = path_member.is_empty();
        for (n, (cell, key)) in split(line, separator).zip(keys.iter()).enumerate() {
            // Zeek escapes a value that happens to equal the unset marker, so
            // a raw marker always means "no value", which its JSON writer omits.
            if cell == unset_field.as_slice() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            let column = types.get(n).copied().unwrap_or(Column::Scalar(Scalar::Str));
            match column {
                Column::Scalar(ty) => value(ty, cell, empty_field, scratch, out),
                Column::List(_) if cell == empty_field.as_slice() => {
                    out.extend_from_slice(b"[]");
                }
                Column::List(ty) => {
                    out.push(b'[');
                    for (k, element) in split(cell, set_separator).enumerate() {
                        if k > 0 {
                            out.push(b',');
                        }
                        if element == unset_field.as_slice() {
                            out.extend_from_slice(b"null");
                        } else {
                            value(ty, element, empty_field, scratch, out);
                        }
                    }
                    out.push(b']');
                }
            }
        }
        out.push(b'}');
        Ok(TsvLine::Row)
    }

    /// Applies one `#` header line; unknown ones (`#open`, `#close`, ...) are
    /// ignored.
    fn header(&mut self, line: &[u8]) {
        // `#separator` names the separator itself, so it is followed by a
        // space rather than by the separator.
        if let Some(value) = line.strip_prefix(b"#separator ") {
            // A new header block describes a new log: forget the old one.
            *self = Self::default();
            decode(value, &mut self.scratch);
            if !self.scratch.is_empty() {
                self.separator.clone_from(&self.scratch);
            }
            return;
        }
        // Header lines are rare, so collecting their cells is affordable.
        let cells: Vec<&[u8]> = split(line, &self.separator).collect();
        let Some((&name, values)) = cells.split_first() else {
            return;
        };
        match name {
            b"#fields" => {
                self.set_fields(values.iter().copied());
                self.types.clear();
            }
            b"#types" => {
                self.types = values.iter().map(|t| Column::parse(t)).collect();
            }
            b"#path" => {
                let mut path = Vec::new();
                decode(values.first().copied().unwrap_or_default(), &mut path);
                self.set_path(&path);
            }
            b"#set_separator" | b"#empty_field" | b"#unset_field" => {
                let Some(value) = values.first() else { return };
                let mut decoded = Vec::new();
                decode(value, &mut decoded);
                match name {
                    b"#set_separator" => self.set_separator = decoded,
                    b"#empty_field" => self.empty_field = decoded,
                    _ => self.unset_field = decoded,
                }
            }
            _ => {}
        }
    }

    fn set_fields<'a>(&mut self, names: impl Iterator<Item = &'a [u8]>) {
        let mut scratch = Vec::new();
        self.keys = names
            .map(|name| {
                let mut key = Vec::with_capacity(name.len() + 3);
                decode(name, &mut scratch);
                write_lossy(&mut key, &scratch);
                key.push(b':');
                key
            })
            .collect();
        self.has_fields = true;
    }

    fn set_path(&mut self, path: &[u8]) {
        self.path_member.clear();
        if !path.is_empty() {
            self.path_member.extend_from_slice(b"\"_path\":");
            write_lossy(&mut self.path_member, path);
        }
    }
}

/// Writes one scalar value; anything that does not fit its type is written
/// as a string, so no row is lost to an odd value.
fn value(ty: Scalar, cell: &[u8], empty_field: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    match (ty, cell) {
        (Scalar::Number, _) if is_number(cell) && fits_f64(cell) => out.extend_from_slice(cell),
        (Scalar::Bool, b"T") => out.extend_from_slice(b"true"),
        (Scalar::Bool, b"F") => out.extend_from_slice(b"false"),
        _ if cell == empty_field => out.extend_from_slice(b"\"\""),
        _ if memchr(b'\\', cell).is_none() => write_lossy(out, cell),
        _ => {
            decode(cell, scratch);
            write_lossy(out, scratch);
        }
    }
}

/// Whether a number (already known to match the JSON grammar) is within an
/// `f64`'s range. JSON sets no limit, but common readers (serde_json, Go's
/// encoding/json) refuse a record holding `1e400`; Zeek never writes one, so
/// such a cell is kept as a string like any other odd value.
fn fits_f64(number: &[u8]) -> bool {
    // Without an exponent, 308 characters stay below f64::MAX (about 1.8e308).
    if number.len() <= 308 && memchr2(b'e', b'E', number).is_none() {
        return true;
    }
    std::str::from_utf8(number)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// Splits `s` on `sep` (every piece, including empty ones); an empty
/// separator leaves `s` whole.
fn split<'a, 'b>(s: &'a [u8], sep: &'b [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'b> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        let at = match sep {
            [] => None,
            [byte] => memchr(*byte, current),
            _ => memmem::find(current, sep),
        };
        match at {
            Some(at) => {
                rest = current.get(at + sep.len()..);
                current.get(..at)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Decodes Zeek's `\xNN` escapes of `s` into `out` (cleared first); any other
/// backslash is kept as it is.
fn decode(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut rest = s;
    while let Some(at) = memchr(b'\\', rest) {
        out.extend_from_slice(rest.get(..at).unwrap_or_default());
        let byte = match rest.get(at + 1..at + 4) {
            Some([b'x', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match byte {
            Some(byte) => {
                out.push(byte);
                rest = rest.get(at + 4..).unwrap_or_default();
            }
            None => {
                out.push(b'\\');
                rest = rest.get(at + 1..).unwrap_or_default();
            }
        }
    }
    out.extend_from_slice(rest);
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Writes `bytes` as a JSON string literal, replacing invalid UTF-8 with
/// U+FFFD: Zeek logs raw protocol bytes, and a bad byte should cost one
/// character, not the record.
fn write_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        write_escaped(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            write_escaped(out, "\u{FFFD}");
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::record::json::{Limits, scan, unescape_into};
    use crate::record::{FoundKind, Scan, Wanted};

    const HEADER: &[&str] = &[
        "#separator \\x09",
        "#set_separator\t,",
        "#empty_field\t(empty)",
        "#unset_field\t-",
        "#path\tdns",
        "#open\t2024-01-01-00-00-00",
        "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\trtt\tquery\tAA\tanswers\tTTLs",
        "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tinterval\tstring\tbool\tvector[string]\tvector[interval]",
    ];

    const ROW: &str = "1700000000.123456\tCabc\t10.0.0.1\t5353\t10.0.0.53\t53\tudp\t0.000870\texample.org\tF\thost.example.org,192.0.2.7\t60.000000,300.000000";

    fn reader() -> TsvReader {
        let mut reader = TsvReader::new();
        let mut out = Vec::new();
        for line in HEADER {
            assert_eq!(reader.line(line.as_bytes(), &mut out), Ok(TsvLine::Header));
        }
        reader
    }

    fn row(reader: &mut TsvReader, line: &str) -> Value {
        let mut out = b"stale".to_vec();
        assert_eq!(reader.line(line.as_bytes(), &mut out), Ok(TsvLine::Row));
        serde_json::from_slice(&out).expect("valid JSON")
    }

    fn raw_row(reader: &mut TsvReader, line: &[u8]) -> String {
        let mut out = Vec::new();
        assert_eq!(reader.line(line, &mut out), Ok(TsvLine::Row));
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn header_and_row_give_zeek_json() {
        let mut reader = reader();
        assert!(reader.has_header());
        assert_eq!(
            raw_row(&mut reader, ROW.as_bytes()),
            concat!(
                r#"{"_path":"dns","ts":1700000000.123456,"uid":"Cabc","id.orig_h":"10.0.0.1","#,
                r#""id.orig_p":5353,"id.resp_h":"10.0.0.53","id.resp_p":53,"proto":"udp","#,
                r#""rtt":0.000870,"query":"example.org","AA":false,"#,
                r#""answers":["host.example.org","192.0.2.7"],"TTLs":[60.000000,300.000000]}"#
            )
        );
    }

    #[test]
    fn types_are_converted() {
        let mut reader = TsvReader::with_fields(
            &[
                "t", "i", "d", "c", "n", "p", "b1", "b2", "b3", "a", "s", "e", "x", "bad",
            ],
            Some(&[
                "time",
                "interval",
                "double",
                "count",
                "int",
                "port",
                "bool",
                "bool",
                "bool",
                "addr",
                "subnet",
                "enum",
                "weird[type]",
                "double",
            ]),
            None,
        );
        let line = "1.5\t-0.25\t1e3\t7\t-3\t80\tT\tF\tX\t::1\t10.0.0.0/8\tTCP\tzz\tinf";
        assert_eq!(
            row(&mut reader, line),
            json!({"t":1.5,"i":-0.25,"d":1e3,"c":7,"n":-3,"p":80,"b1":true,"b2":false,"b3":"X",
                   "a":"::1","s":"10.0.0.0/8","e":"TCP","x":"zz","bad":"inf"})
        );
        // Text that is not a valid JSON number stays a string rather than
        // breaking the output.
        let mut reader = TsvReader::with_fields(&["c", "d"], Some(&["count", "double"]), None);
        assert_eq!(raw_row(&mut reader, b"01\t1."), r#"{"c":"01","d":"1."}"#);
    }

    #[test]
    fn numbers_beyond_an_f64_stay_strings() {
        // Found by the `tsv` fuzz target (see fuzz/README.md), minimised: a
        // `time` of 9e408 was written as a number serde_json cannot read.
        let input = b"#fields\t\n#types\ttime\n9e408";
        let mut reader = TsvReader::new();
        let mut out = Vec::new();
        let mut rows = Vec::new();
        for line in input.split(|&b| b == b'\n') {
            if reader.line(line, &mut out) == Ok(TsvLine::Row) {
                rows.push(String::from_utf8(out.clone()).expect("utf8"));
            }
        }
        assert_eq!(rows, [r#"{"":"9e408"}"#]);
        let big = format!("2{}", "0".repeat(308));
        let max = format!("1{}", "0".repeat(308));
        let mut reader = TsvReader::with_fields(&["d"], Some(&["double"]), None);
        for (cell, json) in [
            ("1e308", "1e308".to_string()),
            ("-1.5E+308", "-1.5E+308".to_string()),
            ("1e-400", "1e-400".to_string()),
            ("-1e309", r#""-1e309""#.to_string()),
            (max.as_str(), max.clone()),
            (big.as_str(), format!("\"{big}\"")),
        ] {
            assert_eq!(
                raw_row(&mut reader, cell.as_bytes()),
                format!(r#"{{"d":{json}}}"#),
                "{cell}"
            );
            let v: Value = serde_json::from_str(&raw_row(&mut reader, cell.as_bytes()))
                .expect("serde_json reads it");
            assert!(v.is_object());
        }
    }

    #[test]
    fn sets_and_vectors_become_arrays() {
        let mut reader = TsvReader::with_fields(
            &["s", "v", "n", "e", "u", "b"],
            Some(&[
                "set[string]",
                "vector[addr]",
                "vector[count]",
                "set[enum]",
                "vector[string]",
                "vector[bool]",
            ]),
            None,
        );
        assert_eq!(
            row(
                &mut reader,
                "a,b\t10.0.0.1\t1,2,x\t(empty)\tx,-,(empty)\tT,F"
            ),
            json!({"s":["a","b"],"v":["10.0.0.1"],"n":[1,2,"x"],"e":[],"u":["x",null,""],"b":[true,false]})
        );
    }

    #[test]
    fn empty_and_unset_fields() {
        let mut reader =
            TsvReader::with_fields(&["a", "b", "c"], Some(&["string", "count", "string"]), None);
        assert_eq!(raw_row(&mut reader, b"(empty)\t-\t-"), r#"{"a":""}"#);
        assert_eq!(raw_row(&mut reader, b"-\t-\t-"), "{}");
        assert_eq!(raw_row(&mut reader, b"-\t1\t-"), r#"{"b":1}"#);
        // Custom markers from the header.
        let mut out = Vec::new();
        for line in ["#unset_field\tNONE", "#empty_field\tEMPTY"] {
            assert_eq!(reader.line(line.as_bytes(), &mut out), Ok(TsvLine::Header));
        }
        assert_eq!(
            raw_row(&mut reader, b"-\tNONE\tEMPTY"),
            r#"{"a":"-","c":""}"#
        );
    }

    #[test]
    fn zeek_escapes_are_decoded() {
        let mut reader = TsvReader::with_fields(&["a", "b", "c", "d"], None, None);
        assert_eq!(
            row(
                &mut reader,
                "x\\x09y\\x2c\tq\"\\\\x\\x5c\t\\xff\\xfe!\t\\x4"
            ),
            json!({"a":"x\ty,","b":"q\"\\\\x\\","c":"\u{fffd}\u{fffd}!","d":"\\x4"})
        );
        // Raw invalid UTF-8 is replaced too, so the output is always JSON.
        assert_eq!(
            raw_row(&mut reader, b"\xc3\t\xe2\x82\xac\t\x01\t\x7f"),
            "{\"a\":\"\u{fffd}\",\"b\":\"\u{20ac}\",\"c\":\"\\u0001\",\"d\":\"\x7f\"}"
        );
    }

    #[test]
    fn header_may_change_mid_stream() {
        let mut reader = reader();
        assert_eq!(row(&mut reader, ROW)["_path"], "dns");
        let mut out = Vec::new();
        for line in [
            "#close\t2024-01-01-01-00-00",
            "#separator \\x7c",
            "#set_separator|;",
            "#path|conn",
            "#fields|id.orig_h|id.resp_h|service|orig_bytes",
            "#types|addr|addr|set[string]|count",
        ] {
            assert_eq!(reader.line(line.as_bytes(), &mut out), Ok(TsvLine::Header));
        }
        assert_eq!(
            row(&mut reader, "10.0.0.2|10.0.0.3|dns;http|42"),
            json!({"_path":"conn","id.orig_h":"10.0.0.2","id.resp_h":"10.0.0.3","service":["dns","http"],"orig_bytes":42})
        );
        // A new #fields without #types: every column is a string.
        reader.line(b"#fields|a|b", &mut out).expect("header");
        assert_eq!(
            raw_row(&mut reader, b"1|2"),
            r#"{"_path":"conn","a":"1","b":"2"}"#
        );
    }

    #[test]
    fn a_new_separator_line_starts_a_new_header() {
        let mut reader = reader();
        let mut out = Vec::new();
        reader.line(b"#separator \\x09", &mut out).expect("header");
        assert!(!reader.has_header());
        assert_eq!(
            reader.line(ROW.as_bytes(), &mut out),
            Err(RecordError::TsvNoHeader)
        );
    }

    #[test]
    fn column_count_must_match() {
        let mut reader = reader();
        let mut out = Vec::new();
        assert_eq!(
            reader.line(b"1\t2\t3", &mut out),
            Err(RecordError::TsvColumns {
                expected: 12,
                found: 3
            })
        );
        let long = format!("{ROW}\textra");
        assert_eq!(
            reader.line(long.as_bytes(), &mut out),
            Err(RecordError::TsvColumns {
                expected: 12,
                found: 13
            })
        );
    }

    #[test]
    fn rows_need_a_header_and_a_line() {
        let mut reader = TsvReader::new();
        let mut out = Vec::new();
        assert!(!reader.has_header());
        assert_eq!(
            reader.line(b"1\t2", &mut out),
            Err(RecordError::TsvNoHeader)
        );
        assert_eq!(reader.line(b"", &mut out), Err(RecordError::Empty));
        assert_eq!(reader.line(b"\r", &mut out), Err(RecordError::Empty));
        assert_eq!(reader.line(b"#open\tx", &mut out), Ok(TsvLine::Header));
        assert!(!reader.has_header());
    }

    #[test]
    fn trailing_carriage_return_is_tolerated() {
        let mut reader = reader();
        let line = format!("{ROW}\r");
        assert_eq!(row(&mut reader, &line)["TTLs"], json!([60.0, 300.0]));
        let mut out = Vec::new();
        reader.line(b"#path\tssl\r", &mut out).expect("header");
        assert_eq!(row(&mut reader, ROW)["_path"], "ssl");
    }

    #[test]
    fn with_fields_sets_a_bare_header() {
        let mut reader = TsvReader::with_fields(
            &["ts", "id.orig_h", "n"],
            Some(&["time", "addr"]),
            Some("conn"),
        );
        assert!(reader.has_header());
        assert_eq!(
            raw_row(&mut reader, b"1.0\t10.0.0.1\t5"),
            r#"{"_path":"conn","ts":1.0,"id.orig_h":"10.0.0.1","n":"5"}"#
        );
        let mut reader = TsvReader::with_fields(&["a\"b"], None, None);
        assert_eq!(raw_row(&mut reader, b"x"), r#"{"a\"b":"x"}"#);
    }

    /// The string values of the IP fields a scan finds, as text.
    fn ips(record: &[u8]) -> (Option<String>, Vec<(String, String)>) {
        let wanted = Wanted::new("_path", &["id.orig_h", "id.resp_h", "answers"]);
        let mut out = Scan::default();
        scan(record, &wanted, &Limits::default(), &mut out).expect("scan");
        let text = |start: u32, end: u32| {
            let mut s = String::new();
            assert!(unescape_into(&record[start as usize..end as usize], &mut s));
            s
        };
        let found = out
            .found
            .iter()
            .filter_map(|f| match f.kind {
                FoundKind::Str { start, end, .. } => Some((
                    wanted.paths()[usize::from(f.field)].clone(),
                    text(start, end),
                )),
                FoundKind::Other => None,
            })
            .collect();
        (out.log_type.map(|(start, end, _)| text(start, end)), found)
    }

    #[test]
    fn tsv_and_zeek_json_find_the_same_addresses() {
        let zeek_json = concat!(
            r#"{"_path":"dns","_write_ts":"2024-01-01T00:00:00.000000Z","ts":"2024-01-01T00:00:00.000000Z","#,
            r#""uid":"Cabc","id.orig_h":"10.0.0.1","id.orig_p":5353,"id.resp_h":"10.0.0.53","id.resp_p":53,"#,
            r#""proto":"udp","rtt":0.00087,"query":"example.org","AA":false,"#,
            r#""answers":["host.example.org","192.0.2.7"],"TTLs":[60.0,300.0]}"#
        );
        let mut reader = reader();
        let from_tsv = raw_row(&mut reader, ROW.as_bytes());
        let expected = ips(zeek_json.as_bytes());
        assert_eq!(expected.0.as_deref(), Some("dns"));
        assert_eq!(expected.1.len(), 4);
        assert_eq!(ips(from_tsv.as_bytes()), expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_row_gives_valid_json_or_an_error(
            types in prop::collection::vec(
                prop::sample::select(vec!["string", "count", "double", "bool", "addr", "set[string]", "vector[count]"]),
                1..6,
            ),
            line in prop::collection::vec(
                prop::sample::select(b"\t,-\\x0aF9T.e()empty\xff\xc3\x80\"\x01 ".to_vec()),
                0..40,
            ),
        ) {
            let names: Vec<String> = (0..types.len()).map(|i| format!("f{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut reader = TsvReader::with_fields(&names, Some(&types), Some("p\"x"));
            let mut out = Vec::new();
            match reader.line(&line, &mut out) {
                Ok(TsvLine::Row) => {
                    let value: Value = serde_json::from_slice(&out).expect("valid JSON");
                    prop_assert!(value.is_object());
                    let mut scanned = Scan::default();
                    let wanted = Wanted::new("_path", &["f0"]);
                    prop_assert_eq!(scan(&out, &wanted, &Limits::default(), &mut scanned), Ok(()));
                }
                Ok(TsvLine::Header) => prop_assert_eq!(line.first(), Some(&b'#')),
                Err(RecordError::TsvColumns { expected, .. }) => prop_assert_eq!(expected, types.len()),
                Err(e) => prop_assert_eq!(e, RecordError::Empty),
            }
        }
    }
}

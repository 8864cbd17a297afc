//! Zeek TSV rows turned into the JSON objects Zeek's own JSON writer emits.
//!
//! Producing the same member names and value types as Zeek's JSON writer means
//! a TSV record and a JSON record of the same event go through the same scan
//! and come out with the same enrichment.

use memchr::{memchr, memmem};

use super::RecordError;
use super::json::{is_number, write_escaped};

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
        (Scalar::Number, _) if is_number(cell) => out.extend_from_slice(cell),
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

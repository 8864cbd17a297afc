//! Finding the IP fields of one log record without building a document.
//!
//! A JSON record is validated and scanned in one pass by [`json::scan`], which
//! reports where the wanted fields sit as byte ranges into the input, so the
//! caller can read the addresses in place and splice new members before the
//! closing brace. Zeek TSV rows are first turned into the same JSON shape that
//! Zeek's own JSON writer produces by [`tsv::TsvReader`], so both inputs go
//! through the same scan and get the same enrichment.

use std::collections::HashMap;

pub mod json;
pub mod tsv;

/// Why a record cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The input is empty or only whitespace.
    #[error("empty record")]
    Empty,
    /// The input is not valid UTF-8 from this byte on.
    #[error("invalid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The input starts like JSON but its top-level value is not an object.
    #[error("JSON record is not an object")]
    NotAnObject,
    /// The input ends inside the document.
    #[error("truncated JSON: input ends inside the document")]
    Truncated,
    /// The input breaks the JSON grammar at this byte.
    #[error("invalid JSON at byte {offset}: expected {expected}")]
    Syntax {
        /// Byte offset of the offending byte.
        offset: usize,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// Objects and arrays nest deeper than the configured limit.
    #[error("JSON nests deeper than {limit} levels")]
    TooDeep {
        /// The configured maximum depth.
        limit: usize,
    },
    /// Something other than whitespace follows the top-level object.
    #[error("trailing data after the JSON object at byte {offset}")]
    TrailingData {
        /// Byte offset of the first byte after the object that is not whitespace.
        offset: usize,
    },
    /// A TSV data row arrived before any `#fields` header.
    #[error("TSV row before any #fields header")]
    TsvNoHeader,
    /// A TSV data row has a different number of columns than its `#fields` header.
    #[error("TSV row has {found} columns, header has {expected}")]
    TsvColumns {
        /// Columns named by the header.
        expected: usize,
        /// Columns in the row.
        found: usize,
    },
    /// The record is larger than the configured limit.
    #[error("record of {size} bytes exceeds the {limit} byte limit")]
    TooLarge {
        /// The configured maximum size in bytes.
        limit: usize,
        /// The record's size in bytes.
        size: usize,
    },
}

impl RecordError {
    /// A fixed label for metrics and reject reasons, one per variant.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::NotAnObject => "not_an_object",
            Self::Truncated => "truncated",
            Self::Syntax { .. } => "syntax",
            Self::TooDeep { .. } => "too_deep",
            Self::TrailingData { .. } => "trailing_data",
            Self::TsvNoHeader => "tsv_no_header",
            Self::TsvColumns { .. } => "tsv_columns",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// The field paths a scan looks for: the configured IP fields (dotted paths
/// such as `"id.orig_h"`, `"srcip"`, `"answers"`) plus the log-type key
/// (Zeek's `"_path"` by default).
#[derive(Debug, Clone)]
pub struct Wanted {
    paths: Vec<String>,
    type_key: String,
    /// Rejects almost every top-level key that is neither a path, nor a
    /// dotted prefix of one, nor the type key.
    filter: Filter,
    /// Every path and every dotted prefix of one: the path it is (its
    /// index), and whether a longer path continues it with a '.'.
    names: HashMap<Box<[u8]>, (Option<u16>, bool), foldhash::fast::RandomState>,
}

/// A quick test on a name's length, first byte and last byte, so most keys
/// of a record cost one lookup instead of comparisons against every path.
///
/// A 256-bit set of hashes of those three: a name whose hash is not in it is
/// none of the names added; one whose hash is in it needs a full comparison.
#[derive(Debug, Clone)]
struct Filter {
    bits: [u64; 4],
}

impl Filter {
    #[inline(always)]
    fn slot(name: &[u8]) -> Option<usize> {
        let (&first, &last) = (name.first()?, name.last()?);
        let h = usize::from(first).wrapping_mul(0x9E37)
            ^ usize::from(last).wrapping_mul(0x85EB)
            ^ name.len().wrapping_mul(0xC2B3);
        Some((h ^ (h >> 8)) & 0xff)
    }

    fn add(&mut self, name: &[u8]) {
        if let Some(slot) = Self::slot(name) {
            self.bits[slot / 64] |= 1 << (slot % 64);
        }
    }

    /// False only when `name` is none of the names added.
    #[inline(always)]
    fn may_match(&self, name: &[u8]) -> bool {
        match Self::slot(name) {
            Some(slot) => self.bits[slot / 64] & (1 << (slot % 64)) != 0,
            // The empty name: rare enough to leave to a full comparison.
            None => true,
        }
    }
}

impl Wanted {
    /// The most paths one `Wanted` holds, because [`Found::field`] is a `u16`.
    pub const MAX_PATHS: usize = u16::MAX as usize + 1;

    /// Builds the set from the type key and the IP field paths.
    ///
    /// Duplicate paths are kept once (the first time they appear), and paths
    /// past [`Wanted::MAX_PATHS`] are ignored, so [`Wanted::paths`] may be
    /// shorter than `paths`.
    pub fn new(type_key: &str, paths: &[impl AsRef<str>]) -> Self {
        let mut kept: Vec<String> = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            if kept.len() < Self::MAX_PATHS && !kept.iter().any(|k| k == path) {
                kept.push(path.to_owned());
            }
        }
        let mut filter = Filter { bits: [0; 4] };
        filter.add(type_key.as_bytes());
        for path in &kept {
            let path = path.as_bytes();
            filter.add(path);
            for (at, &c) in path.iter().enumerate() {
                if c == b'.' {
                    filter.add(path.get(..at).unwrap_or_default());
                }
            }
        }
        let mut names: HashMap<Box<[u8]>, (Option<u16>, bool), _> = HashMap::default();
        for (i, path) in kept.iter().enumerate() {
            let path = path.as_bytes();
            // `kept` holds at most MAX_PATHS paths, so `i` fits.
            names.entry(path.into()).or_default().0 = u16::try_from(i).ok();
            for (at, &c) in path.iter().enumerate() {
                if c == b'.' {
                    let prefix = path.get(..at).unwrap_or_default();
                    names.entry(prefix.into()).or_default().1 = true;
                }
            }
        }
        Self {
            paths: kept,
            type_key: type_key.to_owned(),
            filter,
            names,
        }
    }

    /// The IP field paths; [`Found::field`] `i` refers to `paths()[i]`.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The index of `path` in [`Wanted::paths`], if it is wanted.
    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.paths.iter().position(|p| p == path)
    }

    /// The key naming the log type, matched at the top level only.
    pub fn type_key(&self) -> &str {
        &self.type_key
    }

    /// Whether a top-level key named `name` may be wanted: false for most
    /// keys, which then need no further look.
    #[inline(always)]
    fn may_match_top(&self, name: &[u8]) -> bool {
        self.filter.may_match(name)
    }

    /// Whether `name` is the type key.
    fn is_type_key(&self, name: &[u8]) -> bool {
        name == self.type_key.as_bytes()
    }

    /// Classifies the full dotted name of a value: the path it equals, and
    /// whether some longer path continues it with a '.', which makes an
    /// object value worth descending into.
    fn classify(&self, name: &[u8]) -> (Option<u16>, bool) {
        self.names.get(name).copied().unwrap_or_default()
    }
}

/// Where one value of a wanted field sits in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Index into [`Wanted::paths`].
    pub field: u16,
    /// What the value is and where.
    pub kind: FoundKind,
}

/// The kind of a found value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundKind {
    /// A JSON string: byte range of its contents between the quotes
    /// (exclusive); `escaped` when it contains a backslash escape.
    Str {
        /// Offset of the first byte after the opening quote.
        start: u32,
        /// Offset of the closing quote.
        end: u32,
        /// Whether the contents hold an escape and need [`json::unescape_into`].
        escaped: bool,
    },
    /// Any other value (number, bool, null, object, array of non-strings,
    /// ...): counted by the caller as "not an address", never an error.
    Other,
}

/// The reusable result of scanning one JSON record.
///
/// Keep one per worker and pass it to every [`json::scan`]: its buffers grow
/// to fit the largest record seen and are then reused without allocating.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Every value of a wanted field, in document order; cleared at the start
    /// of each scan.
    pub found: Vec<Found>,
    /// Byte range (and escaped flag) of the type key's string value, if the
    /// top-level object has the key and its value is a string.
    pub log_type: Option<(u32, u32, bool)>,
    /// Byte offset of the top-level object's closing `}`.
    pub close: usize,
    /// Number of top-level members (0 for `{}`), so a splicer knows whether
    /// to write a leading comma.
    pub members: usize,
    /// Open containers, innermost last.
    stack: Vec<json::Frame>,
    /// Dotted name of the innermost tracked object nested below the top level.
    path: Vec<u8>,
    /// Decoded form of a key that holds escapes.
    key: String,
}

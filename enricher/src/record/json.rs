//! One-pass validation of a JSON record that notes where the wanted fields are.
//!
//! The scanner never builds a document: it walks the bytes once, keeps the
//! open containers on an explicit stack (so nesting cannot overflow the call
//! stack), and reports wanted values as byte ranges into the input. It is as
//! strict as a full parser, because the caller splices new members into the
//! record and must never pass broken JSON on.

use memchr::{memchr, memchr2};

use super::{Found, FoundKind, RecordError, Scan, Wanted};

/// Scan limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of objects and arrays accepted; the top-level object is
    /// level 1.
    pub max_depth: usize,
    /// Largest record accepted, in bytes. Offsets are `u32`, so anything above
    /// 4 GiB is refused whatever this says.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_bytes: 1 << 20,
        }
    }
}

/// An open container during a scan.
#[derive(Debug, Clone, Copy)]
pub(super) enum Frame {
    /// An object nobody wants anything from: only validated.
    Object,
    /// An object whose member names are matched. Below the top level, its own
    /// dotted name is `Scan::path[..len]`.
    Tracked { len: usize },
    /// An array nobody wants anything from: only validated.
    Array,
    /// The array value of a wanted field: each string element is reported,
    /// and the first element that is not a string is reported once as
    /// [`FoundKind::Other`] (`other` says whether that happened).
    Field { field: u16, other: bool },
}

/// What an object member's value means to the caller.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// The wanted path the member's full name equals.
    field: Option<u16>,
    /// Whether a wanted path continues below the member's name, so an
    /// object value must be tracked.
    descend: bool,
    /// Whether the member is the top-level type key.
    log_type: bool,
}

impl Target {
    const PLAIN: Self = Self {
        field: None,
        descend: false,
        log_type: false,
    };
}

/// Validates `input` as exactly one JSON object (RFC 8259, surrounding
/// whitespace and a trailing `"\n"`/`"\r\n"` allowed) and records where the
/// wanted fields are.
///
/// Lone UTF-16 surrogates in `\u` escapes are refused, as serde_json does,
/// because a record carrying one could not be decoded downstream. Numbers are
/// checked against the grammar only, whatever their magnitude.
///
/// On error the contents of `out` are unspecified.
pub fn scan(
    input: &[u8],
    wanted: &Wanted,
    limits: &Limits,
    out: &mut Scan,
) -> Result<(), RecordError> {
    let limit = limits.max_bytes.min(u32::MAX as usize);
    if input.len() > limit {
        return Err(RecordError::TooLarge {
            limit,
            size: input.len(),
        });
    }
    // Validating UTF-8 once up front lets the scanner treat the rest as
    // bytes: every byte it must recognise is ASCII. simdutf8 says only
    // whether the input is valid, with SIMD; std then says where it is not.
    if simdutf8::basic::from_utf8(input).is_ok() {
        return scan_bytes(input, wanted, limits.max_depth, out);
    }
    match std::str::from_utf8(input) {
        Ok(_) => scan_bytes(input, wanted, limits.max_depth, out),
        Err(e) if e.error_len().is_some() => Err(RecordError::InvalidUtf8 {
            offset: e.valid_up_to(),
        }),
        Err(e) => {
            // The input stops inside a multi-byte character: judge the
            // document up to it, so a record cut anywhere reads as truncated.
            let offset = e.valid_up_to();
            let head = input.get(..offset).unwrap_or_default();
            match scan_bytes(head, wanted, limits.max_depth, out) {
                Ok(()) => Err(RecordError::TrailingData { offset }),
                Err(RecordError::Empty) => Err(RecordError::InvalidUtf8 { offset }),
                Err(err) => Err(err),
            }
        }
    }
}

/// The scan proper, over input already known to be UTF-8.
///
/// One inner loop per container kind walks the members or elements of the
/// innermost open container; opening or closing a container switches loops
/// through the explicit stack, so flat records run without any dispatch.
fn scan_bytes(
    b: &[u8],
    wanted: &Wanted,
    max_depth: usize,
    out: &mut Scan,
) -> Result<(), RecordError> {
    let Scan {
        found,
        log_type,
        close,
        members,
        stack,
        path,
        key,
    } = out;
    found.clear();
    *log_type = None;
    *close = 0;
    *members = 0;
    stack.clear();

    let mut i = skip_ws(b, 0);
    match b.get(i) {
        Some(b'{') => {}
        None => return Err(RecordError::Empty),
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(RecordError::NotAnObject);
        }
        Some(_) => return Err(syntax(i, "'{'")),
    }
    if max_depth == 0 {
        return Err(RecordError::TooDeep { limit: max_depth });
    }
    stack.push(Frame::Tracked { len: 0 });
    i += 1;
    // Whether the innermost container was just opened, so it may close
    // at once and its first member or element has no comma before it.
    let mut fresh = true;

    'containers: loop {
        let Some(&frame) = stack.last() else {
            return finish(b, i, close);
        };
        match frame {
            Frame::Object | Frame::Tracked { .. } => loop {
                i = skip_ws(b, i);
                let c = byte(b, i)?;
                if fresh {
                    fresh = false;
                    match c {
                        b'"' => {}
                        b'}' => {
                            i = pop(stack, i);
                            continue 'containers;
                        }
                        _ => return Err(syntax(i, "'\"' or '}'")),
                    }
                } else {
                    match c {
                        b',' => {
                            i = skip_ws(b, i + 1);
                            if byte(b, i)? != b'"' {
                                return Err(syntax(i, "'\"'"));
                            }
                        }
                        b'}' => {
                            i = pop(stack, i);
                            continue 'containers;
                        }
                        _ => return Err(syntax(i, "',' or '}'")),
                    }
                }

                let start = i + 1;
                let (end, escaped) = string(b, start)?;
                i = skip_ws(b, end + 1);
                if byte(b, i)? != b':' {
                    return Err(syntax(i, "':'"));
                }
                i = skip_ws(b, i + 1);
                let target = match frame {
                    Frame::Tracked { len } => {
                        let top = stack.len() == 1;
                        if top {
                            *members += 1;
                        }
                        let raw = b.get(start..end).unwrap_or_default();
                        let name = if escaped { unescape_key(raw, key) } else { raw };
                        if top && !wanted.may_match_top(name) {
                            Target::PLAIN
                        } else {
                            member(wanted, name, top, len, path)
                        }
                    }
                    _ => Target::PLAIN,
                };

                match byte(b, i)? {
                    b'"' => {
                        let start = i + 1;
                        let (end, escaped) = string(b, start)?;
                        i = end + 1;
                        if let Some(field) = target.field {
                            found.push(string_found(field, start, end, escaped));
                        }
                        if target.log_type && log_type.is_none() {
                            *log_type = Some((offset32(start), offset32(end), escaped));
                        }
                    }
                    c @ (b'{' | b'[') => {
                        let frame = if c == b'{' {
                            if let Some(field) = target.field {
                                other(found, field);
                            }
                            if target.descend {
                                Frame::Tracked { len: path.len() }
                            } else {
                                Frame::Object
                            }
                        } else {
                            match target.field {
                                Some(field) => Frame::Field {
                                    field,
                                    other: false,
                                },
                                None => Frame::Array,
                            }
                        };
                        i = push(stack, frame, i, max_depth)?;
                        fresh = true;
                        continue 'containers;
                    }
                    c => {
                        i = scalar(b, i, c)?;
                        if let Some(field) = target.field {
                            other(found, field);
                        }
                    }
                }
            },
            Frame::Array | Frame::Field { .. } => loop {
                i = skip_ws(b, i);
                let c = byte(b, i)?;
                if fresh {
                    fresh = false;
                    if c == b']' {
                        i = pop(stack, i);
                        continue 'containers;
                    }
                } else {
                    match c {
                        b',' => i = skip_ws(b, i + 1),
                        b']' => {
                            i = pop(stack, i);
                            continue 'containers;
                        }
                        _ => return Err(syntax(i, "',' or ']'")),
                    }
                }

                match byte(b, i)? {
                    b'"' => {
                        let start = i + 1;
                        let (end, escaped) = string(b, start)?;
                        i = end + 1;
                        if let Frame::Field { field, .. } = frame {
                            found.push(string_found(field, start, end, escaped));
                        }
                    }
                    c @ (b'{' | b'[') => {
                        element_other(stack, found);
                        let frame = if c == b'{' {
                            Frame::Object
                        } else {
                            Frame::Array
                        };
                        i = push(stack, frame, i, max_depth)?;
                        fresh = true;
                        continue 'containers;
                    }
                    c => {
                        i = scalar(b, i, c)?;
                        element_other(stack, found);
                    }
                }
            },
        }
    }
}

/// The byte at `i`; running out of input inside the document is truncation.
#[inline(always)]
fn byte(b: &[u8], i: usize) -> Result<u8, RecordError> {
    b.get(i).copied().ok_or(RecordError::Truncated)
}

/// Opens a container whose bracket is at `i`; returns the offset after it.
#[inline]
fn push(
    stack: &mut Vec<Frame>,
    frame: Frame,
    i: usize,
    max_depth: usize,
) -> Result<usize, RecordError> {
    if stack.len() >= max_depth {
        return Err(RecordError::TooDeep { limit: max_depth });
    }
    stack.push(frame);
    Ok(i + 1)
}

/// Closes the innermost container, whose bracket is at `i`; returns the
/// offset after it.
#[inline]
fn pop(stack: &mut Vec<Frame>, i: usize) -> usize {
    stack.pop();
    i + 1
}

/// Checks a number or literal whose first byte `c` is at `i`; returns the
/// offset after it.
#[inline]
fn scalar(b: &[u8], i: usize, c: u8) -> Result<usize, RecordError> {
    match c {
        b'-' | b'0'..=b'9' => number(b, i),
        b't' => literal(b, i, b"true", "'true'"),
        b'f' => literal(b, i, b"false", "'false'"),
        b'n' => literal(b, i, b"null", "'null'"),
        _ => Err(syntax(i, "a value")),
    }
}

/// Decodes a key that holds escapes into `key`. Keys are validated already,
/// so decoding succeeds; if it ever did not, the key simply matches nothing.
#[cold]
fn unescape_key<'k>(raw: &[u8], key: &'k mut String) -> &'k [u8] {
    if !unescape_into(raw, key) {
        key.clear();
    }
    key.as_bytes()
}

/// Works out what the value of a member named `name` means, in a tracked
/// object (the top-level one when `top`, else the one named `path[..len]`).
#[inline(never)]
fn member(wanted: &Wanted, name: &[u8], top: bool, len: usize, path: &mut Vec<u8>) -> Target {
    if top {
        let (field, descend) = wanted.classify(name);
        if descend {
            path.clear();
            path.extend_from_slice(name);
        }
        Target {
            field,
            descend,
            log_type: wanted.is_type_key(name),
        }
    } else {
        path.truncate(len);
        path.push(b'.');
        path.extend_from_slice(name);
        let (field, descend) = wanted.classify(path);
        Target {
            field,
            descend,
            log_type: false,
        }
    }
}

fn string_found(field: u16, start: usize, end: usize, escaped: bool) -> Found {
    Found {
        field,
        kind: FoundKind::Str {
            start: offset32(start),
            end: offset32(end),
            escaped,
        },
    }
}

/// Checks that only whitespace follows the top-level object, which closed
/// just before `i`.
fn finish(b: &[u8], i: usize, close: &mut usize) -> Result<(), RecordError> {
    *close = i.saturating_sub(1);
    let rest = skip_ws(b, i);
    if rest < b.len() {
        return Err(RecordError::TrailingData { offset: rest });
    }
    Ok(())
}

/// Reports a value of `field` that is not a string.
fn other(found: &mut Vec<Found>, field: u16) {
    found.push(Found {
        field,
        kind: FoundKind::Other,
    });
}

/// Reports a non-string element of a wanted array, once per array.
fn element_other(stack: &mut [Frame], found: &mut Vec<Found>) {
    if let Some(Frame::Field { field, other: seen }) = stack.last_mut()
        && !*seen
    {
        *seen = true;
        other(found, *field);
    }
}

/// Narrows an offset for [`FoundKind::Str`]; `scan` refuses inputs past
/// `u32::MAX` bytes, so it always fits.
fn offset32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

fn syntax(offset: usize, expected: &'static str) -> RecordError {
    RecordError::Syntax { offset, expected }
}

/// Skips JSON whitespace from `i`.
#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Scans a string whose contents start at `i` (just after the opening
/// quote); returns the offset of the closing quote and whether the contents
/// hold an escape.
#[inline(always)]
fn string(b: &[u8], i: usize) -> Result<(usize, bool), RecordError> {
    let at = stop(b, i);
    if let Some(at) = at
        && b.get(at) == Some(&b'"')
    {
        return Ok((at, false));
    }
    string_rest(b, at)
}

/// [`string`] past its first stop, when that is not the closing quote: an
/// escape, a control character, or the end of the input.
#[inline(never)]
fn string_rest(b: &[u8], mut at: Option<usize>) -> Result<(usize, bool), RecordError> {
    let mut escaped = false;
    loop {
        let Some(stop_at) = at else {
            return Err(RecordError::Truncated);
        };
        match b.get(stop_at) {
            Some(b'"') => return Ok((stop_at, escaped)),
            Some(b'\\') => {
                escaped = true;
                at = stop(b, escape(b, stop_at + 1)?);
            }
            _ => return Err(control(stop_at)),
        }
    }
}

/// The offset of the first byte from `i` on that ends the plain run of a
/// string: a quote, a backslash or a (forbidden) control character.
///
/// Most strings in a log record are short keys and values, where the set-up
/// cost of a `memchr2` call outweighs its speed, so the first bytes are tested
/// eight at a time in a `u64`; only a long string goes on to `memchr2`.
#[inline(always)]
fn stop(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    for _ in 0..4 {
        let Some(word) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) else {
            let rest = b.get(i..).unwrap_or_default();
            return rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .map(|p| i + p);
        };
        let x = u64::from_le_bytes(*word);
        // A byte of `quote` (`backslash`) is zero where `x` holds a quote
        // (backslash); the classic "has zero byte" test sets the high bit of
        // the lowest such byte exactly (borrows only create false hits above
        // a real one), and likewise `x - 0x20` for bytes below 0x20.
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & (ONES * 0x80);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    long_stop(b, i)
}

/// [`stop`] for the rest of a long string.
#[inline(never)]
fn long_stop(b: &[u8], i: usize) -> Option<usize> {
    let rest = b.get(i..).unwrap_or_default();
    let end = memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let stop = first_control(rest.get(..end).unwrap_or_default()).unwrap_or(end);
    (stop < rest.len()).then_some(i + stop)
}

fn control(offset: usize) -> RecordError {
    syntax(offset, "no control character inside a string")
}

/// The position of the first byte below 0x20 (raw control characters are not
/// allowed in JSON strings).
#[inline]
fn first_control(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let (words, tail) = s.as_chunks::<8>();
    for (n, word) in words.iter().enumerate() {
        // Eight bytes at a time: the high bit of `x - 0x20` is set in a byte
        // whose own high bit is clear exactly when some byte is below 0x20
        // (the classic "has less than" test, exact for limits up to 0x80).
        let x = u64::from_le_bytes(*word);
        if x.wrapping_sub(ONES * 0x20) & !x & (ONES * 0x80) != 0 {
            return word.iter().position(|&c| c < 0x20).map(|p| n * 8 + p);
        }
    }
    tail.iter()
        .position(|&c| c < 0x20)
        .map(|p| words.len() * 8 + p)
}

/// Checks the escape whose letter is at `i` (just after the backslash) and
/// returns the offset after it.
fn escape(b: &[u8], i: usize) -> Result<usize, RecordError> {
    match b.get(i) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 1),
        Some(b'u') => {
            let (unit, j) = hex4(b, i + 1)?;
            match unit {
                0xD800..=0xDBFF => {
                    match (b.get(j), b.get(j + 1)) {
                        (Some(b'\\'), Some(b'u')) => {}
                        (None, _) | (Some(b'\\'), None) => return Err(RecordError::Truncated),
                        _ => return Err(syntax(j, "a low surrogate escape")),
                    }
                    let (low, k) = hex4(b, j + 2)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(syntax(j, "a low surrogate escape"));
                    }
                    Ok(k)
                }
                0xDC00..=0xDFFF => Err(syntax(i - 1, "a high surrogate before a low one")),
                _ => Ok(j),
            }
        }
        Some(_) => Err(syntax(i, "an escape character")),
        None => Err(RecordError::Truncated),
    }
}

/// Reads four hex digits at `i`; returns their value and the offset after.
fn hex4(b: &[u8], i: usize) -> Result<(u32, usize), RecordError> {
    let mut value = 0;
    for at in i..i + 4 {
        let Some(&c) = b.get(at) else {
            return Err(RecordError::Truncated);
        };
        let Some(digit) = char::from(c).to_digit(16) else {
            return Err(syntax(at, "a hex digit"));
        };
        value = value * 16 + digit;
    }
    Ok((value, i + 4))
}

/// Checks the literal `lit` at `i`; returns the offset after it.
fn literal(
    b: &[u8],
    i: usize,
    lit: &'static [u8],
    expected: &'static str,
) -> Result<usize, RecordError> {
    let rest = b.get(i..).unwrap_or_default();
    if rest.starts_with(lit) {
        return Ok(i + lit.len());
    }
    match rest.iter().zip(lit).position(|(x, y)| x != y) {
        Some(p) => Err(syntax(i + p, expected)),
        // A prefix of the literal, then the end of the input.
        None => Err(RecordError::Truncated),
    }
}

/// Checks a number at `i` (RFC 8259 grammar); returns the offset after it.
#[inline]
fn number(b: &[u8], mut i: usize) -> Result<usize, RecordError> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        // A leading zero stands alone: "01" stops after the 0 and then fails
        // as a missing ',' or closing bracket.
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        Some(_) => return Err(syntax(i, "a digit")),
        None => return Err(RecordError::Truncated),
    }
    if b.get(i) == Some(&b'.') {
        i = some_digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = some_digits(b, i)?;
    }
    Ok(i)
}

/// Skips digits from `i`.
#[inline]
fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// Skips one or more digits from `i`.
fn some_digits(b: &[u8], i: usize) -> Result<usize, RecordError> {
    match b.get(i) {
        Some(b'0'..=b'9') => Ok(digits(b, i + 1)),
        Some(_) => Err(syntax(i, "a digit")),
        None => Err(RecordError::Truncated),
    }
}

/// Whether `s` is exactly one JSON number.
pub(super) fn is_number(s: &[u8]) -> bool {
    matches!(number(s, 0), Ok(end) if end == s.len())
}

/// Decodes the JSON string contents `raw` (the bytes between the quotes) into
/// `buf` (cleared first), resolving escapes including `\uXXXX` surrogate
/// pairs; returns false if the escapes are invalid (or `raw` is not UTF-8).
pub fn unescape_into(raw: &[u8], buf: &mut String) -> bool {
    buf.clear();
    let mut rest = raw;
    loop {
        let Some(k) = memchr(b'\\', rest) else {
            return push_utf8(buf, rest);
        };
        if !push_utf8(buf, rest.get(..k).unwrap_or_default()) {
            return false;
        }
        let simple = match rest.get(k + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let Some((c, used)) = unicode_escape(rest.get(k + 2..).unwrap_or_default()) else {
                    return false;
                };
                buf.push(c);
                rest = rest.get(k + 2 + used..).unwrap_or_default();
                continue;
            }
            _ => return false,
        };
        buf.push(simple);
        rest = rest.get(k + 2..).unwrap_or_default();
    }
}

/// Appends `bytes` to `buf` if they are UTF-8.
fn push_utf8(buf: &mut String, bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            buf.push_str(s);
            true
        }
        Err(_) => false,
    }
}

/// Decodes the `XXXX` of a `\u` escape at the start of `s`, with the low half
/// of a surrogate pair when needed; returns the character and the bytes used.
fn unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let hex = |at: usize| {
        s.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let unit = hex(0)?;
    match unit {
        0xD800..=0xDBFF => {
            if s.get(4..6) != Some(b"\\u") {
                return None;
            }
            let low = hex(6)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return None;
            }
            let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            Some((char::from_u32(c)?, 10))
        }
        _ => Some((char::from_u32(unit)?, 4)),
    }
}

/// How each byte is written inside a JSON string: 0 as is, `u` as `\u00XX`,
/// anything else as a backslash and that letter.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = b'u';
        c += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Writes `s` as a JSON string literal (with quotes) to `out`, escaping per
/// RFC 8259 (`"`, `\`, control characters as `\u00XX` or `\n`, `\t`, ...).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// Writes the contents of a JSON string literal for `s`, without the quotes.
pub(super) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc = ESCAPE[usize::from(c)];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        start = i + 1;
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    const IP_PATHS: [&str; 3] = ["id.orig_h", "id.resp_h", "answers"];

    fn zeek() -> Wanted {
        Wanted::new("_path", &IP_PATHS)
    }

    fn run(input: &str, wanted: &Wanted) -> Result<Scan, RecordError> {
        let mut out = Scan::default();
        scan(input.as_bytes(), wanted, &Limits::default(), &mut out).map(|()| out)
    }

    fn err(input: &[u8]) -> RecordError {
        let mut out = Scan::default();
        match scan(input, &zeek(), &Limits::default(), &mut out) {
            Ok(()) => panic!("accepted {:?}", String::from_utf8_lossy(input)),
            Err(e) => e,
        }
    }

    /// The found values as (path, decoded string or None for Other).
    fn values(input: &str, wanted: &Wanted) -> Vec<(String, Option<String>)> {
        let out = run(input, wanted).expect("valid record");
        decode_found(input.as_bytes(), wanted, &out)
    }

    fn decode_found(input: &[u8], wanted: &Wanted, out: &Scan) -> Vec<(String, Option<String>)> {
        out.found
            .iter()
            .map(|f| {
                let path = wanted.paths()[usize::from(f.field)].clone();
                let value = match f.kind {
                    FoundKind::Str {
                        start,
                        end,
                        escaped,
                    } => {
                        let raw = &input[start as usize..end as usize];
                        let mut s = String::new();
                        if escaped {
                            assert!(unescape_into(raw, &mut s));
                        } else {
                            assert!(!raw.contains(&b'\\'));
                            s.push_str(std::str::from_utf8(raw).expect("utf8"));
                        }
                        Some(s)
                    }
                    FoundKind::Other => None,
                };
                (path, value)
            })
            .collect()
    }

    fn s(path: &str, value: &str) -> (String, Option<String>) {
        (path.to_owned(), Some(value.to_owned()))
    }

    fn o(path: &str) -> (String, Option<String>) {
        (path.to_owned(), None)
    }

    #[test]
    fn dotted_keys_match_at_top_level() {
        let rec =
            r#"{"_path":"conn","id.orig_h":"10.0.0.1","id.orig_p":5,"id.resp_h":"2001:db8::1"}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![s("id.orig_h", "10.0.0.1"), s("id.resp_h", "2001:db8::1")]
        );
    }

    #[test]
    fn nested_keys_match_like_dotted_ones() {
        let rec = r#"{"id":{"orig_h":"10.0.0.1","orig_p":5,"resp_h":"10.0.0.2"},"x":1}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![s("id.orig_h", "10.0.0.1"), s("id.resp_h", "10.0.0.2")]
        );
    }

    #[test]
    fn mixed_dotted_and_nested_keys_match() {
        let wanted = Wanted::new("_path", &["a.b.c"]);
        let rec = r#"{"a.b":{"c":"1"},"a":{"b.c":"2","b":{"c":"3","d":"4"}},"a.b.c":"5"}"#;
        assert_eq!(
            values(rec, &wanted),
            vec![
                s("a.b.c", "1"),
                s("a.b.c", "2"),
                s("a.b.c", "3"),
                s("a.b.c", "5")
            ]
        );
    }

    #[test]
    fn unwanted_subtrees_are_only_validated() {
        let rec = r#"{"x":{"id.orig_h":"1.1.1.1","id":{"orig_h":"2.2.2.2"}},"idx":{"orig_h":"3"}}"#;
        assert_eq!(values(rec, &zeek()), vec![]);
        // Still validated: a syntax error deep in an ignored subtree is caught.
        assert_eq!(
            err(br#"{"x":{"y":[1,{"z":tru}]}}"#),
            RecordError::Syntax {
                offset: 21,
                expected: "'true'"
            }
        );
    }

    #[test]
    fn a_path_and_its_extension_both_match() {
        let wanted = Wanted::new("_path", &["a", "a.b"]);
        assert_eq!(
            values(r#"{"a":{"b":"x"}}"#, &wanted),
            vec![o("a"), s("a.b", "x")]
        );
    }

    #[test]
    fn arrays_yield_each_string_and_one_other() {
        let rec = r#"{"answers":["ise.example","134.71.3.16"],"TTLs":[1.0,2.0]}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![s("answers", "ise.example"), s("answers", "134.71.3.16")]
        );
        let rec = r#"{"answers":["a",1,"b",null,{"c":"d"},["e"]]}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![s("answers", "a"), o("answers"), s("answers", "b")]
        );
        assert_eq!(values(r#"{"answers":[]}"#, &zeek()), vec![]);
        assert_eq!(
            values(r#"{"answers":[["x"]]}"#, &zeek()),
            vec![o("answers")]
        );
    }

    #[test]
    fn non_string_values_are_other() {
        let rec = r#"{"id.orig_h":null,"id.resp_h":17,"answers":{"a":"b"},"id":{"orig_h":true}}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![o("id.orig_h"), o("id.resp_h"), o("answers"), o("id.orig_h")]
        );
    }

    #[test]
    fn duplicate_keys_are_all_reported() {
        let rec = r#"{"id.orig_h":"1","id.orig_h":"2","id":{"orig_h":"3"},"id":{"orig_h":"4"}}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![
                s("id.orig_h", "1"),
                s("id.orig_h", "2"),
                s("id.orig_h", "3"),
                s("id.orig_h", "4")
            ]
        );
    }

    #[test]
    fn escaped_keys_still_match() {
        let rec = r#"{"id\u002eorig_h":"1.2.3.4","\u0069d":{"resp\u005fh":"5.6.7.8"},"\"":"x"}"#;
        assert_eq!(
            values(rec, &zeek()),
            vec![s("id.orig_h", "1.2.3.4"), s("id.resp_h", "5.6.7.8")]
        );
        let wanted = Wanted::new("_path", &["a\"b", "\u{e9}.\u{1F600}"]);
        let rec = r#"{"a\"b":"q","\u00e9":{"\ud83d\ude00":"smile"}}"#;
        assert_eq!(
            values(rec, &wanted),
            vec![s("a\"b", "q"), s("\u{e9}.\u{1F600}", "smile")]
        );
    }

    #[test]
    fn escaped_values_are_flagged() {
        let rec = r#"{"id.orig_h":"10.0.0.1","answers":["a\/b","\u0031.2"]}"#;
        let out = run(rec, &zeek()).expect("valid");
        let escaped: Vec<bool> = out
            .found
            .iter()
            .map(|f| matches!(f.kind, FoundKind::Str { escaped: true, .. }))
            .collect();
        assert_eq!(escaped, vec![false, true, true]);
        assert_eq!(
            values(rec, &zeek()),
            vec![
                s("id.orig_h", "10.0.0.1"),
                s("answers", "a/b"),
                s("answers", "1.2")
            ]
        );
    }

    #[test]
    fn type_key_is_found_at_top_level_only() {
        let rec = r#"{"x":{"_path":"nested"},"_path":"dns","_path":"second"}"#;
        let out = run(rec, &zeek()).expect("valid");
        let (start, end, escaped) = out.log_type.expect("type");
        assert_eq!(&rec[start as usize..end as usize], "dns");
        assert!(!escaped);
        assert_eq!(
            run(r#"{"_path":1}"#, &zeek()).expect("valid").log_type,
            None
        );
        assert_eq!(
            run(r#"{"x":{"_path":"a"}}"#, &zeek())
                .expect("valid")
                .log_type,
            None
        );
        let out = run(r#"{"_path":"d\u006es"}"#, &zeek()).expect("valid");
        assert_eq!(out.log_type, Some((10, 18, true)));
    }

    #[test]
    fn type_key_can_also_be_a_wanted_path() {
        let wanted = Wanted::new("kind", &["kind"]);
        let out = run(r#"{"kind":"x"}"#, &wanted).expect("valid");
        assert_eq!(out.log_type, Some((9, 10, false)));
        assert_eq!(out.found.len(), 1);
    }

    #[test]
    fn empty_object_and_whitespace() {
        let out = run("{}", &zeek()).expect("valid");
        assert_eq!((out.close, out.members), (1, 0));
        let rec =
            " \t{ \"a\" : 1 ,\n \"id.orig_h\" : \"1.2.3.4\" , \"b\" : [ 1 , { } , [ ] ] }\r\n";
        let out = run(rec, &zeek()).expect("valid");
        assert_eq!(out.members, 3);
        assert_eq!(out.close, rec.rfind('}').expect("brace"));
        assert_eq!(values(rec, &zeek()), vec![s("id.orig_h", "1.2.3.4")]);
        let out = run("{\"a\":{\"b\":{}}}\n", &zeek()).expect("valid");
        assert_eq!((out.close, out.members), (13, 1));
    }

    #[test]
    fn scan_state_is_reset_between_records() {
        let wanted = zeek();
        let mut out = Scan::default();
        let limits = Limits::default();
        let first = br#"{"_path":"a","id.orig_h":"1","x":2}"#;
        scan(first, &wanted, &limits, &mut out).expect("valid");
        assert_eq!((out.found.len(), out.members), (1, 3));
        scan(b"{}", &wanted, &limits, &mut out).expect("valid");
        assert_eq!((out.found.len(), out.members, out.log_type), (0, 0, None));
    }

    #[test]
    fn empty_input() {
        assert_eq!(err(b""), RecordError::Empty);
        assert_eq!(err(b" \r\n\t "), RecordError::Empty);
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(
            err(b"{\"a\":\"\xff\"}"),
            RecordError::InvalidUtf8 { offset: 6 }
        );
        assert_eq!(
            err(b"{\"a\xc3\x28\":1}"),
            RecordError::InvalidUtf8 { offset: 3 }
        );
        // A character cut short by the end of the input is truncation inside
        // the document, or trailing data after it.
        assert_eq!(err(b"{\"a\":\"\xc3"), RecordError::Truncated);
        assert_eq!(err(b"{} \xe2\x82"), RecordError::TrailingData { offset: 3 });
        assert_eq!(err(b" \xe2\x82"), RecordError::InvalidUtf8 { offset: 1 });
    }

    #[test]
    fn not_an_object() {
        for input in [
            "[1]", "\"x\"", "3", "-1", "true", "false", "null", " [ {} ]",
        ] {
            assert_eq!(err(input.as_bytes()), RecordError::NotAnObject, "{input}");
        }
        assert_eq!(
            err(b"x{}"),
            RecordError::Syntax {
                offset: 0,
                expected: "'{'"
            }
        );
        // A byte-order mark is not JSON whitespace (serde_json agrees).
        assert!(matches!(
            err("\u{feff}{}".as_bytes()),
            RecordError::Syntax { offset: 0, .. }
        ));
    }

    #[test]
    fn every_prefix_of_a_record_is_truncated() {
        let rec = concat!(
            r#" {"_path":"dns","id":{"orig_h":"10.0.0.1"},"id.resp_h":"::1","n":-12.5e+3,"#,
            r#""ok":true,"no":false,"nil":null,"answers":["a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00","é😀"],"#,
            r#""deep":[[{}],[],{"x":[0,1.0E-2]}]}"#,
            "\r\n"
        );
        assert!(run(rec, &zeek()).is_ok());
        let close = rec.rfind('}').expect("brace");
        for cut in 0..rec.len() {
            let prefix = &rec.as_bytes()[..cut];
            let mut out = Scan::default();
            let got = scan(prefix, &zeek(), &Limits::default(), &mut out);
            let expected = if cut <= 1 {
                Err(RecordError::Empty)
            } else if cut > close {
                Ok(())
            } else {
                Err(RecordError::Truncated)
            };
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let limit = Limits::default().max_depth;
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let deep = format!("{{\"a\":{}{}}}", open.repeat(10_000), close.repeat(10_000));
            assert_eq!(err(deep.as_bytes()), RecordError::TooDeep { limit });
        }
        // Exactly at the limit is fine: the top-level object is level 1.
        let nested = |levels: usize| "{\"a\":".repeat(levels) + "1" + &"}".repeat(levels);
        assert!(run(&nested(limit), &zeek()).is_ok());
        assert_eq!(
            err(nested(limit + 1).as_bytes()),
            RecordError::TooDeep { limit }
        );
        let small = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        let mut out = Scan::default();
        assert!(scan(b"{\"a\":[1]}", &zeek(), &small, &mut out).is_ok());
        assert_eq!(
            scan(b"{\"a\":[[1]]}", &zeek(), &small, &mut out),
            Err(RecordError::TooDeep { limit: 2 })
        );
    }

    #[test]
    fn trailing_data() {
        assert_eq!(err(b"{}x"), RecordError::TrailingData { offset: 2 });
        assert_eq!(err(b"{} {}"), RecordError::TrailingData { offset: 3 });
        assert_eq!(err(b"{}\n{}\n"), RecordError::TrailingData { offset: 3 });
        assert_eq!(err(b"{}\0"), RecordError::TrailingData { offset: 2 });
    }

    #[test]
    fn too_large_is_checked_first() {
        let limits = Limits {
            max_bytes: 4,
            ..Limits::default()
        };
        let mut out = Scan::default();
        assert_eq!(
            scan(b"{\"a\":\xff", &zeek(), &limits, &mut out),
            Err(RecordError::TooLarge { limit: 4, size: 6 })
        );
        assert!(scan(b"{ }\n", &zeek(), &limits, &mut out).is_ok());
    }

    #[test]
    fn control_characters_in_strings_are_refused() {
        assert_eq!(
            err(b"{\"a\":\"x\ny\"}"),
            RecordError::Syntax {
                offset: 7,
                expected: "no control character inside a string"
            }
        );
        assert!(matches!(
            err(b"{\"a\x01\":1}"),
            RecordError::Syntax { offset: 3, .. }
        ));
        assert!(matches!(
            err(b"{\"a\":\"0123456789012345678901234567890123456789\x1f\"}"),
            RecordError::Syntax { offset: 46, .. }
        ));
        // Escaped, they are fine; DEL is not a control character to JSON.
        assert!(run("{\"a\":\"x\\ny\\u0000\x7f\"}", &zeek()).is_ok());
    }

    #[test]
    fn bad_numbers_are_refused() {
        for bad in [
            "01", "1.", "-", "1e", "1e+", "+1", ".5", "1.e5", "-a", "0x1", "1ee2", "--1", "1.2.3",
            "Infinity", "NaN", "-01",
        ] {
            let rec = format!("{{\"a\":{bad}}}");
            assert!(
                matches!(err(rec.as_bytes()), RecordError::Syntax { .. }),
                "{bad}"
            );
        }
        for good in [
            "0",
            "-0",
            "1",
            "-12",
            "0.5",
            "-0.0e-0",
            "1E+2",
            "1e400",
            "123456789012345678901234567890",
        ] {
            let rec = format!("{{\"a\":{good},\"b\":[{good}]}}");
            assert!(run(&rec, &zeek()).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_structure_is_refused() {
        for (bad, offset, expected) in [
            (r#"{"a":1,}"#, 7, "'\"'"),
            (r#"{,}"#, 1, "'\"' or '}'"),
            (r#"{"a":1 "b":2}"#, 7, "',' or '}'"),
            (r#"{"a":[1,]}"#, 8, "a value"),
            (r#"{"a":[1 2]}"#, 8, "',' or ']'"),
            (r#"{"a"}"#, 4, "':'"),
            (r#"{"a":}"#, 5, "a value"),
            (r#"{"a"::1}"#, 5, "a value"),
            (r#"{"a":1]"#, 6, "',' or '}'"),
            (r#"{"a":[1}"#, 7, "',' or ']'"),
            (r#"{1:2}"#, 1, "'\"' or '}'"),
            (r#"{'a':1}"#, 1, "'\"' or '}'"),
            (r#"{"a":tru }"#, 8, "'true'"),
            (r#"{"a":nul}"#, 8, "'null'"),
            (r#"{"a":fals3}"#, 9, "'false'"),
            (r#"{"a":"\x"}"#, 7, "an escape character"),
            (r#"{"a":"\u12g4"}"#, 10, "a hex digit"),
            (r#"{"a":"\ud800"}"#, 12, "a low surrogate escape"),
            (r#"{"a":"\ud800\u0041"}"#, 12, "a low surrogate escape"),
            (r#"{"a":"\udc00"}"#, 6, "a high surrogate before a low one"),
        ] {
            assert_eq!(
                err(bad.as_bytes()),
                RecordError::Syntax { offset, expected },
                "{bad}"
            );
        }
    }

    #[test]
    fn labels_and_messages() {
        let cases = [
            (RecordError::Empty, "empty"),
            (RecordError::InvalidUtf8 { offset: 1 }, "invalid_utf8"),
            (RecordError::NotAnObject, "not_an_object"),
            (RecordError::Truncated, "truncated"),
            (
                RecordError::Syntax {
                    offset: 17,
                    expected: "':'",
                },
                "syntax",
            ),
            (RecordError::TooDeep { limit: 64 }, "too_deep"),
            (RecordError::TrailingData { offset: 2 }, "trailing_data"),
            (RecordError::TsvNoHeader, "tsv_no_header"),
            (
                RecordError::TsvColumns {
                    expected: 2,
                    found: 3,
                },
                "tsv_columns",
            ),
            (RecordError::TooLarge { limit: 1, size: 2 }, "too_large"),
        ];
        for (error, label) in cases {
            assert_eq!(error.label(), label);
            let message = error.to_string();
            assert!(!message.is_empty() && !message.contains('\n'));
        }
        assert_eq!(
            RecordError::Truncated.to_string(),
            "truncated JSON: input ends inside the document"
        );
        assert_eq!(
            RecordError::Syntax {
                offset: 17,
                expected: "':'"
            }
            .to_string(),
            "invalid JSON at byte 17: expected ':'"
        );
    }

    #[test]
    fn wanted_dedups_and_indexes() {
        let wanted = Wanted::new("_path", &["a", "b", "a"]);
        assert_eq!(wanted.paths(), ["a", "b"]);
        assert_eq!(wanted.index_of("b"), Some(1));
        assert_eq!(wanted.index_of("c"), None);
        assert_eq!(wanted.type_key(), "_path");
        let none: [&str; 0] = [];
        assert_eq!(values(r#"{"a":"1"}"#, &Wanted::new("_path", &none)), vec![]);
        // The empty name is a name like any other.
        let wanted = Wanted::new("_path", &["", ".x"]);
        assert_eq!(
            values(r#"{"":"e","":{"x":"f"}}"#, &wanted),
            vec![s("", "e"), o(""), s(".x", "f")]
        );
    }

    #[test]
    fn unescape_resolves_escapes() {
        let mut buf = String::from("old");
        assert!(unescape_into(
            br#"a\"\\\/\b\f\n\r\t\u00e9\u20AC\ud83d\ude00z"#,
            &mut buf
        ));
        assert_eq!(buf, "a\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{20ac}\u{1f600}z");
        assert!(unescape_into(b"plain", &mut buf));
        assert_eq!(buf, "plain");
        assert!(unescape_into("\u{e9}t\u{e9}\\n".as_bytes(), &mut buf));
        assert_eq!(buf, "\u{e9}t\u{e9}\n");
        for bad in [
            &br"\ud83d"[..],
            br"\ude00",
            br"\ud83d\u0041",
            br"\ud83dx\ude00",
            br"\x",
            br"\u12",
            br"\u12g4",
            br"abc\",
            b"\xff",
        ] {
            assert!(!unescape_into(bad, &mut buf), "{bad:?}");
        }
    }

    #[test]
    fn write_str_round_trips_through_serde_json() {
        for text in [
            "",
            "plain",
            "q\"b\\s/",
            "\u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}",
            "\u{e9}\u{2028}\u{1f600}",
        ] {
            let mut out = b"prefix".to_vec();
            write_str(&mut out, text);
            let literal = &out[6..];
            assert_eq!(
                serde_json::from_slice::<String>(literal).expect("json"),
                text
            );
            let mut back = String::new();
            assert!(unescape_into(&literal[1..literal.len() - 1], &mut back));
            assert_eq!(back, text);
        }
        let mut out = Vec::new();
        write_str(&mut out, "a\u{1}\n");
        assert_eq!(out, br#""a\u0001\n""#);
    }

    // ---- Property tests ----

    /// Keys that exercise the wanted paths, dotted and nested forms, the type
    /// key, and escaping.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("id".to_owned()),
            Just("orig_h".to_owned()),
            Just("id.orig_h".to_owned()),
            Just("answers".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("a.b".to_owned()),
            Just("b.c".to_owned()),
            Just("c".to_owned()),
            Just("_path".to_owned()),
            Just("q\"\\/\n".to_owned()),
            ".{0,6}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            "[0-9.:a-f]{1,15}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        prop::collection::vec((key(), value()), 0..8)
            .prop_map(|members| Value::Object(members.into_iter().collect()))
    }

    /// What `scan` should find in `record`, walking the parsed document.
    fn model(record: &Value, paths: &[&str]) -> Vec<(String, Option<String>)> {
        let mut found = Vec::new();
        let mut todo = vec![(String::new(), record)];
        // Depth-first in document order, without recursion.
        let mut stack: Vec<Vec<(String, &Value)>> = Vec::new();
        if let Some((_, Value::Object(map))) = todo.pop() {
            stack.push(map.iter().rev().map(|(k, v)| (k.clone(), v)).collect());
        }
        while let Some(level) = stack.last_mut() {
            let Some((name, v)) = level.pop() else {
                stack.pop();
                continue;
            };
            if let Some(&path) = paths.iter().find(|p| **p == name) {
                match v {
                    Value::String(text) => found.push(s(path, text)),
                    Value::Array(items) => {
                        let mut other = false;
                        for item in items {
                            match item {
                                Value::String(text) => found.push(s(path, text)),
                                _ if !other => {
                                    other = true;
                                    found.push(o(path));
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => found.push(o(path)),
                }
            }
            let prefix = format!("{name}.");
            if let Value::Object(map) = v
                && paths.iter().any(|p| p.starts_with(&prefix))
            {
                stack.push(
                    map.iter()
                        .rev()
                        .map(|(k, v)| (format!("{prefix}{k}"), v))
                        .collect(),
                );
            }
        }
        found
    }

    /// Byte edits that turn valid JSON into near-misses.
    #[derive(Debug, Clone)]
    enum Edit {
        Delete(prop::sample::Index),
        Insert(prop::sample::Index, u8),
        Replace(prop::sample::Index, u8),
        Truncate(prop::sample::Index),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let byte = prop::sample::select(
            b"{}[]\",:\\ \n0123456789.eE-+tfnulsr\x00\x01\x7f\xff\xc3/bu".to_vec(),
        );
        prop_oneof![
            any::<prop::sample::Index>().prop_map(Edit::Delete),
            (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
            (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
            any::<prop::sample::Index>().prop_map(Edit::Truncate),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
        if bytes.is_empty() {
            return;
        }
        match edit {
            Edit::Delete(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Edit::Replace(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        }
    }

    const MODEL_PATHS: [&str; 5] = ["id.orig_h", "answers", "a.b.c", "a.b", "_path"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut out = Scan::default();
            let _ = scan(&bytes, &zeek(), &Limits::default(), &mut out);
        }

        #[test]
        fn json_like_bytes_never_panic(
            bytes in prop::collection::vec(prop::sample::select(b"{}[]\",:\\ 0-9.eEtrufalsn".to_vec()), 0..128)
        ) {
            let mut out = Scan::default();
            let _ = scan(&bytes, &zeek(), &Limits::default(), &mut out);
        }

        #[test]
        fn serde_json_objects_are_accepted_and_found(record in object(), pretty in any::<bool>()) {
            let wanted = Wanted::new("_path", &MODEL_PATHS);
            let bytes = if pretty {
                serde_json::to_vec_pretty(&record)
            } else {
                serde_json::to_vec(&record)
            }
            .expect("serialize");
            let mut out = Scan::default();
            prop_assert_eq!(scan(&bytes, &wanted, &Limits::default(), &mut out), Ok(()));
            prop_assert_eq!(decode_found(&bytes, &wanted, &out), model(&record, &MODEL_PATHS));
            let members = record.as_object().map_or(0, serde_json::Map::len);
            prop_assert_eq!(out.members, members);
            prop_assert_eq!(bytes.get(out.close), Some(&b'}'));
            let log_type = out.log_type.map(|(start, end, escaped)| {
                let mut text = String::new();
                prop_assert!(unescape_into(&bytes[start as usize..end as usize], &mut text));
                prop_assert_eq!(escaped, bytes[start as usize..end as usize].contains(&b'\\'));
                Ok(text)
            }).transpose()?;
            prop_assert_eq!(log_type.as_deref(), record.get("_path").and_then(Value::as_str));
        }

        #[test]
        fn scan_agrees_with_serde_json_on_near_misses(
            record in object(),
            edits in prop::collection::vec(edit(), 1..4),
        ) {
            let mut bytes = serde_json::to_vec(&record).expect("serialize");
            for edit in &edits {
                apply(&mut bytes, edit);
            }
            let theirs = serde_json::from_slice::<Value>(&bytes);
            if let Err(e) = &theirs {
                // Numbers are checked against the grammar only; serde_json
                // also refuses ones that overflow an f64.
                prop_assume!(!e.to_string().contains("number out of range"));
            }
            let theirs = theirs.is_ok_and(|v| v.is_object());
            let mut out = Scan::default();
            let ours = scan(&bytes, &zeek(), &Limits::default(), &mut out);
            prop_assert_eq!(ours.is_ok(), theirs, "{:?} on {:?}", ours, String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn write_str_round_trips(text in any::<String>()) {
            let mut out = Vec::new();
            write_str(&mut out, &text);
            prop_assert_eq!(serde_json::from_slice::<String>(&out).expect("json"), text.clone());
            let mut back = String::new();
            prop_assert!(unescape_into(&out[1..out.len() - 1], &mut back));
            prop_assert_eq!(back, text);
        }
    }
}

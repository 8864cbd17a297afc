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

#[cfg(test)]
mod tests;

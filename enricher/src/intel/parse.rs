//! The three indicator file formats, each line to an [`Entry`], and the
//! forms values are matched in ([`domain_key`], [`url_key`], [`hash_key`]).
//!
//! ```text
//! file --> detect: "#fields" header -> Zeek Intel (tab-separated)
//!                  ".csv" or "indicator," header -> CSV
//!                  else -> plain list (one indicator a line, type guessed)
//!      --> Entry { indicator, kind, source, desc, meta } per line
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use super::{IntelError, Kind};

/// One indicator as read, before indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The indicator as written in the file.
    pub indicator: String,
    /// What it is.
    pub kind: Kind,
    /// Where it comes from (`meta.source`, the `source` column, or the
    /// file's name).
    pub source: String,
    /// What it means (`meta.desc`, the `desc` column), possibly empty.
    pub desc: String,
    /// Further columns, by name.
    pub meta: Vec<(String, String)>,
}

/// What a file held besides its indicators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Zeek rows of a type not matched here (`Intel::EMAIL`, `Intel::USER_NAME`, ...).
    pub other_types: u64,
}

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Zeek's Intel framework: `#fields indicator indicator_type meta.source ...`.
    Zeek,
    /// CSV with a header: `indicator,type,source,desc[,more...]`.
    Csv,
    /// One indicator a line, `#` comments, the type detected.
    Plain,
}

/// Which format `text` (from `file`) is in.
pub fn detect(file: &str, text: &str) -> Format {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && (!l.starts_with('#') || l.starts_with("#fields")));
    let zeek = text
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .any(|l| l.starts_with("#fields"));
    if zeek {
        Format::Zeek
    } else if file.to_ascii_lowercase().ends_with(".csv")
        || first.is_some_and(|l| l.to_ascii_lowercase().starts_with("indicator,"))
    {
        Format::Csv
    } else {
        Format::Plain
    }
}

/// Reads every indicator of `text`; `file` names the file in errors and is
/// the source of indicators that name none.
pub(super) fn parse(
    file: &str,
    text: &str,
    out: &mut dyn FnMut(Entry),
) -> Result<Skipped, IntelError> {
    let source = default_source(file);
    match detect(file, text) {
        Format::Zeek => zeek(file, &source, text, out),
        Format::Csv => csv(file, &source, text, out),
        Format::Plain => plain(file, &source, text, out).map(|()| Skipped::default()),
    }
}

/// The file's name without folders or extension.
fn default_source(file: &str) -> String {
    let name = std::path::Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    name.unwrap_or_else(|| file.to_string())
}

fn bad(file: &str, line: usize, problem: impl Into<String>) -> IntelError {
    IntelError::Line {
        file: file.to_string(),
        line: line as u64,
        problem: problem.into(),
    }
}

fn zeek(
    file: &str,
    source: &str,
    text: &str,
    out: &mut dyn FnMut(Entry),
) -> Result<Skipped, IntelError> {
    let mut skipped = Skipped::default();
    let mut fields: Option<Vec<&str>> = None;
    let mut columns = (0, 0, None, None);
    for (i, line) in text.lines().enumerate() {
        let no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = line.strip_prefix("#fields") {
            let names: Vec<&str> = rest.split('\t').filter(|s| !s.is_empty()).collect();
            let at = |n: &str| names.iter().position(|f| *f == n);
            let (Some(ind), Some(ty)) = (at("indicator"), at("indicator_type")) else {
                return Err(bad(file, no, "#fields lacks indicator or indicator_type"));
            };
            columns = (ind, ty, at("meta.source"), at("meta.desc"));
            fields = Some(names);
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some(names) = &fields else {
            return Err(bad(file, no, "a row before the #fields header"));
        };
        let values: Vec<&str> = line.split('\t').collect();
        if values.len() != names.len() {
            return Err(bad(
                file,
                no,
                format!(
                    "{} tab-separated values, the #fields header names {}",
                    values.len(),
                    names.len()
                ),
            ));
        }
        let (ind, ty, src, desc) = columns;
        let kind = match values.get(ty).copied().unwrap_or_default() {
            "Intel::ADDR" => Kind::Addr,
            "Intel::SUBNET" => Kind::Subnet,
            "Intel::DOMAIN" => Kind::Domain,
            "Intel::URL" => Kind::Url,
            "Intel::FILE_HASH" => Kind::Hash,
            t if t.starts_with("Intel::") => {
                skipped.other_types += 1;
                continue;
            }
            t => return Err(bad(file, no, format!("{t:?} is not an Intel:: type"))),
        };
        let unset = |v: Option<&&str>| match v.copied() {
            None | Some("-") | Some("(empty)") => String::new(),
            Some(v) => v.to_string(),
        };
        let indicator = unset(values.get(ind));
        check(&indicator, kind).map_err(|p| bad(file, no, p))?;
        let meta = names
            .iter()
            .zip(&values)
            .enumerate()
            .filter(|(i, _)| ![Some(ind), Some(ty), src, desc].contains(&Some(*i)))
            .filter(|(_, (_, v))| **v != "-")
            .map(|(_, (n, v))| {
                let name = n.strip_prefix("meta.").unwrap_or(n);
                (name.to_string(), v.to_string())
            })
            .collect();
        let given = unset(src.and_then(|s| values.get(s)));
        out(Entry {
            indicator,
            kind,
            source: if given.is_empty() {
                source.into()
            } else {
                given
            },
            desc: unset(desc.and_then(|d| values.get(d))),
            meta,
        });
    }
    Ok(skipped)
}

fn csv(
    file: &str,
    source: &str,
    text: &str,
    out: &mut dyn FnMut(Entry),
) -> Result<Skipped, IntelError> {
    let mut header: Option<Vec<String>> = None;
    let mut cells = Vec::new();
    for (no, line) in csv_lines(text) {
        split_csv(line, &mut cells).map_err(|p| bad(file, no, p))?;
        let Some(names) = &header else {
            let names: Vec<String> = cells
                .iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            if !names.iter().any(|n| n == "indicator") {
                return Err(bad(file, no, "the CSV header has no indicator column"));
            }
            header = Some(names);
            continue;
        };
        if cells.len() != names.len() {
            return Err(bad(
                file,
                no,
                format!("{} columns, the header names {}", cells.len(), names.len()),
            ));
        }
        let mut entry = Entry {
            indicator: String::new(),
            kind: Kind::Addr,
            source: source.to_string(),
            desc: String::new(),
            meta: Vec::new(),
        };
        let mut declared = None;
        for (name, cell) in names.iter().zip(cells.drain(..)) {
            match name.as_str() {
                "indicator" => entry.indicator = cell.trim().to_string(),
                "type" | "indicator_type" if !cell.trim().is_empty() => {
                    declared = Some(
                        kind_named(cell.trim())
                            .ok_or_else(|| bad(file, no, format!("{cell:?} is not a type")))?,
                    );
                }
                "type" | "indicator_type" => {}
                "source" if !cell.is_empty() => entry.source = cell,
                "desc" | "description" => entry.desc = cell,
                _ if !cell.is_empty() => entry.meta.push((name.clone(), cell)),
                _ => {}
            }
        }
        entry.kind = match declared {
            Some(kind) => kind,
            None => guess(&entry.indicator).map_err(|p| bad(file, no, p))?,
        };
        check(&entry.indicator, entry.kind).map_err(|p| bad(file, no, p))?;
        out(entry);
    }
    Ok(Skipped::default())
}

fn plain(
    file: &str,
    source: &str,
    text: &str,
    out: &mut dyn FnMut(Entry),
) -> Result<(), IntelError> {
    for (i, line) in text.lines().enumerate() {
        let value = line.trim();
        if value.is_empty() || value.starts_with('#') {
            continue;
        }
        let kind = guess(value).map_err(|p| bad(file, i + 1, p))?;
        out(Entry {
            indicator: value.to_string(),
            kind,
            source: source.to_string(),
            desc: String::new(),
            meta: Vec::new(),
        });
    }
    Ok(())
}

/// A type's name in a CSV `type` column: this crate's labels, Zeek's
/// `Intel::` names, and the usual synonyms.
fn kind_named(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    Some(match lower.trim_start_matches("intel::") {
        "addr" | "ip" | "address" | "ipv4" | "ipv6" => Kind::Addr,
        "subnet" | "cidr" | "network" => Kind::Subnet,
        "domain" | "hostname" | "fqdn" => Kind::Domain,
        "url" | "uri" => Kind::Url,
        "hash" | "file_hash" | "md5" | "sha1" | "sha256" | "sha512" => Kind::Hash,
        _ => return None,
    })
}

/// The type of a bare indicator, from its form.
pub fn guess(value: &str) -> Result<Kind, String> {
    if value.parse::<IpAddr>().is_ok() {
        Ok(Kind::Addr)
    } else if value.parse::<IpNet>().is_ok() {
        Ok(Kind::Subnet)
    } else if value.contains("://") || value.contains('/') {
        Ok(Kind::Url)
    } else if is_hash(value) {
        Ok(Kind::Hash)
    } else if is_domain(value) {
        Ok(Kind::Domain)
    } else {
        Err(format!(
            "{value:?} is not an address, a CIDR, a domain, a URL or a hash"
        ))
    }
}

/// Checks that `value` is a `kind`.
fn check(value: &str, kind: Kind) -> Result<(), String> {
    let ok = match kind {
        Kind::Addr => value.parse::<IpAddr>().is_ok(),
        Kind::Subnet => value.parse::<IpNet>().is_ok() || value.parse::<IpAddr>().is_ok(),
        Kind::Domain => is_domain(value),
        Kind::Url => !value.is_empty() && !value.contains(char::is_whitespace),
        Kind::Hash => is_hash(value),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid {}", kind.label()))
    }
}

/// An MD5, SHA-1, SHA-256 or SHA-512 in hex.
fn is_hash(value: &str) -> bool {
    matches!(value.len(), 32 | 40 | 64 | 128) && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Letters, digits, `-`, `_` and dots, with at least one dot or a trailing
/// dot-free single label that is not numeric; or an internationalised
/// name that IDNA maps to such a name.
fn is_domain(value: &str) -> bool {
    if !value.is_ascii() {
        return crate::domain::homogenise(value, false).is_ok();
    }
    let v = value.strip_suffix('.').unwrap_or(value);
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The lines of a CSV text worth reading, with their line numbers: blank
/// lines are skipped, and `#` comment lines before the header (the first
/// line read).
pub(super) fn csv_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut header_seen = false;
    text.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || (!header_seen && line.starts_with('#')) {
            return None;
        }
        header_seen = true;
        Some((i + 1, line))
    })
}

/// Splits one CSV line (RFC 4180 quoting, no newline inside quotes) into `cells`.
pub(super) fn split_csv(line: &str, cells: &mut Vec<String>) -> Result<(), String> {
    cells.clear();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                cells.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            (false, '"') => return Err("a quote inside an unquoted CSV cell".into()),
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err("an unclosed quote".into());
    }
    cells.push(cell);
    Ok(())
}

/// The form a domain is matched in: lowercase, without a trailing dot;
/// a name that is not plain ASCII is homogenised as name fields are
/// ([`crate::domain::homogenise`]: IDNA to punycode), so `bücher.example`
/// in a feed matches `xn--bcher-kva.example` in a record. A plain name
/// that is already lowercase (a record's homogenised name) is borrowed.
pub fn domain_key(name: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let plain = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    Some(if !plain {
        crate::domain::homogenise(name, false)
            .map_or_else(|_| Cow::Owned(name.to_lowercase()), Cow::Owned)
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

/// The form a URL is matched in, as Zeek's Intel framework writes URLs:
/// no scheme, the host lowercase and without a default port, no fragment,
/// no trailing `/` on an empty path.
pub fn url_key(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => url,
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = host.rsplit('@').next().unwrap_or_default();
    let host = host
        .strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let path = if path == "/" { "" } else { path };
    let mut key = host.to_ascii_lowercase();
    key.push_str(path);
    Some(key)
}

/// The form a hash is matched in: lowercase hex.
pub fn hash_key(hash: &str) -> String {
    hash.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &str, text: &str) -> Result<(Vec<Entry>, Skipped), IntelError> {
        let mut out = Vec::new();
        let skipped = parse(file, text, &mut |e| out.push(e))?;
        Ok((out, skipped))
    }

    #[test]
    fn zeek_intel_files_with_every_type() {
        let text = "#separator \\x09\n\
#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n\
192.0.2.7\tIntel::ADDR\tfeedA\tC2 server\thttps://feed/1\n\
198.51.100.0/24\tIntel::SUBNET\tfeedA\tbad range\t-\n\
Evil.Example\tIntel::DOMAIN\t-\tphishing\t-\n\
evil.example/login.php\tIntel::URL\tfeedB\t-\t-\n\
d41d8cd98f00b204e9800998ecf8427e\tIntel::FILE_HASH\tfeedB\tempty file\t-\n\
bob@example.com\tIntel::EMAIL\tfeedB\t-\t-\n";
        let (entries, skipped) = read("/etc/intel/zeek.intel", text).expect("parses");
        assert_eq!(skipped.other_types, 1);
        let kinds: Vec<Kind> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Addr,
                Kind::Subnet,
                Kind::Domain,
                Kind::Url,
                Kind::Hash
            ]
        );
        assert_eq!(entries[0].source, "feedA");
        assert_eq!(entries[0].desc, "C2 server");
        assert_eq!(entries[0].meta, [("url".into(), "https://feed/1".into())]);
        assert_eq!(entries[2].source, "zeek", "the file's name when unset");
        assert_eq!(entries[3].desc, "");
    }

    #[test]
    fn zeek_errors_name_the_file_and_line() {
        let e = read(
            "x.intel",
            "#fields\tindicator\tindicator_type\n1.2.3.4\tIntel::ADDR\nnot-an-ip\tIntel::ADDR\n",
        )
        .expect_err("bad address");
        assert_eq!(
            e.to_string(),
            "x.intel line 3: \"not-an-ip\" is not a valid addr"
        );
        let e = read("x.intel", "#fields\tindicator\tindicator_type\n1.2.3.4\n")
            .expect_err("short row");
        assert!(
            e.to_string().starts_with("x.intel line 2: 1 tab-separated"),
            "{e}"
        );
        let e = read("x.intel", "#fields\tindicator\tmeta.source\n").expect_err("no type column");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn csv_with_extra_columns_and_quoting() {
        let text = "indicator,type,source,desc,confidence\n\
10.0.0.1,addr,feedC,\"scanner, noisy\",80\n\
10.2.0.0/16,cidr,,,\n\
\"Example.ORG\",,feedC,\"says \"\"hi\"\"\",\n\
https://evil.example/a?b=1,url,feedC,,\n\
da39a3ee5e6b4b0d3255bfef95601890afd80709,sha1,feedC,,\n";
        let (entries, _) = read("feed.csv", text).expect("parses");
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].desc, "scanner, noisy");
        assert_eq!(entries[0].meta, [("confidence".into(), "80".into())]);
        assert_eq!(entries[1].kind, Kind::Subnet);
        assert_eq!(entries[1].source, "feed", "the file's name when empty");
        assert_eq!(entries[2].kind, Kind::Domain, "guessed when empty");
        assert_eq!(entries[2].desc, "says \"hi\"");
        assert_eq!(entries[3].kind, Kind::Url);
        assert_eq!(entries[4].kind, Kind::Hash);
        let e =
            read("f.csv", "indicator,type\n1.2.3.4,addr\n1.2.3.5,bogus\n").expect_err("bad type");
        assert_eq!(e.to_string(), "f.csv line 3: \"bogus\" is not a type");
        let e = read("f.csv", "indicator,type\n\"1.2.3.4,addr\n").expect_err("quote");
        assert!(
            e.to_string().starts_with("f.csv line 2: an unclosed quote"),
            "{e}"
        );
        let e = read("f.csv", "ip,type\n").expect_err("no indicator column");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn plain_lists_guess_every_type() {
        let text = "# a list\n\n203.0.113.9\n2001:db8::/32\nbad.example.\n\
http://bad.example/x\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n";
        let (entries, _) = read("list.txt", text).expect("parses");
        let kinds: Vec<Kind> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Addr,
                Kind::Subnet,
                Kind::Domain,
                Kind::Url,
                Kind::Hash
            ]
        );
        assert!(entries.iter().all(|e| e.source == "list"));
        let e = read("list.txt", "1.2.3.4\nnot an indicator\n").expect_err("bad line");
        assert!(e.to_string().starts_with("list.txt line 2: "), "{e}");
        assert!(
            read("list.txt", "999.1.1.1\n").is_err(),
            "all digits is no domain"
        );
    }

    #[test]
    fn detection() {
        assert_eq!(detect("a.txt", "#fields\tindicator\n"), Format::Zeek);
        assert_eq!(detect("a.txt", "# c\n#fields\tindicator\n"), Format::Zeek);
        assert_eq!(detect("a.CSV", "x\n"), Format::Csv);
        assert_eq!(detect("a", "# c\nindicator,type\n"), Format::Csv);
        assert_eq!(detect("a", "# c\n1.2.3.4\n"), Format::Plain);
    }

    #[test]
    fn homogenised_forms() {
        assert_eq!(domain_key("Evil.Example.").as_deref(), Some("evil.example"));
        assert_eq!(domain_key(" ."), None);
        assert_eq!(
            domain_key("Bücher.Example").as_deref(),
            Some("xn--bcher-kva.example"),
            "IDNA, as name fields are homogenised"
        );
        assert!(matches!(
            domain_key("evil.example"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(
            url_key("HTTPS://Evil.Example:443/").as_deref(),
            Some("evil.example")
        );
        assert_eq!(
            url_key("http://u@Evil.example/A?q=1#frag").as_deref(),
            Some("evil.example/A?q=1")
        );
        assert_eq!(url_key("evil.example/A").as_deref(), Some("evil.example/A"));
        assert_eq!(url_key("http:///x"), None);
        assert_eq!(hash_key(" ABCDEF "), "abcdef");
    }
}

//! Domain names and URLs as values: one homogenised form per name, and its
//! parts from the Public Suffix List.
//!
//! ```text
//! " Example.COM." --homogenise--> Err(Wrapped)        (rejected, not guessed)
//! "WWW.Example.co.UK."  --> "www.example.co.uk" --Psl::parts--> registered  "example.co.uk"
//! ".uk.co.example.www" (reversed) --^                           top level   "co.uk"
//! "bücher.example"      --> "xn--bcher-kva.example"             subdomain   "www"
//! "https://a.example.org:8443/x/y.tar.gz?q=1" --url_parts--> scheme, host, port, path, query,
//!                                                            extension, registered domain
//! ```
//!
//! A leaf: plain functions over strings, no cache and no output format (the
//! enrichment core caches the parts per name and splices them).

use std::borrow::Cow;
use std::path::Path;

/// Longest name accepted, in bytes, without the trailing dot (RFC 1035).
pub const MAX_NAME: usize = 253;
/// Longest label accepted, in bytes (RFC 1035).
pub const MAX_LABEL: usize = 63;

/// Why a value is not a domain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotADomain {
    /// The value is empty (or only the root's dot).
    #[error("empty name")]
    Empty,
    /// Whitespace or a bracket around the name (`" a.com"`, `"[::1]"`): a
    /// value that is not a bare name is rejected rather than guessed at.
    #[error("whitespace or brackets around the name")]
    Wrapped,
    /// A character that no host name holds (after IDNA mapping).
    #[error("a character not allowed in a host name")]
    BadCharacter,
    /// An empty label (`a..b`, `.a`).
    #[error("an empty label")]
    EmptyLabel,
    /// A label over 63 bytes.
    #[error("a label over {MAX_LABEL} bytes")]
    LabelTooLong,
    /// A name over 253 bytes.
    #[error("a name over {MAX_NAME} bytes")]
    TooLong,
    /// IDNA refused the name (bad punycode, disallowed code points, ...).
    #[error("IDNA refused the name")]
    Idna,
    /// The value is an IP address, not a name.
    #[error("an IP address, not a name")]
    Address,
}

impl NotADomain {
    /// A fixed label, one per variant.
    pub fn label(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Wrapped => "wrapped",
            Self::BadCharacter => "bad_character",
            Self::EmptyLabel => "empty_label",
            Self::LabelTooLong => "label_too_long",
            Self::TooLong => "too_long",
            Self::Idna => "idna",
            Self::Address => "address",
        }
    }
}

/// The homogenised form of a host name: lowercase, without the trailing dot,
/// IDNA mapped to its ASCII (punycode) form, every label 1..=63 bytes of
/// `a-z`, `0-9`, `-` or `_` (underscores are common in DNS queries:
/// `_dmarc.`, `_ldap._tcp.`), at most 253 bytes.
///
/// `reversed` reads a name written right to left (`.com.example` and
/// `com.example` both give `example.com`). A `host:port` value (an HTTP
/// `Host` header) loses its port. An IP address is [`NotADomain::Address`].
pub fn homogenise(raw: &str, reversed: bool) -> Result<String, NotADomain> {
    let (Some(first), Some(last)) = (raw.chars().next(), raw.chars().last()) else {
        return Err(NotADomain::Empty);
    };
    let wrapping = |c: char| c.is_whitespace() || matches!(c, '[' | ']' | '(' | ')' | '<' | '>');
    if wrapping(first) || wrapping(last) {
        return Err(NotADomain::Wrapped);
    }
    let name: Cow<'_, str> = if reversed {
        let inner = raw.strip_prefix('.').unwrap_or(raw);
        let inner = inner.strip_suffix('.').unwrap_or(inner);
        let mut out = String::with_capacity(inner.len());
        for (i, label) in inner.rsplit('.').enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(label);
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(without_port(raw))
    };
    let name = name.strip_suffix('.').unwrap_or(&name);
    if name.is_empty() {
        return Err(NotADomain::Empty);
    }
    let plain = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let has_punycode = || {
        name.split('.')
            .any(|l| l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")))
    };
    let ascii = if plain && !has_punycode() {
        name.to_ascii_lowercase()
    } else {
        if name.split('.').any(str::is_empty) {
            return Err(NotADomain::EmptyLabel);
        }
        idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| NotADomain::Idna)?
            .into_owned()
    };
    check(&ascii)?;
    Ok(ascii)
}

/// `host` without a `:port` suffix (one colon, digits after it).
fn without_port(raw: &str) -> &str {
    match raw.split_once(':') {
        Some((host, port))
            if !port.is_empty() && port.len() <= 5 && port.bytes().all(|c| c.is_ascii_digit()) =>
        {
            host
        }
        _ => raw,
    }
}

/// Checks a lowercase ASCII name: characters, label and name lengths, and
/// that it does not end in a number (which makes it an IPv4 address to a URL
/// parser).
fn check(name: &str) -> Result<(), NotADomain> {
    if name.is_empty() {
        return Err(NotADomain::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NotADomain::TooLong);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NotADomain::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(NotADomain::LabelTooLong);
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'))
        {
            return Err(NotADomain::BadCharacter);
        }
        last = label;
    }
    // WHATWG: a host whose last label is a decimal or 0x number is an IPv4
    // address (`10.0.0.1`, `0x7f.1`).
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
    if last.bytes().all(|c| c.is_ascii_digit()) || hex {
        return Err(NotADomain::Address);
    }
    Ok(())
}

/// The parts of a homogenised name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parts<'a> {
    /// The registered domain (eTLD+1): `example.co.uk`. `None` for a public
    /// suffix itself and for a single label.
    pub registered_domain: Option<&'a str>,
    /// The public suffix: `co.uk`. `None` for a single label, which the
    /// list's default rule would otherwise call a top-level domain.
    pub top_level_domain: Option<&'a str>,
    /// What precedes the registered domain: `www`. `None` when empty.
    pub subdomain: Option<&'a str>,
}

/// Why a public suffix list file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PslError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a public suffix list.
    #[error("{path} is not a public suffix list: {problem}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        problem: String,
    },
}

/// The Public Suffix List: the copy compiled into the binary, or one read
/// from a `public_suffix_list.dat` file (ICANN and private sections both).
#[derive(Debug, Clone, Default)]
pub enum Psl {
    /// The list compiled in (the `psl` crate).
    #[default]
    Builtin,
    /// A list read from a file (the `publicsuffix` crate).
    File(Box<publicsuffix::List>),
}

impl Psl {
    /// Reads a list from a `public_suffix_list.dat` file.
    pub fn from_file(path: &Path) -> Result<Self, PslError> {
        let text = std::fs::read(path).map_err(|source| PslError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let list = publicsuffix::List::from_bytes(&text).map_err(|e| PslError::Parse {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        if list.is_empty() {
            return Err(PslError::Parse {
                path: path.display().to_string(),
                problem: "no rules".into(),
            });
        }
        Ok(Self::File(Box::new(list)))
    }

    /// The parts of `name`, a homogenised name (see [`homogenise`]).
    pub fn parts<'a>(&self, name: &'a str) -> Parts<'a> {
        match self {
            Self::Builtin => parts(&psl::List, name),
            Self::File(list) => parts(list.as_ref(), name),
        }
    }
}

fn parts<'a>(list: &impl psl::Psl, name: &'a str) -> Parts<'a> {
    if !name.contains('.') {
        return Parts::default();
    }
    let Some(suffix) = list.suffix(name.as_bytes()) else {
        return Parts::default();
    };
    let tail = |len: usize| name.get(name.len() - len..);
    let top_level_domain = tail(suffix.as_bytes().len());
    let registered_domain = list
        .domain(name.as_bytes())
        .and_then(|d| tail(d.as_bytes().len()));
    let subdomain = registered_domain.and_then(|r| {
        name.get(..name.len() - r.len())
            .and_then(|s| s.strip_suffix('.'))
            .filter(|s| !s.is_empty())
    });
    Parts {
        registered_domain,
        top_level_domain,
        subdomain,
    }
}

/// The parts of a URL, as a WHATWG parser sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UrlParts {
    /// `https`.
    pub scheme: String,
    /// The host (a name in its homogenised form, or an address).
    pub host: Option<String>,
    /// The port, when the URL names one other than its scheme's default.
    pub port: Option<u16>,
    /// The path, percent-encoded as the parser leaves it: `/a/b.html`.
    pub path: String,
    /// The query without its `?`, when not empty.
    pub query: Option<String>,
    /// The last path segment's extension, without the dot: `html`.
    pub extension: Option<String>,
    /// The host's registered domain.
    pub registered_domain: Option<String>,
}

/// Parses an absolute URL; `None` when the WHATWG parser refuses it.
pub fn url_parts(raw: &str, list: &Psl) -> Option<UrlParts> {
    let url = url::Url::parse(raw).ok()?;
    let (host, registered_domain) = match url.host() {
        Some(url::Host::Domain(d)) => {
            let registered = list.parts(d).registered_domain.map(str::to_owned);
            (Some(d.to_owned()), registered)
        }
        Some(url::Host::Ipv4(a)) => (Some(a.to_string()), None),
        Some(url::Host::Ipv6(a)) => (Some(a.to_string()), None),
        None => (None, None),
    };
    let path = url.path();
    let extension = path
        .rsplit('/')
        .next()
        .and_then(|segment| segment.rsplit_once('.'))
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty())
        .map(str::to_owned);
    Some(UrlParts {
        scheme: url.scheme().to_owned(),
        host,
        port: url.port(),
        path: path.to_owned(),
        query: url.query().filter(|q| !q.is_empty()).map(str::to_owned),
        extension,
        registered_domain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_homogenised() {
        for (raw, want) in [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("_dmarc.Example.com", "_dmarc.example.com"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
            ("www.example.com:8080", "www.example.com"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(homogenise(raw, false).as_deref(), Ok(want), "{raw}");
        }
        assert_eq!(
            homogenise(".com.example", true).as_deref(),
            Ok("example.com")
        );
        assert_eq!(
            homogenise("com.example.www", true).as_deref(),
            Ok("www.example.com")
        );
        assert_eq!(
            homogenise("com.example.", true).as_deref(),
            Ok("example.com")
        );
    }

    #[test]
    fn what_is_not_a_name_is_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        for (raw, why) in [
            ("", NotADomain::Empty),
            (".", NotADomain::Empty),
            (" example.com", NotADomain::Wrapped),
            ("example.com\n", NotADomain::Wrapped),
            ("[example.com]", NotADomain::Wrapped),
            ("[::1]", NotADomain::Wrapped),
            ("exa mple.com", NotADomain::Idna),
            ("a..b", NotADomain::EmptyLabel),
            (".a.com", NotADomain::EmptyLabel),
            ("a.com..", NotADomain::EmptyLabel),
            ("ex*ample.com", NotADomain::BadCharacter),
            ("ex!ample.com", NotADomain::BadCharacter),
            ("http://example.com/", NotADomain::Idna),
            (long_label.as_str(), NotADomain::LabelTooLong),
            (long_name.as_str(), NotADomain::TooLong),
            ("xn--a.com", NotADomain::Idna),
            ("10.0.0.1", NotADomain::Address),
            ("0x7f.1", NotADomain::Address),
        ] {
            assert_eq!(homogenise(raw, false), Err(why), "{raw:?}");
        }
        assert!(homogenise(&"a".repeat(63), false).is_ok());
    }

    fn parts_of(name: &str) -> (Option<&str>, Option<&str>, Option<&str>) {
        let p = Psl::Builtin.parts(name);
        (p.registered_domain, p.top_level_domain, p.subdomain)
    }

    #[test]
    fn public_suffix_list_edges() {
        for (name, want) in [
            (
                "www.example.co.uk",
                (Some("example.co.uk"), Some("co.uk"), Some("www")),
            ),
            (
                "example.co.uk",
                (Some("example.co.uk"), Some("co.uk"), None),
            ),
            // A bare suffix has no registered domain.
            ("co.uk", (None, Some("co.uk"), None)),
            (
                "a.b.example.com",
                (Some("example.com"), Some("com"), Some("a.b")),
            ),
            // Wildcard `*.ck` and its exception `!www.ck`.
            ("a.b.ck", (Some("a.b.ck"), Some("b.ck"), None)),
            ("x.www.ck", (Some("www.ck"), Some("ck"), Some("x"))),
            // Wildcard `*.kawasaki.jp` and exception `!city.kawasaki.jp`.
            (
                "www.city.kawasaki.jp",
                (Some("city.kawasaki.jp"), Some("kawasaki.jp"), Some("www")),
            ),
            // A single label: no parts at all.
            ("localhost", (None, None, None)),
            // An unknown top-level domain: the default rule `*`.
            (
                "host.corp.internal",
                (Some("corp.internal"), Some("internal"), Some("host")),
            ),
            // IDN: rules are matched in punycode.
            (
                "www.xn--fiqs8s",
                (Some("www.xn--fiqs8s"), Some("xn--fiqs8s"), None),
            ),
            (
                "a.b.xn--55qx5d.cn",
                (Some("b.xn--55qx5d.cn"), Some("xn--55qx5d.cn"), Some("a")),
            ),
            // Private section rules count.
            (
                "me.github.io",
                (Some("me.github.io"), Some("github.io"), None),
            ),
        ] {
            assert_eq!(parts_of(name), want, "{name}");
        }
    }

    #[test]
    fn a_list_file_replaces_the_builtin_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("public_suffix_list.dat");
        std::fs::write(
            &path,
            "// ===BEGIN ICANN DOMAINS===\ncom\nexample.com\n// ===END ICANN DOMAINS===\n",
        )
        .expect("written");
        let list = Psl::from_file(&path).expect("a list");
        let p = list.parts("a.b.example.com");
        assert_eq!(p.registered_domain, Some("b.example.com"));
        assert_eq!(p.top_level_domain, Some("example.com"));
        assert!(Psl::from_file(&dir.path().join("missing")).is_err());
        std::fs::write(&path, "// nothing\n").expect("written");
        assert!(Psl::from_file(&path).is_err());
    }

    #[test]
    fn urls_are_split() {
        let u = url_parts(
            "https://WWW.Example.co.uk:8443/a/b.Tar.gz?q=1#f",
            &Psl::Builtin,
        )
        .expect("a URL");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host.as_deref(), Some("www.example.co.uk"));
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.path, "/a/b.Tar.gz");
        assert_eq!(u.query.as_deref(), Some("q=1"));
        assert_eq!(u.extension.as_deref(), Some("gz"));
        assert_eq!(u.registered_domain.as_deref(), Some("example.co.uk"));
        let u = url_parts("http://10.0.0.1/", &Psl::Builtin).expect("a URL");
        assert_eq!(u.host.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            (u.port, u.extension, u.registered_domain),
            (None, None, None)
        );
        assert!(url_parts("/relative", &Psl::Builtin).is_none());
        assert!(url_parts("", &Psl::Builtin).is_none());
    }

    proptest! {
        #[test]
        fn homogenising_never_panics(raw in "\\PC{0,80}", reversed: bool) {
            let _ = homogenise(&raw, reversed);
        }

        #[test]
        fn homogenising_is_idempotent(raw in "[a-zA-Z0-9_.:\\-é日本ß]{1,70}") {
            if let Ok(name) = homogenise(&raw, false) {
                prop_assert_eq!(homogenise(&name, false), Ok(name.clone()));
                let parts = Psl::Builtin.parts(&name);
                if let Some(r) = parts.registered_domain {
                    prop_assert!(name.ends_with(r));
                }
            }
        }

        #[test]
        fn valid_names_agree_with_the_url_parser(raw in "[a-zA-Z0-9_\\-é日本ß]{1,20}(\\.[a-zA-Z0-9_\\-é日本ß]{1,20}){0,4}\\.?") {
            if let Ok(name) = homogenise(&raw, false) {
                let url = url::Url::parse(&format!("http://{raw}/")).expect("the URL parser takes a valid name");
                prop_assert_eq!(url.host_str().map(|h| h.strip_suffix('.').unwrap_or(h)), Some(name.as_str()));
            }
        }
    }
}

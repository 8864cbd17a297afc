//! Zeek log records written the way Zeek's JSON and TSV writers write them,
//! and a small seeded random source, for the synthetic logs of the load test
//! (`loadtest gen`, `loadtest demo`, `loadtest demo --pipe`).

use std::fmt::Write as _;

/// SplitMix64: tiny, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..hi` (the modulo bias does not matter at these sizes).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One of `items`, uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64) as usize]
    }

    /// Picks with a heavy head, as real traffic does: about half the picks land on the
    /// first tenth of `items`.
    pub fn skewed<T: Copy>(&mut self, items: &[T]) -> T {
        let u = self.unit();
        items[((u * u * u * items.len() as f64) as usize).min(items.len() - 1)]
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.range(0, i as u64 + 1) as usize);
        }
    }
}

/// One Zeek field value, written as Zeek's JSON or TSV writer would.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// `string`, `addr`, `enum`.
    Str(String),
    /// `time`, `interval`, `count`, `port`, already formatted.
    Num(String),
    /// `bool`.
    Bool(bool),
    /// `set[..]` or `vector[..]`.
    List(Vec<Val>),
    /// No value: left out of JSON, `-` in TSV.
    Unset,
}

/// One log record: its path and `(field, Zeek type, value)` in column order.
#[derive(Debug, Clone)]
pub struct Record {
    /// The log's path (`conn`, `dns`, ...).
    pub path: &'static str,
    /// `(field, Zeek type, value)` in column order.
    pub fields: Vec<(&'static str, &'static str, Val)>,
}

impl Record {
    /// A record of `path` without fields.
    pub fn new(path: &'static str) -> Self {
        Self {
            path,
            fields: Vec::with_capacity(24),
        }
    }

    /// Appends a field.
    pub fn set(&mut self, name: &'static str, ty: &'static str, value: Val) {
        self.fields.push((name, ty, value));
    }

    /// Appends a string-like field.
    pub fn str(&mut self, name: &'static str, ty: &'static str, value: impl Into<String>) {
        self.set(name, ty, Val::Str(value.into()));
    }

    /// Appends a numeric field, formatted as given.
    pub fn num(&mut self, name: &'static str, ty: &'static str, value: impl std::fmt::Display) {
        self.set(name, ty, Val::Num(value.to_string()));
    }

    /// Appends a `bool` field.
    pub fn flag(&mut self, name: &'static str, value: bool) {
        self.set(name, "bool", Val::Bool(value));
    }

    /// The value of a string field, or `""`.
    pub fn text(&self, name: &str) -> &str {
        match self.fields.iter().find(|(n, _, _)| *n == name) {
            Some((_, _, Val::Str(text))) => text,
            _ => "",
        }
    }

    /// The record as one line of Zeek's JSON writer (unset fields left out).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("{\"_path\":");
        json_str(&mut out, self.path);
        for (name, _, value) in self
            .fields
            .iter()
            .filter(|(_, _, v)| !matches!(v, Val::Unset))
        {
            out.push(',');
            json_str(&mut out, name);
            out.push(':');
            json_val(&mut out, value);
        }
        out.push('}');
        out
    }

    /// The record as one row of Zeek's TSV writer.
    pub fn to_tsv(&self) -> String {
        let cells: Vec<String> = self
            .fields
            .iter()
            .map(|(_, _, value)| tsv_val(value))
            .collect();
        cells.join("\t")
    }

    /// The header of a TSV log of this record's path and columns.
    pub fn tsv_header(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|(name, _, _)| *name).collect();
        let types: Vec<&str> = self.fields.iter().map(|(_, ty, _)| *ty).collect();
        format!(
            "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n\
             #path\t{}\n#open\t2023-11-14-22-13-20\n#fields\t{}\n#types\t{}\n",
            self.path,
            names.join("\t"),
            types.join("\t")
        )
    }
}

fn json_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_val(out: &mut String, value: &Val) {
    match value {
        Val::Str(text) => json_str(out, text),
        Val::Num(number) => out.push_str(number),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_val(out, item);
            }
            out.push(']');
        }
        Val::Unset => out.push_str("null"),
    }
}

fn tsv_val(value: &Val) -> String {
    match value {
        Val::Str(text) | Val::Num(text) => text.clone(),
        Val::Bool(b) => if *b { "T" } else { "F" }.to_owned(),
        Val::List(items) if items.is_empty() => "(empty)".to_owned(),
        Val::List(items) => items.iter().map(tsv_val).collect::<Vec<_>>().join(","),
        Val::Unset => "-".to_owned(),
    }
}

/// The fields of a Zeek `conn` record after its timestamp, uid and 4-tuple,
/// as one of `proto` with `service` would have them: most connections
/// established, a few unanswered attempts (`S0`). `local` is `local_orig` and
/// `local_resp`.
pub fn conn_fields(
    r: &mut Record,
    rng: &mut Rng,
    proto: &'static str,
    service: &'static str,
    local: (bool, bool),
) {
    r.str("proto", "enum", proto);
    // A few attempts go unanswered (S0): no service, duration or payload.
    let established = rng.chance(0.85);
    let (orig_bytes, resp_bytes) = match established {
        true => (rng.range(200, 20_000), rng.range(500, 2_000_000)),
        false => (0, 0),
    };
    let (orig_pkts, resp_pkts) = match established {
        true => (orig_bytes / 900 + 3, resp_bytes / 1_300 + 3),
        false => (1, 0),
    };
    if established {
        r.str("service", "string", service);
        r.num("duration", "interval", format!("{:.6}", rng.unit() * 30.0));
        r.num("orig_bytes", "count", orig_bytes);
        r.num("resp_bytes", "count", resp_bytes);
    } else {
        for (name, ty) in [
            ("service", "string"),
            ("duration", "interval"),
            ("orig_bytes", "count"),
            ("resp_bytes", "count"),
        ] {
            r.set(name, ty, Val::Unset);
        }
    }
    r.str(
        "conn_state",
        "string",
        if established { "SF" } else { "S0" },
    );
    r.flag("local_orig", local.0);
    r.flag("local_resp", local.1);
    r.num("missed_bytes", "count", 0);
    let history = match (established, proto) {
        (false, _) => "S",
        (true, "tcp") => "ShADadFf",
        (true, _) => "Dd",
    };
    r.str("history", "string", history);
    r.num("orig_pkts", "count", orig_pkts);
    r.num("orig_ip_bytes", "count", orig_bytes + orig_pkts * 60);
    r.num("resp_pkts", "count", resp_pkts);
    r.num("resp_ip_bytes", "count", resp_bytes + resp_pkts * 60);
    r.set("tunnel_parents", "set[string]", Val::List(Vec::new()));
}

/// The fields of a Zeek `dns` record after its timestamp, uid and 4-tuple, up
/// to its answers: a UDP query for `query` (AAAA when `aaaa`), answered
/// `NOERROR` or `NXDOMAIN`.
pub fn dns_fields(r: &mut Record, rng: &mut Rng, query: &str, aaaa: bool, nxdomain: bool) {
    r.str("proto", "enum", "udp");
    r.num("trans_id", "count", rng.range(1, 65_535));
    r.num(
        "rtt",
        "interval",
        format!("{:.6}", 0.002 + rng.unit() * 0.05),
    );
    r.str("query", "string", query);
    r.num("qclass", "count", 1);
    r.str("qclass_name", "string", "C_INTERNET");
    r.num("qtype", "count", if aaaa { 28 } else { 1 });
    r.str("qtype_name", "string", if aaaa { "AAAA" } else { "A" });
    r.num("rcode", "count", if nxdomain { 3 } else { 0 });
    r.str(
        "rcode_name",
        "string",
        if nxdomain { "NXDOMAIN" } else { "NOERROR" },
    );
    for (name, value) in [("AA", false), ("TC", false), ("RD", true), ("RA", true)] {
        r.flag(name, value);
    }
    r.num("Z", "count", 0);
}

/// Domain names for queries and server names.
pub const DOMAINS: [&str; 8] = [
    "www.example.com",
    "api.example.net",
    "cdn.example.org",
    "mail.example.com",
    "updates.example.net",
    "telemetry.example.org",
    "login.example.com",
    "static.example.net",
];

/// Protocol, responder port and Zeek service of a connection, by popularity.
pub const SERVICES: [(&str, u16, &str); 6] = [
    ("tcp", 443, "ssl"),
    ("tcp", 443, "ssl"),
    ("tcp", 80, "http"),
    ("udp", 443, "quic"),
    ("tcp", 22, "ssh"),
    ("udp", 123, "ntp"),
];

/// TLS cipher suites.
pub const CIPHERS: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
];

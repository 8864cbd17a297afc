//! The enrichment as bytes: per-address fragments ready to splice, and the
//! splicer that writes them into the original record before its closing brace.
//!
//! A [`Fragment`] holds the JSON-encoded values of one address's enrichment
//! (country, org, PTR, provenance, ...) and is built once per cache fill. A
//! record then costs only a few `extend_from_slice` calls per IP field: the
//! member names depend on the field (`id.resp_h_country`), so the key prefix
//! is precomputed per configured field and the values are shared.
//!
//! Three namings, chosen once (`output.naming`):
//!
//! ```text
//! flat    "id.resp_h_country":"SE"            (prefix + attribute name)
//! nested  "id.resp_h_enr":{"country":"SE"}    (one object per field)
//! ecs     "destination.geo.country_iso_code":"SE"
//!         (the field's ECS object from output.ecs_fields + the attribute's
//!          ECS name, see [`ecs_name`]; a name or URL field's attributes
//!          under the keys of output.ecs_domain_fields / ecs_url_fields, see
//!          [`EcsMap`]; an attribute ECS has no field for, or a field with
//!          no ECS key, falls back to flat naming)
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;

pub use crate::config::{Attr, Naming};

/// The JSON-encoded enrichment of one address: a list of attributes with
/// their values, stored contiguously.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    buf: Box<[u8]>,
    members: Box<[(Attr, u32, u32)]>,
}

impl Fragment {
    /// True when the fragment carries no attribute.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The attributes and their JSON values, in insertion order.
    pub fn members(&self) -> impl Iterator<Item = (Attr, &[u8])> {
        self.members.iter().map(|&(attr, start, end)| {
            (
                attr,
                self.buf
                    .get(start as usize..end as usize)
                    .unwrap_or_default(),
            )
        })
    }

    /// The JSON value of one attribute, if present.
    pub fn get(&self, attr: Attr) -> Option<&[u8]> {
        self.members().find(|(a, _)| *a == attr).map(|(_, v)| v)
    }

    /// Bytes held, for the cache's byte bound.
    pub fn weight(&self) -> usize {
        self.buf.len() + self.members.len() * std::mem::size_of::<(Attr, u32, u32)>()
    }
}

/// Builds a [`Fragment`] one attribute at a time.
#[derive(Debug, Default)]
pub struct FragmentBuilder {
    buf: Vec<u8>,
    members: Vec<(Attr, u32, u32)>,
}

impl FragmentBuilder {
    /// Adds a string attribute, JSON-escaped.
    pub fn str(&mut self, attr: Attr, value: &str) {
        let start = self.buf.len();
        write_str(&mut self.buf, value);
        self.push(attr, start);
    }

    /// Adds an unsigned number attribute.
    pub fn uint(&mut self, attr: Attr, value: u64) {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.push(attr, start);
    }

    /// Adds a boolean attribute.
    pub fn bool(&mut self, attr: Attr, value: bool) {
        let start = self.buf.len();
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self.push(attr, start);
    }

    /// Adds any JSON value (a custom database's), unless its text is longer
    /// than `max_len` bytes.
    pub fn json(&mut self, attr: Attr, value: &serde_json::Value, max_len: usize) {
        let start = self.buf.len();
        if serde_json::to_writer(&mut self.buf, value).is_err() || self.buf.len() - start > max_len
        {
            self.buf.truncate(start);
            return;
        }
        self.push(attr, start);
    }

    /// Adds a location as `{"lat":..,"lon":..}`; non-finite values are dropped.
    pub fn location(&mut self, lat: f64, lon: f64) {
        if !lat.is_finite() || !lon.is_finite() {
            return;
        }
        let start = self.buf.len();
        let mut fmt = ryu::Buffer::new();
        self.buf.extend_from_slice(b"{\"lat\":");
        self.buf
            .extend_from_slice(fmt.format_finite(lat).as_bytes());
        self.buf.extend_from_slice(b",\"lon\":");
        self.buf
            .extend_from_slice(fmt.format_finite(lon).as_bytes());
        self.buf.push(b'}');
        self.push(Attr::Location, start);
    }

    /// Appends every member of an existing fragment.
    pub fn extend(&mut self, other: &Fragment) {
        for (attr, value) in other.members() {
            let start = self.buf.len();
            self.buf.extend_from_slice(value);
            self.push(attr, start);
        }
    }

    fn push(&mut self, attr: Attr, start: usize) {
        // Fragments are a few hundred bytes; u32 offsets cannot overflow.
        self.members
            .push((attr, start as u32, self.buf.len() as u32));
    }

    /// Finishes the fragment, leaving the builder empty for reuse.
    pub fn build(&mut self) -> Fragment {
        let fragment = Fragment {
            buf: self.buf.as_slice().into(),
            members: self.members.as_slice().into(),
        };
        self.buf.clear();
        self.members.clear();
        fragment
    }
}

/// The ECS name of an attribute under its field's ECS object (`geo.city_name`
/// under `destination`); `None` for what ECS has no field for (ISP names,
/// anonymity flags, custom attributes, provenance), which stays in flat
/// naming.
///
/// The registered domain of an address's PTR name is `registered_domain`;
/// its other parts (`top_level_domain`, `subdomain`) are not written for PTR
/// names.
pub fn ecs_name(attr: Attr) -> Option<&'static str> {
    Some(match attr {
        Attr::Country => "geo.country_iso_code",
        Attr::CountryName => "geo.country_name",
        Attr::Continent => "geo.continent_code",
        Attr::City => "geo.city_name",
        Attr::Subdivision => "geo.region_iso_code",
        Attr::SubdivisionName => "geo.region_name",
        Attr::Location => "geo.location",
        Attr::Timezone => "geo.timezone",
        Attr::Postal => "geo.postal_code",
        Attr::Asn => "as.number",
        Attr::Org => "as.organization.name",
        Attr::Ptr => "domain",
        // The registered domain of that PTR name (`[domains]`).
        Attr::PtrRegisteredDomain => "registered_domain",
        _ => return None,
    })
}

/// Where ECS naming puts each field's enrichment, from `[output]`.
///
/// Every ECS key is written by one field at most. Keys are handed out in
/// this order: the address fields' PTR names (`destination.domain`,
/// `destination.registered_domain`, when PTR lookups are on), then name
/// fields, then URL fields; a key already taken leaves the attribute in flat
/// naming. A name field's registered domain, top-level domain and subdomain
/// go under its ECS object together or not at all, so the parts under one
/// object always come from one name.
#[derive(Debug, Clone, Copy)]
pub struct EcsMap<'a> {
    /// Address field -> ECS object (`output.ecs_fields`).
    pub addresses: &'a BTreeMap<String, String>,
    /// Name field -> the ECS key of its homogenised name
    /// (`output.ecs_domain_fields`: `query` -> `dns.question.name`).
    pub names: &'a BTreeMap<String, String>,
    /// URL field -> ECS object of its parts (`output.ecs_url_fields`: `uri` -> `url`).
    pub urls: &'a BTreeMap<String, String>,
    /// Whether the address fields get a PTR name.
    pub ptr: bool,
}

/// The ECS object holding the parts of a name written under `key`:
/// `dns.question.name` -> `dns.question`, `url.domain` -> `url`,
/// `tls.client.server_name` -> `destination` (the server it names),
/// `<object>.domain` -> `<object>`; `None` when ECS has no parts there.
fn parts_object(key: &str) -> Option<&str> {
    match key {
        "dns.question.name" => Some("dns.question"),
        "tls.client.server_name" => Some("destination"),
        _ => key.strip_suffix(".domain"),
    }
}

/// The explicit ECS keys of each field's name and URL attributes; see [`EcsMap`].
fn ecs_keys(fields: &[impl AsRef<str>], map: &EcsMap<'_>) -> Vec<Vec<(Attr, String)>> {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    if map.ptr {
        for object in map.addresses.values() {
            taken.insert(format!("{object}.domain"));
            taken.insert(format!("{object}.registered_domain"));
        }
    }
    let mut out = vec![Vec::new(); fields.len()];
    let index = |field: &str| fields.iter().position(|f| f.as_ref() == field);
    for (field, key) in map.names {
        let Some(i) = index(field) else { continue };
        let mut keys = Vec::new();
        if taken.insert(key.clone()) {
            keys.push((Attr::HostName, key.clone()));
        }
        if let Some(object) = parts_object(key) {
            let parts = [
                (Attr::RegisteredDomain, "registered_domain"),
                (Attr::TopLevelDomain, "top_level_domain"),
                (Attr::Subdomain, "subdomain"),
            ]
            .map(|(attr, name)| (attr, format!("{object}.{name}")));
            if parts.iter().all(|(_, k)| !taken.contains(k)) {
                for (attr, k) in parts {
                    taken.insert(k.clone());
                    keys.push((attr, k));
                }
            }
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = keys;
        }
    }
    for (field, object) in map.urls {
        let Some(i) = index(field) else { continue };
        let mut keys = Vec::new();
        for (attr, name) in [
            (Attr::Scheme, "scheme"),
            (Attr::Host, "domain"),
            (Attr::Port, "port"),
            (Attr::Path, "path"),
            (Attr::Query, "query"),
            (Attr::Extension, "extension"),
            (Attr::RegisteredDomain, "registered_domain"),
        ] {
            let key = format!("{object}.{name}");
            if taken.insert(key.clone()) {
                keys.push((attr, key));
            }
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = keys;
        }
    }
    out
}

/// A field's explicit ECS keys: attribute, then its key (opening quote, no
/// closing one).
type EcsKeys = Box<[(Attr, Box<[u8]>)]>;

/// Writes enrichment into records. Built once from the configured fields.
#[derive(Debug, Clone)]
pub struct Splicer {
    naming: Naming,
    /// Per configured field: `"<field><sep>` (flat) or `"<field><suffix>":{`
    /// (nested), JSON-escaped, opening quote included.
    prefixes: Vec<Vec<u8>>,
    /// Per configured field: `"<field><suffix>":[`, for fields that hold a
    /// list of addresses (DNS `answers`), written as one object per address.
    array_prefixes: Vec<Vec<u8>>,
    /// ECS naming, per configured field: `"<object>.` (opening quote, no
    /// closing one) when `output.ecs_fields` names an object for it.
    ecs: Vec<Option<Vec<u8>>>,
    /// ECS naming, per configured field: the full key (opening quote, no
    /// closing one) of each attribute of a name or URL field that has one.
    ecs_keys: Vec<EcsKeys>,
}

impl Splicer {
    /// Precomputes the member-name prefix of each field.
    pub fn new(
        fields: &[impl AsRef<str>],
        naming: Naming,
        separator: &str,
        nested_suffix: &str,
    ) -> Self {
        let key = |field: &str, suffix: &str, open: &[u8]| {
            let mut key = Vec::new();
            write_str(&mut key, &format!("{field}{suffix}"));
            if open.is_empty() {
                key.pop(); // the closing quote comes after the attribute name
            } else {
                key.push(b':');
                key.extend_from_slice(open);
            }
            key
        };
        let prefixes = fields
            .iter()
            .map(|field| match naming {
                Naming::Flat | Naming::Ecs => key(field.as_ref(), separator, b""),
                Naming::Nested => key(field.as_ref(), nested_suffix, b"{"),
            })
            .collect();
        let array_prefixes = fields
            .iter()
            .map(|f| key(f.as_ref(), nested_suffix, b"["))
            .collect();
        Self {
            naming,
            prefixes,
            array_prefixes,
            ecs: vec![None; fields.len()],
            ecs_keys: vec![Box::default(); fields.len()],
        }
    }

    /// With ECS naming: the ECS keys of each of `fields` (the same list, in
    /// the same order, as given to [`Splicer::new`]); see [`EcsMap`].
    #[must_use]
    pub fn with_ecs(mut self, fields: &[impl AsRef<str>], map: &EcsMap<'_>) -> Self {
        let quoted = |key: &str| {
            let mut out = Vec::new();
            write_str(&mut out, key);
            out.pop(); // the closing quote comes after the attribute name
            out
        };
        self.ecs = fields
            .iter()
            .map(|field| Some(quoted(&format!("{}.", map.addresses.get(field.as_ref())?))))
            .collect();
        self.ecs_keys = ecs_keys(fields, map)
            .into_iter()
            .map(|keys| {
                keys.into_iter()
                    .map(|(attr, key)| (attr, quoted(&key).into_boxed_slice()))
                    .collect()
            })
            .collect();
        self
    }

    /// Starts the output of one record: copies `record[..close]` (everything
    /// before the closing brace) and remembers whether a comma is needed.
    pub fn begin<'o>(
        &self,
        record: &[u8],
        close: usize,
        members: usize,
        out: &'o mut Vec<u8>,
    ) -> Splice<'o, '_> {
        out.extend_from_slice(record.get(..close).unwrap_or(record));
        Splice {
            splicer: self,
            out,
            need_comma: members > 0,
        }
    }
}

/// One record being spliced; see [`Splicer::begin`].
pub struct Splice<'o, 's> {
    splicer: &'s Splicer,
    out: &'o mut Vec<u8>,
    need_comma: bool,
}

impl Splice<'_, '_> {
    /// Writes the enrichment of one field: the shared fragment plus members
    /// that vary per record (the answering tier).
    pub fn field(&mut self, field: usize, fragment: &Fragment, extra: &[(Attr, &[u8])]) {
        if fragment.is_empty() && extra.is_empty() {
            return;
        }
        let Some(prefix) = self.splicer.prefixes.get(field) else {
            return;
        };
        let members = fragment.members().chain(extra.iter().copied());
        match self.splicer.naming {
            Naming::Flat => {
                for (attr, value) in members {
                    if self.need_comma {
                        self.out.push(b',');
                    }
                    self.need_comma = true;
                    self.out.extend_from_slice(prefix);
                    self.out.extend_from_slice(attr.name().as_bytes());
                    self.out.extend_from_slice(b"\":");
                    self.out.extend_from_slice(value);
                }
            }
            Naming::Ecs => {
                let object = self.splicer.ecs.get(field).and_then(Option::as_ref);
                let keys = self.splicer.ecs_keys.get(field).map_or(&[][..], |k| &k[..]);
                for (attr, value) in members {
                    if self.need_comma {
                        self.out.push(b',');
                    }
                    self.need_comma = true;
                    let key = keys.iter().find(|(a, _)| *a == attr).map(|(_, k)| k);
                    match (key, object, ecs_name(attr)) {
                        (Some(key), _, _) => self.out.extend_from_slice(key),
                        (None, Some(object), Some(name)) => {
                            self.out.extend_from_slice(object);
                            self.out.extend_from_slice(name.as_bytes());
                        }
                        _ => {
                            self.out.extend_from_slice(prefix);
                            self.out.extend_from_slice(attr.name().as_bytes());
                        }
                    }
                    self.out.extend_from_slice(b"\":");
                    self.out.extend_from_slice(value);
                }
            }
            Naming::Nested => {
                if self.need_comma {
                    self.out.push(b',');
                }
                self.need_comma = true;
                self.out.extend_from_slice(prefix);
                for (i, (attr, value)) in members.enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.out.push(b'"');
                    self.out.extend_from_slice(attr.name().as_bytes());
                    self.out.extend_from_slice(b"\":");
                    self.out.extend_from_slice(value);
                }
                self.out.push(b'}');
            }
        }
    }

    /// Writes the enrichment of a field holding several addresses as
    /// `"<field><suffix>":[{"ip":"..",<attrs>},...]`; `tier` is the
    /// provenance member's JSON value, when wanted. With ECS naming and an
    /// ECS object for the field, the addresses are first written as that
    /// ECS field, a list (`"dns.resolved_ip":["..",..]`); ECS has no field
    /// for their enrichment, which follows as in flat naming.
    pub fn array<'f>(
        &mut self,
        field: usize,
        items: impl Iterator<Item = (IpAddr, &'f Fragment, Option<&'f [u8]>)> + Clone,
    ) {
        let Some(prefix) = self.splicer.array_prefixes.get(field) else {
            return;
        };
        if self.splicer.naming == Naming::Ecs
            && let Some(Some(object)) = self.splicer.ecs.get(field)
        {
            if self.need_comma {
                self.out.push(b',');
            }
            self.need_comma = true;
            // `"dns.resolved_ip.` -> `"dns.resolved_ip":[`
            self.out
                .extend_from_slice(object.get(..object.len() - 1).unwrap_or(object));
            self.out.extend_from_slice(b"\":[");
            for (i, (ip, _, _)) in items.clone().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out.push(b'"');
                write_ip(self.out, ip);
                self.out.push(b'"');
            }
            self.out.push(b']');
        }
        if self.need_comma {
            self.out.push(b',');
        }
        self.need_comma = true;
        self.out.extend_from_slice(prefix);
        for (i, (ip, fragment, tier)) in items.enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            // An address's text form needs no JSON escaping.
            self.out.extend_from_slice(b"{\"ip\":\"");
            write_ip(self.out, ip);
            self.out.push(b'"');
            let tier = tier.map(|t| (Attr::Tier, t));
            for (attr, value) in fragment.members().chain(tier) {
                self.out.extend_from_slice(b",\"");
                self.out.extend_from_slice(attr.name().as_bytes());
                self.out.extend_from_slice(b"\":");
                self.out.extend_from_slice(value);
            }
            self.out.push(b'}');
        }
        self.out.push(b']');
    }

    /// Writes one member whose name (`key`, a JSON string with its quotes)
    /// and value are JSON already: table attributes, the `_intel` list.
    pub fn member(&mut self, key: &[u8], value: &[u8]) {
        if self.need_comma {
            self.out.push(b',');
        }
        self.need_comma = true;
        self.out.extend_from_slice(key);
        self.out.push(b':');
        self.out.extend_from_slice(value);
    }

    /// Closes the record and ends the line.
    pub fn finish(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Writes an address's text form, IPv4 without `fmt` (whose padding
/// support costs more than the address).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
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
pub(crate) fn write_escaped(out: &mut Vec<u8>, s: &str) {
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
    use super::*;

    #[test]
    fn addresses_are_written_as_their_display_form() {
        for text in [
            "0.0.0.0",
            "10.1.200.9",
            "255.255.255.255",
            "2001:db8::1",
            "::",
        ] {
            let ip: IpAddr = text.parse().expect("a valid address");
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }

    fn fragment() -> Fragment {
        let mut b = FragmentBuilder::default();
        b.str(Attr::Country, "GB");
        b.uint(Attr::Asn, 1221);
        b.str(Attr::Org, "Example \"Quoted\" Org");
        b.build()
    }

    #[test]
    fn flat_splice_keeps_the_original_bytes() {
        let record = br#"{"id.orig_h":"10.0.0.1",  "id.resp_h":"81.2.69.142"}"#;
        let splicer = Splicer::new(&["id.orig_h", "id.resp_h"], Naming::Flat, "_", "_enr");
        let mut out = Vec::new();
        let mut s = splicer.begin(record, record.len() - 1, 2, &mut out);
        s.field(1, &fragment(), &[(Attr::Tier, b"\"l1\"")]);
        s.finish();
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with(r#"{"id.orig_h":"10.0.0.1",  "id.resp_h":"81.2.69.142","#));
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["id.resp_h_country"], "GB");
        assert_eq!(v["id.resp_h_asn"], 1221);
        assert_eq!(v["id.resp_h_org"], "Example \"Quoted\" Org");
        assert_eq!(v["id.resp_h_tier"], "l1");
    }

    #[test]
    fn nested_splice_and_empty_object() {
        let record = b"{ }";
        let splicer = Splicer::new(&["src\"ip"], Naming::Nested, "_", "_enr");
        let mut out = Vec::new();
        let mut s = splicer.begin(record, 2, 0, &mut out);
        s.field(0, &fragment(), &[]);
        s.field(0, &Fragment::default(), &[]);
        s.finish();
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["src\"ip_enr"]["country"], "GB");
        assert_eq!(v["src\"ip_enr"]["asn"], 1221);
    }

    #[test]
    fn location_is_a_geo_point() {
        let mut b = FragmentBuilder::default();
        b.location(51.5142, -0.0931);
        b.location(f64::NAN, 1.0);
        let f = b.build();
        assert_eq!(
            f.get(Attr::Location),
            Some(&b"{\"lat\":51.5142,\"lon\":-0.0931}"[..])
        );
        assert_eq!(f.members().count(), 1);
    }
}

//! Indicator sets and enrichment tables applied to a record's addresses,
//! written as part of its splice.
//!
//! ```text
//! addresses (field, address) --> IntelSet::ip / ::domain(PTR) --> "_intel":[{..},..]
//! names     (field, key)     --> IntelSet::domain (parent too) / ::url_by_key
//! hashes    (field, value)   --> IntelSet::hash
//! addresses, names           --> Table::ip (longest prefix) / ::domain (parent too)
//!                                --> "<field>_<column>":".."
//! ```
//!
//! A name's key (its homogenised form, or a URL's `intel::url_key`) is
//! worked out once per value and cached with its parts (see `domains`).
//!
//! Nothing is cached: a lookup is a few hash probes, cheaper than a cache
//! entry would be, and a reload is one atomic swap of [`Lists`].

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use super::domains::{self, Key};
use crate::config::{Attr, CustomName};
use crate::intel::{Indicator, IntelSet, Kind, Table};
use crate::metrics as m;
use crate::record::Found;
use crate::splice::{Splice, write_str};

/// The loaded indicator set and tables, swapped whole on reload.
#[derive(Debug)]
pub struct Lists {
    set: Arc<IntelSet>,
    tables: Vec<Arc<Table>>,
    /// `"<intel.field>"` as JSON.
    member: Vec<u8>,
    /// Per table, per field, per column: `"<field><sep><column>"` as JSON.
    table_keys: Vec<Vec<Vec<Vec<u8>>>>,
    /// Per field: `<field><sep>ptr`, the name a PTR match is reported under.
    ptr_fields: Vec<String>,
    /// Per table, per column: the column as an attribute of a field's
    /// nested object (nested naming).
    table_attrs: Vec<Vec<Attr>>,
}

/// What a table row is looked up by.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowKey<'a> {
    /// An address field's address.
    Ip(IpAddr),
    /// A name field's key.
    Name(&'a Key),
}

impl Lists {
    /// Lists for the given fields (by index, as the enricher numbers them).
    pub fn new(
        set: Arc<IntelSet>,
        tables: Vec<Arc<Table>>,
        member: &str,
        fields: &[impl AsRef<str>],
        separator: &str,
    ) -> Self {
        let mut json = Vec::new();
        write_str(&mut json, member);
        let table_keys = tables
            .iter()
            .map(|t| {
                fields
                    .iter()
                    .map(|f| {
                        t.columns()
                            .iter()
                            .map(|c| {
                                let mut key = Vec::new();
                                write_str(&mut key, &format!("{}{separator}{c}", f.as_ref()));
                                key
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let ptr_fields = fields
            .iter()
            .map(|f| format!("{}{separator}ptr", f.as_ref()))
            .collect();
        let table_attrs = tables
            .iter()
            .map(|t| {
                t.columns()
                    .iter()
                    .map(|c| Attr::Custom(CustomName(crate::geoip::intern(c))))
                    .collect()
            })
            .collect();
        Self {
            set,
            tables,
            member: json,
            table_attrs,
            table_keys,
            ptr_fields,
        }
    }

    /// Whether any table is loaded.
    pub(super) fn has_tables(&self) -> bool {
        !self.tables.is_empty()
    }

    /// With nested naming: the table attributes of one address or name, as
    /// members of its field's object: the attribute and the range of its
    /// JSON value in `buf`, into `out` (both appended to).
    pub(super) fn row_members(
        &self,
        key: RowKey<'_>,
        buf: &mut Vec<u8>,
        out: &mut Vec<(Attr, Range<usize>)>,
    ) {
        for (table, attrs) in self.tables.iter().zip(&self.table_attrs) {
            let row = match key {
                RowKey::Ip(ip) => table.ip(ip),
                RowKey::Name(Key::Name(name)) => table.domain(name),
                RowKey::Name(_) => None,
            };
            for (attr, value) in attrs.iter().zip(row.into_iter().flatten()) {
                if !value.is_empty() {
                    let start = buf.len();
                    write_str(buf, value);
                    out.push((*attr, start..buf.len()));
                }
            }
        }
    }

    /// The indicator set.
    pub fn set(&self) -> &Arc<IntelSet> {
        &self.set
    }

    /// The tables, in `[[tables]]` order.
    pub fn tables(&self) -> &[Arc<Table>] {
        &self.tables
    }

    /// Sets the indicator-count and age gauges.
    pub fn publish_gauges(&self) {
        for kind in Kind::ALL {
            metrics::gauge!(m::INTEL_INDICATORS, "type" => kind.label())
                .set(self.set.count(kind) as f64);
        }
        if let Some(newest) = self.set.newest() {
            let age = SystemTime::now()
                .duration_since(newest)
                .unwrap_or_default()
                .as_secs_f64();
            metrics::gauge!(m::INTEL_AGE).set(age);
        }
    }

    /// Writes the table attributes of a record in flat form
    /// (`"<field><sep><column>"`): `ips` (field index, address, PTR name,
    /// whether the field is a list) and `names` (field index, the name or
    /// URL key of a name or URL field). Nested naming writes them in each
    /// field's object instead ([`Lists::row_members`]). `buf` is reused.
    pub(super) fn write_tables<'a>(
        &self,
        ips: impl Iterator<Item = (usize, IpAddr, Option<&'a str>, bool)> + Clone,
        names: impl Iterator<Item = (usize, &'a Key)> + Clone,
        splice: &mut Splice<'_, '_>,
        buf: &mut Vec<u8>,
    ) {
        for (t, table) in self.tables.iter().enumerate() {
            let Some(keys) = self.table_keys.get(t) else {
                continue;
            };
            let ip_rows = ips
                .clone()
                .filter(|&(_, _, _, array)| !array)
                .filter_map(|(field, ip, _, _)| Some((field, table.ip(ip)?)));
            let name_rows = names.clone().filter_map(|(field, key)| match key {
                Key::Name(name) => Some((field, table.domain(name)?)),
                _ => None,
            });
            for (field, row) in ip_rows.chain(name_rows) {
                let Some(keys) = keys.get(field) else {
                    continue;
                };
                for (key, value) in keys.iter().zip(row) {
                    if !value.is_empty() {
                        buf.clear();
                        write_str(buf, value);
                        splice.member(key, buf);
                    }
                }
            }
        }
    }

    /// Writes the `_intel` member of a record: `ips` and `names` as for
    /// [`Lists::write_tables`], `hashes` (field index, value); returns
    /// whether any indicator matched. `buf` is reused.
    pub(super) fn write<'a>(
        &self,
        ips: impl Iterator<Item = (usize, IpAddr, Option<&'a str>, bool)>,
        names: impl Iterator<Item = (usize, &'a Key)>,
        hashes: impl Iterator<Item = (usize, &'a str)>,
        fields: &[impl AsRef<str>],
        splice: &mut Splice<'_, '_>,
        buf: &mut Vec<u8>,
    ) -> bool {
        let set = &*self.set;
        if set.is_empty() {
            return false;
        }
        buf.clear();
        let mut any = false;
        let mut add = |ind: &Indicator, field: &str, buf: &mut Vec<u8>| {
            buf.push(if any { b',' } else { b'[' });
            any = true;
            ind.write_json(field, buf);
            metrics::counter!(
                m::INTEL_MATCHES,
                "source" => ind.source().to_string(),
                "type" => ind.kind().label()
            )
            .increment(1);
        };
        let name_of = |field: usize| fields.get(field).map_or("", |f| f.as_ref());
        for (field, ip, ptr, _) in ips {
            for ind in set.ip(ip).into_iter().flatten() {
                add(ind, name_of(field), buf);
            }
            if let Some(ind) = ptr.and_then(|p| set.domain(p)) {
                let ptr_field = self.ptr_fields.get(field).map_or("", String::as_str);
                add(ind, ptr_field, buf);
            }
        }
        for (field, key) in names {
            let found = match key {
                Key::Name(name) => set.domain(name),
                Key::Url(url) => set.url_by_key(url),
                Key::None => None,
            };
            if let Some(ind) = found {
                add(ind, name_of(field), buf);
            }
        }
        for (field, hash) in hashes {
            if let Some(ind) = set.hash(hash) {
                add(ind, name_of(field), buf);
            }
        }
        if any {
            buf.push(b']');
            splice.member(&self.member, buf);
        }
        any
    }
}

/// The values of a record's hash fields, copied one after the other into
/// one reused buffer (a value may need unescaping).
#[derive(Debug, Default)]
pub(super) struct Hashes {
    text: String,
    /// (field, start, end) of each value in `text`.
    spans: Vec<(u16, usize, usize)>,
}

impl Hashes {
    /// Forgets the last record's values.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    /// Copies the string values of the scanned fields that `is_hash` marks
    /// (by field index); `scratch` is for unescaping.
    pub(super) fn collect(
        &mut self,
        input: &[u8],
        found: &[Found],
        is_hash: &[bool],
        scratch: &mut String,
    ) {
        for f in found {
            if !is_hash.get(usize::from(f.field)).copied().unwrap_or(false) {
                continue;
            }
            if let Some(value) = domains::string(input, f, scratch) {
                let start = self.text.len();
                self.text.push_str(value);
                self.spans.push((f.field, start, self.text.len()));
            }
        }
    }

    /// (field index, value) of each value collected.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        self.spans
            .iter()
            .map(|&(f, a, b)| (usize::from(f), self.text.get(a..b).unwrap_or_default()))
    }
}

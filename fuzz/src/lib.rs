//! What the fuzz targets share: the field map the worker scans for by
//! default, and an independent reading of a record's top-level members by
//! serde_json to check the scanner and the splicer against.
//!
//! serde_json is built with `arbitrary_precision`, so it checks numbers
//! against the grammar only, like the scanner: `1e400` is valid JSON to both.
//! Where the enricher writes numbers of its own (TSV conversion),
//! [`finite_numbers`] checks they also fit an `f64`.

use std::fmt;

use enricher::enrich::FieldMap;
use enricher::record::Wanted;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The paths the enricher scans for with the default configuration: the
/// default fields and every per-type field, once each, as `Enricher::new`
/// builds them.
pub fn default_wanted() -> Wanted {
    let fields = FieldMap::default();
    let mut paths: Vec<String> = Vec::new();
    for field in fields
        .default
        .iter()
        .chain(fields.by_type.values().flatten())
    {
        if !paths.contains(field) {
            paths.push(field.clone());
        }
    }
    Wanted::new(&fields.type_key, &paths)
}

/// What serde_json makes of a record.
#[derive(Debug)]
pub enum Parsed {
    /// An object: its members in document order, duplicates kept.
    Object(Vec<(String, Value)>),
    /// Not a JSON object, or not JSON.
    Invalid(String),
}

/// Reads `bytes` as one JSON object with serde_json.
pub fn parse(bytes: &[u8]) -> Parsed {
    match serde_json::from_slice::<Members>(bytes) {
        Ok(Members(members)) => Parsed::Object(members),
        Err(e) => Parsed::Invalid(e.to_string()),
    }
}

/// Whether every number in the values is a finite `f64`, as readers that
/// refuse overflowing numbers (serde_json by default, Go) need.
pub fn finite_numbers<'v>(values: impl IntoIterator<Item = &'v Value>) -> bool {
    let mut todo: Vec<&Value> = values.into_iter().collect();
    while let Some(value) = todo.pop() {
        match value {
            Value::Number(n) if n.as_f64().is_none_or(|f| !f.is_finite()) => return false,
            Value::Array(items) => todo.extend(items),
            Value::Object(map) => todo.extend(map.values()),
            _ => {}
        }
    }
    true
}

/// The top-level members of an object, in order, duplicates kept (a
/// `serde_json::Map` would fold them).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

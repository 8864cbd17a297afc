//! `ENRICHER_<SECTION>__<KEY>` variables, read by the type the key expects.
//!
//! A variable's text is never guessed at: the configuration's own
//! `Deserialize` implementation is asked what it expects at the key (a
//! [`Probe`] walks the path and stops at the first request for the leaf),
//! and the text is read accordingly:
//!
//! - a string key (a password, a URL, a topic) takes the text as it is,
//!   quotes, digits, `true` and date-like values included;
//! - a map key (`kafka.consumer_properties`) takes an inline TOML table,
//!   `{"session.timeout.ms" = "6000"}`, its scalars written as strings when
//!   the map holds strings;
//! - any other key (numbers, booleans, lists) takes a TOML value.
//!
//! This is what Vector's and Telegraf's users expect of a Kubernetes Secret
//! mounted as an environment variable: `123456` is a password, not a number.

use std::cell::Cell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use super::Config;

/// What the configuration expects at a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expected {
    /// Text, taken as it is.
    Text,
    /// A table (a struct or a map), taken as an inline TOML table.
    Table,
    /// Anything else, taken as a TOML value.
    Value,
    /// Not a key of the configuration: read as TOML, and let the
    /// configuration name the unknown key.
    Unknown,
}

/// Asks [`Config`]'s `Deserialize` what it expects at `path`.
pub(super) fn expected(path: &[String]) -> Expected {
    probe(path).0
}

/// The keys of the section at `path` (`[]` for the sections themselves), as
/// [`Config`]'s `Deserialize` accepts them; empty when `path` is not a
/// section with named keys (a map takes any key).
#[cfg(test)]
pub(super) fn keys(path: &[String]) -> &'static [&'static str] {
    probe(path).1.unwrap_or_default()
}

/// What is expected at `path`, and the keys when it is a section.
fn probe(path: &[String]) -> (Expected, Option<&'static [&'static str]>) {
    let found = Cell::new(None);
    let keys = Cell::new(None);
    let probe = Probe {
        path,
        found: &found,
        keys: &keys,
    };
    // The probe always ends in an error: it stops at the leaf.
    let _ = <Config as serde::Deserialize>::deserialize(probe);
    (found.get().unwrap_or(Expected::Unknown), keys.get())
}

/// Reads `text` for a key that expects `expected`, with the path of the key
/// to say which key in an error. `strings` tells whether a map's values are
/// strings (librdkafka properties), so that `{"linger.ms" = 5}` still works.
pub(super) fn value(
    key: &str,
    text: &str,
    expected: Expected,
    strings: bool,
) -> Result<toml::Value, String> {
    match expected {
        Expected::Text => Ok(toml::Value::String(text.to_string())),
        Expected::Table => match parse(text) {
            Some(toml::Value::Table(mut table)) => {
                if strings {
                    for (_, v) in table.iter_mut() {
                        if let Some(s) = scalar_text(v) {
                            *v = toml::Value::String(s);
                        }
                    }
                }
                Ok(toml::Value::Table(table))
            }
            _ => Err(format!(
                "expects an inline TOML table such as {{\"session.timeout.ms\" = \"6000\"}}, \
                 or one variable per key: ENRICHER_{}__<KEY>",
                key.to_ascii_uppercase().replace('.', "__")
            )),
        },
        Expected::Value | Expected::Unknown => {
            Ok(parse(text).unwrap_or_else(|| toml::Value::String(text.to_string())))
        }
    }
}

/// `text` as one TOML value, if it is one.
fn parse(text: &str) -> Option<toml::Value> {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
}

/// A number or a boolean as the text a user would have written.
fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The error that ends a probe; never shown.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// A deserializer that holds one path: a struct or a map is given only the
/// path's next key, and the leaf records what it was asked for.
struct Probe<'a> {
    path: &'a [String],
    found: &'a Cell<Option<Expected>>,
    /// The field names of the struct at the leaf, when it is one.
    keys: &'a Cell<Option<&'static [&'static str]>>,
}

impl Probe<'_> {
    /// At the leaf: record what is expected and stop. Inside: stop too,
    /// because a scalar has no keys below it.
    fn leaf<T>(self, expected: Expected) -> Result<T, Stop> {
        if self.path.is_empty() {
            self.found.set(Some(expected));
        }
        Err(Stop)
    }

    fn table<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => self.leaf(Expected::Table),
            Some((key, rest)) => visitor.visit_map(OneKey {
                key: Some(key),
                value: Probe {
                    path: rest,
                    found: self.found,
                    keys: self.keys,
                },
            }),
        }
    }
}

/// The one key of a table along the probe's path.
struct OneKey<'a> {
    key: Option<&'a String>,
    value: Probe<'a>,
}

impl<'de> MapAccess<'de> for OneKey<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.as_str().into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(Probe {
            path: self.value.path,
            found: self.value.found,
            keys: self.value.keys,
        })
    }
}

macro_rules! value_leaf {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            self.leaf(Expected::Value)
        })*
    };
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    value_leaf! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16
        deserialize_i32 deserialize_i64 deserialize_u8 deserialize_u16
        deserialize_u32 deserialize_u64 deserialize_f32 deserialize_f64
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_seq
        deserialize_ignored_any deserialize_identifier
    }

    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(Expected::Text)
    }

    fn deserialize_str<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(Expected::Text)
    }

    fn deserialize_string<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(Expected::Text)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Expected::Value)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        self.leaf(Expected::Value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Expected::Value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        self.table(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        if self.path.is_empty() {
            self.keys.set(Some(fields));
        }
        self.table(visitor)
    }

    /// The configuration's enums are unit variants written as strings
    /// (`compression = "zstd"`), so an enum key takes text.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Expected::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(key: &str) -> Expected {
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        expected(&path)
    }

    #[test]
    fn the_probe_finds_what_each_kind_of_key_expects() {
        assert_eq!(at("redis.password"), Expected::Text);
        assert_eq!(at("redis.url"), Expected::Text);
        assert_eq!(at("kafka.brokers"), Expected::Text);
        assert_eq!(at("kafka.output_topic"), Expected::Text);
        assert_eq!(at("dns.qps"), Expected::Value);
        assert_eq!(at("dns.enabled"), Expected::Value);
        assert_eq!(at("fields.default"), Expected::Value);
        assert_eq!(at("kafka.consumer_properties"), Expected::Table);
        assert_eq!(at("kafka"), Expected::Table);
        assert_eq!(at("kafka.properties.sasl"), Expected::Text);
        assert_eq!(at("kafka.compression"), Expected::Text);
        assert_eq!(at("kafka.no_such_key"), Expected::Unknown);
        assert_eq!(at("nowhere.at_all"), Expected::Unknown);
    }

    #[test]
    fn a_table_that_does_not_parse_says_how_to_set_one_key() {
        let e = value("kafka.consumer_properties", "x=1", Expected::Table, true)
            .expect_err("not a table");
        assert!(
            e.contains("ENRICHER_KAFKA__CONSUMER_PROPERTIES__<KEY>"),
            "{e}"
        );
        let v = value(
            "kafka.consumer_properties",
            "{\"linger.ms\" = 5, \"a\" = \"b\"}",
            Expected::Table,
            true,
        )
        .expect("a table");
        assert_eq!(v["linger.ms"].as_str(), Some("5"));
    }
}

//! `[intel]` and `[[tables]]`: threat-intelligence indicator files and
//! enrichment tables matched against every record's addresses.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[intel]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntelConfig {
    /// Indicator files: Zeek Intel framework files, CSV with a header
    /// (`indicator,type,source,desc,...`) or plain lists, one indicator a
    /// line (`--intel`, repeatable). Empty: no matching.
    pub files: Vec<PathBuf>,
    /// The member that lists a record's matches, written only when
    /// something matched.
    pub field: String,
    /// How often the indicator files and the `[[tables]]` files are checked
    /// for a replacement, in milliseconds (0: never). A replacement is read
    /// and checked before it is swapped in; a bad one is rejected and the
    /// old set keeps serving.
    pub reload_interval_ms: u64,
    /// Fields holding file hashes (MD5, SHA-1, SHA-256 hex), matched
    /// exactly against hash indicators, case aside; read only when
    /// indicator files are set. Zeek files `md5`, `sha1`, `sha256`, x509
    /// `fingerprint`.
    pub hash_fields: Vec<String>,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            field: "_intel".into(),
            reload_interval_ms: 30_000,
            hash_fields: ["md5", "sha1", "sha256", "fingerprint"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl IntelConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.field.is_empty() {
            return Err(ConfigError::new("intel.field", "must not be empty"));
        }
        if self.hash_fields.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                "intel.hash_fields",
                "field names must not be empty",
            ));
        }
        Ok(())
    }
}

/// One `[[tables]]` entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// CSV file with a header; the key column holds addresses, CIDRs or
    /// domains (`--table`, repeatable, for the first column as key).
    pub path: PathBuf,
    /// The key column's name (none: the first column).
    pub key: Option<String>,
    /// The columns written as `<field>_<column>` (empty: every other column).
    pub fields: Vec<String>,
}

pub(super) fn check_tables(tables: &[TableConfig]) -> Result<(), ConfigError> {
    for (i, t) in tables.iter().enumerate() {
        if t.path.as_os_str().is_empty() {
            return Err(ConfigError::new(format!("tables[{i}].path"), "must be set"));
        }
    }
    Ok(())
}

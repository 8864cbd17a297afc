//! The README's configuration table, written from the config's own doc
//! comments, and the test that holds the README to it.
//!
//! The keys come from [`Config`]'s `Deserialize` (what a file may say), the
//! defaults from `Config::default()`, the meanings from the `///` comment of
//! each field in this folder's sources. A key added without a doc comment,
//! or a README table that differs in any row, fails the test;
//! `ENRICHER_BLESS=1 cargo test -p enricher --lib config::doc` writes the
//! table into the README instead.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, env};

/// The sources that hold the config's structs.
const SOURCES: [&str; 5] = [
    include_str!("mod.rs"),
    include_str!("intel.rs"),
    include_str!("records.rs"),
    include_str!("lookups.rs"),
    include_str!("kafka.rs"),
];

/// The line before the table in the README.
const START: &str = "<!-- config table: written from the doc comments in enricher/src/config/ (ENRICHER_BLESS=1 cargo test -p enricher --lib config::doc) -->";
/// The line after it.
const END: &str = "<!-- end of config table -->";

/// One field of a struct in the sources.
#[derive(Debug)]
struct Field {
    /// The field's type, as written.
    ty: String,
    /// Its doc comment, one line.
    doc: String,
}

/// Every `pub` field of every `pub struct` in the sources, by struct and field.
fn fields() -> BTreeMap<(String, String), Field> {
    let mut out = BTreeMap::new();
    for source in SOURCES {
        let mut within: Option<String> = None;
        let mut doc: Vec<&str> = Vec::new();
        for line in source.lines() {
            let trimmed = line.trim();
            if let Some(rest) = line.strip_prefix("pub struct ") {
                within = rest.strip_suffix(" {").map(|name| name.trim().to_string());
                doc.clear();
                continue;
            }
            let Some(name) = &within else { continue };
            if line == "}" {
                within = None;
            } else if let Some(text) = trimmed.strip_prefix("///") {
                doc.push(text.trim());
            } else if let Some((field, ty)) = trimmed
                .strip_prefix("pub ")
                .and_then(|rest| rest.strip_suffix(','))
                .and_then(|rest| rest.split_once(": "))
            {
                let doc = std::mem::take(&mut doc).join(" ");
                let ty = ty.to_string();
                out.insert((name.clone(), field.to_string()), Field { ty, doc });
            } else if !trimmed.starts_with("#[") {
                doc.clear();
            }
        }
    }
    out
}

/// A default as a user writes it in the file; `none` when the key is unset.
fn shown(value: Option<&toml::Value>) -> String {
    let text = match value {
        None => return "none".into(),
        Some(toml::Value::Table(t)) if t.is_empty() => "{}".into(),
        Some(v) => v.to_string(),
    };
    format!("`{}`", text.replace('|', "\\|"))
}

/// The table: a header, then one row per key, section by section.
fn table() -> Result<String, String> {
    let fields = fields();
    let defaults = toml::Value::try_from(Config::default()).map_err(|e| e.to_string())?;
    let mut rows = vec![
        "| key | default | meaning |".to_string(),
        "|---|---|---|".to_string(),
    ];
    for &section in env::keys(&[]) {
        let Field { ty, doc } = fields
            .get(&("Config".to_string(), section.to_string()))
            .ok_or_else(|| format!("Config.{section} is not a documented pub field"))?;
        if doc.is_empty() {
            return Err(format!("Config.{section} has no doc comment"));
        }
        // A list of sections (`[[tables]]`): one row for the list, one per
        // key of its entries, which have no default of their own.
        if let Some(inner) = ty.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>')) {
            let default = shown(defaults.get(section));
            rows.push(format!(
                "| `{section}` | {default} | {} |",
                doc.replace('|', "\\|")
            ));
            for ((_, key), field) in fields.iter().filter(|((s, _), _)| s == inner) {
                if field.doc.is_empty() {
                    return Err(format!(
                        "{section}[].{key} ({inner}.{key}) has no doc comment"
                    ));
                }
                rows.push(format!(
                    "| `{section}[].{key}` | none | {} |",
                    field.doc.replace('|', "\\|")
                ));
            }
            continue;
        }
        let keys = env::keys(&[section.to_string()]);
        let documented: Vec<&String> = fields
            .keys()
            .filter(|(s, _)| s == ty)
            .map(|(_, f)| f)
            .collect();
        if documented.len() != keys.len() {
            return Err(format!(
                "{ty} has pub fields {documented:?} in the sources but keys {keys:?} in files"
            ));
        }
        for &key in keys {
            let field = fields
                .get(&(ty.clone(), key.to_string()))
                .ok_or_else(|| format!("{section}.{key}: no pub field {key} in {ty}"))?;
            if field.doc.is_empty() {
                return Err(format!("{section}.{key} ({ty}.{key}) has no doc comment"));
            }
            let default = shown(defaults.get(section).and_then(|s| s.get(key)));
            rows.push(format!(
                "| `{section}.{key}` | {default} | {} |",
                field.doc.replace('|', "\\|")
            ));
        }
    }
    Ok(rows.join("\n") + "\n")
}

/// The README's table and the text around it.
fn readme() -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path).expect("README.md is readable");
    (path, text)
}

/// The key of a table row, `section.key`.
fn row_key(row: &str) -> Option<&str> {
    row.strip_prefix("| `")?.split('`').next()
}

#[test]
fn every_key_has_a_doc_comment() {
    table().expect("every key documented");
}

#[test]
fn the_readme_table_is_the_doc_comments() {
    let want = table().expect("every key documented");
    let (path, text) = readme();
    let start = text.find(START).map(|i| i + START.len() + 1);
    let end = text.find(END);
    let (Some(start), Some(end)) = (start, end) else {
        panic!("README.md has no config table between\n{START}\nand\n{END}");
    };
    let have = &text[start..end];
    if have == want {
        return;
    }
    if std::env::var_os("ENRICHER_BLESS").is_some() {
        let updated = format!("{}{want}{}", &text[..start], &text[end..]);
        std::fs::write(&path, updated).expect("README.md is writable");
        return;
    }
    let keys =
        |t: &str| -> Vec<String> { t.lines().filter_map(row_key).map(String::from).collect() };
    let (want_keys, have_keys) = (keys(&want), keys(have));
    let missing: Vec<&String> = want_keys
        .iter()
        .filter(|k| !have_keys.contains(k))
        .collect();
    let unknown: Vec<&String> = have_keys
        .iter()
        .filter(|k| !want_keys.contains(k))
        .collect();
    let differs = want
        .lines()
        .zip(have.lines())
        .find(|(w, h)| w != h)
        .map(|(w, h)| format!("README: {h}\nconfig: {w}"))
        .unwrap_or_default();
    panic!(
        "README.md's config table is not the config's doc comments.\n\
         keys missing from the README: {missing:?}\n\
         keys the config does not have: {unknown:?}\n\
         first row that differs:\n{differs}\n\
         Edit the doc comments in enricher/src/config/, then run \
         ENRICHER_BLESS=1 cargo test -p enricher --lib config::doc"
    );
}

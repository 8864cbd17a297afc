//! `${VAR}` and `${file:/path}` in string values, resolved at load.
//!
//! Secrets stay out of the config file the way Vector, Logstash and Telegraf
//! users expect: a string value may name an environment variable or a file
//! (a Kubernetes Secret mounted as a volume) and gets its value when the
//! configuration is loaded. Only string values are interpolated, never keys;
//! `$${` writes a literal `${`. Values read from files are remembered so that
//! [`super::Config::to_masked_toml`] and error messages never show them,
//! whatever key they went into.

use std::collections::HashMap;
use std::path::Path;

use super::ConfigError;
use crate::secrets::Secrets;

/// Largest file a `${file:...}` reference reads, in bytes: a secret, not a database.
pub(super) const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Resolves every reference in every string of `table`, in place. An error
/// names the key (`redis.password`, `fields.default[1]`).
pub(super) fn table(
    table: &mut toml::Table,
    env: &HashMap<String, String>,
    secrets: &mut Secrets,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        walk(value, key.clone(), env, secrets)?;
    }
    Ok(())
}

fn walk(
    value: &mut toml::Value,
    key: String,
    env: &HashMap<String, String>,
    secrets: &mut Secrets,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            *s = string(s, env, secrets).map_err(|problem| ConfigError::new(key, problem))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{key}[{i}]"), env, secrets)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                walk(v, format!("{key}.{k}"), env, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Resolves the references in one string; the error is the problem, without the key.
pub(super) fn string(
    text: &str,
    env: &HashMap<String, String>,
    secrets: &mut Secrets,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err("unterminated `${` (write `$${` for a literal `${`)".into());
        };
        let reference = &body[..end];
        out.push_str(&resolve(reference, env, secrets)?);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    reference: &str,
    env: &HashMap<String, String>,
    secrets: &mut Secrets,
) -> Result<String, String> {
    if let Some(path) = reference.strip_prefix("file:") {
        let value = read_secret(Path::new(path))
            .map_err(|problem| format!("${{file:{path}}}: {problem}"))?;
        secrets.remember(value.clone());
        return Ok(value);
    }
    let valid = reference
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`${{{reference}}}` is neither `${{VARIABLE}}` nor `${{file:/path}}`"
        ));
    }
    env.get(reference)
        .cloned()
        .ok_or_else(|| format!("${{{reference}}}: the environment variable is not set"))
}

/// A file's contents as UTF-8, one trailing newline (`\n` or `\r\n`) removed.
fn read_secret(path: &Path) -> Result<String, String> {
    if path.as_os_str().is_empty() {
        return Err("no path".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes; a secret file holds at most {MAX_FILE_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("USER_NAME".to_string(), "alice".to_string()),
            ("EMPTY".to_string(), String::new()),
        ])
    }

    fn resolve_str(text: &str) -> Result<String, String> {
        string(text, &env(), &mut Secrets::default())
    }

    #[test]
    fn variables_are_replaced_anywhere_in_a_string() {
        assert_eq!(resolve_str("${USER_NAME}").unwrap(), "alice");
        assert_eq!(
            resolve_str("u=${USER_NAME};e=${EMPTY}.").unwrap(),
            "u=alice;e=."
        );
        assert_eq!(resolve_str("no references").unwrap(), "no references");
    }

    #[test]
    fn dollars_that_are_not_references_stay() {
        assert_eq!(resolve_str("pa$$word$").unwrap(), "pa$$word$");
        assert_eq!(resolve_str("$USER_NAME").unwrap(), "$USER_NAME");
        assert_eq!(resolve_str("$${USER_NAME}").unwrap(), "${USER_NAME}");
        assert_eq!(resolve_str("$$${USER_NAME}").unwrap(), "$${USER_NAME}");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let e = resolve_str("${NOT_SET_ANYWHERE}").unwrap_err();
        assert!(
            e.contains("NOT_SET_ANYWHERE") && e.contains("not set"),
            "{e}"
        );
        assert!(
            resolve_str("${USER_NAME")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(resolve_str("${}").unwrap_err().contains("neither"));
        assert!(resolve_str("${1X}").unwrap_err().contains("neither"));
        assert!(resolve_str("${env:X}").unwrap_err().contains("neither"));
        let e = resolve_str("${file:/nonexistent/secret}").unwrap_err();
        assert!(
            e.contains("/nonexistent/secret") && e.contains("cannot read"),
            "{e}"
        );
        assert!(resolve_str("${file:}").unwrap_err().contains("no path"));
        assert!(
            resolve_str("${file:/}")
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn files_lose_one_trailing_newline_and_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("lf", "s3cret\n", "s3cret"),
            ("crlf", "s3cret\r\n", "s3cret"),
            ("two", "s3cret\n\n", "s3cret\n"),
            ("none", "s3cret", "s3cret"),
            ("spaces", " s3cret \n", " s3cret "),
        ];
        for (name, contents, want) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            let mut secrets = Secrets::default();
            let got = string(
                &format!("${{file:{}}}", path.display()),
                &env(),
                &mut secrets,
            );
            assert_eq!(got.as_deref(), Ok(want), "{name}");
            assert_eq!(secrets.mask(&format!("x{want}y")), "x***y", "{name}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = resolve_str(&format!("${{file:{}}}", big.display())).unwrap_err();
        assert!(e.contains("at most"), "{e}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        let e = resolve_str(&format!("${{file:{}}}", binary.display())).unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn errors_name_the_key_inside_tables_and_arrays() {
        let mut t: toml::Table =
            "[a]\nb = [\"ok\", \"${MISSING}\"]\n[c.d]\n\"e.f\" = \"${MISSING}\"\n"
                .parse()
                .unwrap();
        let e = table(&mut t, &env(), &mut Secrets::default()).unwrap_err();
        assert_eq!(e.key, "a.b[1]");
        t.remove("a");
        let e = table(&mut t, &env(), &mut Secrets::default()).unwrap_err();
        assert_eq!(e.key, "c.d.e.f");
    }
}

//! What is a secret, and how it is kept out of what the worker shows.
//!
//! Passwords in URLs, secret librdkafka properties and values read through
//! `${file:...}` references are masked as `***` wherever a configuration or
//! an error is shown. A leaf: the configuration, the Redis client and the
//! Kafka clients all use it, and it uses none of them.

/// True for librdkafka properties whose values are secrets.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k.ends_with(".key.pem")
        || k.contains("token")
}

/// True for configuration keys whose values are secrets (`redis.password`,
/// `kafka.properties.sasl.password`): an error about one never shows its value.
pub fn is_secret_key(key: &str) -> bool {
    is_secret_property(key)
}

/// Replaces every `` `quoted` `` value in a deserializer's message with
/// `` `***` `` (serde quotes the value it refused that way).
pub fn mask_quoted(problem: &str) -> String {
    let mut out = String::with_capacity(problem.len());
    let mut parts = problem.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('`');
        out.push_str(if i % 2 == 0 { "***" } else { part });
    }
    out
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn mask_secrets(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &text[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None if !userinfo.is_empty() => format!("{}***{}", &text[..scheme_end + 3], &rest[at..]),
        None => text.to_string(),
    }
}

/// Values that must never be shown: the contents of `${file:...}`
/// references, and secrets set through the environment.
///
/// Not part of the settings: two configurations with the same settings are
/// equal whatever they were read from, and `Debug` shows only a count.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Replaces every remembered value in `text` with `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.0 {
            if !secret.is_empty() && out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// Remembers a value to mask.
    pub fn remember(&mut self, value: String) {
        if !value.is_empty() && !self.0.contains(&value) {
            self.0.push(value);
        }
    }

    /// Masks every remembered value inside every string of `value`.
    pub fn mask_value(&self, value: &mut toml::Value) {
        match value {
            toml::Value::String(s) => *s = self.mask(s),
            toml::Value::Array(items) => items.iter_mut().for_each(|v| self.mask_value(v)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| self.mask_value(v)),
            _ => {}
        }
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Secrets {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} masked)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        assert_eq!(mask_secrets("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask_secrets("redis://:p@h"), "redis://:***@h");
        assert_eq!(mask_secrets("redis://tok@h"), "redis://***@h");
        assert_eq!(mask_secrets("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn quoted_values_are_masked() {
        assert_eq!(
            mask_quoted("invalid type: integer `123456`, expected a string"),
            "invalid type: integer `***`, expected a string"
        );
        assert_eq!(mask_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn secret_keys() {
        for key in [
            "redis.password",
            "sasl.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "ssl.key.pem",
            "sasl.oauthbearer.token.endpoint.url",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["sasl.username", "ssl.ca.location", "redis.url"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn masking_reaches_every_string() {
        let mut secrets = Secrets::default();
        secrets.remember("hunter2".into());
        let mut v: toml::Value = toml::Value::Table(
            "a = \"x hunter2 y\"\nb = [\"hunter2\"]\n[c]\nd = \"hunter2\"\ne = 3\n"
                .parse()
                .expect("a table"),
        );
        secrets.mask_value(&mut v);
        let shown = v.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown.matches("***").count(), 3, "{shown}");
    }
}

//! The one typed configuration: defaults, then a TOML file, then
//! `ENRICHER_*` variables, then flags.
//!
//! Every field's doc comment is the user's reference (the README's table is
//! written from it). Unknown keys are rejected, and [`Config::validate`]
//! checks what types cannot (ranges, cross-field rules). Every error names
//! its key: the binary prints it on one line and exits with code 64.
//! String values may reference `${VARIABLE}` and `${file:/path}`, resolved
//! at load ([`interpolate`]); secrets are masked wherever a configuration is shown.
//!
//! A leaf: plain data and the rules that need nothing else. The runtime
//! builds its parts from it (`DnsOptions::from_config`, ...) and checks what
//! needs its own types where it is built (`core::check`).

#[cfg(test)]
mod doc;
mod env;
mod intel;
mod interpolate;
mod kafka;
mod lookups;
mod records;

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use self::intel::{IntelConfig, TableConfig};
pub use self::kafka::{
    Compression, KafkaConfig, MAX_ENRICH_THREADS, RESERVED_PROPERTIES, WorkerConfig, is_pattern,
};
pub use self::lookups::{
    CacheConfig, DbAttributes, DnsConfig, GeoIpConfig, GeoIpDatabase, RedisConfig, Scope,
};
pub use self::records::{
    Attr, CustomName, DomainsConfig, FieldsConfig, InputConfig, Naming, OutputConfig, PipeConfig,
    UrlsConfig,
};
use crate::secrets::{Secrets, mask_quoted};
use crate::secrets::{is_secret_key, is_secret_property, mask_secrets};

/// A configuration error, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct ConfigError {
    /// The dotted key (`dns.qps`), or `file` for a file that cannot be read.
    pub key: String,
    /// What is wrong, in one line.
    pub problem: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into().replace('\n', " "),
        }
    }
}

/// The whole configuration. `Debug` shows it as [`Config::to_masked_toml`]
/// does, so a configuration that reaches a log carries no secret.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How records are read.
    pub input: InputConfig,
    /// Which fields hold addresses.
    pub fields: FieldsConfig,
    /// How enrichment is written.
    pub output: OutputConfig,
    /// Fields holding host names.
    pub domains: DomainsConfig,
    /// Fields holding URLs.
    pub urls: UrlsConfig,
    /// GeoIP databases.
    pub geoip: GeoIpConfig,
    /// Reverse DNS.
    pub dns: DnsConfig,
    /// The in-process cache and the per-record lookup deadline.
    pub cache: CacheConfig,
    /// The shared Redis cache.
    pub redis: RedisConfig,
    /// `enricher pipe` only.
    pub pipe: PipeConfig,
    /// `enricher run`: the Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// `enricher run`: flow control, commits, shutdown, telemetry.
    pub worker: WorkerConfig,
    /// Threat-intelligence indicator files.
    pub intel: IntelConfig,
    /// Enrichment tables: `[[tables]]` entries of `path`, `key`, `fields`.
    pub tables: Vec<TableConfig>,
    /// Values read through `${file:...}`, masked wherever the config is shown.
    #[serde(skip)]
    secrets: Secrets,
}

/// `key` must be greater than 0.
fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }

    /// Loads defaults, then the file (if any), then `ENRICHER_<SECTION>__<KEY>`
    /// variables from `env` (`ENRICHER_KAFKA__BROKERS=b1:9092`,
    /// `ENRICHER_DNS__QPS=50`; a value is read as TOML when it parses as a
    /// TOML value, else as a string). Variables without `__` are not config
    /// keys (`ENRICHER_LOG`). Then `${VARIABLE}` (from `env`) and
    /// `${file:/path}` references in string values are resolved.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = env.into_iter().collect();
        // Sorted, so that a variable that breaks the file fails the same way every time.
        let mut overrides: Vec<(&String, &String)> = env.iter().collect();
        overrides.sort();
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
            })?,
            None => String::new(),
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("file", e.message().to_string()))?;
        let mut secrets = Secrets::default();
        for (name, value) in overrides {
            let Some(rest) = name.strip_prefix("ENRICHER_") else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let key = path.join(".");
            let expected = env::expected(&path);
            if is_secret_key(&key) {
                secrets.remember(value.clone());
            }
            let mut below = path.clone();
            below.push(String::new());
            let strings = env::expected(&below) == env::Expected::Text;
            let parsed = env::value(&key, value, expected, strings)
                .map_err(|problem| ConfigError::new(key.clone(), format!("{name}: {problem}")))?;
            let mut node = &mut table;
            for (i, segment) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    node.insert(segment.clone(), parsed.clone());
                    break;
                }
                let entry = node
                    .entry(segment.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                node = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::new(
                            key,
                            format!("{name}: {} is not a section", path[..=i].join(".")),
                        ));
                    }
                };
            }
        }
        interpolate::table(&mut table, &env, &mut secrets)?;
        let mut config = Self::from_toml(&table.to_string()).map_err(|e| ConfigError {
            problem: secrets.mask(&e.problem),
            ..e
        })?;
        config.secrets = secrets;
        Ok(config)
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("file", e.message().to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let mut problem = e.into_inner().message().to_string();
            if is_secret_key(&key) {
                problem = mask_quoted(&problem);
            }
            ConfigError::new(if key == "." { "file".into() } else { key }, problem)
        })
    }

    /// Checks ranges and cross-field rules. No error shows a value read
    /// from a `${file:...}` reference.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|e| self.mask_error(e))
    }

    /// Section by section, in the order of the file.
    fn check(&self) -> Result<(), ConfigError> {
        self.input.check()?;
        self.fields.check()?;
        self.output.check()?;
        self.geoip.check()?;
        self.domains.check()?;
        self.urls.check()?;
        self.dns.check()?;
        self.cache.check()?;
        self.redis.check()?;
        self.pipe.check()?;
        self.worker.check()?;
        self.intel.check()?;
        intel::check_tables(&self.tables)?;
        self.kafka.check()
    }

    /// Checks what `enricher run` needs on top of [`Config::validate`].
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        self.validate()?;
        self.kafka
            .check_run()
            .and_then(|()| self.worker.check_run())
            .map_err(|e| self.mask_error(e))
    }

    /// `e` with every secret this configuration was read with masked: for
    /// the errors of checks made outside this module, where the runtime
    /// is built from it.
    pub fn mask_error(&self, e: ConfigError) -> ConfigError {
        ConfigError {
            problem: self.secrets.mask(&e.problem),
            ..e
        }
    }

    /// The effective configuration as TOML, with secrets masked: passwords
    /// (in the Redis URL, `redis.password`, secret librdkafka properties) and
    /// every value read from a `${file:...}` reference, wherever it went.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.redis.url = mask_secrets(&shown.redis.url);
        if shown.redis.password.is_some() {
            shown.redis.password = Some("***".into());
        }
        for props in [
            &mut shown.kafka.properties,
            &mut shown.kafka.consumer_properties,
            &mut shown.kafka.producer_properties,
        ] {
            for (k, v) in props.iter_mut() {
                if is_secret_property(k) {
                    *v = "***".into();
                }
            }
        }
        let rendered = if self.secrets.is_empty() {
            toml::to_string_pretty(&shown)
        } else {
            toml::Value::try_from(&shown).and_then(|mut value| {
                self.secrets.mask_value(&mut value);
                // Back through the struct for its key order; a masked value
                // that no longer parses (an address read from a file) keeps
                // the table's sorted order.
                match value.clone().try_into::<Config>() {
                    Ok(masked) => toml::to_string_pretty(&masked),
                    Err(_) => toml::to_string_pretty(&value),
                }
            })
        };
        rendered.unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_masked_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("[dns]\ntimeout_ms = \"soon\"\n").expect_err("wrong type");
        assert_eq!(e.key, "dns.timeout_ms");
        let e = Config::from_toml("[dns]\nqpss = 3\n").expect_err("unknown key");
        assert_eq!(e.key, "dns.qpss");
        let e = Config::from_toml("[nope]\n").expect_err("unknown section");
        assert_eq!(e.key, "nope");
        let e = Config::from_toml("[geoip]\nattributes = [\"shoe_size\"]\n").expect_err("bad attr");
        assert!(e.key.starts_with("geoip.attributes"), "{e}");
        let e =
            Config::from_toml("[dns]\nservers = [\"not an address\"]\n").expect_err("bad server");
        assert!(e.key.starts_with("dns.servers"), "{e}");
        let c = Config::from_toml("[dns]\nmin_ttl_secs = 10\nmax_ttl_secs = 5\n").expect("parses");
        assert_eq!(
            c.validate().expect_err("min above max").key,
            "dns.min_ttl_secs"
        );
        let c = Config::from_toml("[redis]\nurl = \"http://x\"\n").expect("parses");
        assert_eq!(c.validate().expect_err("bad scheme").key, "redis.url");
        let c = Config::from_toml("[worker]\nenrich_threads = 65\n").expect("parses");
        let e = c.validate().expect_err("too many threads");
        assert_eq!(e.key, "worker.enrich_threads");
        assert!(e.to_string().contains("at most 64"), "{e}");
        let e = Config::from_toml("not toml [").expect_err("syntax");
        assert_eq!(e.key, "file");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::from_toml(
            r#"
            [fields]
            default = ["src", "dst"]
            by_type.dns = ["id.orig_h", "answers"]
            [output]
            naming = "nested"
            provenance = true
            [geoip]
            attributes = ["country", "location", "asn"]
            skip_cidrs = ["192.0.2.0/24"]
            [dns]
            servers = ["127.0.0.1:5353"]
            scope = "private"
            [redis]
            url = "redis://:secret@127.0.0.1:6379/0"
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.output.naming, Naming::Nested);
        assert_eq!(c.fields.by_type["dns"], ["id.orig_h", "answers"]);
        assert_eq!(c.dns.scope, Scope::Private);
        let shown = c.to_masked_toml();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains(":***@127.0.0.1"), "{shown}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("enricher-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[kafka]\nbrokers = \"a:1\"\ninput_topic = \"bro_conn\"\n[dns]\nqps = 5\n",
        )
        .expect("write");
        let env = [
            ("ENRICHER_KAFKA__BROKERS".to_string(), "b:2".to_string()),
            ("ENRICHER_DNS__QPS".to_string(), "7".to_string()),
            (
                "ENRICHER_KAFKA__PROPERTIES__SASL.PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
            ("ENRICHER_LOG".to_string(), "debug".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::load(Some(&file), env).expect("loads");
        assert_eq!(c.kafka.brokers, "b:2");
        assert_eq!(c.kafka.input_topic, "bro_conn");
        assert_eq!(c.kafka.output_topic(), "bro_conn_enr");
        assert_eq!(c.kafka.dlq_topic(), "bro_conn_dlq");
        assert_eq!(c.dns.qps, 7);
        assert_eq!(c.kafka.properties["sasl.password"], "s3cret");
        assert!(!c.to_masked_toml().contains("s3cret"));
        c.validate_run().expect("valid");
        let e = Config::load(
            None,
            [("ENRICHER_DNS__QPS".to_string(), "many".to_string())],
        )
        .expect_err("bad");
        assert_eq!(e.key, "dns.qps");
        let e = Config::load(
            None,
            [(
                "ENRICHER_KAFKA__PROPERTIES__ENABLE.AUTO.COMMIT".to_string(),
                "true".to_string(),
            )],
        )
        .expect("parses")
        .validate()
        .expect_err("reserved");
        assert_eq!(e.key, "kafka.properties.enable.auto.commit");
        assert_eq!(
            Config::default().validate_run().expect_err("no topic").key,
            "kafka.input_topic"
        );
    }

    #[test]
    fn secrets_come_from_files_and_the_environment_and_stay_masked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sasl = dir.path().join("sasl-password");
        std::fs::write(&sasl, "file-s3cret-1\n").expect("write");
        let redis = dir.path().join("redis-password");
        std::fs::write(&redis, "p@ss/w:rd\n").expect("write");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                r#"
                [kafka]
                brokers = "${{BROKERS}}"
                input_topic = "bro_conn"
                [kafka.properties]
                "security.protocol" = "SASL_SSL"
                "sasl.username" = "${{SASL_USER}}"
                "sasl.password" = "${{file:{}}}"
                "sasl.oauthbearer.config" = "principal=${{file:{}}}"
                [redis]
                url = "redis://:${{REDIS_URL_PASSWORD}}@redis:6379/0"
                password = "${{file:{}}}"
                key_prefix = "literal:$${{not_a_reference}}"
                "#,
                sasl.display(),
                sasl.display(),
                redis.display()
            ),
        )
        .expect("write");
        let env = [
            ("BROKERS", "k1:9093,k2:9093"),
            ("SASL_USER", "enricher"),
            ("REDIS_URL_PASSWORD", "env-s3cret-2"),
            ("ENRICHER_DNS__ENABLED", "false"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::load(Some(&file), env).expect("loads");
        c.validate_run().expect("valid");
        assert_eq!(c.kafka.brokers, "k1:9093,k2:9093");
        assert_eq!(c.kafka.properties["sasl.username"], "enricher");
        assert_eq!(c.kafka.properties["sasl.password"], "file-s3cret-1");
        assert_eq!(
            c.kafka.properties["sasl.oauthbearer.config"],
            "principal=file-s3cret-1"
        );
        assert_eq!(c.redis.url, "redis://:env-s3cret-2@redis:6379/0");
        assert_eq!(c.redis.password.as_deref(), Some("p@ss/w:rd"));
        assert_eq!(c.redis.key_prefix, "literal:${not_a_reference}");
        assert!(!c.dns.enabled);
        let shown = c.to_masked_toml();
        for secret in ["file-s3cret-1", "env-s3cret-2", "p@ss/w:rd"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("k1:9093,k2:9093"), "{shown}");
        assert!(shown.contains("\"principal=***\""), "{shown}");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("p@ss"),
            "{debug}"
        );
        assert!(shown.contains("redis://:***@redis:6379/0"), "{shown}");
        // The masked output is itself a valid config, in the usual order.
        Config::from_toml(&shown).expect("masked output parses");
        let sections: Vec<&str> = shown.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(sections[..2], ["[input]", "[fields]"], "{shown}");
    }

    #[test]
    fn a_reference_that_cannot_be_resolved_names_the_key() {
        let e = Config::load(
            None,
            [(
                "ENRICHER_KAFKA__PROPERTIES__SASL.PASSWORD".to_string(),
                "${NOT_SET_HERE}".to_string(),
            )],
        )
        .expect_err("unset");
        assert_eq!(e.key, "kafka.properties.sasl.password");
        assert!(e.problem.contains("NOT_SET_HERE"), "{e}");
        let e = Config::load(
            None,
            [(
                "ENRICHER_REDIS__PASSWORD".to_string(),
                "${file:/nonexistent/redis-password}".to_string(),
            )],
        )
        .expect_err("unreadable");
        assert_eq!(e.key, "redis.password");
        assert!(e.problem.contains("/nonexistent/redis-password"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn errors_never_show_a_value_read_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("s");
        std::fs::write(&secret, "hunter2-secret\n").expect("write");
        let reference = format!("${{file:{}}}", secret.display());
        let e = Config::load(None, [("ENRICHER_DNS__QPS".to_string(), reference.clone())])
            .expect_err("a string is not a number");
        assert_eq!(e.key, "dns.qps");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = Config::load(
            None,
            [(
                "ENRICHER_REDIS__URL".to_string(),
                format!("http://{reference}@h"),
            )],
        )
        .expect("parses");
        let e = c.validate().expect_err("bad scheme");
        assert_eq!(e.key, "redis.url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn environment_values_are_read_by_the_type_the_key_expects() {
        let load =
            |name: &str, value: &str| Config::load(None, [(name.to_string(), value.to_string())]);
        for text in ["123456", "true", "1979-05-27T07:32:00Z", "\"q\"", "{a=1}"] {
            let c = load("ENRICHER_REDIS__PASSWORD", text).expect(text);
            assert_eq!(c.redis.password.as_deref(), Some(text));
        }
        let c = load("ENRICHER_KAFKA__INPUT_TOPIC", "2024").expect("a topic");
        assert_eq!(c.kafka.input_topic, "2024");
        let c = load("ENRICHER_DNS__QPS", "70").expect("a number");
        assert_eq!(c.dns.qps, 70);
        let c = load("ENRICHER_FIELDS__DEFAULT", "[\"a\", \"b\"]").expect("a list");
        assert_eq!(c.fields.default, ["a", "b"]);
        let c = load(
            "ENRICHER_KAFKA__PRODUCER_PROPERTIES",
            "{\"linger.ms\" = 5, \"acks\" = \"all\"}",
        )
        .expect("an inline table");
        assert_eq!(c.kafka.producer_properties["linger.ms"], "5");
        let e = load("ENRICHER_KAFKA__PRODUCER_PROPERTIES", "linger.ms=5").expect_err("no table");
        assert_eq!(e.key, "kafka.producer_properties");
        assert!(e.problem.contains("__<KEY>"), "{e}");
        let e = load("ENRICHER_KAFKA__NO_SUCH_KEY", "1").expect_err("unknown");
        assert_eq!(e.key, "kafka.no_such_key");
    }

    #[test]
    fn an_error_about_a_secret_names_the_key_and_never_the_value() {
        let e = Config::from_toml("[redis]\npassword = 123456\n").expect_err("a number");
        assert_eq!(e.key, "redis.password");
        assert!(!e.to_string().contains("123456"), "{e}");
        assert!(e.problem.contains("`***`"), "{e}");
        let e = Config::from_toml("[kafka.properties]\n\"sasl.password\" = true\n")
            .expect_err("a boolean");
        assert!(!e.problem.contains("true"), "{e}");
        // A secret set through the environment is masked in any error.
        let e = Config::load(
            None,
            [
                ("ENRICHER_REDIS__PASSWORD".to_string(), "pw-9f3".to_string()),
                (
                    "ENRICHER_REDIS__URL".to_string(),
                    "http://pw-9f3@h".to_string(),
                ),
            ],
        )
        .expect("loads")
        .validate()
        .expect_err("bad scheme");
        assert!(!e.to_string().contains("pw-9f3"), "{e}");
    }
}

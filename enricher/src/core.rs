//! The one place that builds the enrichment core from a [`Config`]: the
//! binary, the tests and the load test all go through [`build`]. It is
//! also where a configuration is checked against the runtime's own rules
//! ([`check`]): the config module is plain data and knows none of them.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{self, RedisCache, RedisOptions};
use crate::config::{Config, ConfigError, Naming};
use crate::dns::{Dns, DnsOptions};
use crate::enrich::{self, EnrichOptions, Enricher, ListsWatcher};
use crate::geoip::{self, GeoIp, GeoIpOptions};
use crate::secrets::mask_secrets;

/// The running core and its background upkeep.
#[derive(Debug)]
pub struct Core {
    /// The enricher.
    pub enricher: Arc<Enricher>,
    /// The GeoIP reload watcher, if reloading is on.
    pub geoip_watcher: Option<tokio::task::JoinHandle<()>>,
    /// The `domains.public_suffix_list` reload watcher, if one is given and
    /// reloading is on.
    pub suffix_watcher: Option<tokio::task::JoinHandle<()>>,
    /// The files behind the indicator set and tables, if any are configured.
    pub lists: Option<Arc<ListsWatcher>>,
    /// The task polling them, if reloading is on.
    pub lists_watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        for w in [
            &self.geoip_watcher,
            &self.suffix_watcher,
            &self.lists_watcher,
        ]
        .into_iter()
        .flatten()
        {
            w.abort();
        }
    }
}

/// Checks `config` as `enricher check-config` does, and `enricher run`
/// before it binds any port: the config's own rules ([`Config::validate`]),
/// then those of the parts built from it (the enricher tracks at most
/// [`enrich::MAX_FIELDS`] fields, `geoip.attributes` are GeoIP's, the Redis
/// URL makes a client), without opening a file or a connection. Every
/// error names its key and shows no secret.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.validate()?;
    check_parts(config).map_err(|e| config.mask_error(e))
}

fn check_parts(config: &Config) -> Result<(), ConfigError> {
    enrich::check_fields(&config.fields).map_err(|p| ConfigError::new("fields", p))?;
    geoip::check_attributes(&config.geoip.attributes)
        .map_err(|p| ConfigError::new("geoip.attributes", p))?;
    if let Some(opts) = RedisOptions::from_config(config) {
        cache::check(&opts).map_err(|e| ConfigError::new(e.key(), mask_secrets(&e.to_string())))?;
    }
    Ok(())
}

/// The GeoIP options of `config`: `[geoip]`, and the subdivision form
/// ECS naming wants.
pub fn geoip_options(config: &Config) -> GeoIpOptions {
    GeoIpOptions {
        region_with_country: config.output.naming == Naming::Ecs,
        ..GeoIpOptions::from_config(&config.geoip)
    }
}

/// Checks `config` ([`check`]) and builds the core. Must run inside a tokio
/// runtime. Every error names the config key at fault (the binary exits
/// with 64).
pub fn build(config: &Config) -> Result<Core, ConfigError> {
    check(config)?;
    let geo = GeoIp::open(&geoip_options(config))
        .map_err(|e| ConfigError::new(e.key(), e.to_string()))?;
    let geo = Arc::new(geo);
    let dns = if config.dns.enabled {
        let dns = Dns::new(DnsOptions::from_config(&config.dns))
            .map_err(|e| ConfigError::new("dns.servers", e.to_string()))?;
        Some(Arc::new(dns))
    } else {
        None
    };
    let l2 = match RedisOptions::from_config(config) {
        Some(opts) => {
            Some(RedisCache::start(opts).map_err(|e| ConfigError::new(e.key(), e.to_string()))?)
        }
        None => None,
    };
    if let Some(path) = &config.domains.public_suffix_list {
        crate::domain::Psl::from_file(path)
            .map_err(|e| ConfigError::new("domains.public_suffix_list", e.to_string()))?;
    }
    let enricher = Enricher::new(
        EnrichOptions::from_config(config),
        Arc::clone(&geo),
        dns,
        l2,
    )
    .map_err(|e| ConfigError::new("fields", e))?;
    let lists = ListsWatcher::load(&enricher, config)?.map(Arc::new);
    let geoip_watcher = (geo.is_configured() && config.geoip.reload_interval_ms > 0)
        .then(|| geo.spawn_watcher(Duration::from_millis(config.geoip.reload_interval_ms)));
    let suffix_watcher = (config.domains.public_suffix_list.is_some()
        && config.domains.reload_interval_ms > 0)
        .then(|| {
            enricher.spawn_suffix_watcher(Duration::from_millis(config.domains.reload_interval_ms))
        });
    let interval = Duration::from_millis(config.intel.reload_interval_ms);
    let lists_watcher = lists
        .as_ref()
        .filter(|_| !interval.is_zero())
        .map(|l| l.spawn(interval));
    Ok(Core {
        enricher,
        geoip_watcher,
        suffix_watcher,
        lists,
        lists_watcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_rules_name_the_key() {
        let c = Config::from_toml("[geoip]\nattributes = [\"ptr\"]\n").expect("parses");
        c.validate().expect("the config's own rules hold");
        assert_eq!(
            check(&c).expect_err("ptr is not geo").key,
            "geoip.attributes"
        );
        let mut c = Config::default();
        c.fields.default = (0..=enrich::MAX_FIELDS).map(|i| format!("f{i}")).collect();
        let e = check(&c).expect_err("too many fields");
        assert_eq!(e.key, "fields");
        assert!(e.problem.contains("at most 64"), "{e}");
        let c = Config::from_toml("[redis]\nurl = \"redis://:s3cret@127.0.0.1:port/0\"\n")
            .expect("parses");
        c.validate().expect("the scheme is right");
        let e = check(&c).expect_err("no client from that URL");
        assert_eq!(e.key, "redis.url");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        check(&Config::default()).expect("defaults pass");
    }

    #[test]
    fn redis_tls_ca_file_needs_rediss_and_a_readable_pem() {
        let client_error = |c: &Config| {
            let opts = RedisOptions::from_config(c).expect("a URL is set");
            cache::client(&opts).expect_err("refused")
        };
        let mut c = Config::default();
        c.redis.url = "redis://127.0.0.1:6379/".into();
        c.redis.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(check(&c).expect_err("not rediss").key, "redis.tls_ca_file");
        c.redis.url = "rediss://127.0.0.1:6379/".into();
        // Checked where the worker starts, not by check-config.
        check(&c).expect("the file is not read by check");
        let e = client_error(&c);
        assert_eq!(e.key(), "redis.tls_ca_file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().expect("temp dir");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        c.redis.tls_ca_file = Some(not_pem);
        assert_eq!(client_error(&c).key(), "redis.tls_ca_file");
        c.redis.tls_ca_file = None;
        c.redis.password = Some("pw".into());
        check(&c).expect("rediss:// with the system roots and a password");
        assert!(c.to_masked_toml().contains("password = \"***\""));
    }
}

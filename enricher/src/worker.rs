//! The one place that builds the enrichment core from a [`Config`]: the
//! binary, the tests and the load test all go through [`build`].

use std::sync::Arc;
use std::time::Duration;

use crate::cache::RedisCache;
use crate::config::{Config, ConfigError};
use crate::dns::Dns;
use crate::enrich::Enricher;
use crate::geoip::GeoIp;

/// The running core and its background upkeep.
#[derive(Debug)]
pub struct Core {
    /// The enricher.
    pub enricher: Arc<Enricher>,
    /// The GeoIP reload watcher, if reloading is on.
    pub geoip_watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(w) = &self.geoip_watcher {
            w.abort();
        }
    }
}

/// Validates `config` and builds the core. Must run inside a tokio runtime.
/// Every error names the config key at fault (the binary exits with 64).
pub fn build(config: &Config) -> Result<Core, ConfigError> {
    config.validate()?;
    let geo = GeoIp::open(&config.geoip_options()).map_err(|e| {
        let key = match &e {
            crate::geoip::GeoIpError::Invalid { kind, .. } => format!("geoip.{}", kind.label()),
            crate::geoip::GeoIpError::Io { path, .. }
                if Some(path) == config.geoip.asn.as_ref() =>
            {
                "geoip.asn".into()
            }
            crate::geoip::GeoIpError::Io { .. } => "geoip.city".into(),
        };
        ConfigError::new(key, e.to_string())
    })?;
    let geo = Arc::new(geo);
    let dns = if config.dns.enabled {
        let dns = Dns::new(config.dns_options())
            .map_err(|e| ConfigError::new("dns.servers", e.to_string()))?;
        Some(Arc::new(dns))
    } else {
        None
    };
    let l2 = match config.redis_options() {
        Some(opts) => {
            Some(RedisCache::start(opts).map_err(|e| ConfigError::new(e.key(), e.to_string()))?)
        }
        None => None,
    };
    let enricher = Enricher::new(config.enrich_options(), Arc::clone(&geo), dns, l2)
        .map_err(|e| ConfigError::new("fields", e))?;
    let geoip_watcher = (geo.is_configured() && config.geoip.reload_interval_ms > 0)
        .then(|| geo.spawn_watcher(Duration::from_millis(config.geoip.reload_interval_ms)));
    Ok(Core {
        enricher,
        geoip_watcher,
    })
}

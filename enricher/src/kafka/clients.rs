//! The Kafka clients' configurations and their errors: the defaults a
//! careful operator would choose, the operator's properties over them, and
//! a refused property named by its config key with secrets masked. Also the
//! one place librdkafka's global client errors are counted and logged.

use std::sync::Mutex;
use std::time::Instant;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use super::streak::{Messages, Streak};
use crate::config::{Config, ConfigError, is_pattern};
use crate::metrics as m;

/// librdkafka's global errors, said once per streak.
pub(super) const CLIENT_ERRORS: Messages = Messages {
    started: "Kafka client errors",
    ongoing: "Kafka client errors go on",
    ended: "Kafka client errors stopped",
};

/// librdkafka's global errors (all brokers down, transport failures), said
/// once per streak instead of once per reconnection attempt.
pub(super) fn log_client_error(streak: &Mutex<Streak>, error: &KafkaError, reason: &str) {
    metrics::counter!(m::CLIENT_ERRORS, "error" => error_label(error)).increment(1);
    let mut streak = streak.lock().unwrap_or_else(|p| p.into_inner());
    streak.failed(Instant::now(), &format_args!("{error}: {reason}"), "client");
}

/// An error's fixed label for a metric: librdkafka's code name.
pub(super) fn error_label(error: &KafkaError) -> String {
    error
        .rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |code| format!("{code:?}"))
}

/// `defaults` for a client of `brokers`, with the operator's librdkafka
/// `properties` set over them in order, so what is configured wins. Every
/// client the binary builds ends here: the worker's two, `status` and
/// `redrive`.
pub(crate) fn configured<'a>(
    mut defaults: ClientConfig,
    brokers: &str,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    defaults.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        defaults.set(k, v);
    }
    defaults
}

/// The producer's configuration, with the defaults a careful operator would
/// choose: `acks=all`, records in order through retries (one request in
/// flight per broker, or the idempotent producer with `kafka.idempotence`),
/// compression, and batching for throughput.
fn producer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    if config.kafka.idempotence {
        c.set("enable.idempotence", "true");
    } else {
        c.set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
    }
    c.set("acks", "all")
        .set("compression.type", config.kafka.compression.librdkafka())
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set(
            "queue.buffering.max.messages",
            (config.worker.max_in_flight * 4).max(100_000).to_string(),
        );
    let k = &config.kafka;
    configured(
        c,
        &k.brokers,
        k.properties.iter().chain(&k.producer_properties),
    )
}

/// Creates the producer with its context.
pub(super) fn producer<C, P>(config: &Config, ctx: C) -> Result<P, ConfigError>
where
    C: ProducerContext,
    P: FromClientConfigAndContext<C>,
{
    producer_config(config)
        .create_with_context(ctx)
        .map_err(|e| client_error(config, "producer", &e))
}

/// The producer's `message.max.bytes` as configured (librdkafka's default
/// otherwise).
pub(super) fn message_max_bytes(config: &Config) -> usize {
    config
        .kafka
        .producer_properties
        .get("message.max.bytes")
        .or_else(|| config.kafka.properties.get("message.max.bytes"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The consumer's `fetch.queue.backoff.ms` unless configured.
const FETCH_QUEUE_BACKOFF_MS: &str = "100";
/// The consumer's `fetch.wait.max.ms` unless configured.
const FETCH_WAIT_MAX_MS: &str = "50";
/// The consumer's prefetch bound (`queued.max.messages.kbytes`) unless
/// configured: 16 MiB.
const QUEUED_MAX_KBYTES: &str = "16384";

/// The consumer's metadata refresh with a pattern subscription, unless
/// configured: how soon a new matching topic is consumed.
const PATTERN_METADATA_REFRESH_MS: &str = "30000";

fn consumer_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka (2.4 and later) waits this long before fetching again
        // once its prefetch queue is full; its 1 s default idles a worker
        // that drains the queue faster than that (any worker catching up
        // on lag): the load test saw whole-process stalls of 0.3-0.5 s that
        // cut passthrough from about 200k to 110k records/s.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        // Brokers that hold a fetch which finds nothing new for the whole
        // wait, even when records arrive meanwhile (librdkafka's mock
        // cluster, tansu 0.6.0), held a caught-up worker's next records up
        // to librdkafka's 500 ms: the bench's warm p99 at half the maximum
        // went from 483 to 36-101 ms (mock) and 590 to 115 ms (tansu).
        // Kafka answers as soon as a record is there, so on Kafka this only
        // bounds how often an idle worker asks: 20 times a second.
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        // The prefetch is most of a worker's memory: librdkafka's 64 MiB
        // default per worker bought nothing once the backoff above is
        // short (bench passthrough and warm the same at 16 MiB).
        .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES)
        .set(
            "statistics.interval.ms",
            config.worker.stats_interval_ms.to_string(),
        );
    if config.kafka.inputs().len() > 1 || config.kafka.has_pattern() {
        // librdkafka's default (range) hands out each topic on its own, so
        // partition 0 of every small topic lands on the same worker and a
        // second worker of one-partition topics gets nothing; round robin
        // deals the partitions of all the topics out together.
        c.set("partition.assignment.strategy", "roundrobin");
    }
    if config.kafka.has_pattern() {
        // A pattern sees a new topic only when the metadata is refreshed:
        // librdkafka's 5 minutes is long for a new log type to wait, and
        // a metadata request every 30 s is nothing for a broker.
        c.set(
            "topic.metadata.refresh.interval.ms",
            PATTERN_METADATA_REFRESH_MS,
        );
    }
    let k = &config.kafka;
    configured(
        c,
        &k.brokers,
        k.properties.iter().chain(&k.consumer_properties),
    )
}

/// Creates the consumer with its context.
pub(super) fn consumer<C: ConsumerContext>(
    config: &Config,
    ctx: C,
) -> Result<BaseConsumer<C>, ConfigError> {
    consumer_config(config)
        .create_with_context(ctx)
        .map_err(|e| client_error(config, "consumer", &e))
}

/// Creates the consumer and the producer exactly as [`run`] would, and drops
/// them: librdkafka checks every property then (a bad value, a TLS file it
/// cannot load, a SASL mechanism it does not have) without reaching a broker,
/// and compiles each pattern of `kafka.input_topics` in its own dialect.
/// The binary calls it before binding any port; the error names the property.
pub fn check_clients(config: &Config) -> Result<(), ConfigError> {
    let consumer: BaseConsumer<Quiet> = consumer_config(config)
        .create_with_context(Quiet)
        .map_err(|e| client_error(config, "consumer", &e))?;
    for pattern in config.kafka.inputs().into_iter().filter(|t| is_pattern(t)) {
        let refused = consumer.subscribe(&[pattern]).is_err();
        consumer.unsubscribe();
        if refused {
            return Err(ConfigError::new(
                "kafka.input_topics",
                format!("librdkafka cannot read {pattern:?} as a regular expression"),
            ));
        }
    }
    drop(consumer);
    let producer: rdkafka::producer::BaseProducer<Quiet> = producer_config(config)
        .create_with_context(Quiet)
        .map_err(|e| client_error(config, "producer", &e))?;
    drop(producer);
    Ok(())
}

/// The context of [`check_clients`]' clients: they live for an instant, but
/// may start connecting first, and a failure of that (no broker reachable
/// yet) is no news for a configuration check: nothing is logged, so the
/// check's own error is the one line a bad configuration prints.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}

    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for Quiet {}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// A client that librdkafka refused, as a config error naming the property
/// (`kafka.properties.ssl.ca.location`) with secret values masked.
fn client_error(config: &Config, client: &str, error: &KafkaError) -> ConfigError {
    let own = if client == "consumer" {
        (
            "kafka.consumer_properties",
            &config.kafka.consumer_properties,
        )
    } else {
        (
            "kafka.producer_properties",
            &config.kafka.producer_properties,
        )
    };
    let sections = [own, ("kafka.properties", &config.kafka.properties)];
    let key_of = |property: &str| {
        sections
            .iter()
            .find(|(_, props)| props.contains_key(property))
            .map(|(section, _)| format!("{section}.{property}"))
    };
    let mask = |text: &str| {
        let mut text = text.to_string();
        for (_, props) in &sections {
            for (k, v) in props.iter() {
                if crate::secrets::is_secret_property(k) && !v.is_empty() {
                    text = text.replace(v.as_str(), "***");
                }
            }
        }
        text
    };
    match error {
        KafkaError::ClientConfig(_, desc, property, _) => ConfigError::new(
            key_of(property).unwrap_or_else(|| "kafka".into()),
            format!(
                "librdkafka refused the {client} configuration: {}",
                mask(desc)
            ),
        ),
        KafkaError::ClientCreation(message) => {
            // librdkafka names the property that failed ("ssl.ca.location
            // failed: ...") or quotes its value ("Unsupported hash function:
            // SCRAM-SHA-1024"); never match on a secret's value.
            let properties = || sections.iter().flat_map(|(_, props)| props.iter());
            let named = properties()
                .map(|(k, _)| k)
                .filter(|k| message.contains(k.as_str()))
                .max_by_key(|k| k.len())
                .or_else(|| {
                    properties()
                        .filter(|(k, v)| {
                            v.len() >= 3
                                && !crate::secrets::is_secret_property(k)
                                && message.contains(v.as_str())
                        })
                        .max_by_key(|(_, v)| v.len())
                        .map(|(k, _)| k)
                });
            ConfigError::new(
                named
                    .and_then(|k| key_of(k))
                    .unwrap_or_else(|| "kafka.properties".into()),
                format!("cannot create the {client}: {}", mask(message)),
            )
        }
        other => ConfigError::new("kafka", format!("{client}: {}", mask(&other.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_keeps_order_without_the_idempotent_producers_busy_wait() {
        let mut config = Config::default();
        let c = producer_config(&config);
        assert_eq!(c.get("enable.idempotence"), Some("false"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("acks"), Some("all"));
        config.kafka.idempotence = true;
        let c = producer_config(&config);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), None);
    }

    #[test]
    fn the_fetch_backoff_and_wait_are_short_and_the_prefetch_bounded_unless_configured() {
        let mut config = Config::default();
        let c = consumer_config(&config);
        assert_eq!(
            c.get("fetch.queue.backoff.ms"),
            Some(FETCH_QUEUE_BACKOFF_MS)
        );
        assert_eq!(c.get("queued.max.messages.kbytes"), Some(QUEUED_MAX_KBYTES));
        assert_eq!(c.get("fetch.wait.max.ms"), Some(FETCH_WAIT_MAX_MS));
        config
            .kafka
            .consumer_properties
            .insert("fetch.queue.backoff.ms".into(), "500".into());
        config
            .kafka
            .consumer_properties
            .insert("fetch.wait.max.ms".into(), "500".into());
        let c = consumer_config(&config);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("500"));
        assert_eq!(c.get("topic.metadata.refresh.interval.ms"), None);
        assert_eq!(c.get("partition.assignment.strategy"), None);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("500"));
    }

    #[test]
    fn properties_for_both_clients_win_over_either_clients_defaults() {
        let mut config = Config::default();
        let both = &mut config.kafka.properties;
        both.insert("fetch.wait.max.ms".into(), "400".into());
        both.insert("linger.ms".into(), "20".into());
        both.insert("auto.offset.reset".into(), "latest".into());
        let consumer = consumer_config(&config);
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("400"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("latest"));
        assert_eq!(producer_config(&config).get("linger.ms"), Some("20"));
        // A client's own map has the last word over the shared one.
        config
            .kafka
            .consumer_properties
            .insert("fetch.wait.max.ms".into(), "300".into());
        let consumer = consumer_config(&config);
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("300"));
        assert_eq!(
            consumer.get("bootstrap.servers"),
            Some(&*config.kafka.brokers)
        );
    }

    #[test]
    fn several_topics_are_dealt_round_robin_and_a_pattern_refreshes_every_30_seconds() {
        let mut config = Config::default();
        config.kafka.input_topics = vec!["bro_conn".into(), "^bro_.*".into()];
        let c = consumer_config(&config);
        assert_eq!(
            c.get("topic.metadata.refresh.interval.ms"),
            Some(PATTERN_METADATA_REFRESH_MS)
        );
        assert_eq!(c.get("partition.assignment.strategy"), Some("roundrobin"));
        config
            .kafka
            .consumer_properties
            .insert("topic.metadata.refresh.interval.ms".into(), "1000".into());
        let c = consumer_config(&config);
        assert_eq!(c.get("topic.metadata.refresh.interval.ms"), Some("1000"));
    }
}

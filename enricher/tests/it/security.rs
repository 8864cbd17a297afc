//! Security: secrets from files and the environment (masked in
//! `check-config`, never logged), Kafka over TLS with SASL/SCRAM (the
//! configuration path: librdkafka's mock cluster speaks neither), Redis with
//! a password and over TLS against a real `redis-server`.

use std::process::{Command, Output};

use enricher::cache::CircuitState;
use test_support::{Behaviour, DnsServer, RedisServer, TestPki};

use super::*;

/// Runs the real binary with `env` added to a clean environment.
fn enricher(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_enricher"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    super::pipe::output_of(&mut cmd, stdin)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ---- Secrets: check-config as a user runs it ------------------------------

#[test]
fn check_config_masks_secrets_read_from_files_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let sasl = write(dir.path(), "sasl-password", "Fi1e-S3cret-sasl\n");
    let redis = write(dir.path(), "redis-password", "Fi1e-S3cret-redis\n");
    let config = write(
        dir.path(),
        "enricher.toml",
        &format!(
            r#"
[kafka]
brokers = "${{KAFKA_BROKERS}}"
input_topic = "bro_conn"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "enricher"
"sasl.password" = "${{file:{sasl}}}"
"ssl.ca.location" = "/etc/kafka-tls/ca.crt"
[redis]
url = "rediss://:${{REDIS_URL_PASSWORD}}@redis:6380/0"
password = "${{file:{redis}}}"
tls_ca_file = "/etc/redis-tls/ca.crt"
"#,
            sasl = sasl.display(),
            redis = redis.display(),
        ),
    );
    let out = enricher(
        &["check-config", &path_of(&config)],
        &[
            ("KAFKA_BROKERS", "k0:9093,k1:9093"),
            ("REDIS_URL_PASSWORD", "Env-S3cret-url"),
            (
                "ENRICHER_KAFKA__PROPERTIES__SSL.KEY.PASSWORD",
                "Env-S3cret-key",
            ),
            ("ENRICHER_LOG", "trace"),
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains("S3cret"),
        "{stdout}{stderr}"
    );
    let shown: toml::Table = stdout.parse().unwrap();
    let props = &shown["kafka"]["properties"];
    assert_eq!(props["sasl.password"].as_str(), Some("***"));
    assert_eq!(props["ssl.key.password"].as_str(), Some("***"));
    assert_eq!(props["sasl.username"].as_str(), Some("enricher"));
    assert_eq!(shown["kafka"]["brokers"].as_str(), Some("k0:9093,k1:9093"));
    assert_eq!(
        shown["redis"]["url"].as_str(),
        Some("rediss://:***@redis:6380/0")
    );
    assert_eq!(shown["redis"]["password"].as_str(), Some("***"));
    assert_eq!(
        shown["redis"]["tls_ca_file"].as_str(),
        Some("/etc/redis-tls/ca.crt")
    );
}

#[test]
fn an_unresolvable_reference_exits_64_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let unset = write(
        dir.path(),
        "unset.toml",
        "[kafka.properties]\n\"sasl.password\" = \"${KAFKA_PASSWORD}\"\n",
    );
    let unreadable = write(
        dir.path(),
        "unreadable.toml",
        "[redis]\nurl = \"redis://redis:6379/0\"\npassword = \"${file:/nonexistent/redis-password}\"\n",
    );
    for (file, key, names) in [
        (&unset, "kafka.properties.sasl.password", "KAFKA_PASSWORD"),
        (&unreadable, "redis.password", "/nonexistent/redis-password"),
    ] {
        for args in [
            vec!["check-config", &path_of(file)],
            vec!["pipe", "--config", &path_of(file), "--no-dns"],
        ] {
            let out = enricher(&args, &[], b"");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains(key) && stderr.contains(names), "{stderr}");
        }
    }
}

#[test]
fn a_secret_in_the_environment_is_taken_as_text_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.toml",
        "[redis]\nurl = \"redis://redis:6379/0\"\n",
    );
    // Digits, a boolean, a date and quotes: each is a password, as written.
    for password in ["123456", "true", "1979-05-27", "\"quoted\"", "[1]"] {
        let out = enricher(
            &["check-config", &path_of(&config)],
            &[("ENRICHER_REDIS__PASSWORD", password)],
            b"",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{password}: {stderr}");
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(shown.contains("password = \"***\""), "{shown}");
    }
    // A secret of the wrong type in a file: the key and ***, never the value.
    let typed = write(dir.path(), "typed.toml", "[redis]\npassword = 987654\n");
    let out = enricher(&["check-config", &path_of(&typed)], &[], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("redis.password") && stderr.contains("***"),
        "{stderr}"
    );
    assert!(!stderr.contains("987654"), "{stderr}");
    // A map-typed key takes an inline table.
    let out = enricher(
        &["check-config", &path_of(&config)],
        &[(
            "ENRICHER_KAFKA__CONSUMER_PROPERTIES",
            "{\"session.timeout.ms\" = \"6000\", \"fetch.wait.max.ms\" = 20}",
        )],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let shown: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    let props = &shown["kafka"]["consumer_properties"];
    assert_eq!(props["session.timeout.ms"].as_str(), Some("6000"));
    assert_eq!(props["fetch.wait.max.ms"].as_str(), Some("20"));
}

// ---- Kafka: TLS and SASL/SCRAM ---------------------------------------------

fn sasl_ssl(ca: &Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = "127.0.0.1:9093".into();
    c.kafka.input_topic = "bro_conn".into();
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "enricher"),
        ("sasl.password", "Kafka-S3cret"),
        ("ssl.ca.location", &path_of(ca)),
        ("ssl.endpoint.identification.algorithm", "https"),
    ] {
        c.kafka.properties.insert(k.into(), v.into());
    }
    c
}

#[test]
fn sasl_ssl_with_scram_and_a_generated_ca_builds_both_clients() {
    let pki = TestPki::generate().unwrap();
    let c = sasl_ssl(pki.ca_cert());
    c.validate_run().unwrap();
    enricher::kafka::check_clients(&c).unwrap();
    // SCRAM-SHA-256 and plain TLS as well.
    let mut c256 = c.clone();
    c256.kafka
        .properties
        .insert("sasl.mechanism".into(), "SCRAM-SHA-256".into());
    enricher::kafka::check_clients(&c256).unwrap();
    let mut tls = c.clone();
    tls.kafka.properties.retain(|k, _| !k.starts_with("sasl."));
    tls.kafka
        .properties
        .insert("security.protocol".into(), "SSL".into());
    enricher::kafka::check_clients(&tls).unwrap();
}

#[test]
fn a_bad_tls_or_sasl_property_fails_at_start_naming_it() {
    let pki = TestPki::generate().unwrap();
    let mut missing_ca = sasl_ssl(pki.ca_cert());
    missing_ca
        .kafka
        .properties
        .insert("ssl.ca.location".into(), "/nonexistent/kafka-ca.pem".into());
    let e = enricher::kafka::check_clients(&missing_ca).unwrap_err();
    assert_eq!(e.key, "kafka.properties.ssl.ca.location", "{e}");
    assert!(!e.to_string().contains("Kafka-S3cret"), "{e}");

    let not_a_ca = write(pki.dir(), "not-a-ca.pem", "not a certificate\n");
    let mut bad_ca = sasl_ssl(pki.ca_cert());
    bad_ca
        .kafka
        .properties
        .insert("ssl.ca.location".into(), path_of(&not_a_ca));
    let e = enricher::kafka::check_clients(&bad_ca).unwrap_err();
    assert_eq!(e.key, "kafka.properties.ssl.ca.location", "{e}");

    let mut mechanism = sasl_ssl(pki.ca_cert());
    mechanism
        .kafka
        .properties
        .insert("sasl.mechanism".into(), "SCRAM-SHA-1024".into());
    let e = enricher::kafka::check_clients(&mechanism).unwrap_err();
    assert_eq!(e.key, "kafka.properties.sasl.mechanism", "{e}");

    let mut protocol = sasl_ssl(pki.ca_cert());
    protocol
        .kafka
        .consumer_properties
        .insert("security.protocol".into(), "SASL_TLS".into());
    let e = enricher::kafka::check_clients(&protocol).unwrap_err();
    assert_eq!(e.key, "kafka.consumer_properties.security.protocol", "{e}");
}

#[test]
fn enricher_run_with_a_missing_kafka_ca_exits_64_before_binding_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "run.toml",
        r#"
[kafka]
brokers = "127.0.0.1:9"
input_topic = "bro_conn"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "enricher"
"sasl.password" = "${KAFKA_PASSWORD}"
"ssl.ca.location" = "/nonexistent/kafka-ca.pem"
"#,
    );
    let port = test_support::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let out = enricher(
        &[
            "run",
            "--config",
            &path_of(&config),
            "--no-dns",
            "--metrics-addr",
            &metrics,
        ],
        &[
            ("KAFKA_PASSWORD", "Kafka-S3cret"),
            ("ENRICHER_LOG", "debug"),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("kafka.properties.ssl.ca.location"),
        "{stderr}"
    );
    assert!(!stderr.contains("Kafka-S3cret"), "{stderr}");
}

// ---- Redis: a password, and TLS ---------------------------------------------

const REDIS_PASSWORD: &str = "Redis-S3cret pass";

fn ptr_records(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| conn(&format!("10.1.0.{i}"), "10.0.0.1"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_a_password_in_the_url_or_in_redis_password() {
    let redis = RedisServer::start_with_args(&["--requirepass", REDIS_PASSWORD]).unwrap();
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let in_url = format!(
        "redis://:{}@127.0.0.1:{}/",
        REDIS_PASSWORD.replace(' ', "%20"),
        redis.port()
    );
    let mut by_key = config(&dbs, Some(dns.addr()), Some(redis.url()));
    by_key.redis.password = Some(REDIS_PASSWORD.into());
    for (i, c) in [config(&dbs, Some(dns.addr()), Some(in_url)), by_key]
        .iter()
        .enumerate()
    {
        redis.command(&["FLUSHALL"]).unwrap();
        let core = build(c);
        for r in ptr_records(5) {
            let v = enrich(&core.enricher, &r).await;
            assert!(v["id.orig_h_ptr"].is_string(), "{v}");
        }
        // Five originators and the one responder.
        wait_for("the L2 writes", || dbsize(&redis) == 6).await;
        assert_eq!(
            core.enricher.stats().snapshot().cache.l2_unavailable,
            0,
            "config {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_opens_the_circuit_and_is_never_logged() {
    let redis = RedisServer::start_with_args(&["--requirepass", REDIS_PASSWORD]).unwrap();
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let dir = tempfile::tempdir().unwrap();
    let wrong = write(dir.path(), "redis-password", "Wrong-S3cret\n");
    let file = write(
        dir.path(),
        "pipe.toml",
        &format!(
            "[redis]\nurl = \"redis://:Url-S3cret@127.0.0.1:{}/\"\npassword = \"${{file:{}}}\"\nfailure_threshold = 1\ntimeout_ms = 500\n",
            redis.port(),
            wrong.display()
        ),
    );
    let input: String = ptr_records(20).iter().map(|r| format!("{r}\n")).collect();
    let args = vec![
        "pipe".to_string(),
        "--config".into(),
        path_of(&file),
        "--geoip-city".into(),
        path_of(&dbs.city),
        "--geoip-asn".into(),
        path_of(&dbs.asn),
        "--dns-server".into(),
        dns.addr().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        enricher(&args, &[("ENRICHER_LOG", "debug")], input.as_bytes())
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20, "every record enriched");
    assert!(lines.iter().all(|v| v["id.orig_h_ptr"].is_string()));
    assert!(
        stderr.contains("circuit open") && stderr.contains("authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("S3cret"), "{stderr}");
    assert_eq!(dbsize(&redis), 0, "nothing written with a wrong password");
}

/// `redis-server` with TLS on a second port (the plain port stays for checks).
fn tls_redis(pki: &TestPki) -> (RedisServer, u16) {
    let mut last = None;
    for _ in 0..3 {
        let tls_port = test_support::free_port().to_string();
        match RedisServer::start_with_args(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &path_of(pki.server_cert()),
            "--tls-key-file",
            &path_of(pki.server_key()),
            "--tls-ca-cert-file",
            &path_of(pki.ca_cert()),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            REDIS_PASSWORD,
        ]) {
            Ok(redis) => return (redis, tls_port.parse().unwrap()),
            Err(e) => last = Some(e),
        }
    }
    panic!("redis-server with TLS did not start: {:?}", last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_the_ca_in_redis_tls_ca_file() {
    let pki = TestPki::generate().unwrap();
    let (redis, tls_port) = tls_redis(&pki);
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let mut c = config(&dbs, Some(dns.addr()), Some(url));
    c.redis.password = Some(REDIS_PASSWORD.into());
    c.redis.tls_ca_file = Some(pki.ca_cert().to_path_buf());
    c.redis.timeout_ms = 1_000;
    let core = build(&c);
    for r in ptr_records(5) {
        let v = enrich(&core.enricher, &r).await;
        assert!(v["id.orig_h_ptr"].is_string(), "{v}");
    }
    wait_for("the L2 writes over TLS", || dbsize(&redis) == 6).await;
    // A fresh worker reads them back over TLS.
    let second = build(&c);
    for r in ptr_records(5) {
        let v = enrich(&second.enricher, &r).await;
        assert_eq!(v["id.orig_h_tier"], "l2", "{v}");
    }

    // Without the CA the server's certificate is not trusted: the circuit
    // opens and enrichment goes on.
    c.redis.tls_ca_file = None;
    c.redis.failure_threshold = 1;
    let untrusted = build(&c);
    let v = enrich(&untrusted.enricher, &conn("10.1.1.1", "10.0.0.1")).await;
    assert!(v["id.orig_h_ptr"].is_string(), "{v}");
    assert!(untrusted.enricher.stats().snapshot().cache.l2_unavailable > 0);
    let l2 =
        enricher::cache::RedisCache::start(enricher::cache::RedisOptions::from_config(&c).unwrap())
            .unwrap();
    let _ = l2.get("10.1.1.1".parse().unwrap()).await;
    assert_eq!(l2.state(), CircuitState::Open);
}

// ---- PTR names are bounded wherever they come from -------------------------

/// Redis is shared: what another process (or an attacker with access to
/// Redis) wrote is checked like a DNS answer, with the configured bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_read_from_a_shared_redis_are_checked_like_dns_answers() {
    let redis = RedisServer::start().unwrap();
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), Some(redis.url()));
    c.dns.max_name_len = 40;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3_600;
    let long = format!("{}.example", "a".repeat(60));
    let planted = [
        ("10.2.0.1", "evil\"name,\"x\":1"),
        ("10.2.0.2", long.as_str()),
        ("10.2.0.3", "a\u{1b}[31m.example"),
        ("10.2.0.4", "planted-but-valid.example"),
    ];
    for (ip, name) in planted {
        let reply = redis
            .command(&[
                "SET",
                &format!("enr:ptr:{ip}"),
                &format!("{expires}|={name}"),
            ])
            .unwrap();
        assert_eq!(reply, "+OK\r\n");
    }
    let core = build(&c);
    for (ip, _) in &planted[..3] {
        let v = enrich(&core.enricher, &conn(ip, "81.2.69.142")).await;
        assert_eq!(
            v["id.orig_h_tier"], "dns",
            "{ip}: a refused value is a miss"
        );
        assert_eq!(
            v["id.orig_h_ptr"].as_str(),
            Some(test_support::synth_name(ip.parse().unwrap()).trim_end_matches('.')),
            "{ip}"
        );
    }
    let v = enrich(&core.enricher, &conn("10.2.0.4", "81.2.69.142")).await;
    assert_eq!(v["id.orig_h_tier"], "l2");
    assert_eq!(v["id.orig_h_ptr"], "planted-but-valid.example");
}

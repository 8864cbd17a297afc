//! Threat-intelligence indicators and enrichment tables, through the real
//! `enricher pipe` binary and through the core.

use super::pipe::run;
use super::*;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path_of(&path)
}

fn values(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pipe_marks_matches_and_only_matches_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let zeek = write(
        dir.path(),
        "feed.intel",
        "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n\
         81.2.69.142\tIntel::ADDR\tfeedA\tC2\n\
         198.51.100.0/24\tIntel::SUBNET\tfeedB\tbad range\n",
    );
    let list = write(dir.path(), "more.txt", "# plain\n2001:db8::/32\n");
    let table = write(
        dir.path(),
        "sites.csv",
        "cidr,owner,site\n10.0.0.0/8,corp,hq\n10.1.0.0/16,lab,b2\n",
    );
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        conn("10.1.2.3", "81.2.69.142"),
        conn("10.9.9.9", "192.0.2.1"),
        conn("10.0.0.1", "198.51.100.7"),
        conn("2001:db8::5", "192.0.2.1"),
    );
    let args = [
        "pipe", "--no-dns", "--intel", &zeek, "--intel", &list, "--table", &table,
    ];
    let out = run(&args, input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = values(&out.stdout);
    assert_eq!(v.len(), 4, "every record, matched or not");
    assert_eq!(
        v[0]["_intel"],
        serde_json::json!([{"indicator":"81.2.69.142","type":"addr","field":"id.resp_h","source":"feedA","desc":"C2"}])
    );
    assert_eq!(v[0]["id.orig_h_owner"], "lab");
    assert_eq!(v[0]["id.orig_h_site"], "b2");
    assert_eq!(v[1]["id.orig_h_owner"], "corp");
    assert_eq!(v[1]["id.orig_h_site"], "hq");
    assert!(v[1].get("_intel").is_none(), "no match writes nothing");
    assert!(v[1].get("id.resp_h_owner").is_none());
    assert_eq!(v[2]["_intel"][0]["type"], "subnet");
    assert_eq!(v[2]["_intel"][0]["indicator"], "198.51.100.0/24");
    assert_eq!(v[3]["_intel"][0]["field"], "id.orig_h");
    assert_eq!(v[3]["_intel"][0]["source"], "more");

    let mut sweep = args.to_vec();
    sweep.push("--only-matches");
    let out = run(&sweep, input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uids: Vec<String> = values(&out.stdout)
        .iter()
        .map(|v| v["id.resp_h"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uids, ["81.2.69.142", "198.51.100.7", "192.0.2.1"]);
}

#[test]
fn a_corrupt_indicator_file_exits_64_naming_the_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.txt", "1.2.3.4\nnot an indicator\n");
    let out = run(&["pipe", "--no-dns", "--intel", &bad], b"");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("intel.files"), "{stderr}");
    assert!(stderr.contains(&format!("{bad} line 2")), "{stderr}");

    let table = write(dir.path(), "t.csv", "cidr,owner\nnot a key,x\n");
    let out = run(&["pipe", "--no-dns", "--table", &table], b"");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tables[0]") && stderr.contains("line 2"),
        "{stderr}"
    );

    let out = run(&["pipe", "--no-dns", "--only-matches"], b"");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("intel.files"));
}

#[tokio::test]
async fn ptr_names_match_domain_indicators_by_parent() {
    use test_support::{Behaviour, DnsServer};
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dbs = write_dbs();
    let mut c = config(&dbs, Some(dns.addr()), None);
    c.intel.files = vec![dir.path().join("d.txt")];
    // The server answers host-a-b-c-d.example.test.
    std::fs::write(&c.intel.files[0], "Example.Test.\n").unwrap();
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.0.0.1", "81.2.69.142")).await;
    assert_eq!(v["id.resp_h_ptr"], "host-81-2-69-142.example.test", "{v}");
    let hits = v["_intel"].as_array().unwrap();
    assert!(
        hits.iter().any(|h| h["field"] == "id.resp_h_ptr"
            && h["type"] == "domain"
            && h["indicator"] == "Example.Test."),
        "{v}"
    );
}

/// A conn record with its own uid, to count records by id.
fn numbered(n: usize) -> String {
    format!(
        r#"{{"_path":"conn","uid":"C{n}","id.orig_h":"10.1.2.3","id.resp_h":"81.2.69.142","id.resp_p":443}}"#
    )
}

fn feed(source: &str) -> String {
    format!("indicator,type,source,desc\n81.2.69.142,addr,{source},c2\n")
}

/// A feed whose first line is good: a loader that kept a partial file
/// would serve `corrupt`.
const CORRUPT_FEED: &str =
    "indicator,type,source,desc\n81.2.69.142,addr,corrupt,c2\n10.0.0.300,addr,corrupt,x\n";

#[tokio::test]
async fn a_replaced_feed_or_table_is_swapped_in_and_a_corrupt_one_rejected() {
    use enricher::config::TableConfig;
    use enricher::enrich::Reloaded;
    let dir = tempfile::tempdir().unwrap();
    let feed_path = dir.path().join("feed.csv");
    let table_path = dir.path().join("sites.csv");
    mmdb::write_atomically(&feed_path, feed("old").as_bytes()).unwrap();
    mmdb::write_atomically(&table_path, b"cidr,site\n10.0.0.0/8,hq\n").unwrap();
    let mut c = Config::default();
    c.dns.enabled = false;
    c.intel.files = vec![feed_path.clone()];
    c.intel.reload_interval_ms = 0;
    c.tables = vec![TableConfig {
        path: table_path.clone(),
        ..TableConfig::default()
    }];
    let recorder = enricher::http::recorder(std::time::Duration::from_secs(60)).unwrap();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let core = build(&c);
    assert!(core.lists_watcher.is_none(), "reload_interval_ms = 0");
    let watcher = core.lists.clone().unwrap();
    let record = numbered(1);
    let seen = |v: &Value| {
        (
            v["_intel"][0]["source"]
                .as_str()
                .unwrap_or("none")
                .to_string(),
            v["id.orig_h_site"].as_str().unwrap_or("none").to_string(),
        )
    };
    let v = enrich(&core.enricher, &record).await;
    assert_eq!(seen(&v), ("old".into(), "hq".into()), "{v}");
    assert_eq!(watcher.reload_changed(), Reloaded::default(), "unchanged");

    mmdb::write_atomically(&feed_path, CORRUPT_FEED.as_bytes()).unwrap();
    mmdb::write_atomically(&table_path, b"cidr,site\nnot a key,x\n").unwrap();
    let done = watcher.reload_changed();
    assert_eq!(
        done,
        Reloaded {
            swapped: 0,
            rejected: 2
        }
    );
    let v = enrich(&core.enricher, &record).await;
    assert_eq!(seen(&v), ("old".into(), "hq".into()), "the old lists serve");
    assert_eq!(
        watcher.reload_changed(),
        Reloaded::default(),
        "a bad file is reported once"
    );

    // One part good, the other still bad: the good one is swapped alone.
    mmdb::write_atomically(&feed_path, feed("new").as_bytes()).unwrap();
    assert_eq!(
        watcher.reload_changed(),
        Reloaded {
            swapped: 1,
            rejected: 0
        }
    );
    let v = enrich(&core.enricher, &record).await;
    assert_eq!(seen(&v), ("new".into(), "hq".into()), "{v}");
    // A file that is gone is no replacement.
    std::fs::remove_file(&table_path).unwrap();
    assert_eq!(watcher.reload_changed(), Reloaded::default());
    mmdb::write_atomically(&table_path, b"cidr,site\n10.0.0.0/8,hq\n10.1.0.0/16,lab\n").unwrap();
    assert_eq!(watcher.reload_changed().swapped, 1);
    let v = enrich(&core.enricher, &record).await;
    assert_eq!(seen(&v), ("new".into(), "lab".into()), "{v}");

    let shown = handle.render();
    for series in [
        "enricher_intel_reloads_total{key=\"intel.files\",result=\"rejected\"} 1",
        "enricher_intel_reloads_total{key=\"intel.files\",result=\"ok\"} 1",
        "enricher_intel_reloads_total{key=\"tables[0]\",result=\"rejected\"} 1",
        "enricher_intel_reloads_total{key=\"tables[0]\",result=\"ok\"} 1",
        "enricher_intel_age_seconds ",
    ] {
        assert!(shown.contains(series), "{series} missing from:\n{shown}");
    }
}

#[test]
fn pipe_swaps_a_replaced_feed_under_load_never_a_corrupt_one_and_loses_nothing() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let feed_path = dir.path().join("feed.csv");
    mmdb::write_atomically(&feed_path, feed("old").as_bytes()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(["pipe", "--no-dns", "--concurrency", "1", "--intel"])
        .arg(&feed_path)
        .env("ENRICHER_INTEL__RELOAD_INTERVAL_MS", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let saw_rejected = Arc::new(AtomicBool::new(false));
    let errors = {
        let saw_rejected = Arc::clone(&saw_rejected);
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap();
                if line.contains("rejected") {
                    saw_rejected.store(true, Ordering::Release);
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    };
    let saw_new = Arc::new(AtomicBool::new(false));
    let writer = {
        let saw_new = Arc::clone(&saw_new);
        let saw_rejected = Arc::clone(&saw_rejected);
        let feed_path = feed_path.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let mut batch = |stdin: &mut std::process::ChildStdin, pause_ms: u64| {
                let mut text = String::new();
                for _ in 0..100 {
                    text.push_str(&numbered(n));
                    text.push('\n');
                    n += 1;
                }
                stdin.write_all(text.as_bytes()).unwrap();
                stdin.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                n
            };
            for _ in 0..20 {
                batch(&mut stdin, 1);
            }
            // Records flow while the file is corrupt, until the worker has
            // rejected it, and for a few watcher ticks more.
            mmdb::write_atomically(&feed_path, CORRUPT_FEED.as_bytes()).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !saw_rejected.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                batch(&mut stdin, 5);
            }
            for _ in 0..10 {
                batch(&mut stdin, 5);
            }
            mmdb::write_atomically(&feed_path, feed("new").as_bytes()).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !saw_new.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                batch(&mut stdin, 2);
            }
            let mut total = 0;
            for _ in 0..10 {
                total = batch(&mut stdin, 0);
            }
            total
        })
    };
    let mut sources = Vec::new();
    for (i, line) in BufReader::new(stdout).lines().enumerate() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(v["uid"], format!("C{i}"), "every record, in order");
        let hits = v["_intel"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(hits.len(), 1, "{v}");
        let source = hits[0]["source"].as_str().unwrap().to_string();
        if source == "new" {
            saw_new.store(true, Ordering::Release);
        }
        sources.push(source);
    }
    let total = writer.join().unwrap();
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    assert!(status.success(), "{errors}");
    assert_eq!(sources.len(), total, "nothing lost: {errors}");
    let switched = sources.iter().position(|s| s == "new").expect("swapped");
    assert!(switched > 0, "the old set until the replacement");
    assert!(
        sources[..switched].iter().all(|s| s == "old"),
        "only the old set before the valid replacement (never `corrupt`)"
    );
    assert!(
        sources[switched..].iter().all(|s| s == "new"),
        "one swap, never back"
    );
    assert!(
        errors.contains("rejected") && errors.contains("line 3"),
        "the corrupt file is logged with its line: {errors}"
    );
}

const KINDS_FEED: &str = "indicator,type,source,desc\n\
evil.example,domain,dom,bad zone\n\
bücher.example,domain,dom,idn\n\
shop.test/pay?x=1,url,urls,skimmer\n\
https://Phish.Example/login,url,urls,phish\n\
D41D8CD98F00B204E9800998ECF8427E,hash,hashes,empty file\n\
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855,hash,hashes,empty sha256\n";

fn dns(query: &str) -> String {
    format!(
        r#"{{"_path":"dns","uid":"D","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.53","query":"{query}"}}"#
    )
}

fn matches(v: &Value) -> Vec<(String, String, String)> {
    v["_intel"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let s = |k: &str| h[k].as_str().unwrap().to_string();
                    (s("indicator"), s("type"), s("field"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn kinds_core(dir: &Path) -> Core {
    use enricher::config::TableConfig;
    let feed = dir.join("kinds.csv");
    std::fs::write(&feed, KINDS_FEED).unwrap();
    let table = dir.join("owners.csv");
    std::fs::write(&table, "domain,team\nexample.org,web\nshop.test,payments\n").unwrap();
    let mut c = Config::default();
    c.dns.enabled = false;
    c.intel.files = vec![feed];
    c.tables = vec![TableConfig {
        path: table,
        ..TableConfig::default()
    }];
    build(&c)
}

#[tokio::test]
async fn name_fields_match_domains_exactly_and_by_parent_and_domain_tables() {
    let dir = tempfile::tempdir().unwrap();
    let core = kinds_core(dir.path());
    let e = &core.enricher;
    let hit = |i: &str| vec![(i.to_string(), "domain".to_string(), "query".to_string())];
    for (query, want) in [
        ("evil.example", hit("evil.example")),
        ("A.B.Evil.Example.", hit("evil.example")),
        ("xn--bcher-kva.example", hit("bücher.example")),
        ("www.bücher.example", hit("bücher.example")),
        ("notevil.example", vec![]),
        ("example", vec![]),
        ("evil.example.com", vec![]),
        ("", vec![]),
    ] {
        let v = enrich(e, &dns(query)).await;
        assert_eq!(matches(&v), want, "{query}: {v}");
        if want.is_empty() {
            assert!(v.get("_intel").is_none(), "no match writes nothing: {v}");
        }
    }
    let v = enrich(
        e,
        r#"{"_path":"ssl","uid":"S","id.orig_h":"10.0.0.1","id.resp_h":"192.0.2.1","server_name":"c2.evil.example"}"#,
    )
    .await;
    assert_eq!(
        matches(&v),
        [(
            "evil.example".to_string(),
            "domain".to_string(),
            "server_name".to_string()
        )]
    );
    // Domain-keyed table: the nearest listed parent's row.
    let v = enrich(e, &dns("www.Example.org")).await;
    assert_eq!(v["query_team"], "web", "{v}");
    assert!(v.get("_intel").is_none());
    let v = enrich(e, &dns("example.com")).await;
    assert!(v.get("query_team").is_none(), "{v}");
}

#[tokio::test]
async fn url_fields_match_in_their_homogenised_form_host_and_uri_together() {
    let dir = tempfile::tempdir().unwrap();
    let core = kinds_core(dir.path());
    let e = &core.enricher;
    let http = |host: &str, uri: &str, referrer: &str| {
        format!(
            r#"{{"_path":"http","uid":"H","id.orig_h":"10.0.0.1","id.resp_h":"192.0.2.1","host":"{host}","uri":"{uri}","referrer":"{referrer}"}}"#
        )
    };
    let v = enrich(e, &http("Shop.Test:80", "/pay?x=1", "-")).await;
    assert_eq!(
        matches(&v),
        [(
            "shop.test/pay?x=1".to_string(),
            "url".to_string(),
            "uri".to_string()
        )],
        "{v}"
    );
    assert_eq!(v["host_team"], "payments", "a host field is a name field");
    let v = enrich(e, &http("shop.test", "/pay?x=2", "-")).await;
    assert!(v.get("_intel").is_none(), "the query is part of a URL: {v}");
    let v = enrich(
        e,
        &http("a.test", "/", "HTTPS://phish.example:443/login#top"),
    )
    .await;
    assert_eq!(
        matches(&v),
        [(
            "https://Phish.Example/login".to_string(),
            "url".to_string(),
            "referrer".to_string()
        )],
        "{v}"
    );
    let v = enrich(e, &http("a.test", "/", "https://phish.example/Login")).await;
    assert!(v.get("_intel").is_none(), "paths are case-sensitive: {v}");
}

#[tokio::test]
async fn hash_fields_match_exactly_case_aside() {
    let dir = tempfile::tempdir().unwrap();
    let core = kinds_core(dir.path());
    let e = &core.enricher;
    let v = enrich(
        e,
        r#"{"_path":"files","fuid":"F","md5":"d41d8cd98f00b204e9800998ecf8427e","sha1":"da39a3ee5e6b4b0d3255bfef95601890afd80709","sha256":"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"}"#,
    )
    .await;
    let got: Vec<(String, String)> = matches(&v).into_iter().map(|(_, t, f)| (t, f)).collect();
    assert_eq!(
        got,
        [
            ("hash".to_string(), "md5".to_string()),
            ("hash".to_string(), "sha256".to_string())
        ],
        "{v}"
    );
    let v = enrich(
        e,
        r#"{"_path":"x509","id":"F","fingerprint":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#,
    )
    .await;
    assert_eq!(matches(&v)[0].2, "fingerprint", "{v}");
    let v = enrich(
        e,
        r#"{"_path":"files","fuid":"F","md5":["00000000000000000000000000000000","d41d8cd98f00b204e9800998ecf8427e"]}"#,
    )
    .await;
    assert_eq!(matches(&v).len(), 1, "every value of a list: {v}");
    let v = enrich(
        e,
        r#"{"_path":"files","fuid":"F","md5":"d41d8cd98f00b204e9800998ecf8427f","sha1":7}"#,
    )
    .await;
    assert!(v.get("_intel").is_none(), "{v}");
}

#[test]
fn pipe_matches_names_urls_and_hashes_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let feed = write(dir.path(), "kinds.csv", KINDS_FEED);
    let input = [
        dns("a.evil.example"),
        dns("benign.example"),
        r#"{"_path":"http","uid":"H","id.orig_h":"10.0.0.1","id.resp_h":"192.0.2.1","host":"shop.test","uri":"/pay?x=1"}"#.to_string(),
        r#"{"_path":"files","fuid":"F","md5":"D41D8CD98F00B204E9800998ECF8427E"}"#.to_string(),
    ]
    .join("\n");
    let out = run(
        &["pipe", "--no-dns", "--intel", &feed, "--only-matches"],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = values(&out.stdout);
    let kinds: Vec<String> = v
        .iter()
        .map(|v| v["_intel"][0]["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["domain", "url", "hash"]);
    // Spliced: the original bytes come first, untouched.
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&dns("a.evil.example")[..dns("a.evil.example").len() - 1]));
}

#[test]
fn nested_naming_puts_table_columns_in_each_fields_object() {
    let dir = tempfile::tempdir().unwrap();
    let sites = write(
        dir.path(),
        "sites.csv",
        "cidr,owner,site\n10.0.0.0/8,corp,hq\n10.1.0.0/16,lab,b2\n",
    );
    let zones = write(dir.path(), "zones.csv", "domain,zone\nexample.org,web\n");
    let input = format!(
        "{}\n{}\n",
        conn("10.1.2.3", "192.0.2.1"),
        r#"{"_path":"dns","uid":"D","id.orig_h":"10.9.9.9","id.resp_h":"192.0.2.53","query":"www.example.org"}"#,
    );
    let args = [
        "pipe", "--no-dns", "--naming", "nested", "--table", &sites, "--table", &zones,
    ];
    let out = run(&args, input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = values(&out.stdout);
    assert_eq!(v[0]["id.orig_h_enr"]["owner"], "lab", "{}", v[0]);
    assert_eq!(v[0]["id.orig_h_enr"]["site"], "b2", "{}", v[0]);
    assert!(v[0].get("id.orig_h_owner").is_none(), "{}", v[0]);
    assert!(v[0]["id.resp_h_enr"].get("owner").is_none(), "{}", v[0]);
    assert_eq!(v[1]["id.orig_h_enr"]["site"], "hq", "{}", v[1]);
    assert_eq!(v[1]["query_enr"]["zone"], "web", "{}", v[1]);
    assert_eq!(
        v[1]["query_enr"]["registered_domain"], "example.org",
        "{}",
        v[1]
    );
    assert!(v[1].get("query_zone").is_none(), "{}", v[1]);
}

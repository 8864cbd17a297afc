//! `enricher pipe` as a user runs it: the real binary, real files.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use test_support::{Behaviour, DnsServer};

use super::*;

fn enricher() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enricher"))
}

pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    output_of(enricher().args(args), stdin)
}

/// Runs `cmd` with `stdin` written to it from another thread; its output.
pub(crate) fn output_of(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn flat_output_on_stdin_with_a_summary_and_exit_0() {
    let dbs = write_dbs();
    let input = format!(
        "{}\n{}\n",
        conn("10.0.0.1", "81.2.69.142"),
        conn("10.0.0.2", "89.160.20.112")
    );
    let out = run(
        &[
            "pipe",
            "--geoip-city",
            &path_of(&dbs.city),
            "--geoip-asn",
            &path_of(&dbs.asn),
            "--no-dns",
        ],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lines(&out);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["id.resp_h_country"], "GB");
    assert_eq!(v[1]["id.resp_h_country"], "SE");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 records in, 2 enriched, 0 rejected"),
        "{stderr}"
    );
}

#[test]
fn rejected_records_go_to_the_reject_stream_and_the_rest_flows() {
    let dbs = write_dbs();
    let reject = dbs.dir.path().join("rejects.jsonl");
    let mut input = Vec::new();
    input.extend_from_slice(conn("10.0.0.1", "81.2.69.142").as_bytes());
    input.extend_from_slice(b"\n{\"id.orig_h\":\"10.0.0.1\",\n");
    input.extend_from_slice(b"{\"a\":\"\xff\xfe\"}\n");
    input.extend_from_slice(b"[1,2]\n");
    input.extend_from_slice(format!("{}{}\n", "[".repeat(10_000), "]".repeat(10_000)).as_bytes());
    input.extend_from_slice(
        format!("{}{}\n", "{\"a\":".repeat(10_000), "}".repeat(10_000)).as_bytes(),
    );
    input.extend_from_slice(b"\n");
    input.extend_from_slice(conn("10.0.0.2", "89.160.20.112").as_bytes());
    input.push(b'\n');
    let out = run(
        &[
            "pipe",
            "--geoip-city",
            &path_of(&dbs.city),
            "--no-dns",
            "--reject",
            &path_of(&reject),
        ],
        &input,
    );
    assert!(out.status.success());
    let v = lines(&out);
    assert_eq!(v.len(), 2);
    let rejects: Vec<Value> = std::fs::read_to_string(&reject)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<(&str, u64)> = rejects
        .iter()
        .map(|r| (r["reason"].as_str().unwrap(), r["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("truncated", 2),
            ("invalid_utf8", 3),
            ("not_an_object", 4),
            ("not_an_object", 5),
            ("too_deep", 6),
            ("empty", 7)
        ]
    );
    assert!(rejects[1]["raw_base64"].is_string(), "original bytes kept");
    assert_eq!(rejects[0]["raw"], "{\"id.orig_h\":\"10.0.0.1\",");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("8 records in, 2 enriched, 6 rejected"),
        "{stderr}"
    );
}

#[test]
fn a_ten_megabyte_record_is_rejected_as_too_large() {
    let dbs = write_dbs();
    let reject = dbs.dir.path().join("rejects.jsonl");
    let big = format!("{{\"a\":\"{}\"}}\n", "x".repeat(10 << 20));
    let input = format!("{big}{}\n", conn("10.0.0.1", "81.2.69.142"));
    let out = run(
        &["pipe", "--no-dns", "--reject", &path_of(&reject)],
        input.as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(lines(&out).len(), 1);
    let rejects = std::fs::read_to_string(&reject).unwrap();
    let r: Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    assert_eq!(r["reason"], "too_large");
    assert!(
        rejects.len() < 3 << 20,
        "the reject holds at most the limit, not the whole line"
    );
}

#[test]
fn tsv_files_and_gzip_files_are_read() {
    let dbs = write_dbs();
    let tsv = dbs.dir.path().join("conn.log.gz");
    let text = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#fields\tts\tid.orig_h\tid.resp_h\ttunnel_parents\n#types\ttime\taddr\taddr\tset[string]\n1.5\t10.0.0.1\t81.2.69.142\t(empty)\n2.5\t10.0.0.1\t-\t-\n#fields\tts\tsrcip\n#types\ttime\taddr\n3.5\t8.8.8.8\n4.5\t1.2.3.4\textra\n";
    let mut gz = flate2_writer(&tsv);
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    let out = run(
        &[
            "pipe",
            "--geoip-city",
            &path_of(&dbs.city),
            "--no-dns",
            &path_of(&tsv),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lines(&out);
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["id.resp_h_country"], "GB");
    assert_eq!(v[0]["tunnel_parents"], serde_json::json!([]));
    assert!(v[1].get("id.resp_h").is_none(), "unset fields are omitted");
    assert_eq!(v[2]["srcip_country"], "US", "the header changed mid-file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 rejected"));
}

fn flate2_writer(path: &std::path::Path) -> flate2::write::GzEncoder<std::fs::File> {
    flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    )
}

#[test]
fn output_keeps_input_order_while_lookups_finish_out_of_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = rt
        .block_on(DnsServer::start(
            Behaviour::default().with_latency(std::time::Duration::from_millis(30)),
        ))
        .unwrap();
    let mut input = String::new();
    for i in 0..3_000 {
        // Mostly repeated addresses (cached), some new ones (30 ms away).
        let orig = if i % 10 == 0 {
            format!("10.5.{}.{}", i / 250, i % 250)
        } else {
            format!("10.6.0.{}", i % 7)
        };
        input.push_str(&format!("{{\"seq\":{i},\"id.orig_h\":\"{orig}\"}}\n"));
    }
    let dbs = write_dbs();
    let config = dbs.dir.path().join("generous.toml");
    std::fs::write(
        &config,
        "[dns]\nqps = 100000\nburst = 100000\nmax_in_flight = 1000\n",
    )
    .unwrap();
    let addr = dns.addr().to_string();
    let out = run(
        &["pipe", "--config", &path_of(&config), "--dns-server", &addr],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lines(&out);
    assert_eq!(v.len(), 3_000);
    for (i, r) in v.iter().enumerate() {
        assert_eq!(r["seq"], i, "output in input order");
        assert!(r["id.orig_h_ptr"].is_string(), "record {i} has its PTR");
    }
    assert_eq!(dns.queries(), 300 + 7);
    drop(dns);
}

#[test]
fn a_bad_config_exits_64_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[dns]\nqps = \"lots\"\n").unwrap();
    for args in [
        vec!["pipe", "--config", &path_of(&file)],
        vec!["check-config", &path_of(&file)],
    ] {
        let out = run(&args, b"");
        assert_eq!(out.status.code(), Some(64));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("dns.qps"), "{stderr}");
    }
    let missing = run(&["pipe", "--geoip-city", "/nonexistent.mmdb"], b"");
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("geoip.city"));
    let usage = run(&["pipe", "--no-such-flag"], b"");
    assert_eq!(usage.status.code(), Some(64));
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.toml");
    std::fs::write(
        &file,
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n",
    )
    .unwrap();
    let out = run(&["check-config", &path_of(&file)], b"");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"));
    assert!(
        text.contains("[dns]") && text.contains("qps = 100"),
        "{text}"
    );
}

#[test]
fn a_dash_reads_standard_input_and_a_closed_output_ends_quietly() {
    let dbs = write_dbs();
    let city = path_of(&dbs.city);
    let input = format!("{}\n", conn("10.0.0.1", "81.2.69.142"));
    let out = run(
        &["pipe", "--geoip-city", &city, "--no-dns", "-"],
        input.as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(lines(&out).len(), 1);
    // `enricher pipe big.log | head -1`: the reader goes after one line.
    let big = dbs.dir.path().join("big.json");
    let record = conn("10.0.0.1", "81.2.69.142");
    std::fs::write(&big, format!("{record}\n").repeat(200_000)).unwrap();
    let mut child = enricher()
        .args(["pipe", "--geoip-city", &city, "--no-dns", &path_of(&big)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("rror") && !stderr.contains("WARN"),
        "{stderr}"
    );
}

#[test]
fn domains_and_urls_of_dns_ssl_and_http_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enricher.toml");
    std::fs::write(&config, "[domains]\nreversed_fields = [\"rname\"]\n").unwrap();
    let input = [
        r#"{"_path":"dns","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.53","query":"WWW.Example.CO.UK."}"#,
        r#"{"_path":"ssl","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","server_name":"bücher.example.com"}"#,
        r#"{"_path":"http","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","host":"api.github.io:8080","uri":"/v1/get.json?x=1","referrer":"https://a.b.example.org/index.html"}"#,
        r#"{"_path":"dns","query":"bad name.example","rname":".com.example.mail"}"#,
        r#"{"_path":"http","host":"10.0.0.2","uri":"/"}"#,
    ]
    .join("\n");
    let out = run(
        &[
            "pipe",
            "--config",
            &path_of(&config),
            "--no-dns",
            "--provenance",
        ],
        format!("{input}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lines(&out);
    assert_eq!(v.len(), 5);
    assert_eq!(v[0]["query_domain"], "www.example.co.uk");
    assert_eq!(v[0]["query_registered_domain"], "example.co.uk");
    assert_eq!(v[0]["query_top_level_domain"], "co.uk");
    assert_eq!(v[0]["query_subdomain"], "www");
    assert_eq!(v[1]["server_name_domain"], "xn--bcher-kva.example.com");
    assert_eq!(v[1]["server_name_registered_domain"], "example.com");
    assert_eq!(v[1]["server_name_subdomain"], "xn--bcher-kva");
    // `github.io` is a public suffix (private section).
    assert_eq!(v[2]["host_domain"], "api.github.io");
    assert_eq!(v[2]["host_registered_domain"], "api.github.io");
    assert!(v[2].get("host_subdomain").is_none());
    assert_eq!(v[2]["uri_scheme"], "http");
    assert_eq!(v[2]["uri_host"], "api.github.io");
    assert_eq!(v[2]["uri_port"], 8080);
    assert_eq!(v[2]["uri_path"], "/v1/get.json");
    assert_eq!(v[2]["uri_query"], "x=1");
    assert_eq!(v[2]["uri_extension"], "json");
    assert_eq!(v[2]["referrer_scheme"], "https");
    assert_eq!(v[2]["referrer_host"], "a.b.example.org");
    assert_eq!(v[2]["referrer_path"], "/index.html");
    assert_eq!(v[2]["referrer_extension"], "html");
    assert_eq!(v[2]["referrer_registered_domain"], "example.org");
    assert!(v[2].get("referrer_port").is_none());
    // Not a name: nothing but the status; a reversed field is read right to left.
    assert_eq!(v[3]["query_domain_status"], "invalid");
    assert!(v[3].get("query_domain").is_none());
    assert_eq!(v[3]["rname_domain"], "mail.example.com");
    // An address in a host field is no domain, and not an invalid one.
    assert!(v[4].get("host_domain").is_none());
    assert!(v[4].get("host_domain_status").is_none());
    assert_eq!(v[4]["uri_host"], "10.0.0.2");
    // The original members come first, byte for byte.
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with(&input.lines().next().unwrap()[..input.find('}').unwrap()]));
}

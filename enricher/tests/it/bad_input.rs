//! One table of bad and odd input, run through `enricher pipe` (the real
//! binary) and through the Kafka worker (librdkafka's mock cluster). Each
//! case states its outcome in both: written out (enriched where it holds an
//! address), passed through byte for byte, or rejected to the reject stream
//! or the dead-letter topic with a reason label. Every record is accounted
//! for by its case, and each partition's committed offset reaches its end.

use std::collections::BTreeMap;
use std::time::Duration;

use test_support::kafka::{Kafka, MockKafka, Outgoing, Received};

use super::kafka::{Worker, kafka_config, wait_until};
use super::pipe::run;
use super::*;

/// How a case reaches the enricher.
enum Input {
    /// One line in the pipe; one message on Kafka.
    Line(Vec<u8>),
    /// Zeek TSV lines. The pipe reads the TSV cases as one stream after the
    /// JSON lines, so a header holds until the next one; on Kafka a case's
    /// lines are one message.
    Tsv(Vec<Vec<u8>>),
    /// A message with a null payload (Kafka only).
    Tombstone,
}

/// What must come of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Written to the output: JSON input keeps its bytes, and these members
    /// (JSON pointers into the output) hold these strings.
    Written(&'static [(&'static str, &'static str)]),
    /// Written to the output exactly as it came in: nothing to enrich.
    Unchanged,
    /// To the reject stream (pipe) or the dead-letter topic (Kafka), with
    /// this reason label.
    Rejected(&'static str),
    /// Passed on with a null payload (Kafka only).
    Tombstone,
    /// The case means nothing in this mode.
    Skip,
}

use Outcome::{Rejected, Skip, Unchanged, Written};

struct Case {
    name: &'static str,
    input: Input,
    pipe: Outcome,
    kafka: Outcome,
}

/// A JSON line with the same outcome in both modes.
fn same(name: &'static str, bytes: impl Into<Vec<u8>>, outcome: Outcome) -> Case {
    Case {
        name,
        input: Input::Line(bytes.into()),
        pipe: outcome,
        kafka: outcome,
    }
}

/// A record whose `id.orig_h` holds `literal` (JSON string contents, escapes
/// and all).
fn address(name: &'static str, literal: &str, outcome: Outcome) -> Case {
    same(
        name,
        format!(r#"{{"case":"{name}","id.orig_h":"{literal}"}}"#),
        outcome,
    )
}

fn tsv(lines: &[&[u8]]) -> Input {
    Input::Tsv(lines.iter().map(|l| l.to_vec()).collect())
}

const GB: &[(&str, &str)] = &[("/id.orig_h_country", "GB"), ("/id.orig_h_city", "London")];
const SE: &[(&str, &str)] = &[("/id.orig_h_country", "SE")];
const US: &[(&str, &str)] = &[("/id.orig_h_country", "US")];
const PRIVATE: &[(&str, &str)] = &[("/id.orig_h_geo_status", "skipped_private")];
const NO_RECORD: &[(&str, &str)] = &[("/id.orig_h_geo_status", "no_record")];

/// Ten megabytes: over `input.max_record_bytes` (1 MiB by default), and over
/// the mock cluster's 5 MiB per partition, so Kafka gets it last and alone.
const BIG: usize = 10 << 20;

fn cases() -> Vec<Case> {
    let nested = |levels: usize| {
        format!(
            "{}{{}}{}",
            r#"{"a":"#.repeat(levels - 1),
            "}".repeat(levels - 1)
        )
    };
    let header: &[&[u8]] = &[
        b"#separator \\x09",
        b"#set_separator\t,",
        b"#empty_field\t(empty)",
        b"#unset_field\t-",
        b"#path\tconn",
        b"#open\t2024-01-01-00-00-00",
        b"#fields\tts\tuid\tid.orig_h\tid.resp_h",
        b"#types\ttime\tstring\taddr\taddr",
    ];
    let with_header = |row: &'static [u8]| {
        let mut lines = header.to_vec();
        lines.push(row);
        tsv(&lines)
    };
    vec![
        same(
            "a good record",
            r#"{"case":"good","id.orig_h":"10.0.0.1","id.resp_h":"81.2.69.142"}"#,
            Written(&[
                ("/id.resp_h_country", "GB"),
                ("/id.orig_h_geo_status", "skipped_private"),
            ]),
        ),
        // Broken bytes.
        same(
            "invalid UTF-8 in a value",
            &b"{\"case\":\"utf8\",\"note\":\"\xff\xfe\"}"[..],
            Rejected("invalid_utf8"),
        ),
        same(
            "invalid UTF-8 in an address",
            &b"{\"id.orig_h\":\"81.2.69.\xc0\"}"[..],
            Rejected("invalid_utf8"),
        ),
        same(
            "a UTF-16 surrogate encoded as UTF-8",
            &b"{\"note\":\"\xed\xa0\x80\"}"[..],
            Rejected("invalid_utf8"),
        ),
        same(
            "truncated after a member",
            r#"{"case":"cut","id.orig_h":"81.2.69.142","#,
            Rejected("truncated"),
        ),
        same(
            "truncated inside a string",
            r#"{"case":"cut","id.orig_h":"81.2.6"#,
            Rejected("truncated"),
        ),
        same(
            "truncated inside a character",
            &b"{\"city\":\"Link\xc3"[..],
            Rejected("truncated"),
        ),
        same(
            "an array, not an object",
            r#"[{"id.orig_h":"81.2.69.142"}]"#,
            Rejected("not_an_object"),
        ),
        same(
            "two objects on one line",
            r#"{"a":1}{"a":2}"#,
            Rejected("trailing_data"),
        ),
        same(
            "a trailing comma",
            r#"{"id.orig_h":"81.2.69.142",}"#,
            Rejected("syntax"),
        ),
        same(
            "a lone surrogate escape",
            r#"{"note":"\ud800"}"#,
            Rejected("syntax"),
        ),
        same(
            "a 10 MB record",
            format!(
                r#"{{"case":"big","id.orig_h":"81.2.69.142","pad":"{}"}}"#,
                "x".repeat(BIG)
            ),
            Rejected("too_large"),
        ),
        same(
            "objects nested 10,000 deep",
            nested(10_000),
            Rejected("too_deep"),
        ),
        same(
            "an address nested 10,000 arrays deep",
            format!(
                r#"{{"id.orig_h":{}"81.2.69.142"{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            Rejected("too_deep"),
        ),
        same("nesting at the limit of 64", nested(64), Unchanged),
        same("nesting one past it", nested(65), Rejected("too_deep")),
        same("an empty message", "", Rejected("empty")),
        same("only whitespace", " \t  ", Rejected("empty")),
        Case {
            name: "a tombstone",
            input: Input::Tombstone,
            pipe: Skip,
            kafka: Outcome::Tombstone,
        },
        // Wrong types where an address belongs: counted as "not an
        // address", never an error.
        same(
            "a number in an address field",
            r#"{"case":"n","id.orig_h":1234}"#,
            Unchanged,
        ),
        same(
            "an object in an address field",
            r#"{"case":"o","id.orig_h":{"ip":"81.2.69.142"}}"#,
            Unchanged,
        ),
        same(
            "null in an address field",
            r#"{"case":"z","id.orig_h":null}"#,
            Unchanged,
        ),
        same(
            "a bool in an address field",
            r#"{"case":"b","id.orig_h":true}"#,
            Unchanged,
        ),
        // A list where one address belongs: its first address is used.
        same(
            "an array in an address field",
            r#"{"case":"a","id.orig_h":["81.2.69.142","89.160.20.112"]}"#,
            Written(GB),
        ),
        same(
            "a string where DNS answers are a list",
            r#"{"_path":"dns","answers":"89.160.20.112"}"#,
            Written(&[
                ("/answers_enr/0/ip", "89.160.20.112"),
                ("/answers_enr/0/country", "SE"),
            ]),
        ),
        same(
            "DNS answers of mixed types",
            r#"{"_path":"dns","answers":[1,null,"example.org","81.2.69.142",{"a":"89.160.20.112"}]}"#,
            Written(&[
                ("/answers_enr/0/ip", "81.2.69.142"),
                ("/answers_enr/0/country", "GB"),
            ]),
        ),
        same(
            "an address in the nested form",
            r#"{"id":{"orig_h":"81.2.69.142"}}"#,
            Written(GB),
        ),
        // Addresses in every odd form.
        address("IPv4-mapped IPv6", "::ffff:81.2.69.142", Written(GB)),
        address("IPv4-mapped IPv6 in hex", "::FFFF:5102:458e", Written(GB)),
        address(
            "IPv4-mapped IPv6 written in full",
            "0000:0000:0000:0000:0000:ffff:81.2.69.142",
            Written(GB),
        ),
        address("a zone id", "fe80::1%eth0", Written(PRIVATE)),
        address(
            "a zone id on a global address",
            "2001:db8::1%eth0",
            Written(US),
        ),
        address(
            "a URL-encoded zone id in brackets",
            "[fe80::1%25eth0]",
            Written(PRIVATE),
        ),
        address("a zone id on IPv4", "81.2.69.142%eth0", Unchanged),
        address("leading zeros", "010.001.001.001", Unchanged),
        address(
            "leading zeros on a public address",
            "081.002.069.142",
            Unchanged,
        ),
        address("upper-case IPv6", "2001:DB8::ABCD", Written(US)),
        address("surrounding spaces", " 81.2.69.142 ", Written(GB)),
        address(
            "escaped tab and newline around it",
            r"\t89.160.20.112\n",
            Written(SE),
        ),
        address("an escaped digit", r"\u00381.2.69.142", Written(GB)),
        address("brackets", "[::1]", Written(PRIVATE)),
        address("brackets on a global address", "[2001:db8::2]", Written(US)),
        address("an unclosed bracket", "[2001:db8::2", Unchanged),
        address(
            "IPv6 with an embedded IPv4",
            "2001:db8::81.2.69.142",
            Written(US),
        ),
        address(
            "NAT64 with an embedded IPv4",
            "64:ff9b::81.2.69.142",
            Written(NO_RECORD),
        ),
        address("a port after the address", "81.2.69.142:443", Unchanged),
        address("overlong", &"1:".repeat(50), Unchanged),
        address(
            "an address padded with 100 spaces",
            &format!("{0}81.2.69.142{0}", " ".repeat(50)),
            Written(GB),
        ),
        address("an empty string", "", Unchanged),
        address("Zeek's unset marker", "-", Unchanged),
        address("a hostname", "example.org", Unchanged),
        // Zeek TSV. The Kafka worker reads JSON only: TSV messages are
        // dead-lettered with the JSON scanner's reason.
        Case {
            name: "a TSV row before any header",
            input: tsv(&[b"1.0\tT1\t10.0.0.1\t81.2.69.142"]),
            pipe: Rejected("tsv_no_header"),
            kafka: Rejected("not_an_object"),
        },
        Case {
            name: "a TSV header and a good row",
            input: with_header(b"2.0\tT2\t10.0.0.1\t81.2.69.142"),
            pipe: Written(&[
                ("/_path", "conn"),
                ("/uid", "T2"),
                ("/id.resp_h_country", "GB"),
            ]),
            kafka: Rejected("syntax"),
        },
        Case {
            name: "a TSV row with a column missing",
            input: tsv(&[b"3.0\tT3\t10.0.0.1"]),
            pipe: Rejected("tsv_columns"),
            kafka: Rejected("not_an_object"),
        },
        Case {
            name: "a TSV row with a column too many",
            input: tsv(&[b"4.0\tT4\t10.0.0.1\t81.2.69.142\textra"]),
            pipe: Rejected("tsv_columns"),
            kafka: Rejected("not_an_object"),
        },
        Case {
            name: "a TSV row with invalid UTF-8",
            input: tsv(&[b"5.0\tT5\xff\t10.0.0.1\t89.160.20.112"]),
            pipe: Written(&[("/uid", "T5\u{fffd}"), ("/id.resp_h_country", "SE")]),
            kafka: Rejected("invalid_utf8"),
        },
        Case {
            name: "a TSV row of unset and empty markers",
            input: tsv(&[b"6.0\tT6\t-\t(empty)"]),
            pipe: Written(&[("/uid", "T6"), ("/id.resp_h", "")]),
            kafka: Rejected("not_an_object"),
        },
        Case {
            name: "new TSV fields mid-stream",
            input: tsv(&[
                b"#fields\tts\tuid\tsrcip",
                b"#types\ttime\tstring\taddr",
                b"7.0\tT7\t89.160.20.112",
            ]),
            pipe: Written(&[("/_path", "conn"), ("/uid", "T7"), ("/srcip_country", "SE")]),
            kafka: Rejected("syntax"),
        },
        Case {
            name: "a TSV row of the old width after the change",
            input: tsv(&[b"8.0\tT8\t10.0.0.1\t81.2.69.142"]),
            pipe: Rejected("tsv_columns"),
            kafka: Rejected("not_an_object"),
        },
        Case {
            name: "a new TSV header block mid-stream",
            input: tsv(&[
                b"#separator \\x09",
                b"#path\tdns",
                b"#fields\tts\tuid\tid.orig_h\tanswers",
                b"#types\ttime\tstring\taddr\tvector[string]",
                b"9.0\tT9\t10.0.0.1\texample.org,203.0.113.9",
            ]),
            pipe: Written(&[
                ("/_path", "dns"),
                ("/uid", "T9"),
                ("/answers_enr/0/ip", "203.0.113.9"),
                ("/answers_enr/0/country", "JP"),
            ]),
            kafka: Rejected("syntax"),
        },
    ]
}

/// Checks one record written to the output against its case.
fn check_written(case: &Case, outcome: Outcome, out: &[u8]) {
    let name = case.name;
    match outcome {
        Unchanged => {
            let Input::Line(input) = &case.input else {
                panic!("{name}: only a JSON line can pass unchanged");
            };
            assert!(
                out == input.as_slice(),
                "{name}: not passed through byte for byte: {}",
                String::from_utf8_lossy(out)
            );
        }
        Written(members) => {
            if let Input::Line(input) = &case.input {
                let close = input.iter().rposition(|&b| b == b'}').unwrap();
                assert!(
                    out.starts_with(&input[..close]),
                    "{name}: original bytes kept"
                );
            }
            let v: Value = serde_json::from_slice(out).unwrap_or_else(|e| {
                panic!(
                    "{name}: invalid JSON out ({e}): {}",
                    String::from_utf8_lossy(out)
                )
            });
            for (pointer, want) in members {
                assert_eq!(
                    v.pointer(pointer).and_then(Value::as_str),
                    Some(*want),
                    "{name}: {pointer} in {v}"
                );
            }
        }
        other => panic!("{name}: written out, expected {other:?}"),
    }
}

/// The pipe's standard input for the cases, and the line number of each
/// case's record (0 for a case the pipe skips).
fn pipe_stdin(cases: &[Case]) -> (Vec<u8>, Vec<u64>) {
    let mut stdin = Vec::new();
    let mut lines = Vec::new();
    let mut line = 0u64;
    let mut tsv_started = false;
    for case in cases {
        let case_lines = match (&case.input, case.pipe) {
            (_, Skip) | (Input::Tombstone, _) => {
                lines.push(0);
                continue;
            }
            (Input::Line(bytes), _) => {
                assert!(!tsv_started, "{}: JSON lines come before TSV", case.name);
                vec![bytes.clone()]
            }
            (Input::Tsv(rows), _) => {
                tsv_started = true;
                rows.clone()
            }
        };
        for l in case_lines {
            stdin.extend_from_slice(&l);
            stdin.push(b'\n');
            line += 1;
        }
        // The case's record is its last line; header lines are not records.
        lines.push(line);
    }
    (stdin, lines)
}

#[test]
fn every_case_through_enricher_pipe() {
    let dbs = write_dbs();
    let reject = dbs.dir.path().join("rejects.jsonl");
    let cases = cases();
    let (stdin, lines) = pipe_stdin(&cases);
    let out = run(
        &[
            "pipe",
            "--geoip-city",
            &path_of(&dbs.city),
            "--geoip-asn",
            &path_of(&dbs.asn),
            "--no-dns",
            "--provenance",
            "--reject",
            &path_of(&reject),
        ],
        &stdin,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // Output keeps input order: the n-th line written is the n-th case
    // expected to be written.
    let written: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let to_write: Vec<&Case> = cases
        .iter()
        .filter(|c| matches!(c.pipe, Written(_) | Unchanged))
        .collect();
    assert_eq!(written.len(), to_write.len(), "records written");
    for (case, line) in to_write.iter().zip(&written) {
        check_written(case, case.pipe, line);
    }

    let rejects: BTreeMap<u64, Value> = std::fs::read_to_string(&reject)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["line"].as_u64().unwrap(), v)
        })
        .collect();
    let mut rejected = 0;
    for (case, line) in cases.iter().zip(&lines) {
        if let Rejected(reason) = case.pipe {
            rejected += 1;
            let r = rejects
                .get(line)
                .unwrap_or_else(|| panic!("{}: no reject for line {line}", case.name));
            assert_eq!(r["reason"], reason, "{}: {r}", case.name);
            assert!(
                r["raw"].is_string() || r["raw_base64"].is_string(),
                "{}: original bytes kept",
                case.name
            );
            assert!(!r["error"].as_str().unwrap().is_empty());
        }
    }
    assert_eq!(rejects.len(), rejected, "nothing else rejected");
    let records = written.len() + rejected;
    assert!(
        stderr.contains(&format!(
            "{records} records in, {} enriched, {rejected} rejected",
            written.len()
        )),
        "{stderr}"
    );
}

/// A case on Kafka: its index is the message key and a `test.case` header.
fn message(index: usize, case: &Case, partitions: i32) -> Outgoing {
    let payload = match &case.input {
        Input::Line(bytes) => Some(bytes.clone()),
        Input::Tsv(lines) => Some(lines.join(&b'\n')),
        Input::Tombstone => None,
    };
    Outgoing {
        partition: index as i32 % partitions,
        key: Some(index.to_string().into_bytes()),
        payload,
        headers: vec![("test.case".into(), case.name.as_bytes().to_vec())],
    }
}

fn key_of(r: &Received) -> usize {
    String::from_utf8(r.key.clone().unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// Makes `topic` and its output and dead-letter topics, and a worker config
/// for them that writes provenance like the pipe test.
fn worker_config(kafka: &impl Kafka, dbs: &Dbs, topic: &str, partitions: i32) -> Config {
    kafka.create_topic(topic, partitions).unwrap();
    kafka
        .create_topic(&format!("{topic}_enr"), partitions)
        .unwrap();
    kafka.create_topic(&format!("{topic}_dlq"), 1).unwrap();
    let mut c = kafka_config(dbs, kafka, topic);
    c.output.provenance = true;
    // librdkafka's default message.max.bytes (1,000,000) cannot carry the
    // 10 MB record to the dead-letter topic, and the worker would send it
    // without its payload (see the test below); these tests want its bytes.
    c.kafka
        .producer_properties
        .insert("message.max.bytes".into(), "16777216".into());
    c
}

/// Whether a case is too big for the mock cluster's partitions (5 MiB): such
/// a message is kept only as the first of an empty partition.
fn is_big(case: &Case) -> bool {
    matches!(&case.input, Input::Line(b) if b.len() >= BIG)
}

/// Checks what came out of one case on Kafka, from the output topic or the
/// dead-letter topic.
fn check_kafka(index: usize, case: &Case, topic: &str, r: &Received) {
    let name = case.name;
    assert_eq!(
        r.header("test.case").as_deref(),
        Some(name),
        "{name}: headers kept"
    );
    match case.kafka {
        Rejected(reason) => {
            assert_eq!(topic, "dead letters", "{name}");
            assert_eq!(
                r.header("enricher.reason").as_deref(),
                Some(reason),
                "{name}: {:?}",
                r.header("enricher.error")
            );
            let sent = message(index, case, 1).payload;
            assert!(r.payload == sent, "{name}: the original bytes");
        }
        Outcome::Tombstone => {
            assert_eq!(topic, "output", "{name}");
            assert_eq!(r.payload, None, "{name}: still a tombstone");
        }
        outcome => {
            assert_eq!(topic, "output", "{name}");
            check_written(case, outcome, r.payload.as_deref().unwrap_or_default());
        }
    }
}

#[test]
fn every_case_through_the_kafka_worker() {
    let kafka = MockKafka::start(1).unwrap();
    let dbs = write_dbs();
    let topic = "bro_bad_input";
    let cases = cases();
    let on_kafka: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].kafka != Skip && !is_big(&cases[i]))
        .collect();
    let messages: Vec<Outgoing> = on_kafka.iter().map(|&i| message(i, &cases[i], 2)).collect();
    let c = worker_config(&kafka, &dbs, topic, 2);
    kafka.produce_messages(topic, &messages).unwrap();
    let w = Worker::start(&c);

    let want_dlq = on_kafka
        .iter()
        .filter(|&&i| matches!(cases[i].kafka, Rejected(_)))
        .count();
    let want_out = on_kafka.len() - want_dlq;
    let mut seen: BTreeMap<usize, (&str, Received)> = BTreeMap::new();
    for (name, records) in [
        (
            "output",
            kafka
                .read_all(&format!("{topic}_enr"), want_out, Duration::from_secs(30))
                .unwrap(),
        ),
        (
            "dead letters",
            kafka
                .read_all(&format!("{topic}_dlq"), want_dlq, Duration::from_secs(30))
                .unwrap(),
        ),
    ] {
        for r in records {
            let i = key_of(&r);
            if let Some((first, _)) = seen.insert(i, (name, r)) {
                panic!("{}: out twice (first to {first})", cases[i].name);
            }
        }
    }
    for &i in &on_kafka {
        let Some((topic, r)) = seen.get(&i) else {
            panic!("{}: lost", cases[i].name);
        };
        check_kafka(i, &cases[i], topic, r);
    }
    assert_eq!(seen.len(), on_kafka.len(), "nothing else came out");

    let high = kafka.high_watermarks(topic, 2).unwrap();
    assert_eq!(high.values().sum::<i64>(), on_kafka.len() as i64);
    wait_until(
        "the commits to reach the end of both partitions",
        Duration::from_secs(10),
        || kafka.committed(&c.kafka.group_id, topic, 2).unwrap() == high,
    );
    let report = w.stop();
    assert_eq!(report.consumed, on_kafka.len() as u64);
    assert_eq!(report.dead_lettered, want_dlq as u64);
}

/// The table's 10 MB record, alone on its own topics (see [`is_big`]).
#[test]
fn the_ten_megabyte_case_through_the_kafka_worker() {
    let kafka = MockKafka::start(1).unwrap();
    let dbs = write_dbs();
    let topic = "bro_bad_input_big";
    let cases = cases();
    let (i, case) = cases.iter().enumerate().find(|(_, c)| is_big(c)).unwrap();
    let c = worker_config(&kafka, &dbs, topic, 1);
    kafka
        .produce_messages(topic, &[message(i, case, 1)])
        .unwrap();
    let w = Worker::start(&c);
    let dead = kafka
        .read_all(&format!("{topic}_dlq"), 1, Duration::from_secs(30))
        .unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered");
    check_kafka(i, case, "dead letters", &dead[0]);
    // The partition moves on. (No record goes behind it: the mock cluster
    // loses the message appended after one over 5 MiB.)
    wait_until("the commit past it", Duration::from_secs(10), || {
        kafka.committed(&c.kafka.group_id, topic, 1).unwrap()
            == kafka.high_watermarks(topic, 1).unwrap()
    });
    w.stop();
}

/// A dead letter carries the original bytes, which may be more than the
/// producer's `message.max.bytes` (librdkafka's default is 1,000,000 bytes,
/// below `input.max_record_bytes`' 1 MiB). It is dead-lettered without its
/// payload, whose size a header keeps, and the partition moves on.
#[test]
fn a_dead_letter_over_the_producers_size_limit_does_not_stall_the_worker() {
    let kafka = MockKafka::start(1).unwrap();
    test_support::init_tracing();
    let topic = "bro_bad_input_stall";
    for t in [topic, "bro_bad_input_stall_enr", "bro_bad_input_stall_dlq"] {
        kafka.create_topic(t, 1).unwrap();
    }
    let dbs = write_dbs();
    let c = kafka_config(&dbs, &kafka, topic);
    let big = format!(r#"{{"id":1,"pad":"{}"}}"#, "x".repeat(1_200_000));
    kafka
        .produce(
            topic,
            1,
            [
                conn("10.0.0.1", "81.2.69.142"),
                big.clone(),
                conn("10.0.0.2", "81.2.69.142"),
            ],
        )
        .unwrap();
    let w = Worker::start(&c);
    let dlq = kafka
        .read_all(&format!("{topic}_dlq"), 1, Duration::from_secs(20))
        .unwrap();
    assert_eq!(dlq.len(), 1, "dead-lettered");
    let dead = &dlq[0];
    assert_eq!(dead.header("enricher.reason").as_deref(), Some("too_large"));
    assert_eq!(dead.payload, None, "sent without its payload");
    let size = big.len().to_string();
    for (header, want) in [
        ("enricher.payload_dropped", size.as_str()),
        ("enricher.source.topic", topic),
        ("enricher.source.partition", "0"),
        ("enricher.source.offset", "1"),
    ] {
        assert_eq!(dead.header(header).as_deref(), Some(want), "{header}");
    }
    let out = kafka
        .read_all(&format!("{topic}_enr"), 2, Duration::from_secs(20))
        .unwrap();
    assert_eq!(out.len(), 2, "the record behind it came out");
    let high = kafka.high_watermarks(topic, 1).unwrap();
    assert_eq!(high.values().sum::<i64>(), 3);
    wait_until("the commit past it", Duration::from_secs(10), || {
        kafka.committed(&c.kafka.group_id, topic, 1).unwrap() == high
    });
    let report = w.stop();
    assert_eq!(report.consumed, 3);
    assert_eq!(report.produced, 2);
    assert_eq!(report.dead_lettered, 1);
}

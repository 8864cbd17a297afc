//! The scanner's tests: every JSON shape, the limits, and properties
//! checked against serde_json.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::splice::write_str;

const IP_PATHS: [&str; 3] = ["id.orig_h", "id.resp_h", "answers"];

fn zeek() -> Wanted {
    Wanted::new("_path", &IP_PATHS)
}

fn run(input: &str, wanted: &Wanted) -> Result<Scan, RecordError> {
    let mut out = Scan::default();
    scan(input.as_bytes(), wanted, &Limits::default(), &mut out).map(|()| out)
}

fn err(input: &[u8]) -> RecordError {
    let mut out = Scan::default();
    match scan(input, &zeek(), &Limits::default(), &mut out) {
        Ok(()) => panic!("accepted {:?}", String::from_utf8_lossy(input)),
        Err(e) => e,
    }
}

/// The found values as (path, decoded string or None for Other).
fn values(input: &str, wanted: &Wanted) -> Vec<(String, Option<String>)> {
    let out = run(input, wanted).expect("valid record");
    decode_found(input.as_bytes(), wanted, &out)
}

fn decode_found(input: &[u8], wanted: &Wanted, out: &Scan) -> Vec<(String, Option<String>)> {
    out.found
        .iter()
        .map(|f| {
            let path = wanted.paths()[usize::from(f.field)].clone();
            let value = match f.kind {
                FoundKind::Str {
                    start,
                    end,
                    escaped,
                } => {
                    let raw = &input[start as usize..end as usize];
                    let mut s = String::new();
                    if escaped {
                        assert!(unescape_into(raw, &mut s));
                    } else {
                        assert!(!raw.contains(&b'\\'));
                        s.push_str(std::str::from_utf8(raw).expect("utf8"));
                    }
                    Some(s)
                }
                FoundKind::Other => None,
            };
            (path, value)
        })
        .collect()
}

fn s(path: &str, value: &str) -> (String, Option<String>) {
    (path.to_owned(), Some(value.to_owned()))
}

fn o(path: &str) -> (String, Option<String>) {
    (path.to_owned(), None)
}

#[test]
fn dotted_keys_match_at_top_level() {
    let rec = r#"{"_path":"conn","id.orig_h":"10.0.0.1","id.orig_p":5,"id.resp_h":"2001:db8::1"}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![s("id.orig_h", "10.0.0.1"), s("id.resp_h", "2001:db8::1")]
    );
}

#[test]
fn nested_keys_match_like_dotted_ones() {
    let rec = r#"{"id":{"orig_h":"10.0.0.1","orig_p":5,"resp_h":"10.0.0.2"},"x":1}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![s("id.orig_h", "10.0.0.1"), s("id.resp_h", "10.0.0.2")]
    );
}

#[test]
fn mixed_dotted_and_nested_keys_match() {
    let wanted = Wanted::new("_path", &["a.b.c"]);
    let rec = r#"{"a.b":{"c":"1"},"a":{"b.c":"2","b":{"c":"3","d":"4"}},"a.b.c":"5"}"#;
    assert_eq!(
        values(rec, &wanted),
        vec![
            s("a.b.c", "1"),
            s("a.b.c", "2"),
            s("a.b.c", "3"),
            s("a.b.c", "5")
        ]
    );
}

#[test]
fn unwanted_subtrees_are_only_validated() {
    let rec = r#"{"x":{"id.orig_h":"1.1.1.1","id":{"orig_h":"2.2.2.2"}},"idx":{"orig_h":"3"}}"#;
    assert_eq!(values(rec, &zeek()), vec![]);
    // Still validated: a syntax error deep in an ignored subtree is caught.
    assert_eq!(
        err(br#"{"x":{"y":[1,{"z":tru}]}}"#),
        RecordError::Syntax {
            offset: 21,
            expected: "'true'"
        }
    );
}

#[test]
fn a_path_and_its_extension_both_match() {
    let wanted = Wanted::new("_path", &["a", "a.b"]);
    assert_eq!(
        values(r#"{"a":{"b":"x"}}"#, &wanted),
        vec![o("a"), s("a.b", "x")]
    );
}

#[test]
fn arrays_yield_each_string_and_one_other() {
    let rec = r#"{"answers":["ise.example","134.71.3.16"],"TTLs":[1.0,2.0]}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![s("answers", "ise.example"), s("answers", "134.71.3.16")]
    );
    let rec = r#"{"answers":["a",1,"b",null,{"c":"d"},["e"]]}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![s("answers", "a"), o("answers"), s("answers", "b")]
    );
    assert_eq!(values(r#"{"answers":[]}"#, &zeek()), vec![]);
    assert_eq!(
        values(r#"{"answers":[["x"]]}"#, &zeek()),
        vec![o("answers")]
    );
}

#[test]
fn non_string_values_are_other() {
    let rec = r#"{"id.orig_h":null,"id.resp_h":17,"answers":{"a":"b"},"id":{"orig_h":true}}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![o("id.orig_h"), o("id.resp_h"), o("answers"), o("id.orig_h")]
    );
}

#[test]
fn duplicate_keys_are_all_reported() {
    let rec = r#"{"id.orig_h":"1","id.orig_h":"2","id":{"orig_h":"3"},"id":{"orig_h":"4"}}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![
            s("id.orig_h", "1"),
            s("id.orig_h", "2"),
            s("id.orig_h", "3"),
            s("id.orig_h", "4")
        ]
    );
}

#[test]
fn escaped_keys_still_match() {
    let rec = r#"{"id\u002eorig_h":"1.2.3.4","\u0069d":{"resp\u005fh":"5.6.7.8"},"\"":"x"}"#;
    assert_eq!(
        values(rec, &zeek()),
        vec![s("id.orig_h", "1.2.3.4"), s("id.resp_h", "5.6.7.8")]
    );
    let wanted = Wanted::new("_path", &["a\"b", "\u{e9}.\u{1F600}"]);
    let rec = r#"{"a\"b":"q","\u00e9":{"\ud83d\ude00":"smile"}}"#;
    assert_eq!(
        values(rec, &wanted),
        vec![s("a\"b", "q"), s("\u{e9}.\u{1F600}", "smile")]
    );
}

#[test]
fn escaped_values_are_flagged() {
    let rec = r#"{"id.orig_h":"10.0.0.1","answers":["a\/b","\u0031.2"]}"#;
    let out = run(rec, &zeek()).expect("valid");
    let escaped: Vec<bool> = out
        .found
        .iter()
        .map(|f| matches!(f.kind, FoundKind::Str { escaped: true, .. }))
        .collect();
    assert_eq!(escaped, vec![false, true, true]);
    assert_eq!(
        values(rec, &zeek()),
        vec![
            s("id.orig_h", "10.0.0.1"),
            s("answers", "a/b"),
            s("answers", "1.2")
        ]
    );
}

#[test]
fn type_key_is_found_at_top_level_only() {
    let rec = r#"{"x":{"_path":"nested"},"_path":"dns","_path":"second"}"#;
    let out = run(rec, &zeek()).expect("valid");
    let (start, end, escaped) = out.log_type.expect("type");
    assert_eq!(&rec[start as usize..end as usize], "dns");
    assert!(!escaped);
    assert_eq!(
        run(r#"{"_path":1}"#, &zeek()).expect("valid").log_type,
        None
    );
    assert_eq!(
        run(r#"{"x":{"_path":"a"}}"#, &zeek())
            .expect("valid")
            .log_type,
        None
    );
    let out = run(r#"{"_path":"d\u006es"}"#, &zeek()).expect("valid");
    assert_eq!(out.log_type, Some((10, 18, true)));
}

#[test]
fn type_key_can_also_be_a_wanted_path() {
    let wanted = Wanted::new("kind", &["kind"]);
    let out = run(r#"{"kind":"x"}"#, &wanted).expect("valid");
    assert_eq!(out.log_type, Some((9, 10, false)));
    assert_eq!(out.found.len(), 1);
}

#[test]
fn empty_object_and_whitespace() {
    let out = run("{}", &zeek()).expect("valid");
    assert_eq!((out.close, out.members), (1, 0));
    let rec = " \t{ \"a\" : 1 ,\n \"id.orig_h\" : \"1.2.3.4\" , \"b\" : [ 1 , { } , [ ] ] }\r\n";
    let out = run(rec, &zeek()).expect("valid");
    assert_eq!(out.members, 3);
    assert_eq!(out.close, rec.rfind('}').expect("brace"));
    assert_eq!(values(rec, &zeek()), vec![s("id.orig_h", "1.2.3.4")]);
    let out = run("{\"a\":{\"b\":{}}}\n", &zeek()).expect("valid");
    assert_eq!((out.close, out.members), (13, 1));
}

#[test]
fn scan_state_is_reset_between_records() {
    let wanted = zeek();
    let mut out = Scan::default();
    let limits = Limits::default();
    let first = br#"{"_path":"a","id.orig_h":"1","x":2}"#;
    scan(first, &wanted, &limits, &mut out).expect("valid");
    assert_eq!((out.found.len(), out.members), (1, 3));
    scan(b"{}", &wanted, &limits, &mut out).expect("valid");
    assert_eq!((out.found.len(), out.members, out.log_type), (0, 0, None));
}

#[test]
fn empty_input() {
    assert_eq!(err(b""), RecordError::Empty);
    assert_eq!(err(b" \r\n\t "), RecordError::Empty);
}

#[test]
fn invalid_utf8() {
    assert_eq!(
        err(b"{\"a\":\"\xff\"}"),
        RecordError::InvalidUtf8 { offset: 6 }
    );
    assert_eq!(
        err(b"{\"a\xc3\x28\":1}"),
        RecordError::InvalidUtf8 { offset: 3 }
    );
    // A character cut short by the end of the input is truncation inside
    // the document, or trailing data after it.
    assert_eq!(err(b"{\"a\":\"\xc3"), RecordError::Truncated);
    assert_eq!(err(b"{} \xe2\x82"), RecordError::TrailingData { offset: 3 });
    assert_eq!(err(b" \xe2\x82"), RecordError::InvalidUtf8 { offset: 1 });
}

#[test]
fn not_an_object() {
    for input in [
        "[1]", "\"x\"", "3", "-1", "true", "false", "null", " [ {} ]",
    ] {
        assert_eq!(err(input.as_bytes()), RecordError::NotAnObject, "{input}");
    }
    assert_eq!(
        err(b"x{}"),
        RecordError::Syntax {
            offset: 0,
            expected: "'{'"
        }
    );
    // A byte-order mark is not JSON whitespace (serde_json agrees).
    assert!(matches!(
        err("\u{feff}{}".as_bytes()),
        RecordError::Syntax { offset: 0, .. }
    ));
}

#[test]
fn every_prefix_of_a_record_is_truncated() {
    let rec = concat!(
        r#" {"_path":"dns","id":{"orig_h":"10.0.0.1"},"id.resp_h":"::1","n":-12.5e+3,"#,
        r#""ok":true,"no":false,"nil":null,"answers":["a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00","é😀"],"#,
        r#""deep":[[{}],[],{"x":[0,1.0E-2]}]}"#,
        "\r\n"
    );
    assert!(run(rec, &zeek()).is_ok());
    let close = rec.rfind('}').expect("brace");
    for cut in 0..rec.len() {
        let prefix = &rec.as_bytes()[..cut];
        let mut out = Scan::default();
        let got = scan(prefix, &zeek(), &Limits::default(), &mut out);
        let expected = if cut <= 1 {
            Err(RecordError::Empty)
        } else if cut > close {
            Ok(())
        } else {
            Err(RecordError::Truncated)
        };
        assert_eq!(got, expected, "cut at {cut}");
    }
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let limit = Limits::default().max_depth;
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let deep = format!("{{\"a\":{}{}}}", open.repeat(10_000), close.repeat(10_000));
        assert_eq!(err(deep.as_bytes()), RecordError::TooDeep { limit });
    }
    // Exactly at the limit is fine: the top-level object is level 1.
    let nested = |levels: usize| "{\"a\":".repeat(levels) + "1" + &"}".repeat(levels);
    assert!(run(&nested(limit), &zeek()).is_ok());
    assert_eq!(
        err(nested(limit + 1).as_bytes()),
        RecordError::TooDeep { limit }
    );
    let small = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    let mut out = Scan::default();
    assert!(scan(b"{\"a\":[1]}", &zeek(), &small, &mut out).is_ok());
    assert_eq!(
        scan(b"{\"a\":[[1]]}", &zeek(), &small, &mut out),
        Err(RecordError::TooDeep { limit: 2 })
    );
}

#[test]
fn trailing_data() {
    assert_eq!(err(b"{}x"), RecordError::TrailingData { offset: 2 });
    assert_eq!(err(b"{} {}"), RecordError::TrailingData { offset: 3 });
    assert_eq!(err(b"{}\n{}\n"), RecordError::TrailingData { offset: 3 });
    assert_eq!(err(b"{}\0"), RecordError::TrailingData { offset: 2 });
}

#[test]
fn too_large_is_checked_first() {
    let limits = Limits {
        max_bytes: 4,
        ..Limits::default()
    };
    let mut out = Scan::default();
    assert_eq!(
        scan(b"{\"a\":\xff", &zeek(), &limits, &mut out),
        Err(RecordError::TooLarge { limit: 4, size: 6 })
    );
    assert!(scan(b"{ }\n", &zeek(), &limits, &mut out).is_ok());
}

#[test]
fn control_characters_in_strings_are_refused() {
    assert_eq!(
        err(b"{\"a\":\"x\ny\"}"),
        RecordError::Syntax {
            offset: 7,
            expected: "no control character inside a string"
        }
    );
    assert!(matches!(
        err(b"{\"a\x01\":1}"),
        RecordError::Syntax { offset: 3, .. }
    ));
    assert!(matches!(
        err(b"{\"a\":\"0123456789012345678901234567890123456789\x1f\"}"),
        RecordError::Syntax { offset: 46, .. }
    ));
    // Escaped, they are fine; DEL is not a control character to JSON.
    assert!(run("{\"a\":\"x\\ny\\u0000\x7f\"}", &zeek()).is_ok());
}

#[test]
fn bad_numbers_are_refused() {
    for bad in [
        "01", "1.", "-", "1e", "1e+", "+1", ".5", "1.e5", "-a", "0x1", "1ee2", "--1", "1.2.3",
        "Infinity", "NaN", "-01",
    ] {
        let rec = format!("{{\"a\":{bad}}}");
        assert!(
            matches!(err(rec.as_bytes()), RecordError::Syntax { .. }),
            "{bad}"
        );
    }
    for good in [
        "0",
        "-0",
        "1",
        "-12",
        "0.5",
        "-0.0e-0",
        "1E+2",
        "1e400",
        "123456789012345678901234567890",
    ] {
        let rec = format!("{{\"a\":{good},\"b\":[{good}]}}");
        assert!(run(&rec, &zeek()).is_ok(), "{good}");
    }
}

#[test]
fn bad_structure_is_refused() {
    for (bad, offset, expected) in [
        (r#"{"a":1,}"#, 7, "'\"'"),
        (r#"{,}"#, 1, "'\"' or '}'"),
        (r#"{"a":1 "b":2}"#, 7, "',' or '}'"),
        (r#"{"a":[1,]}"#, 8, "a value"),
        (r#"{"a":[1 2]}"#, 8, "',' or ']'"),
        (r#"{"a"}"#, 4, "':'"),
        (r#"{"a":}"#, 5, "a value"),
        (r#"{"a"::1}"#, 5, "a value"),
        (r#"{"a":1]"#, 6, "',' or '}'"),
        (r#"{"a":[1}"#, 7, "',' or ']'"),
        (r#"{1:2}"#, 1, "'\"' or '}'"),
        (r#"{'a':1}"#, 1, "'\"' or '}'"),
        (r#"{"a":tru }"#, 8, "'true'"),
        (r#"{"a":nul}"#, 8, "'null'"),
        (r#"{"a":fals3}"#, 9, "'false'"),
        (r#"{"a":"\x"}"#, 7, "an escape character"),
        (r#"{"a":"\u12g4"}"#, 10, "a hex digit"),
        (r#"{"a":"\ud800"}"#, 12, "a low surrogate escape"),
        (r#"{"a":"\ud800\u0041"}"#, 12, "a low surrogate escape"),
        (r#"{"a":"\udc00"}"#, 6, "a high surrogate before a low one"),
    ] {
        assert_eq!(
            err(bad.as_bytes()),
            RecordError::Syntax { offset, expected },
            "{bad}"
        );
    }
}

#[test]
fn labels_and_messages() {
    let cases = [
        (RecordError::Empty, "empty"),
        (RecordError::InvalidUtf8 { offset: 1 }, "invalid_utf8"),
        (RecordError::NotAnObject, "not_an_object"),
        (RecordError::Truncated, "truncated"),
        (
            RecordError::Syntax {
                offset: 17,
                expected: "':'",
            },
            "syntax",
        ),
        (RecordError::TooDeep { limit: 64 }, "too_deep"),
        (RecordError::TrailingData { offset: 2 }, "trailing_data"),
        (RecordError::TsvNoHeader, "tsv_no_header"),
        (
            RecordError::TsvColumns {
                expected: 2,
                found: 3,
            },
            "tsv_columns",
        ),
        (RecordError::TooLarge { limit: 1, size: 2 }, "too_large"),
    ];
    for (error, label) in cases {
        assert_eq!(error.label(), label);
        let message = error.to_string();
        assert!(!message.is_empty() && !message.contains('\n'));
    }
    assert_eq!(
        RecordError::Truncated.to_string(),
        "truncated JSON: input ends inside the document"
    );
    assert_eq!(
        RecordError::Syntax {
            offset: 17,
            expected: "':'"
        }
        .to_string(),
        "invalid JSON at byte 17: expected ':'"
    );
}

#[test]
fn wanted_dedups_and_indexes() {
    let wanted = Wanted::new("_path", &["a", "b", "a"]);
    assert_eq!(wanted.paths(), ["a", "b"]);
    assert_eq!(wanted.index_of("b"), Some(1));
    assert_eq!(wanted.index_of("c"), None);
    assert_eq!(wanted.type_key(), "_path");
    let none: [&str; 0] = [];
    assert_eq!(values(r#"{"a":"1"}"#, &Wanted::new("_path", &none)), vec![]);
    // The empty name is a name like any other.
    let wanted = Wanted::new("_path", &["", ".x"]);
    assert_eq!(
        values(r#"{"":"e","":{"x":"f"}}"#, &wanted),
        vec![s("", "e"), o(""), s(".x", "f")]
    );
}

#[test]
fn unescape_resolves_escapes() {
    let mut buf = String::from("old");
    assert!(unescape_into(
        br#"a\"\\\/\b\f\n\r\t\u00e9\u20AC\ud83d\ude00z"#,
        &mut buf
    ));
    assert_eq!(buf, "a\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{20ac}\u{1f600}z");
    assert!(unescape_into(b"plain", &mut buf));
    assert_eq!(buf, "plain");
    assert!(unescape_into("\u{e9}t\u{e9}\\n".as_bytes(), &mut buf));
    assert_eq!(buf, "\u{e9}t\u{e9}\n");
    for bad in [
        &br"\ud83d"[..],
        br"\ude00",
        br"\ud83d\u0041",
        br"\ud83dx\ude00",
        br"\x",
        br"\u12",
        br"\u12g4",
        br"abc\",
        b"\xff",
    ] {
        assert!(!unescape_into(bad, &mut buf), "{bad:?}");
    }
}

#[test]
fn write_str_round_trips_through_serde_json() {
    for text in [
        "",
        "plain",
        "q\"b\\s/",
        "\u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}",
        "\u{e9}\u{2028}\u{1f600}",
    ] {
        let mut out = b"prefix".to_vec();
        write_str(&mut out, text);
        let literal = &out[6..];
        assert_eq!(
            serde_json::from_slice::<String>(literal).expect("json"),
            text
        );
        let mut back = String::new();
        assert!(unescape_into(&literal[1..literal.len() - 1], &mut back));
        assert_eq!(back, text);
    }
    let mut out = Vec::new();
    write_str(&mut out, "a\u{1}\n");
    assert_eq!(out, br#""a\u0001\n""#);
}

// ---- Property tests ----

/// Keys that exercise the wanted paths, dotted and nested forms, the type
/// key, and escaping.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_owned()),
        Just("orig_h".to_owned()),
        Just("id.orig_h".to_owned()),
        Just("answers".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("a.b".to_owned()),
        Just("b.c".to_owned()),
        Just("c".to_owned()),
        Just("_path".to_owned()),
        Just("q\"\\/\n".to_owned()),
        ".{0,6}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "[0-9.:a-f]{1,15}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), value()), 0..8)
        .prop_map(|members| Value::Object(members.into_iter().collect()))
}

/// What `scan` should find in `record`, walking the parsed document.
fn model(record: &Value, paths: &[&str]) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut todo = vec![(String::new(), record)];
    // Depth-first in document order, without recursion.
    let mut stack: Vec<Vec<(String, &Value)>> = Vec::new();
    if let Some((_, Value::Object(map))) = todo.pop() {
        stack.push(map.iter().rev().map(|(k, v)| (k.clone(), v)).collect());
    }
    while let Some(level) = stack.last_mut() {
        let Some((name, v)) = level.pop() else {
            stack.pop();
            continue;
        };
        if let Some(&path) = paths.iter().find(|p| **p == name) {
            match v {
                Value::String(text) => found.push(s(path, text)),
                Value::Array(items) => {
                    let mut other = false;
                    for item in items {
                        match item {
                            Value::String(text) => found.push(s(path, text)),
                            _ if !other => {
                                other = true;
                                found.push(o(path));
                            }
                            _ => {}
                        }
                    }
                }
                _ => found.push(o(path)),
            }
        }
        let prefix = format!("{name}.");
        if let Value::Object(map) = v
            && paths.iter().any(|p| p.starts_with(&prefix))
        {
            stack.push(
                map.iter()
                    .rev()
                    .map(|(k, v)| (format!("{prefix}{k}"), v))
                    .collect(),
            );
        }
    }
    found
}

/// Byte edits that turn valid JSON into near-misses.
#[derive(Debug, Clone)]
enum Edit {
    Delete(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Replace(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop::sample::select(
        b"{}[]\",:\\ \n0123456789.eE-+tfnulsr\x00\x01\x7f\xff\xc3/bu".to_vec(),
    );
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match edit {
        Edit::Delete(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Edit::Replace(i, b) => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

const MODEL_PATHS: [&str; 5] = ["id.orig_h", "answers", "a.b.c", "a.b", "_path"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut out = Scan::default();
        let _ = scan(&bytes, &zeek(), &Limits::default(), &mut out);
    }

    #[test]
    fn json_like_bytes_never_panic(
        bytes in prop::collection::vec(prop::sample::select(b"{}[]\",:\\ 0-9.eEtrufalsn".to_vec()), 0..128)
    ) {
        let mut out = Scan::default();
        let _ = scan(&bytes, &zeek(), &Limits::default(), &mut out);
    }

    #[test]
    fn serde_json_objects_are_accepted_and_found(record in object(), pretty in any::<bool>()) {
        let wanted = Wanted::new("_path", &MODEL_PATHS);
        let bytes = if pretty {
            serde_json::to_vec_pretty(&record)
        } else {
            serde_json::to_vec(&record)
        }
        .expect("serialize");
        let mut out = Scan::default();
        prop_assert_eq!(scan(&bytes, &wanted, &Limits::default(), &mut out), Ok(()));
        prop_assert_eq!(decode_found(&bytes, &wanted, &out), model(&record, &MODEL_PATHS));
        let members = record.as_object().map_or(0, serde_json::Map::len);
        prop_assert_eq!(out.members, members);
        prop_assert_eq!(bytes.get(out.close), Some(&b'}'));
        let log_type = out.log_type.map(|(start, end, escaped)| {
            let mut text = String::new();
            prop_assert!(unescape_into(&bytes[start as usize..end as usize], &mut text));
            prop_assert_eq!(escaped, bytes[start as usize..end as usize].contains(&b'\\'));
            Ok(text)
        }).transpose()?;
        prop_assert_eq!(log_type.as_deref(), record.get("_path").and_then(Value::as_str));
    }

    #[test]
    fn scan_agrees_with_serde_json_on_near_misses(
        record in object(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&record).expect("serialize");
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        let theirs = serde_json::from_slice::<Value>(&bytes);
        if let Err(e) = &theirs {
            // Numbers are checked against the grammar only; serde_json
            // also refuses ones that overflow an f64.
            prop_assume!(!e.to_string().contains("number out of range"));
        }
        let theirs = theirs.is_ok_and(|v| v.is_object());
        let mut out = Scan::default();
        let ours = scan(&bytes, &zeek(), &Limits::default(), &mut out);
        prop_assert_eq!(ours.is_ok(), theirs, "{:?} on {:?}", ours, String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn write_str_round_trips(text in any::<String>()) {
        let mut out = Vec::new();
        write_str(&mut out, &text);
        prop_assert_eq!(serde_json::from_slice::<String>(&out).expect("json"), text.clone());
        let mut back = String::new();
        prop_assert!(unescape_into(&out[1..out.len() - 1], &mut back));
        prop_assert_eq!(back, text);
    }
}

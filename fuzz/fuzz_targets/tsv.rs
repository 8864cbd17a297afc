//! `TsvReader` fed arbitrary lines, header lines included: it never panics,
//! and every row it converts is a JSON object serde_json reads, with numbers
//! that fit an `f64`, and that the record scanner accepts (the pipe scans it
//! next).

#![no_main]

use enricher::record::json::{Limits, scan};
use enricher::record::tsv::{TsvLine, TsvReader};
use enricher::record::{RecordError, Scan};
use enricher_fuzz::{Parsed, default_wanted, finite_numbers, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let wanted = default_wanted();
    let mut reader = TsvReader::new();
    let mut out = Vec::new();
    let mut scanned = Scan::default();
    for line in data.split(|&b| b == b'\n') {
        match reader.line(line, &mut out) {
            Ok(TsvLine::Header) => assert!(out.is_empty(), "a header writes nothing"),
            Ok(TsvLine::Row) => {
                let members = match parse(&out) {
                    Parsed::Object(members) => members,
                    other => panic!(
                        "row {:?} became {:?}: {other:?}",
                        String::from_utf8_lossy(line),
                        String::from_utf8_lossy(&out)
                    ),
                };
                assert!(
                    finite_numbers(members.iter().map(|(_, v)| v)),
                    "row {:?} became {:?}: a number overflows an f64",
                    String::from_utf8_lossy(line),
                    String::from_utf8_lossy(&out)
                );
                let limits = Limits {
                    max_bytes: usize::MAX,
                    ..Limits::default()
                };
                assert_eq!(scan(&out, &wanted, &limits, &mut scanned), Ok(()));
                assert_eq!(scanned.members, members.len());
            }
            Err(RecordError::Empty | RecordError::TsvNoHeader | RecordError::TsvColumns { .. }) => {
                assert!(out.is_empty(), "a refused row writes nothing");
            }
            Err(other) => panic!("unexpected TSV error {other:?}"),
        }
    }
});

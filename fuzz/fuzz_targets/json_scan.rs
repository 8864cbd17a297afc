//! `record::json::scan` on arbitrary bytes, with the default field map and
//! limits: it never panics, it agrees with serde_json on what is a JSON
//! object, and what it reports on success points at the right bytes.

#![no_main]

use std::cell::RefCell;

use enricher::record::json::{Limits, scan, unescape_into};
use enricher::record::{FoundKind, RecordError, Scan, Wanted};
use enricher_fuzz::{Parsed, default_wanted, parse};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static WANTED: Wanted = default_wanted();
    /// Reused across inputs the way a worker reuses it across records, to
    /// catch state left over from an earlier scan.
    static REUSED: RefCell<Scan> = RefCell::new(Scan::default());
}

fuzz_target!(|data: &[u8]| {
    WANTED.with(|wanted| check(data, wanted));
});

fn check(data: &[u8], wanted: &Wanted) {
    let limits = Limits::default();
    let mut fresh = Scan::default();
    let result = scan(data, wanted, &limits, &mut fresh);
    REUSED.with(|reused| {
        let mut reused = reused.borrow_mut();
        let again = scan(data, wanted, &limits, &mut reused);
        assert_eq!(result, again, "a reused Scan gives another answer");
        if result.is_ok() {
            assert_eq!(fresh.found, reused.found);
            assert_eq!(fresh.log_type, reused.log_type);
            assert_eq!((fresh.close, fresh.members), (reused.close, reused.members));
        }
    });
    match result {
        Ok(()) => accepted(data, wanted, &fresh),
        Err(RecordError::TooDeep { .. } | RecordError::TooLarge { .. }) => {}
        Err(error) => {
            if let Parsed::Object(_) = parse(data) {
                panic!("scan refused ({error}) a JSON object serde_json accepts");
            }
        }
    }
}

fn accepted(data: &[u8], wanted: &Wanted, out: &Scan) {
    match parse(data) {
        Parsed::Object(members) => assert_eq!(members.len(), out.members, "member count"),
        Parsed::Invalid(why) => panic!("scan accepted what serde_json refuses: {why}"),
    }
    assert_eq!(data.get(out.close), Some(&b'}'), "close points at a brace");
    assert!(
        data[out.close + 1..].iter().all(u8::is_ascii_whitespace),
        "only whitespace after the close"
    );
    let mut text = String::new();
    let mut check_str = |start: u32, end: u32, escaped: bool| {
        let (start, end) = (start as usize, end as usize);
        assert!(
            0 < start && start <= end && end < out.close,
            "range inside the object"
        );
        assert_eq!(data[start - 1], b'"');
        assert_eq!(data[end], b'"');
        let raw = &data[start..end];
        assert_eq!(escaped, raw.contains(&b'\\'), "escaped flag");
        assert!(unescape_into(raw, &mut text), "a found string decodes");
    };
    for found in &out.found {
        assert!(usize::from(found.field) < wanted.paths().len());
        if let FoundKind::Str {
            start,
            end,
            escaped,
        } = found.kind
        {
            check_str(start, end, escaped);
        }
    }
    if let Some((start, end, escaped)) = out.log_type {
        check_str(start, end, escaped);
    }
}

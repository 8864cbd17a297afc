use super::passes::CpuPerRecord;
use super::*;

#[test]
fn the_median_of_an_even_number_of_rounds_is_the_mean_of_the_middle_two() {
    assert_eq!(median(vec![]), 0.0);
    assert_eq!(median(vec![3.0]), 3.0);
    assert_eq!(median(vec![4.0, 1.0]), 2.5);
    assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
    assert_eq!(median(vec![9.0, 1.0, 3.0, 4.0]), 3.5);
}

#[test]
fn the_cover_holds_every_address_once() {
    let records: Vec<Vec<u8>> = [
        r#"{"id.orig_h":"10.0.0.1","id.resp_h":"45.0.0.1","note":"x\"45.0.0.9"}"#,
        r#"{"id.orig_h":"10.0.0.1","id.resp_h":"45.0.0.1"}"#,
        r#"{"id.orig_h":"10.0.0.2","answers":["81.0.0.1","host.example"]}"#,
        r#"{"id.orig_h":"2001:db8::1","id.resp_h":"45.0.0.1"}"#,
        r#"{"query":"81.0.0.1"}"#,
    ]
    .iter()
    .map(|r| r.as_bytes().to_vec())
    .collect();
    let (cover, addresses) = cover(&records);
    assert_eq!(
        cover,
        [records[0].clone(), records[2].clone(), records[3].clone()]
    );
    assert_eq!(addresses, 5);
}

#[test]
fn cpu_per_record_counts_from_the_first_output() {
    let mut c = CpuPerRecord::default();
    c.sample(0, Some(1.0));
    assert_eq!(c.us_per_record(), None);
    c.sample(100, Some(2.0));
    assert_eq!(
        c.us_per_record(),
        Some(10_000.0),
        "all out within one sample"
    );
    c.sample(1_100, Some(2.5));
    assert_eq!(c.us_per_record(), Some(500.0));
    let mut unknown = CpuPerRecord::default();
    unknown.sample(10, None);
    unknown.sample(20, None);
    assert_eq!(unknown.us_per_record(), None);
}

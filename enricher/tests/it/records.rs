//! Record shapes: nested keys, address lists, duplicates, odd values, naming.

use enricher::record::tsv::{TsvLine, TsvReader};
use enricher::splice::Naming;
use test_support::{Behaviour, DnsServer};

use super::*;

#[tokio::test]
async fn nested_keys_and_generic_json_fields() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.fields
        .by_type
        .insert("fw".into(), vec!["srcip".into(), "dstip".into()]);
    let core = build(&c);
    let v = enrich(
        &core.enricher,
        r#"{"_path":"conn","id":{"orig_h":"10.0.0.1","resp_h":"81.2.69.142"}}"#,
    )
    .await;
    assert_eq!(v["id.resp_h_country"], "GB");
    let v = enrich(&core.enricher, r#"{"srcip":"8.8.8.8","dstip":"1.128.0.1"}"#).await;
    assert_eq!(v["srcip_country"], "US");
    assert_eq!(v["srcip_org"], "Google LLC");
    assert_eq!(v["dstip_asn"], 1221);
    // A log type with its own field list ignores the default ones.
    let v = enrich(
        &core.enricher,
        r#"{"_path":"fw","srcip":"8.8.8.8","id.resp_h":"81.2.69.142"}"#,
    )
    .await;
    assert_eq!(v["srcip_country"], "US");
    assert!(v.get("id.resp_h_country").is_none());
}

#[tokio::test]
async fn the_same_address_twice_is_looked_up_once_and_odd_values_are_counted() {
    let dns = DnsServer::start(Behaviour::default()).await.unwrap();
    let dbs = write_dbs();
    let core = build(&config(&dbs, Some(dns.addr()), None));
    let v = enrich(&core.enricher, &conn("10.0.0.5", "::ffff:10.0.0.5")).await;
    assert_eq!(v["id.orig_h_ptr"], v["id.resp_h_ptr"]);
    assert_eq!(dns.queries(), 1);
    let before = core.enricher.stats().not_an_address.get();
    let v = enrich(
        &core.enricher,
        r#"{"id.orig_h":"not-an-ip","id.resp_h":42,"srcip":null,"dstip":"-"}"#,
    )
    .await;
    assert_eq!(v.as_object().unwrap().len(), 4, "nothing added");
    assert_eq!(core.enricher.stats().not_an_address.get() - before, 4);
}

#[tokio::test]
async fn address_lists_become_one_object_per_address() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    let dns_fields = ["id.orig_h", "id.resp_h", "answers"]
        .map(String::from)
        .to_vec();
    c.fields.by_type.insert("dns".into(), dns_fields);
    let core = build(&c);
    let line = r#"{"_path":"dns","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.53","query":"x.test","answers":["x.example.test","81.2.69.142","2001:db8::1"]}"#;
    let v = enrich(&core.enricher, line).await;
    let answers = v["answers_enr"].as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["ip"], "81.2.69.142");
    assert_eq!(answers[0]["country"], "GB");
    assert_eq!(answers[1]["ip"], "2001:db8::1");
    assert_eq!(answers[1]["country"], "US");
}

#[tokio::test]
async fn nested_naming_puts_one_object_per_address() {
    let dbs = write_dbs();
    let mut c = config(&dbs, None, None);
    c.output.naming = Naming::Nested;
    c.output.provenance = false;
    let core = build(&c);
    let v = enrich(&core.enricher, &conn("10.0.0.1", "89.160.20.112")).await;
    assert_eq!(v["id.resp_h_enr"]["country"], "SE");
    assert_eq!(v["id.resp_h_enr"]["asn"], 29518);
    assert!(
        v.get("id.orig_h_enr").is_none(),
        "nothing to write for a private address"
    );
}

#[tokio::test]
async fn tsv_and_json_of_the_same_records_get_the_same_enrichment() {
    let dbs = write_dbs();
    let core = build(&config(&dbs, None, None));
    let tsv = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\n1700000000.5\tC1\t10.1.2.3\t1234\t89.160.20.112\t443\ttcp\n1700000001.5\tC2\t10.1.2.4\t1235\t203.0.113.9\t443\ttcp\n";
    let json = [
        conn("10.1.2.3", "89.160.20.112"),
        conn("10.1.2.4", "203.0.113.9"),
    ];
    let mut reader = TsvReader::new();
    let mut rows = Vec::new();
    for line in tsv.lines() {
        let mut out = Vec::new();
        if reader.line(line.as_bytes(), &mut out).unwrap() == TsvLine::Row {
            rows.push(String::from_utf8(out).unwrap());
        }
    }
    assert_eq!(rows.len(), 2);
    let enrichment = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| k.starts_with("id.") && k.contains("_h_"));
        v
    };
    for (row, json) in rows.iter().zip(&json) {
        let a = enrich(&core.enricher, row).await;
        let b = enrich(&core.enricher, json).await;
        assert_eq!(
            enrichment(&without(&a, "_tier")),
            enrichment(&without(&b, "_tier"))
        );
        assert_eq!(a["_path"], "conn");
    }
}

#[tokio::test]
async fn values_that_are_not_addresses_are_counted_once_per_record() {
    let dbs = write_dbs();
    let core = build(&config(&dbs, None, None));
    let line = r#"{"_path":"conn","id.orig_h":"nope","id.resp_h":"81.2.69.1"}"#;
    let mut scratch = enricher::enrich::Scratch::default();
    let mut out = Vec::new();
    // As `enricher pipe` does: the cached path first, then the lookup path.
    let ready = core
        .enricher
        .enrich_cached(line.as_bytes(), &mut scratch, &mut out)
        .unwrap();
    assert_eq!(ready, enricher::enrich::Ready::Pending);
    enrich(&core.enricher, line).await;
    let ready = core
        .enricher
        .enrich_cached(line.as_bytes(), &mut scratch, &mut out)
        .unwrap();
    assert_eq!(ready, enricher::enrich::Ready::Done);
    assert_eq!(core.enricher.stats().not_an_address.get(), 2);
}

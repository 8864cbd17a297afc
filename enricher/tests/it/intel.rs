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

//! The Public Suffix List from a file, replaced while the worker runs.

use std::path::Path;

use enricher::enrich::Scratch;

use super::*;

/// Replaces `path` by a new file (a new inode, as a ConfigMap or an
/// `mv` does), so the watcher sees it even within one mtime tick.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_replaced_public_suffix_list_is_used_and_a_bad_one_is_rejected() {
    let dbs = write_dbs();
    let psl = dbs.dir.path().join("public_suffix_list.dat");
    replace(
        &psl,
        "// ===BEGIN ICANN DOMAINS===\ntest\n// ===END ICANN DOMAINS===\n",
    );
    let mut c = config(&dbs, None, None);
    c.domains.public_suffix_list = Some(psl.clone());
    c.domains.reload_interval_ms = 20;
    let core = build(&c);
    let record = r#"{"_path":"dns","query":"a.b.corp.test"}"#;
    let parts = |v: &Value| {
        (
            v["query_registered_domain"].clone(),
            v["query_top_level_domain"].clone(),
        )
    };
    let v = enrich(&core.enricher, record).await;
    assert_eq!(parts(&v), ("corp.test".into(), "test".into()), "{v}");
    // A lane's long-lived scratch holds the parts in its own front.
    let mut lane = Scratch::with_front();
    let cached = |lane: &mut Scratch| {
        let mut out = Vec::new();
        core.enricher
            .enrich_cached(record.as_bytes(), lane, &mut out)
            .unwrap();
        serde_json::from_slice::<Value>(&out).unwrap()
    };
    assert_eq!(
        parts(&cached(&mut lane)),
        ("corp.test".into(), "test".into())
    );

    // A newer list: corp.test is a suffix now. The cached parts go.
    replace(
        &psl,
        "// ===BEGIN ICANN DOMAINS===\ntest\ncorp.test\n// ===END ICANN DOMAINS===\n",
    );
    let mut v = Value::Null;
    for _ in 0..200 {
        v = enrich(&core.enricher, record).await;
        if v["query_top_level_domain"] == "corp.test" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(parts(&v), ("b.corp.test".into(), "corp.test".into()), "{v}");
    assert_eq!(v["query_subdomain"], "a", "{v}");
    // The front's copy was made with the old list: not used any more.
    let v = cached(&mut lane);
    assert_eq!(parts(&v), ("b.corp.test".into(), "corp.test".into()), "{v}");

    // An empty file is not a list: rejected, the newer list keeps serving.
    replace(&psl, "");
    assert!(!core.enricher.reload_public_suffix_list());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let v = enrich(&core.enricher, record).await;
    assert_eq!(parts(&v), ("b.corp.test".into(), "corp.test".into()), "{v}");

    // And a good one after it is taken again.
    replace(
        &psl,
        "// ===BEGIN ICANN DOMAINS===\ntest\n// ===END ICANN DOMAINS===\n",
    );
    assert!(
        core.enricher.reload_public_suffix_list() || {
            // The watcher may have been first.
            let v = enrich(&core.enricher, record).await;
            v["query_registered_domain"] == "corp.test"
        }
    );
}

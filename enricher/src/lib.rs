//! The enrichment core of the fleet: given a network-log record (Zeek JSON,
//! Zeek TSV or generic JSON), produce the same record with every IP address
//! enriched by GeoIP and reverse DNS.
//!
//! ```text
//! bytes --> record::json::scan ----------> addresses (ip::canonical)
//!                                             |
//!                       enrich: L1 (moka) --miss--> one fill per address
//!                                             |        |-> cache::RedisCache (L2, batched MGET)
//!                                             |        |-> dns::Dns (PTR, budget, TTL per outcome)
//!                                             |        '-> geoip::GeoIp (mmdb, hot reload)
//!                                             v
//! splice::Splicer: original bytes up to the closing brace + enrichment + "}"
//! ```
//!
//! Nothing here knows about Kafka: `enricher pipe` drives the same core from
//! standard input ([`pipe`]).

#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod core;
pub mod dns;
pub mod domain;
pub mod enrich;
pub mod geoip;
pub mod http;
pub mod intel;
pub mod ip;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod pipe;
pub mod process;
pub mod record;
pub mod redrive;
mod reload;
pub mod secrets;
pub mod splice;
pub mod stats;
pub mod status;
pub mod telemetry;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each top-level module (a file, or a folder counted as one) and the
    /// modules it names through `crate::`, comments left out.
    fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
        fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("readable src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in all {
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("a component");
            let module = Path::new(first.as_os_str())
                .file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable file");
            let names = graph.entry(module.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        names.insert(name);
                    }
                }
            }
        }
        graph
    }

    /// Extends `path` into a circle back to its first module, if there is one.
    fn circle(graph: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>) -> bool {
        let last = path.last().cloned().unwrap_or_default();
        for next in graph.get(&last).into_iter().flatten() {
            if path.first() == Some(next) {
                path.push(next.clone());
                return true;
            }
            if !path.contains(next) {
                path.push(next.clone());
                if circle(graph, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    #[test]
    fn the_modules_form_no_circle() {
        let graph = module_graph();
        for module in graph.keys() {
            let mut path = vec![module.clone()];
            assert!(
                !circle(&graph, &mut path),
                "a circle: {}",
                path.join(" -> ")
            );
        }
    }

    #[test]
    fn config_secrets_and_metrics_are_leaves() {
        let graph = module_graph();
        let uses = |m: &str| graph.get(m).cloned().unwrap_or_default();
        assert_eq!(uses("config"), BTreeSet::from(["secrets".to_string()]));
        assert!(uses("secrets").is_empty(), "{:?}", uses("secrets"));
        assert!(uses("metrics").is_empty(), "{:?}", uses("metrics"));
    }

    /// Folders that are built, downloaded or generated, never committed
    /// (`.gitignore`, `fuzz/.gitignore`, Python's caches).
    const NOT_IN_THE_REPOSITORY: [&str; 9] = [
        "target",
        ".git",
        ".venv",
        "__pycache__",
        ".pytest_cache",
        "node_modules",
        "fuzz/corpus",
        "fuzz/artifacts",
        "fuzz/coverage",
    ];

    #[test]
    fn the_readme_layout_names_every_folder() {
        fn folders(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("readable folder").flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                let rel = path
                    .strip_prefix(root)
                    .expect("under the root")
                    .to_string_lossy()
                    .replace('\\', "/");
                let name = entry.file_name().to_string_lossy().into_owned();
                if NOT_IN_THE_REPOSITORY.contains(&name.as_str())
                    || NOT_IN_THE_REPOSITORY.contains(&rel.as_str())
                {
                    continue;
                }
                out.push(rel);
                folders(root, &path, out);
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let layout = readme
            .split("\n## Layout\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Layout section");
        let named: Vec<&str> = layout
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.ends_with('/'))
            .collect();
        let mut all = Vec::new();
        folders(&root, &root, &mut all);
        let missing: Vec<&String> = all
            .iter()
            .filter(|d| !named.iter().any(|n| n.starts_with(&format!("{d}/"))))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md's Layout does not name these folders (as `path/`): {missing:?}"
        );
    }
}

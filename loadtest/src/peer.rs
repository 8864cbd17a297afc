//! The Python peer (`loadtest/peer/peer.py`): the plainest enricher a user
//! would write instead (confluent-kafka, json, maxminddb, a dict cache),
//! GeoIP only. `loadtest bench` runs it on the same broker and records as
//! the worker, so every bench shows the ratio to it.
//!
//! The script is built into this binary and written next to the bench's
//! other files, so the bench needs only a Python with `confluent_kafka` and
//! `maxminddb`: `--python PATH`, else `$ENRICHER_PEER_PYTHON`, else
//! `.venv/bin/python` in the working directory or in the repository this
//! binary was built from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::Proc;

/// `loadtest/peer/peer.py`, as built into this binary.
pub const SCRIPT: &str = include_str!("../peer/peer.py");

/// The variable naming the peer's Python.
pub const PYTHON_ENV: &str = "ENRICHER_PEER_PYTHON";

/// The Python to run the peer with: `explicit`, else `$ENRICHER_PEER_PYTHON`,
/// else `.venv/bin/python` in the working directory or the repository root,
/// checked to import `confluent_kafka` and `maxminddb`.
///
/// # Errors
///
/// A sentence saying why there is none (for the bench's "skipped" line).
pub fn find_python(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let candidate = match explicit {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os(PYTHON_ENV) {
            Some(p) => PathBuf::from(p),
            None => {
                let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
                let found = [
                    Path::new(".venv/bin/python").to_path_buf(),
                    repo.join(".venv/bin/python"),
                ]
                .into_iter()
                .find(|p| p.is_file());
                match found {
                    Some(p) => p,
                    None => {
                        return Err(format!(
                            "no Python for it: pass --python PATH or set {PYTHON_ENV} to a Python \
                             with confluent-kafka and maxminddb (python3 -m venv /tmp/peer && \
                             /tmp/peer/bin/pip install confluent-kafka maxminddb)"
                        ));
                    }
                }
            }
        },
    };
    let output = Command::new(&candidate)
        .args(["-c", "import confluent_kafka, maxminddb"])
        .output()
        .map_err(|e| format!("{} cannot run: {e}", candidate.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").trim();
        return Err(format!(
            "{} lacks its modules ({last}): {} -m pip install confluent-kafka maxminddb",
            candidate.display(),
            candidate.display()
        ));
    }
    Ok(candidate)
}

/// The versions of confluent-kafka and its librdkafka that `python` imports,
/// as `confluent-kafka X (librdkafka Y)`.
pub fn versions(python: &Path) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import confluent_kafka as c; v = c.version(); print(v[0] if isinstance(v, tuple) else v, c.libversion()[0])",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    Some(format!(
        "confluent-kafka {} (librdkafka {})",
        words.next()?,
        words.next()?
    ))
}

/// What one peer process reads and writes.
#[derive(Debug, Clone)]
pub struct PeerRun<'a> {
    /// The Python.
    pub python: &'a Path,
    /// Where the script, its log and nothing else go.
    pub dir: &'a Path,
    /// Bootstrap servers.
    pub brokers: &'a str,
    /// librdkafka properties for both its clients (TLS, SASL).
    pub properties: &'a BTreeMap<String, String>,
    /// The input topic.
    pub input: &'a str,
    /// The output topic.
    pub output: &'a str,
    /// Its consumer group.
    pub group: &'a str,
    /// The City database.
    pub city: &'a Path,
    /// The ASN database.
    pub asn: &'a Path,
    /// It exits after this many seconds without a record.
    pub idle_exit_secs: u32,
}

/// Starts the peer.
///
/// # Errors
///
/// When the script cannot be written or Python cannot start.
pub fn spawn(run: &PeerRun<'_>) -> anyhow::Result<Proc> {
    let script = run.dir.join("peer.py");
    if !script.is_file() {
        std::fs::write(&script, SCRIPT)?;
    }
    let mut command = Command::new(run.python);
    command
        .arg(&script)
        .args([run.brokers, run.input, run.group])
        .arg(run.city)
        .arg(run.asn)
        .args(["--output", run.output])
        .args(["--idle-exit", &run.idle_exit_secs.to_string()]);
    for (k, v) in run.properties {
        command.arg("--property").arg(format!("{k}={v}"));
    }
    Proc::spawn(
        "the Python peer",
        command,
        run.dir.join(format!("peer-{}.log", run.output)),
    )
}

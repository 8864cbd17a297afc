//! Logs of the binaries: `tracing` events to standard error, as text or as
//! JSON lines with the message and the fields at the top level (what log
//! shippers index without a remap).
//!
//! The filter and the format come from a flag, else `ENRICHER_LOG` and
//! `ENRICHER_LOG_FORMAT`, else the binary's default: `enricher` logs at
//! `info` (the per-partition progress line is what operators watch),
//! `loadtest` at `warn` (its output is the report).

use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `level` and `format` are the flags, if given;
/// `default_level` applies when neither a flag nor `ENRICHER_LOG` says.
/// The error names what is wrong, for an exit with code 64.
pub fn init(level: Option<&str>, format: Option<&str>, default_level: &str) -> Result<(), String> {
    let level = level
        .map(str::to_string)
        .or_else(|| std::env::var("ENRICHER_LOG").ok())
        .unwrap_or_else(|| default_level.to_string());
    let filter = EnvFilter::try_new(&level).map_err(|e| format!("log level {level:?}: {e}"))?;
    let format = format
        .map(str::to_string)
        .or_else(|| std::env::var("ENRICHER_LOG_FORMAT").ok())
        .unwrap_or_else(|| "text".to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.as_str() {
        "text" => builder.init(),
        "json" => builder.json().flatten_event(true).init(),
        other => return Err(format!("log format {other:?}: expected text or json")),
    }
    Ok(())
}

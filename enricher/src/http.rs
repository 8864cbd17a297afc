//! `/metrics`, `/healthz` and `/readyz` on one address, for Prometheus and
//! Kubernetes probes. A few lines of HTTP/1.1 over tokio: three GET routes
//! do not need a web framework.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::kafka::Health;

/// How long a gauge may go without an update before the exporter drops it.
/// Every gauge of the worker is set on the loop's 100 ms tick (see
/// [`crate::telemetry::publish`] and the acker's `publish`), so only the series
/// of a partition this worker no longer owns ever reaches it.
pub const GAUGE_IDLE: Duration = Duration::from_secs(60);

/// How often the exporter's upkeep runs (drains histogram buckets, so they
/// do not grow between scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus recorder, not installed: gauges idle for `gauge_idle` are
/// dropped, and histograms ending in `_seconds` get buckets from a GeoIP
/// lookup (a microsecond) up to a slow DNS answer (seconds).
pub fn recorder(gauge_idle: Duration) -> Result<PrometheusRecorder, String> {
    Ok(PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(gauge_idle))
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.000_001, 0.000_005, 0.000_025, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .build_recorder())
}

/// Installs the Prometheus recorder for this process (see [`recorder`]).
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let recorder = recorder(GAUGE_IDLE)?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    crate::metrics::describe();
    Ok(handle)
}

/// Binds `addr` and serves until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Arc<Health>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "Serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
        upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = upkeep.tick() => {
                    metrics.run_upkeep();
                    continue;
                }
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let metrics = metrics.clone();
            let health = Arc::clone(&health);
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let mut len = 0;
                // Read the request head (bounded); the body, if any, is ignored.
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while len < buf.len() {
                        let n = stream.read(&mut buf[len..]).await?;
                        if n == 0 {
                            break;
                        }
                        len += n;
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    std::io::Result::Ok(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, content_type, body) = route(path, &metrics, &health);
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }))
}

fn route(
    path: &str,
    metrics: &PrometheusHandle,
    health: &Health,
) -> (&'static str, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    match path.split('?').next().unwrap_or(path) {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/healthz" if health.alive() => ("200 OK", text, "ok\n".into()),
        "/healthz" => (
            "503 Service Unavailable",
            text,
            "consumer loop stalled\n".into(),
        ),
        "/readyz" if health.ready() => ("200 OK", text, "ready\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            text,
            format!(
                "not ready: assigned={} broker_up={} stopping={}\n",
                health.assigned.load(std::sync::atomic::Ordering::Relaxed),
                health.broker_up.load(std::sync::atomic::Ordering::Relaxed),
                health.stopping.load(std::sync::atomic::Ordering::Relaxed),
            ),
        ),
        _ => (
            "404 Not Found",
            text,
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

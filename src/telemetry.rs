//! Logs and metrics, set up once per process before anything else runs.
//!
//! Logs are JSON lines (one object per event, the request span's fields alongside) so that a
//! log pipeline can filter by `request_id` or `instance` without parsing prose.
//! Metrics are kept in-process and rendered in the Prometheus text format by the internal
//! listener; every instance is scraped separately, so no series needs an aggregation step.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::UtcTime;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, from `main` (tests opt in with `TEST_LOG`).
pub fn init_logs(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(UtcTime::rfc_3339())
        .with_writer(std::io::stdout);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
    // A second call (several in-process apps in one test binary) keeps the first subscriber.
    let _ = result;
}

/// Latency buckets in seconds: dense between 5 ms and 1 s where p50/p95/p99 of an API live.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, which nothing in this crate does.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Records the build-info gauge: which version each instance runs, for rolling deploys.
pub fn record_build_info(instance: &str, process: &'static str) {
    metrics::gauge!(
        "scaleout_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "instance" => instance.to_owned(),
        "process" => process,
    )
    .set(1.0);
}

//! Logs and metrics, set up once per process before anything else runs.
//!
//! Logs are JSON lines (one object per event, the request span's fields alongside) so that a
//! log pipeline can filter by `request_id` or `instance` without parsing prose.
//! Metrics are kept in-process and rendered in the Prometheus text format by the internal
//! listener; every instance is scraped separately, so no series needs an aggregation step.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, from `main` (tests opt in with `TEST_LOG`).
pub fn init_logs(config: &LogConfig) {
    // A second call (several in-process apps in one test binary) keeps the first subscriber.
    let _ = init(config, None, std::io::stdout);
}

/// Logs and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, traces exported over OTLP/HTTP.
/// Returns the tracer provider, to flush on exit. Call before starting the async runtime:
/// the exporter's HTTP client is a blocking one, used from the batch processor's thread.
pub fn init_telemetry(
    config: &LogConfig,
    instance: &str,
    process: &'static str,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    init_telemetry_logging_to(config, instance, process, std::io::stdout)
}

/// [`init_telemetry`] with the log lines written to `logs` instead of stdout: the test suite
/// runs the production set-up with its logs silenced.
pub fn init_telemetry_logging_to<W>(
    config: &LogConfig,
    instance: &str,
    process: &'static str,
    logs: W,
) -> anyhow::Result<Option<SdkTracerProvider>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(endpoint, instance, process)?),
        None => None,
    };
    init(config, provider.clone(), logs)?;
    Ok(provider)
}

/// An OTLP exporter to `{endpoint}/v1/traces`, batching spans on its own thread.
pub fn tracer_provider(
    endpoint: &str,
    instance: &str,
    process: &'static str,
) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    let resource = Resource::builder()
        .with_service_name("scaleout")
        .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
        .with_attribute(KeyValue::new("scaleout.process", process))
        .build();
    // W3C traceparent in and out: nginx passes it through, jobs will carry it.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The subscriber: the log format asked for, span export when a provider is given, and the
/// query timer. Each has its own filter: `RUST_LOG` decides what is logged and exported, while
/// the timer always sees sqlx's per-statement events (which are below the log level).
pub fn init<W>(
    config: &LogConfig,
    provider: Option<SdkTracerProvider>,
    logs: W,
) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = || EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("scaleout"))
            .with_filter(filter())
    });
    let timer = crate::db::timing::QueryTimer.with_filter(
        Targets::new()
            .with_target("sqlx::query", Level::DEBUG)
            .with_target(crate::db::timing::TARGET, Level::INFO),
    );
    let registry = tracing_subscriber::registry().with(otel).with(timer);
    let fmt = tracing_subscriber::fmt::layer()
        .with_timer(UtcTime::rfc_3339())
        .with_writer(logs);
    match config.format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter()),
            )
            .try_init()?,
        LogFormat::Pretty => registry
            .with(fmt.pretty().with_filter(filter()))
            .try_init()?,
    }
    Ok(())
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
            // Statements per request: a list should sit at a small constant.
            .set_buckets_for_metric(
                Matcher::Full("http_request_db_queries".into()),
                &[
                    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 50.0, 100.0,
                ],
            )
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

/// The current span's W3C trace context (`traceparent`, `tracestate`), to hand to work that
/// continues elsewhere (a job). Empty when trace export is off.
pub fn current_trace_context() -> std::collections::BTreeMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.into_iter().collect()
}

/// Makes `span` a child of the trace context in `carrier`, and records its trace and span ids
/// as fields (`trace_id`, `span_id`, which the span must declare) so log lines carry them.
pub fn continue_trace(span: &tracing::Span, carrier: &dyn opentelemetry::propagation::Extractor) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    // Fails only when trace export is off: there is no trace to continue then.
    let _ = span.set_parent(parent);
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

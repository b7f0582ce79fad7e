//! Traces: a request continues the caller's W3C trace, its SQL spans are its descendants, and
//! so is the span of a job it enqueued, run by a worker. Spans are exported over OTLP/HTTP to a
//! receiver this test binary runs (the same protocol a collector speaks).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::routing::post;
use opentelemetry_sdk::trace::SdkTracerProvider;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Api, TestUser, eventually, signed_up, spawn_app};

/// A received span, with the instance that exported it.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub name: String,
    /// The resource's `service.instance.id`: `app1`, the worker's id, `test`...
    pub instance: String,
}

pub type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP (JSON) receiver bound to `addr`, on a thread of its own so that it outlives
/// the runtime of whichever test started it. Returns the bound address and what it receives.
pub fn start_receiver(addr: &str) -> Result<(std::net::SocketAddr, Spans), String> {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let addr = addr.to_owned();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::bind(&addr).await {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = bound_tx.send(Err(format!("cannot bind {addr}: {e}")));
                    return;
                }
            };
            let _ = bound_tx.send(listener.local_addr().map_err(|e| e.to_string()));
            let app = axum::Router::new().route(
                "/v1/traces",
                post(move |body: axum::body::Bytes| {
                    let store = store.clone();
                    async move {
                        record(&store, &body);
                        "{}"
                    }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    let bound = bound_rx
        .recv()
        .map_err(|_| "the receiver thread ended".to_owned())??;
    Ok((bound, spans))
}

/// The receiver and the global tracing subscriber that exports to it: one per test binary
/// (a process has one global subscriber).
pub fn collector() -> &'static (Spans, SdkTracerProvider) {
    static COLLECTOR: OnceLock<(Spans, SdkTracerProvider)> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let (addr, spans) = start_receiver("127.0.0.1:0").expect("the receiver starts");
        // The production set-up (`main` calls the same function), exporting to the receiver;
        // log lines are silent unless TEST_LOG asks for them. Off any async runtime, as in
        // main: the exporter's HTTP client is a blocking one.
        let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
        vars.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://{addr}"),
        );
        vars.entry("RUST_LOG".into())
            .or_insert_with(|| "info".into());
        let config = scaleout::config::LogConfig::from_source(&vars).expect("log config");
        let show_logs = std::env::var_os("TEST_LOG").is_some();
        let provider = scaleout::telemetry::init_telemetry_logging_to(
            &config,
            "test",
            "serve",
            move || -> Box<dyn std::io::Write> {
                if show_logs {
                    Box::new(std::io::stdout())
                } else {
                    Box::new(std::io::sink())
                }
            },
        )
        .expect("the only global subscriber of this test binary (run it without TEST_LOG)")
        .expect("an exporter, since the endpoint is set");
        (spans, provider)
    })
}

fn record(store: &Spans, body: &[u8]) {
    let doc: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut found = store.lock().expect("not poisoned");
    for resource in doc["resourceSpans"].as_array().into_iter().flatten() {
        let instance = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.instance.id")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |k: &str| span[k].as_str().unwrap_or_default().to_lowercase();
                found.push(Span {
                    trace: text("traceId"),
                    id: text("spanId"),
                    parent: text("parentSpanId"),
                    name: text("name"),
                    instance: instance.clone(),
                });
            }
        }
    }
}

/// Flushes the exporter and returns the spans of `trace` received so far.
pub async fn spans_of(trace: &str) -> Vec<Span> {
    let (spans, provider) = collector();
    let flushing = provider.clone();
    let _ = tokio::task::spawn_blocking(move || flushing.force_flush()).await;
    let all = spans.lock().expect("not poisoned").clone();
    all.into_iter().filter(|s| s.trace == trace).collect()
}

/// Whether `span` descends from the span `ancestor` (within `spans`).
pub fn descends_from(spans: &[Span], span: &Span, ancestor: &str) -> bool {
    let mut parent = span.parent.clone();
    for _ in 0..10 {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.id == parent) {
            Some(next) => parent = next.parent.clone(),
            None => return false,
        }
    }
    false
}

#[tokio::test]
async fn a_request_continues_the_callers_trace_down_to_its_sql() {
    collector();
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let me: Value = api.me().await.json().await.expect("json");
    let id = me["id"].as_str().expect("id").to_owned();
    let trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let trace = trace.as_str();
    let caller_span = "00f067aa0ba902b7";
    let anonymous = Api::new(app.url(""));
    // Anonymous reads go to the replica: wait until it has replayed the signup, so the traced
    // read below finds the profile.
    eventually(
        "the profile on the replica",
        Duration::from_secs(10),
        || async {
            let r = anonymous
                .send(anonymous.request(reqwest::Method::GET, &format!("/users/{id}")))
                .await;
            (r.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    let response = anonymous
        .send(
            anonymous
                .request(reqwest::Method::GET, &format!("/users/{id}"))
                .header("traceparent", format!("00-{trace}-{caller_span}-01")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let (request, sql) = eventually(
        "the trace reaches the receiver",
        Duration::from_secs(20),
        || async move {
            let ours = spans_of(trace).await;
            let request = ours.iter().find(|s| s.name == "request")?.clone();
            // The repository's query span, a descendant of the request span.
            let sql = ours.iter().find(|s| s.name == "find")?.clone();
            descends_from(&ours, &sql, &request.id).then_some((request, sql))
        },
    )
    .await;

    assert_eq!(
        request.parent, caller_span,
        "the request span's parent is the caller's span"
    );
    assert_eq!(sql.trace, trace);
}

#[tokio::test]
async fn an_upload_traces_its_object_storage_calls() {
    collector();
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let part = reqwest::multipart::Part::bytes(b"traced\n".to_vec())
        .file_name("t.txt")
        .mime_str("text/plain")
        .expect("a type");
    let response = api
        .send(
            api.request(reqwest::Method::POST, "/files")
                .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
                .multipart(reqwest::multipart::Form::new().part("file", part)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    eventually(
        "the storage span joins the trace",
        Duration::from_secs(20),
        || {
            let trace = trace.clone();
            async move {
                let spans = spans_of(&trace).await;
                let request = spans.iter().find(|s| s.name == "request")?;
                spans
                    .iter()
                    .any(|s| s.name == "storage" && descends_from(&spans, s, &request.id))
                    .then_some(())
            }
        },
    )
    .await;
}

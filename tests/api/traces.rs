//! Traces: a request continues the caller's W3C trace, and its SQL spans are its descendants,
//! exported over OTLP/HTTP to a receiver this test runs (the same protocol a collector speaks).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use opentelemetry::trace::TracerProvider as _;
use reqwest::StatusCode;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::helpers::{Api, TestUser, eventually, signed_up, spawn_app};

/// Every span the receiver got: (trace id, span id, parent span id, name).
type Spans = Arc<Mutex<Vec<(String, String, String, String)>>>;

async fn start_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut found = store.lock().expect("not poisoned");
                for resource in doc["resourceSpans"].as_array().into_iter().flatten() {
                    for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                        for span in scope["spans"].as_array().into_iter().flatten() {
                            let text =
                                |k: &str| span[k].as_str().unwrap_or_default().to_lowercase();
                            found.push((
                                text("traceId"),
                                text("spanId"),
                                text("parentSpanId"),
                                text("name"),
                            ));
                        }
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

#[tokio::test]
async fn a_request_continues_the_callers_trace_down_to_its_sql() {
    let (endpoint, spans) = start_receiver().await;
    // The exporter's blocking HTTP client is built off the async workers, as main does.
    let provider = tokio::task::spawn_blocking(move || {
        scaleout::telemetry::tracer_provider(&endpoint, "test", "serve")
    })
    .await
    .expect("joins")
    .expect("an exporter");
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("scaleout")))
        .with(tracing_subscriber::EnvFilter::new("info"))
        .try_init()
        .expect("the only global subscriber of this test binary (run it without TEST_LOG)");

    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let me: Value = api.me().await.json().await.expect("json");
    let id = me["id"].as_str().expect("id").to_owned();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let anonymous = Api::new(app.url(""));
    let response = anonymous
        .send(
            anonymous
                .request(reqwest::Method::GET, &format!("/users/{id}"))
                .header("traceparent", format!("00-{trace}-{caller_span}-01")),
        )
        .await;
    assert!(matches!(
        response.status(),
        StatusCode::OK | StatusCode::NOT_FOUND
    ));

    let flushing = provider.clone();
    let (request, sql) = eventually(
        "the trace reaches the receiver",
        Duration::from_secs(20),
        || {
            let (spans, flushing) = (spans.clone(), flushing.clone());
            async move {
                tokio::task::spawn_blocking(move || flushing.force_flush())
                    .await
                    .ok()?
                    .ok()?;
                let spans = spans.lock().expect("not poisoned").clone();
                let ours: Vec<_> = spans.into_iter().filter(|s| s.0 == trace).collect();
                let request = ours.iter().find(|s| s.3 == "request")?.clone();
                // The repository's query span, a descendant of the request span.
                let sql = ours.iter().find(|s| s.3 == "find")?.clone();
                let mut parent = sql.2.clone();
                for _ in 0..5 {
                    if parent == request.1 {
                        return Some((request, sql));
                    }
                    parent = ours.iter().find(|s| s.1 == parent)?.2.clone();
                }
                None
            }
        },
    )
    .await;

    assert_eq!(
        request.2, caller_span,
        "the request span's parent is the caller's span"
    );
    assert_eq!(sql.0, trace);
}

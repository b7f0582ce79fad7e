//! Traces through the real topology: the instances export their spans over OTLP/HTTP to
//! `SCALEOUT_STACK_OTLP_ENDPOINT` (scripts/test sets a loopback port), where this test binary
//! runs a receiver. A caller's `traceparent` crosses nginx, continues in the instance that
//! served the request, and the instance's log lines carry the same trace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::routing::post;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{client, edge_url, env, eventually};
use crate::traces::Span;

/// A span as the receiver got it, with the instance that exported it.
#[derive(Debug, Clone)]
struct Exported {
    /// The resource's `service.instance.id`: `app1`, `app2`, `app3` or the worker.
    instance: String,
    span: Span,
}

type Received = Arc<Mutex<Vec<Exported>>>;

/// The receiver on the topology's endpoint, started once per test binary on a thread of its
/// own, so that it outlives the runtime of the test that started it.
fn receiver() -> &'static Received {
    static RECEIVER: OnceLock<Received> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let endpoint = env("SCALEOUT_STACK_OTLP_ENDPOINT");
        let addr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let received: Received = Arc::default();
        let store = received.clone();
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
                let _ = bound_tx.send(Ok(()));
                let app = axum::Router::new().route(
                    "/v1/traces",
                    post(move |body: axum::body::Bytes| {
                        let store = store.clone();
                        async move {
                            store.lock().expect("not poisoned").extend(parse(&body));
                            "{}"
                        }
                    }),
                );
                let _ = axum::serve(listener, app).await;
            });
        });
        bound_rx
            .recv()
            .expect("the receiver thread reports")
            .unwrap_or_else(|e| panic!("the OTLP receiver: {e}"));
        received
    })
}

/// The spans of an OTLP/HTTP JSON export request, with their resource's instance id.
fn parse(body: &[u8]) -> Vec<Exported> {
    let doc: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut found = Vec::new();
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
                found.push(Exported {
                    instance: instance.clone(),
                    span: Span {
                        trace: text("traceId"),
                        id: text("spanId"),
                        parent: text("parentSpanId"),
                        name: text("name"),
                    },
                });
            }
        }
    }
    found
}

/// A service's log, from its length when the test began: only lines written since count.
struct LogSince {
    path: PathBuf,
    from: u64,
}

impl LogSince {
    fn start(service: &str) -> Self {
        let path = PathBuf::from(env("SCALEOUT_STACK_STATE"))
            .join("logs")
            .join(format!("{service}.log"));
        let from = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self { path, from }
    }

    /// The JSON lines written since [`LogSince::start`].
    fn lines(&self) -> Vec<Value> {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        // A shorter file has been rotated by supervisord: all of it is new.
        let from = usize::try_from(self.from)
            .ok()
            .filter(|&f| f <= bytes.len())
            .unwrap_or(0);
        String::from_utf8_lossy(&bytes[from..])
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// A field of a JSON log line: the event's own, or its span's (`with_current_span`).
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line[name].as_str().or_else(|| line["span"][name].as_str())
}

fn random_hex(len: usize) -> String {
    let hex = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    // The tail of a v4 UUID holds its fixed variant bits, so it is never all zeros (which W3C
    // forbids), at either length.
    hex[32 - len..].to_owned()
}

#[tokio::test]
async fn a_traceparent_sent_through_nginx_continues_in_the_instances_spans_and_log_lines() {
    let received = receiver();
    let logs: HashMap<String, LogSince> = ["app1", "app2", "app3"]
        .into_iter()
        .map(|app| (app.to_owned(), LogSince::start(app)))
        .collect();
    let trace = random_hex(32);
    let caller_span = random_hex(16);

    let response = client()
        .get(format!("{}/api/v1", edge_url()))
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .send()
        .await
        .expect("nginx answers");

    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| response.headers()[name].to_str().expect("ASCII").to_owned();
    let (instance, request_id) = (header("x-instance-id"), header("x-request-id"));
    // Spans leave in batches (every few seconds by default): bound generously.
    let request = eventually(
        "the request span reaches the receiver",
        Duration::from_secs(60),
        || async {
            received
                .lock()
                .expect("not poisoned")
                .iter()
                .find(|e| e.span.trace == trace && e.span.name == "request")
                .cloned()
        },
    )
    .await;
    assert_eq!(
        request.instance, instance,
        "exported by the instance that answered"
    );
    assert_eq!(
        request.span.parent, caller_span,
        "the request span's parent is the caller's span"
    );

    let log = &logs[&instance];
    let line = eventually(
        "the instance logs the request with its trace id",
        Duration::from_secs(30),
        || async {
            log.lines()
                .into_iter()
                .find(|l| field(l, "trace_id") == Some(trace.as_str()))
        },
    )
    .await;
    assert_eq!(field(&line, "request_id"), Some(request_id.as_str()));
    assert_eq!(
        field(&line, "span_id"),
        Some(request.span.id.as_str()),
        "the log line names the exported request span: {line}"
    );
    for (other, log) in logs.iter().filter(|(name, _)| **name != instance) {
        assert!(
            !log.lines()
                .iter()
                .any(|l| field(l, "trace_id") == Some(trace.as_str())),
            "{other} did not serve the request, so its log does not name the trace"
        );
    }
}

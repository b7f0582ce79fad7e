//! Traces through the real topology: the instances export their spans over OTLP/HTTP to
//! `SCALEOUT_STACK_OTLP_ENDPOINT` (scripts/test sets a loopback port), where this test binary
//! runs a receiver. A caller's `traceparent` crosses nginx, continues in the instance that
//! served the request, and the instance's log lines carry the same trace.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{LogMark, client, edge_url, env, eventually};
use crate::traces::{Spans, start_receiver};

/// The receiver on the topology's endpoint, started once per test binary.
fn receiver() -> &'static Spans {
    static RECEIVER: OnceLock<Spans> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let endpoint = env("SCALEOUT_STACK_OTLP_ENDPOINT");
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
        start_receiver(addr)
            .unwrap_or_else(|e| panic!("the OTLP receiver: {e}"))
            .1
    })
}

/// The JSON lines a service has logged since `mark`.
fn json_lines(mark: &LogMark) -> Vec<Value> {
    mark.since()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
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
    let logs: HashMap<String, LogMark> = ["app1", "app2", "app3"]
        .into_iter()
        .map(|app| (app.to_owned(), LogMark::new(app)))
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
                .find(|s| s.trace == trace && s.name == "request")
                .cloned()
        },
    )
    .await;
    assert_eq!(
        request.instance, instance,
        "exported by the instance that answered"
    );
    assert_eq!(
        request.parent, caller_span,
        "the request span's parent is the caller's span"
    );

    let log = &logs[&instance];
    let line = eventually(
        "the instance logs the request with its trace id",
        Duration::from_secs(30),
        || async {
            json_lines(log)
                .into_iter()
                .find(|l| field(l, "trace_id") == Some(trace.as_str()))
        },
    )
    .await;
    assert_eq!(field(&line, "request_id"), Some(request_id.as_str()));
    assert_eq!(
        field(&line, "span_id"),
        Some(request.id.as_str()),
        "the log line names the exported request span: {line}"
    );
    for (other, log) in logs.iter().filter(|(name, _)| **name != instance) {
        assert!(
            !json_lines(log)
                .iter()
                .any(|l| field(l, "trace_id") == Some(trace.as_str())),
            "{other} did not serve the request, so its log does not name the trace"
        );
    }
}

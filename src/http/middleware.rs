//! Per-request middleware: the request span and its one log line, HTTP metrics, and the
//! `Connection: close` that lets a draining instance shed keep-alive clients. (Timeouts and
//! body limits are per router: see `limits`.)

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::app::AppState;
use crate::error::{ErrorCause, Problem};

/// The label for requests that matched no route: one value however many random paths arrive,
/// so a 404 flood cannot blow up the number of metric series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The label for request methods outside the standard set: HTTP lets a client send any token
/// as a method, and each distinct label value would be a new metric series.
pub const OTHER_METHOD: &str = "other";

/// The method as a metric label: the standard methods by name, anything else as `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => OTHER_METHOD,
    }
}

/// Wraps each request in a span carrying its id, instance, method and route template, and
/// logs one line when the response is ready. Also records the HTTP metrics, from the same
/// measurements, so logs and metrics never disagree.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    // Logs keep the method as sent; metrics get the bounded label.
    let method = request.method().as_str().to_owned();
    let method_label = method_label(request.method());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        instance = %state.instance_id(),
        method = %method,
        route = %route,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    continue_trace(&span, request.headers());

    let in_flight = InFlight::start();
    let mut response = problem_bodies(next.run(request).instrument(span.clone()).await);
    drop(in_flight);

    let latency = start.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(
        "http_requests_total",
        "route" => route.clone(), "method" => method_label, "status" => status.to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "route" => route.clone(), "method" => method_label,
    )
    .record(latency.as_secs_f64());

    if state.lifecycle.is_draining() {
        // The load balancer keeps idle upstream connections open; closing them now moves its
        // next requests to other instances before this one stops accepting.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    let cause = response.extensions().get::<ErrorCause>().cloned();
    span.in_scope(|| {
        if let Some(ErrorCause(cause)) = &cause {
            // The one place a 5xx's cause is logged, with the request's fields.
            tracing::error!(cause = %cause, status, "request failed");
        }
        tracing::info!(
            request_id = %request_id,
            instance = %state.instance_id(),
            method = %method,
            route = %route,
            status,
            latency_ms = latency.as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    response
}

/// Makes the request span a child of the caller's W3C `traceparent` (nginx passes it on),
/// and records the trace and span ids so every log line of the request carries them.
fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    crate::telemetry::continue_trace(span, &Headers(headers));
}

/// Request headers as an OpenTelemetry propagation carrier.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Gives error responses made below the handlers (the router's 405, the body limit's 413,
/// the session layer's 500) the problem+json body every other error has.
pub fn problem_bodies(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Only bodies that say nothing structured: none, or plain text. JSON answers such as
    // /health's 503 and problem documents are already what clients expect.
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !bare {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut rewritten = Problem::for_status(status).into_response();
    // Keep headers such as Allow (405) and Retry-After, but not the old body's type/length.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

/// Counts a request in flight until dropped: also when the client disconnects and the
/// request's future is dropped mid-way, so the gauge cannot drift upwards.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start() -> Self {
        let gauge = metrics::gauge!("http_requests_in_flight");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Turns a panic in a handler into a 500 problem+json; the panic itself is logged.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %message, "handler panicked");
    Problem::internal().into_response()
}

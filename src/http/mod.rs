//! The public HTTP API: routes, and the middleware every request passes through.
//!
//! Order matters and reads outside-in: the request id is settled first so everything after
//! can log it; then the span, log line and metrics; then panics, the timeout and the body
//! limit, so their responses are logged and counted like any other.

pub mod health;
pub mod middleware;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::AppState;
use crate::error::Problem;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const INSTANCE_ID: HeaderName = HeaderName::from_static("x-instance-id");

/// The service root: which service, version and instance answered.
#[derive(Debug, Serialize)]
struct ServiceInfo<'a> {
    service: &'static str,
    version: &'static str,
    instance: &'a str,
}

async fn service_info(State(state): State<AppState>) -> Response {
    Json(ServiceInfo {
        service: "scaleout",
        version: env!("CARGO_PKG_VERSION"),
        instance: state.instance_id(),
    })
    .into_response()
}

async fn not_found() -> Problem {
    Problem::not_found()
}

pub fn router(state: AppState) -> Router {
    let instance = axum::http::HeaderValue::from_str(state.instance_id())
        .expect("instance ids are validated as header-safe at start");
    let body_limit = state.config.http.body_limit_bytes;

    let middleware = ServiceBuilder::new()
        // Keeps the id nginx made at the edge; makes one for direct calls.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetResponseHeaderLayer::overriding(INSTANCE_ID, instance))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(DefaultBodyLimit::max(body_limit));

    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/api/v1", get(service_info))
        .fallback(not_found)
        .layer(middleware)
        .with_state(state)
}

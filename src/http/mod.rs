//! The public HTTP API: routes, the OpenAPI document built from them, and the middleware
//! every request passes through.
//!
//! Middleware reads outside-in: the request id is settled first so everything after can log
//! it; then the span, log line and metrics (which also give bare error statuses a problem+json
//! body); then panics; then a ceiling on every request's time and body (the largest any route
//! allows), so a route added without limits of its own is still bounded. Each router then
//! carries its own, tighter limits (`limits`), inside cross-site protection and sessions for
//! the API routes. Every response is logged and counted like any other.

pub mod auth;
pub mod cache;
pub mod client_ip;
pub mod csrf;
pub mod health;
pub mod idempotency;
pub mod json;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod page;
pub mod path;
pub mod query_count;
pub mod rate_limit;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Serialize;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi as _;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::Problem;
use limits::Limits;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const INSTANCE_ID: HeaderName = HeaderName::from_static("x-instance-id");

/// The service root: which service, version and instance answered.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"service": "scaleout", "version": "0.1.0", "instance": "app1"}))]
pub struct ServiceInfo {
    service: String,
    version: String,
    instance: String,
}

/// Which service, version and instance answered.
#[utoipa::path(
    get, path = "", tag = "operations",
    responses((status = 200, description = "Service information", body = ServiceInfo))
)]
async fn service_info(State(state): State<AppState>) -> Response {
    Json(ServiceInfo {
        service: "scaleout".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        instance: state.instance_id().into(),
    })
    .into_response()
}

async fn not_found() -> Problem {
    Problem::not_found()
}

/// The documented routes, and the document. Each router carries its own request limits:
/// the defaults here, the upload routes' own where they are defined (`routes::files::uploads`).
pub fn api(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let config = &state.config;
    let defaults =
        axum::middleware::from_fn_with_state(Limits::from_http(&config.http), limits::enforce);
    // Everything behind a session: accounts, files and jobs.
    let accounts = routes::accounts::router()
        .merge(routes::recovery::router())
        .merge(routes::files::router(&config.files))
        .merge(routes::jobs::router())
        .merge(routes::workspace::router())
        .layer(defaults.clone())
        .merge(routes::files::uploads(&config.files))
        // Inside the session: a key belongs to the caller.
        .layer(axum::middleware::from_fn_with_state(
            idempotency::Idempotency {
                state: state.clone(),
                running_for: Limits::ceiling(config).timeout + Duration::from_secs(30),
            },
            idempotency::guard,
        ))
        // Rate limits: the one place the API's general limit is applied (routes add their
        // own tighter policies where they are defined). Inside the session, so a signed-in
        // caller counts by account; outside everything that does work for the request, so a
        // refused request costs the cross-site check (no I/O), reading its session (a Redis
        // read, when it carries a cookie) and the limit's own Redis round trip: no database,
        // no handler. Layers that shape
        // answers (caching, compression) belong outside this one, so they see the limit's
        // headers like any others.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .layer(state.sessions.layer(&config.auth))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::protect,
        ));
    let operations = OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(openapi::docs_asset))
        .nest(
            "/api/v1",
            OpenApiRouter::new()
                .routes(routes!(service_info))
                // Anonymous and outside the session layer: it never sets a cookie, so shared
                // caches may keep it.
                .merge(routes::plans::router())
                // Limited like any anonymous request, by address (no session to read here).
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    rate_limit::by_address,
                )),
        )
        .layer(defaults);
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(operations)
        .nest("/api/v1", accounts)
        .split_for_parts();
    cache::document(&mut doc);
    rate_limit::document(&mut doc);
    (router, doc)
}

pub fn router(state: AppState) -> Router {
    let instance = axum::http::HeaderValue::from_str(state.instance_id())
        .expect("instance ids are validated as header-safe at start");
    let (api, doc) = api(&state);

    let middleware = ServiceBuilder::new()
        // Keeps the id nginx made at the edge; makes one for direct calls.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetResponseHeaderLayer::overriding(INSTANCE_ID, instance))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.config.http.query_count_header,
            query_count::count,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            Limits::ceiling(&state.config),
            limits::enforce,
        ))
        // Tags are computed over the identity body (`conditional`, inside compression), then
        // marked with the coding of a compressed variant (`tag_encoding`, outside it).
        .layer(axum::middleware::from_fn(cache::tag_encoding))
        .layer(cache::compression(state.config.http.compression_min_bytes))
        .layer(axum::middleware::from_fn(cache::conditional))
        // The ceiling and every router's own limits bound the bodies; extractors need no
        // limit of their own.
        .layer(DefaultBodyLimit::disable());

    api.fallback(not_found)
        .layer(Extension(Arc::new(doc)))
        .layer(middleware)
        .with_state(state)
}

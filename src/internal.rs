//! The internal listener of every process: Prometheus metrics and the process' own health.
//! It binds its own port, which nginx never proxies, so metrics are not public.

use std::future::Future;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::telemetry::metrics_handle;

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// `/metrics` plus whatever health routes the process type adds.
pub fn router(extra: Router) -> Router {
    Router::new().route("/metrics", get(metrics)).merge(extra)
}

/// Serves the internal router until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

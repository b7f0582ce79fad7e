//! `scaleout worker`: the background-job process type, scaled independently of `serve`.
//!
//! It reports liveness and readiness on its internal listener (never proxied), so an
//! orchestrator can supervise it exactly like an API instance.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::WorkerConfig;
use crate::db::Db;
use crate::http::health;
use crate::internal;
use crate::redis_client::RedisClient;
use crate::shutdown::{Lifecycle, shutdown_signal};
use crate::telemetry;

#[derive(Debug, Clone)]
struct WorkerState {
    config: Arc<WorkerConfig>,
    db: Db,
    redis: RedisClient,
    lifecycle: Lifecycle,
}

async fn worker_health(State(state): State<WorkerState>) -> Response {
    health::health_response(&state.lifecycle, &state.config.instance.id)
}

/// Ready when the worker can reach what its jobs need.
async fn worker_ready(State(state): State<WorkerState>) -> Response {
    let timeout = state.config.ready.check_timeout;
    let primary = state.db.write().clone();
    let (primary, redis) = tokio::join!(
        health::check("primary", timeout, async move {
            sqlx::query_scalar::<_, i32>("select 1")
                .fetch_one(&primary)
                .await
                .map(|_| ())
        }),
        health::check("redis", timeout, state.redis.ping()),
    );
    health::readiness_response(
        &state.lifecycle,
        &state.config.instance.id,
        [primary, redis],
        &[],
    )
}

pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.internal.addr)
        .await
        .with_context(|| {
            format!(
                "cannot bind the metrics listener on {}",
                config.internal.addr
            )
        })?;
    telemetry::metrics_handle();
    telemetry::record_build_info(&config.instance.id, "worker");
    let redis = RedisClient::new(&config.redis)?;
    let state = WorkerState {
        db: Db::connect_lazy(&config.database, &config.instance.id, Some(redis.clone()))?,
        redis,
        lifecycle: Lifecycle::default(),
        config: Arc::new(config),
    };
    let router = internal::router(
        Router::new()
            .route("/health", get(worker_health))
            .route("/ready", get(worker_ready))
            .with_state(state.clone()),
    );
    tracing::info!(
        addr = %listener.local_addr()?,
        instance = %state.config.instance.id,
        "worker started"
    );
    let lifecycle = state.lifecycle.clone();
    internal::serve(listener, router, async move {
        shutdown_signal().await;
        lifecycle.start_draining();
    })
    .await?;
    state.db.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

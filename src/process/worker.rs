//! `scaleout worker`: the background-job process type, scaled independently of `serve`.
//!
//! It reports liveness and readiness on its internal listener (never proxied), so an
//! orchestrator can supervise it exactly like an API instance.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use super::internal::Internal;
use crate::accounts::session::Sessions;
use crate::config::WorkerConfig;
use crate::db::Db;
use crate::email::Mailer;
use crate::http::health;
use crate::jobs::{self, worker::JobState};
use crate::redis_client::RedisClient;
use crate::shutdown::{Lifecycle, shutdown_signal};
use crate::storage::Storage;
use crate::workspace::stats::StatsCache;

/// The subcommand, and the `process` label of this process' logs and metrics.
pub const NAME: &str = "worker";

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
    let (primary, redis) = tokio::join!(
        health::check(
            "primary",
            timeout,
            crate::db::answers(state.db.primary_pool())
        ),
        health::check("redis", timeout, state.redis.ping()),
    );
    health::readiness_response(
        &state.lifecycle,
        &state.config.instance.id,
        [primary, redis],
        &[],
    )
}

/// Runs jobs until SIGTERM or Ctrl-C: the `scaleout worker` subcommand.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    run_until(config, shutdown_signal()).await
}

/// Runs the worker process until `stop` resolves (SIGTERM in production, a test's signal in
/// tests), then drains: the health check turns 503, running jobs finish within the grace
/// period, and the internal listener closes last so the final metrics can still be scraped.
pub async fn run_until(
    config: WorkerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let internal = Internal::bind(&config.internal, &config.instance.id, NAME).await?;
    jobs::worker::describe_metrics();
    let redis = RedisClient::new(&config.redis)?;
    let db = Db::connect_lazy(&config.database, &config.instance.id, Some(redis.clone()))?;
    let config = Arc::new(config);
    let state = WorkerState {
        db: db.clone(),
        redis: redis.clone(),
        lifecycle: Lifecycle::default(),
        config: config.clone(),
    };
    let jobs = JobState {
        config: config.clone(),
        db: db.clone(),
        storage: Storage::new(&config.storage),
        sessions: Sessions::new(&config.redis, redis.clone())?,
        mailer: Mailer::new(&config.smtp)?,
        // The cache's own client: the invalidations must reach the server the API instances
        // read the entries from, which may not be the sessions' (CACHE_REDIS_URL).
        stats: StatsCache::new(
            db.clone(),
            RedisClient::new(&config.cache.redis)?,
            config.cache.clone(),
        ),
    };
    let health = Router::new()
        .route("/health", get(worker_health))
        .route("/ready", get(worker_ready))
        .with_state(state.clone());
    // Unique per process, also across restarts: apalis keys heartbeats and job locks by it.
    let name = format!("{}-{}", config.instance.id, ulid::Ulid::generate());
    tracing::info!(
        addr = %internal.addr(),
        instance = %config.instance.id,
        worker = %name,
        "worker started"
    );

    let (stopping, _) = tokio::sync::watch::channel(false);
    let stopped = {
        let stopping = stopping.clone();
        move || {
            let mut rx = stopping.subscribe();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
    let internal = internal.spawn(health, async move {
        let _ = done_rx.await;
    });
    let pool = db.primary_pool().clone();
    let scheduler = tokio::spawn(jobs::schedule::run(
        pool.clone(),
        config.jobs.purge_interval,
        config.jobs.deletion_cooloff,
        stopped(),
    ));
    let sampler = tokio::spawn(jobs::worker::sample_queue(
        pool,
        Duration::from_secs(5),
        stopped(),
    ));
    let lifecycle = state.lifecycle.clone();
    let signalled = stopping.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("stopping: no new jobs; running ones may finish");
        lifecycle.start_draining();
        let _ = signalled.send(true);
    });

    let result = jobs::worker::run_until(jobs, name, stopped()).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "the job runner failed; the process stops");
    }
    // However the runner ended, the rest of the process follows: a worker that runs no jobs
    // must not keep answering its health check.
    state.lifecycle.start_draining();
    let _ = stopping.send(true);
    let _ = tokio::join!(scheduler, sampler);
    let _ = done.send(());
    internal.await??;
    db.close().await;
    tracing::info!("worker stopped");
    result
}

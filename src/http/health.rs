//! `/health` (liveness) and `/ready` (readiness), the two questions a load balancer asks.
//!
//! Liveness does no I/O: a database outage must not make an orchestrator restart healthy
//! processes. Readiness checks every dependency, concurrently and each within a short timeout,
//! so the answer is fast even when something hangs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppState;
use crate::shutdown::Lifecycle;

/// The body of `/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ok", "instance": "app1"}))]
pub struct Health<'a> {
    /// `ok` or `draining`.
    pub status: &'static str,
    pub instance: &'a str,
}

/// 200 while the process runs, 503 from the moment it starts draining.
pub fn health_response(lifecycle: &Lifecycle, instance: &str) -> Response {
    if lifecycle.is_draining() {
        let body = Health {
            status: "draining",
            instance,
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        let body = Health {
            status: "ok",
            instance,
        };
        (StatusCode::OK, Json(body)).into_response()
    }
}

/// Liveness: no I/O. 503 once the instance is draining.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The process is alive", body = Health),
        (status = 503, description = "The instance is draining before shutdown", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    health_response(&state.lifecycle, state.instance_id())
}

/// One dependency's check in `/ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: f64,
    /// `timeout` or `error`, when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// The body of `/ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ready", "instance": "app1", "down": [],
    "checks": {"primary": {"status": "up", "latency_ms": 0.8}}}))]
pub struct Readiness<'a> {
    /// `ready`, `degraded` (only an optional dependency is down), `unavailable` or `draining`.
    pub status: &'static str,
    pub instance: &'a str,
    /// The dependencies that failed their check, so a 503 names its cause at a glance.
    pub down: Vec<&'static str>,
    pub checks: BTreeMap<&'static str, Check>,
}

/// Runs one dependency check within `timeout`; a failure is logged here with its cause and
/// reported in the body only by kind, so `/ready` never leaks addresses or messages.
pub async fn check<F, E>(name: &'static str, timeout: Duration, fut: F) -> (&'static str, Check)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, fut).await;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let check = match outcome {
        Ok(Ok(())) => Check {
            status: "up",
            latency_ms,
            error: None,
        },
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            Check {
                status: "down",
                latency_ms,
                error: Some("error"),
            }
        }
        Err(_) => {
            tracing::warn!(dependency = name, ?timeout, "readiness check timed out");
            Check {
                status: "down",
                latency_ms,
                error: Some("timeout"),
            }
        }
    };
    (name, check)
}

/// Shapes the readiness answer from the checks that ran. A failed `optional` dependency is
/// reported (`degraded`, and named in `down`) without taking the instance out of rotation.
pub fn readiness_response(
    lifecycle: &Lifecycle,
    instance: &str,
    checks: impl IntoIterator<Item = (&'static str, Check)>,
    optional: &[&str],
) -> Response {
    let checks: BTreeMap<_, _> = checks.into_iter().collect();
    let down: Vec<_> = checks
        .iter()
        .filter(|(_, c)| c.status != "up")
        .map(|(name, _)| *name)
        .collect();
    let (status, code) = if lifecycle.is_draining() {
        ("draining", StatusCode::SERVICE_UNAVAILABLE)
    } else if down.is_empty() {
        ("ready", StatusCode::OK)
    } else if down.iter().all(|d| optional.contains(d)) {
        ("degraded", StatusCode::OK)
    } else {
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    };
    let body = Readiness {
        status,
        instance,
        down,
        checks,
    };
    (code, Json(body)).into_response()
}

/// Readiness: every dependency, checked concurrently within a short timeout.
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Every required dependency answered. `degraded` names an optional dependency that is down: the replica (reads go to the primary meanwhile) or object storage (file endpoints answer 503 meanwhile)", body = Readiness),
        (status = 503, description = "A required dependency is down (named in `down`), or the instance is draining", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let timeout = state.config.ready.check_timeout;
    let (primary, replica, redis, storage) = tokio::join!(
        check(
            "primary",
            timeout,
            crate::db::answers(state.db.primary_pool())
        ),
        check(
            "replica",
            timeout,
            tracing::Instrument::instrument(
                state.db.replicas_answer(),
                crate::db::timing::role_span("replica"),
            ),
        ),
        check("redis", timeout, state.redis.ping()),
        check("storage", timeout, state.storage.check()),
    );
    // Reads fall back to the primary, and only file endpoints need object storage (they answer
    // 503 on their own): either outage degrades the instance but must not take it (and, with
    // every instance seeing the same dependency, the whole API) out of rotation.
    readiness_response(
        &state.lifecycle,
        state.instance_id(),
        [primary, replica, redis, storage],
        &["replica", "storage"],
    )
}

//! `GET /api/v1/jobs/{id}`: a job's progress, for the user it acts for.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::responses::{NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::http::path::PathId;
use crate::jobs::status::{self, JobView};

pub const TAG: &str = "jobs";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_job))
}

/// A job's status, attempts and last error.
#[utoipa::path(
    get, path = "/jobs/{id}", tag = TAG,
    security(("session" = [])),
    params(("id" = String, Path, description = "The job's id, as returned when it was enqueued")),
    responses(
        (status = 200, description = "The job", body = JobView),
        NoSession,
        (status = 404, description = "No such job of the caller's", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn get_job(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId<ulid::Ulid>,
) -> Result<axum::Json<JobView>, ApiError> {
    let id = id.to_string();
    // The worker changes a job, not the caller: the primary has the latest word.
    let job = status::find(state.db.read_primary(), &id, user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(job))
}

//! The owner's files: the listing, metadata, downloads by redirect, and deletion.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{FileMeta, TAG, find_owned, redirect_to};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::responses::{CrossSite, NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::files::repo;
use crate::http::path::PathId;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<Uuid>)]
    before: Option<String>,
}

/// A page of files, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilePage {
    pub items: Vec<FileMeta>,
    /// Pass as `before` for the next page; null on the last page.
    pub next: Option<Uuid>,
}

/// The caller's files, newest first, keyset-paginated.
#[utoipa::path(
    get, path = "/files", tag = TAG,
    security(("session" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of the caller's files", body = FilePage),
        (status = 400, description = "Unreadable query parameters", body = Problem, content_type = "application/problem+json"),
        NoSession,
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn list_files(
    State(state): State<AppState>,
    user: AuthUser,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<FilePage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest {
        kind: "malformed-query",
        detail: e.body_text(),
    })?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let before = match params.before.as_deref() {
        None => None,
        Some(cursor) => Some(
            Uuid::parse_str(cursor)
                .map_err(|_| ApiError::invalid("before", "is not a cursor from a previous page"))?,
        ),
    };
    // One more than asked: whether it exists says whether there is a next page.
    let mut rows = state
        .db
        .read(&user.caller(), |db| async move {
            repo::list_owned(&db, user.id, before, limit + 1).await
        })
        .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|f| f.id)
    } else {
        None
    };
    Ok(axum::Json(FilePage {
        items: rows.into_iter().map(FileMeta::from).collect(),
        next,
    }))
}

/// A file's metadata.
#[utoipa::path(
    get, path = "/files/{id}", tag = TAG,
    security(("session" = [])),
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file's metadata", body = FileMeta),
        NoSession,
        (status = 404, description = "No such file of the caller's", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn get_file(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId<Uuid>,
) -> Result<axum::Json<FileMeta>, ApiError> {
    Ok(axum::Json(find_owned(&state, user, id).await?.into()))
}

/// Download: a redirect to a short-lived presigned URL, so the bytes never pass through an
/// instance.
#[utoipa::path(
    get, path = "/files/{id}/content", tag = TAG,
    security(("session" = [])),
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 302, description = "Redirect to the content (valid for DOWNLOAD_URL_TTL_SECS)",
            headers(("Location" = String, description = "A presigned GET URL"))),
        NoSession,
        (status = 404, description = "No such file of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A direct upload not completed yet", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let file = find_owned(&state, user, id).await?;
    if file.status != "available" {
        return Err(ApiError::Conflict(
            "the upload has not been completed".into(),
        ));
    }
    let disposition = content_disposition(file.name.as_deref());
    let url = state
        .storage
        .presign_get(
            &file.object_key,
            &file.content_type,
            &disposition,
            state.config.files.download_url_ttl,
        )
        .await?;
    Ok(redirect_to(url))
}

/// `attachment`, with the display name when it is plain enough for a header.
pub(super) fn content_disposition(name: Option<&str>) -> String {
    match name {
        Some(n) if n.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !n.contains('"') => {
            format!("attachment; filename=\"{n}\"")
        }
        _ => "attachment".into(),
    }
}

/// Delete a file and its object.
#[utoipa::path(
    delete, path = "/files/{id}", tag = TAG,
    security(("session" = [])),
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 204, description = "Deleted"),
        NoSession,
        CrossSite,
        (status = 404, description = "No such file of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; nothing was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn delete_file(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    let file = find_owned(&state, user, id).await?;
    // Object first: if storage is down the row stays and the client can retry; the reverse
    // order would leave an object no row points to.
    state.storage.delete_object(&file.object_key).await?;
    let mut write = state.db.begin(user.writer()).await?;
    repo::delete(&mut write, file.id).await?;
    write.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The owner's files: the listing, metadata, downloads by redirect, and deletion.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use uuid::Uuid;

use super::{FileMeta, TAG, redirect_to};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::db::Write;
use crate::error::responses::{NoSession, RoleTooLow, Unavailable};
use crate::error::{ApiError, Problem};
use crate::files::repo;
use crate::http::page::{self, Page};
use crate::http::path::PathId;
use crate::workspace::{Role, members};

crate::page_of!(FilePage, FileMeta, "A page of files, newest first.");

/// `?limit=&cursor=` (see `http::page`), and `org_id` for an organization's files.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FilesQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[param(pattern = "^[0-9a-f]{48}$")]
    cursor: Option<String>,
    /// The organization whose files to list (the caller must be a member); the caller's own
    /// files when absent.
    #[param(value_type = Option<Uuid>)]
    org_id: Option<String>,
}

/// `?org_id=`: the organization a new file belongs to.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrgQuery {
    /// The organization the file belongs to: every member reads it, admins delete it.
    #[param(value_type = Option<Uuid>)]
    org_id: Option<String>,
}

fn parse_org(org: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    org.map(|o| {
        o.parse()
            .map_err(|_| ApiError::invalid("org_id", "is not an organization id"))
    })
    .transpose()
}

fn forbidden(needed: Role) -> ApiError {
    ApiError::Forbidden {
        kind: "insufficient-role",
        detail: format!("this needs the role {} or higher", needed.as_str()),
    }
}

/// The organization an upload goes to, after checking the caller may add files to it
/// (member or above; a non-member gets the 404 of an unknown organization).
pub(super) async fn org_for_upload(
    state: &AppState,
    user: AuthUser,
    query: Result<Query<OrgQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Option<Uuid>, ApiError> {
    let Query(query) = query.map_err(|e| page::query_rejection(&e))?;
    let Some(org) = parse_org(query.org_id.as_deref())? else {
        return Ok(None);
    };
    let role = state
        .db
        .read(&user.caller(), |db| async move {
            members::role_of(&db, org, user.id).await
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    if !role.at_least(Role::Member) {
        return Err(forbidden(Role::Member));
    }
    Ok(Some(org))
}

/// Puts the new file `id` in `org`, checking the caller's role again inside the write (with
/// the membership locked).
pub(super) async fn attach_to_org(
    write: &mut Write,
    user: AuthUser,
    id: Uuid,
    org: Uuid,
) -> Result<(), ApiError> {
    match members::role_of_locked(write, org, user.id).await? {
        None => Err(ApiError::NotFound),
        Some(role) if !role.at_least(Role::Member) => Err(forbidden(Role::Member)),
        Some(_) => Ok(repo::set_org(write, id, org).await?),
    }
}

/// File `id` if the caller may see it: their own, or one of an organization they belong to
/// (with their role there). Anyone else gets the 404 of a missing file.
async fn find_visible(
    state: &AppState,
    user: AuthUser,
    id: Uuid,
) -> Result<(repo::FileRow, Option<Role>), ApiError> {
    state
        .db
        .read(&user.caller(), |db| async move {
            let Some(row) = repo::find_upload(&db, id).await? else {
                return Ok(None);
            };
            let role = match row.org_id {
                Some(org) => members::role_of(&db, org, user.id).await?,
                None => None,
            };
            // An organization's file is the organization's: whoever uploaded it loses it with
            // their membership.
            let visible = match row.org_id {
                Some(_) => role.is_some(),
                None => row.file.owner_id == user.id,
            };
            Ok(visible.then_some((row.file, role)))
        })
        .await?
        .ok_or(ApiError::NotFound)
}

/// The caller's files, newest first, keyset-paginated (see `http::page`).
#[utoipa::path(
    get, path = "/files", tag = TAG,
    security(("session" = [])),
    params(FilesQuery),
    responses(
        (status = 200, description = "A page of the caller's files, or of the organization's", body = FilePage),
        NoSession,
        (status = 404, description = "No such organization of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit, cursor or organization id", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn list_files(
    State(state): State<AppState>,
    user: AuthUser,
    params: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<FilePage>, ApiError> {
    let Query(params) = params.map_err(|e| page::query_rejection(&e))?;
    let page = Page::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let org = parse_org(params.org_id.as_deref())?;
    let rows = state
        .db
        .read(&user.caller(), |db| async move {
            match org {
                None => repo::list_owned(&db, user.id, page.after, page.fetch())
                    .await
                    .map(Some),
                Some(org) => {
                    if members::role_of(&db, org, user.id).await?.is_none() {
                        return Ok(None);
                    }
                    repo::list_of_org(&db, org, page.after, page.fetch())
                        .await
                        .map(Some)
                }
            }
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    let (rows, next) = page.finish(rows, |f| f.id);
    Ok(axum::Json(FilePage::new(
        rows.into_iter().map(FileMeta::from).collect(),
        next,
    )))
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
    Ok(axum::Json(find_visible(&state, user, id).await?.0.into()))
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
    let (file, _) = find_visible(&state, user, id).await?;
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
        RoleTooLow,
        (status = 404, description = "No such file of the caller's or of their organizations", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; nothing was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn delete_file(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    // Its owner deletes a file; so do an organization's admins, for the organization's files.
    let (file, role) = find_visible(&state, user, id).await?;
    if file.owner_id != user.id && !role.is_some_and(|r| r.at_least(Role::Admin)) {
        return Err(forbidden(Role::Admin));
    }
    // Object first: if storage is down the row stays and the client can retry; the reverse
    // order would leave an object no row points to.
    state.storage.delete_object(&file.object_key).await?;
    let mut write = state.db.begin(user.writer()).await?;
    repo::delete(&mut write, file.id).await?;
    write.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

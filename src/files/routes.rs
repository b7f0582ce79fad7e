//! The files endpoints under `/api/v1`: streamed uploads, direct-to-storage uploads with a
//! presigned URL, metadata, downloads by redirect, deletion, the owner's listing, and avatars.
//!
//! Only the owner sees a file; anyone else gets the 404 a missing file gets.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::upload::{self, Rules};
use super::{object_key, repo};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::config::FilesConfig;
use crate::error::responses::{CrossSite, JsonBody, NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::http::json::{self, AppJson, Check, Validate};
use crate::http::middleware::MULTIPART_OVERHEAD;

pub const TAG: &str = "files";

/// Routes whose request bodies are files: the request body limit and timeout of uploads
/// apply to these (see `http::middleware::limits`).
pub const UPLOAD_ROUTES: &[(&str, &str)] =
    &[("POST", "/api/v1/files"), ("PUT", "/api/v1/me/avatar")];

/// The routes, documented with this deployment's upload limits.
pub fn router(files: &FilesConfig) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(upload_file, list_files))
        .routes(routes!(create_upload))
        .routes(routes!(complete_upload))
        .routes(routes!(get_file, delete_file))
        .routes(routes!(download))
        .routes(routes!(upload_avatar))
        .routes(routes!(avatar_image));
    document_upload_limits(router.get_openapi_mut(), files);
    router
}

/// States `UPLOAD_MAX_BYTES` and `UPLOAD_ALLOWED_TYPES` in the schema of a direct upload, so
/// that a client (or a fuzzer) can tell from the document alone which requests are accepted.
/// They are configuration, which the annotations cannot know.
fn document_upload_limits(doc: &mut utoipa::openapi::OpenApi, files: &FilesConfig) {
    use utoipa::openapi::{RefOr, Schema};
    let schema = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("CreateUploadRequest"));
    let Some(RefOr::T(Schema::Object(request))) = schema else {
        unreachable!("the document describes CreateUploadRequest as an object");
    };
    if let Some(RefOr::T(Schema::Object(size))) = request.properties.get_mut("size") {
        let max = usize::try_from(files.max_bytes).unwrap_or(usize::MAX);
        size.maximum = Some(utoipa::Number::UInt(max));
    }
    if let Some(RefOr::T(Schema::Object(content_type))) = request.properties.get_mut("content_type")
    {
        content_type.enum_values = Some(
            files
                .allowed_types
                .iter()
                .map(|t| t.as_str().into())
                .collect(),
        );
    }
}

/// A file's metadata.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01936f0e-8a4b-7c3d-9e2f-0a1b2c3d4e5f",
    "name": "report.pdf",
    "size": 482113,
    "content_type": "application/pdf",
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "status": "available",
    "upload_expires_at": null,
    "created_at": "2026-11-22T08:00:00Z",
    "updated_at": "2026-11-22T08:00:00Z"
}))]
pub struct FileMeta {
    pub id: Uuid,
    /// The name the client gave, for display; never part of the storage key.
    pub name: Option<String>,
    pub size: i64,
    /// The type recognised from the file's leading bytes.
    pub content_type: String,
    /// Hex SHA-256 of the content; null for direct uploads, which bypass the instances.
    pub sha256: Option<String>,
    /// `pending` until a direct upload is completed, then `available`.
    #[schema(example = "available")]
    pub status: String,
    /// Until when a pending direct upload may be completed.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub upload_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<repo::FileRow> for FileMeta {
    fn from(f: repo::FileRow) -> Self {
        Self {
            id: f.id,
            name: f.name,
            size: f.size_bytes,
            content_type: f.content_type,
            sha256: f.sha256,
            status: f.status,
            upload_expires_at: f.upload_expires_at,
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

/// The multipart body of an upload: the file in the part named `file`, and no other part.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "documents the multipart body; the handler streams it instead"
)]
pub struct UploadForm {
    /// Not empty.
    #[schema(value_type = String, format = Binary, min_length = 1)]
    file: Vec<u8>,
}

/// A multipart request body, and the request's declared length (an upper bound of the file's).
pub struct UploadBody {
    multipart: Multipart,
    length: Option<u64>,
}

impl<S: Send + Sync> FromRequest<S> for UploadBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|_| ApiError::UnsupportedFileType("expected multipart/form-data".into()))?;
        Ok(Self { multipart, length })
    }
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl UploadBody {
    /// Streams the file to `key`, refusing a declared length over the limit before reading.
    async fn store(
        self,
        state: &AppState,
        key: &str,
        max_bytes: u64,
        allowed_types: &[String],
    ) -> Result<upload::Stored, ApiError> {
        if self
            .length
            .is_some_and(|n| n > max_bytes + MULTIPART_OVERHEAD)
        {
            return Err(ApiError::PayloadTooLarge);
        }
        let rules = Rules {
            max_bytes,
            part_bytes: state.config.files.part_bytes,
            allowed_types,
        };
        upload::receive(&state.storage, self.multipart, key, rules, self.length).await
    }
}

/// Upload a file through the API; it is streamed to object storage as it arrives.
#[utoipa::path(
    post, path = "/files", tag = TAG,
    security(("session" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored; the file's metadata", body = FileMeta),
        (status = 400, description = "Broken multipart body", body = Problem, content_type = "application/problem+json"),
        NoSession,
        CrossSite,
        (status = 413, description = "Larger than UPLOAD_MAX_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart, or the content is not an allowed type (or not the declared one)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No part named file, or an empty file", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Object storage or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn upload_file(
    State(state): State<AppState>,
    user: AuthUser,
    body: UploadBody,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let key = object_key::file(user.id, id);
    let files = &state.config.files;
    let stored = body
        .store(&state, &key, files.max_bytes, &files.allowed_types)
        .await?;
    let new = stored.as_new_file(id, user.id, "upload", &key);
    let recorded = async {
        let mut write = state.db.begin(user.writer()).await?;
        let file = repo::insert(&mut *write, &new).await?;
        write.commit().await?;
        Ok::<_, sqlx::Error>(file)
    };
    let file = match recorded.await {
        Ok(Some(file)) => file,
        // The account is being deleted: the object must not outlive it.
        Ok(None) => {
            discard_object(&state, &key).await;
            return Err(ApiError::Unauthenticated);
        }
        Err(e) => {
            // Unrecorded, the object would be an orphan nobody can reach.
            discard_object(&state, &key).await;
            return Err(e.into());
        }
    };
    Ok((StatusCode::CREATED, axum::Json(FileMeta::from(file))).into_response())
}

/// Deletes an object nothing refers to. Best effort: a failure is logged, and the object stays
/// until its owner's account is deleted (which removes everything under the owner's prefixes).
async fn discard_object(state: &AppState, key: &str) {
    if let Err(e) = state.storage.delete_object(key).await {
        tracing::warn!(%key, error = %e, "could not delete an unrecorded object");
    }
}

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
async fn list_files(
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "holiday.jpg", "content_type": "image/jpeg", "size": 2483017}))]
pub struct CreateUploadRequest {
    /// A display name, trimmed; never part of the storage key. Not blank, no control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: Option<String>,
    /// One of the allowed types (`UPLOAD_ALLOWED_TYPES`); the content is checked against it
    /// on completion.
    pub content_type: String,
    /// The exact length in bytes the client will PUT, at most `UPLOAD_MAX_BYTES`.
    #[serde(deserialize_with = "json::integer")]
    #[schema(minimum = 1)]
    pub size: i64,
}

impl Validate<AppState> for CreateUploadRequest {
    fn validate(&mut self, state: &AppState, check: &mut Check) {
        let files = &state.config.files;
        if self.size < 1 || self.size as u64 > files.max_bytes {
            check.fail(
                "size",
                format!("must be between 1 and {} bytes", files.max_bytes),
            );
        }
        // The declared type is compared with the content later, in its normal form.
        match super::sniff::declared(Some(&self.content_type)) {
            Some(t) if files.allowed_types.contains(&t) => self.content_type = t,
            _ => check.fail(
                "content_type",
                format!("must be one of {}", files.allowed_types.join(", ")),
            ),
        }
        if let Some(name) = &mut self.name {
            // Counted as sent, like the document's maxLength; stored trimmed.
            let sent = name.chars().count();
            *name = name.trim().to_owned();
            if sent > 255 || name.is_empty() || name.chars().any(char::is_control) {
                check.fail("name", "must be 1 to 255 printable characters");
            }
        }
    }
}

/// Where and how to PUT the bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadTarget {
    #[schema(example = "PUT")]
    pub method: String,
    pub url: String,
    /// Headers the PUT must carry exactly (they are part of the signature).
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    pub file: FileMeta,
    pub upload: UploadTarget,
}

/// Start a direct-to-storage upload: a presigned PUT bound to the declared length and type.
#[utoipa::path(
    post, path = "/files/uploads", tag = TAG,
    security(("session" = [])),
    request_body = CreateUploadRequest,
    responses(
        (status = 201, description = "A pending file and the URL to PUT its bytes to; then call complete", body = CreatedUpload),
        JsonBody,
        NoSession,
        CrossSite,
        (status = 422, description = "Invalid size, type or name", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn create_upload(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<CreateUploadRequest>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let key = object_key::file(user.id, id);
    let ttl = state.config.files.upload_url_ttl;
    // The URL writes to the staging area; `complete` moves the checked bytes to `key`.
    let target = state
        .storage
        .presign_put(
            &object_key::staging(user.id, id),
            &body.content_type,
            body.size as u64,
            ttl,
        )
        .await?;
    let expires_at = OffsetDateTime::now_utc() + ttl;
    let new = repo::NewFile {
        id,
        owner_id: user.id,
        purpose: "upload",
        object_key: &key,
        name: body.name.as_deref(),
        size_bytes: body.size,
        content_type: &body.content_type,
        sha256: None,
        status: "pending",
        upload_expires_at: Some(expires_at),
    };
    let mut write = state.db.begin(user.writer()).await?;
    let file = repo::insert(&mut *write, &new)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    write.commit().await?;
    let created = CreatedUpload {
        file: file.into(),
        upload: UploadTarget {
            method: target.method,
            url: target.url,
            headers: target.headers,
            expires_at,
        },
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Finish a direct upload: the object must exist with the declared size and type.
#[utoipa::path(
    post, path = "/files/{id}/complete", tag = TAG,
    security(("session" = [])),
    params(("id" = String, Path, description = "The file's id")),
    responses(
        (status = 200, description = "The file is available", body = FileMeta),
        NoSession,
        CrossSite,
        (status = 404, description = "No such file of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing uploaded yet, or not the declared size (the upload is discarded)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The content is not the declared type (the upload is discarded)", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn complete_upload(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<FileMeta>, ApiError> {
    let file = find_owned(&state, user, &id).await?;
    if file.status == "available" {
        // Completing twice is harmless: a client retrying after a lost response gets the file.
        return Ok(axum::Json(file.into()));
    }
    // Claimed for the whole check: the purge skips a claimed file, and a second `complete`
    // waits for this one, then finds the file available.
    let mut write = state.db.begin(user.writer()).await?;
    let Some(file) = repo::claim_pending(&mut *write, file.id).await? else {
        drop(write);
        let file = repo::find_owned(state.db.read_primary(), user.id, file.id)
            .await?
            .ok_or(ApiError::NotFound)?;
        return Ok(axum::Json(file.into()));
    };
    let staging = object_key::staging(user.id, file.id);
    let Some(object) = state.storage.head_object(&staging).await? else {
        return Err(ApiError::Conflict(
            "nothing has been uploaded to this file's URL yet".into(),
        ));
    };
    if object.size != file.size_bytes as u64 {
        discard_object(&state, &staging).await;
        return Err(ApiError::Conflict(format!(
            "the uploaded object has {} bytes, {} were declared; upload again",
            object.size, file.size_bytes
        )));
    }
    let head = state
        .storage
        .read_prefix(&staging, super::sniff::SNIFF_LEN)
        .await?;
    let files = &state.config.files;
    let rules = Rules {
        max_bytes: files.max_bytes,
        part_bytes: files.part_bytes,
        allowed_types: &files.allowed_types,
    };
    if let Err(e) = upload::check_type(&head, Some(&file.content_type), rules) {
        discard_object(&state, &staging).await;
        return Err(e);
    }
    // The checked bytes move to the file's own key, which no presigned URL can write.
    state
        .storage
        .copy_object(&staging, &file.object_key)
        .await?;
    let file = repo::mark_available(&mut *write, file.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    write.commit().await?;
    // Best effort: a leftover staging object is swept by the purge job.
    discard_object(&state, &staging).await;
    Ok(axum::Json(file.into()))
}

/// The caller's file `id`, or 404 (also for a malformed id or someone else's file).
async fn find_owned(state: &AppState, user: AuthUser, id: &str) -> Result<repo::FileRow, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    state
        .db
        .read(&user.caller(), |db| async move {
            repo::find_owned(&db, user.id, id).await
        })
        .await?
        .ok_or(ApiError::NotFound)
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
async fn get_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<axum::Json<FileMeta>, ApiError> {
    Ok(axum::Json(find_owned(&state, user, &id).await?.into()))
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
async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let file = find_owned(&state, user, &id).await?;
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

/// A 302 to a presigned URL. The URL is personal and expires: no cache may keep the redirect.
fn redirect_to(url: String) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, url),
            (header::CACHE_CONTROL, "private, no-store".into()),
        ],
    )
        .into_response()
}

/// `attachment`, with the display name when it is plain enough for a header.
fn content_disposition(name: Option<&str>) -> String {
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
async fn delete_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let file = find_owned(&state, user, &id).await?;
    // Object first: if storage is down the row stays and the client can retry; the reverse
    // order would leave an object no row points to.
    state.storage.delete_object(&file.object_key).await?;
    let mut write = state.db.begin(user.writer()).await?;
    repo::delete(&mut *write, file.id).await?;
    write.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The avatar's state, as the profile shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "pending", "url": null}))]
pub struct Avatar {
    /// `pending` until the thumbnail is made, then `ready`; `failed` when the image cannot be
    /// decoded (upload another).
    pub status: String,
    /// Where the thumbnail is served, once ready.
    pub url: Option<String>,
}

impl Avatar {
    /// The avatar of `user` whose status column reads `status`.
    pub fn of(user: Uuid, status: Option<&str>) -> Option<Self> {
        let status = status?;
        Some(Self {
            status: status.to_owned(),
            url: (status == "ready").then(|| format!("/api/v1/users/{user}/avatar")),
        })
    }
}

/// Upload a new avatar image; the profile shows it as pending until its thumbnail is ready.
#[utoipa::path(
    put, path = "/me/avatar", tag = TAG,
    security(("session" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored; the thumbnail is being made", body = Avatar),
        (status = 400, description = "Broken multipart body", body = Problem, content_type = "application/problem+json"),
        NoSession,
        CrossSite,
        (status = 413, description = "Larger than AVATAR_MAX_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a PNG, JPEG, GIF or WebP image", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No part named file, or an empty file", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn upload_avatar(
    State(state): State<AppState>,
    user: AuthUser,
    body: UploadBody,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let key = object_key::avatar(user.id, id);
    let images = super::AVATAR_TYPES.map(str::to_owned);
    let stored = body
        .store(&state, &key, state.config.files.avatar_max_bytes, &images)
        .await?;
    let recorded = super::avatar::replace(&state, user.id, id, &key, &stored).await;
    let previous = match recorded {
        Ok(previous) => previous,
        Err(e) => {
            discard_object(&state, &key).await;
            return Err(e);
        }
    };
    if let Some(previous) = previous {
        super::avatar::discard(&state, &previous).await;
    }
    let avatar = Avatar {
        status: "pending".into(),
        url: None,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(avatar)).into_response())
}

/// A user's avatar thumbnail: a redirect to a short-lived URL. Public, like the profile.
#[utoipa::path(
    get, path = "/users/{id}/avatar", tag = TAG,
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 302, description = "Redirect to the thumbnail (PNG)",
            headers(("Location" = String, description = "A presigned GET URL"))),
        (status = 404, description = "No such user, or no avatar ready", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn avatar_image(
    State(state): State<AppState>,
    caller: crate::db::Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let key = state
        .db
        .read(&caller, |db| async move {
            crate::accounts::repo::thumbnail_key(&db, id).await
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    let url = state
        .storage
        .presign_get(
            &key,
            "image/png",
            "inline",
            state.config.files.download_url_ttl,
        )
        .await?;
    Ok(redirect_to(url))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_document_states_the_upload_limits_of_the_deployment() {
        let vars = HashMap::from([
            ("UPLOAD_MAX_BYTES".to_owned(), "1048576".to_owned()),
            (
                "UPLOAD_ALLOWED_TYPES".to_owned(),
                "image/png,text/plain".to_owned(),
            ),
        ]);
        let files = FilesConfig::from_source(&vars).expect("valid");
        let doc = serde_json::to_value(router(&files).get_openapi()).expect("serialises");
        let request = &doc["components"]["schemas"]["CreateUploadRequest"]["properties"];
        assert_eq!(request["size"]["maximum"], 1_048_576);
        assert_eq!(
            request["content_type"]["enum"],
            serde_json::json!(["image/png", "text/plain"])
        );
        assert_eq!(
            request["name"]["pattern"],
            crate::accounts::validate::NAME_PATTERN
        );
    }
}

//! Direct uploads: `POST /files/uploads` hands out a presigned PUT bound to the declared
//! length and type; `POST /files/{id}/complete` checks what arrived and makes the file
//! available. The bytes never pass through an instance.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{FileMeta, TAG, discard_object, find_owned};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::responses::{CrossSite, JsonBody, NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::files::upload::{self, Rules};
use crate::files::{object_key, repo};
use crate::http::json::{self, AppJson, Check, Validate};
use crate::http::path::PathId;
use crate::storage::IfMatch;

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
        match crate::files::sniff::declared(Some(&self.content_type)) {
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
pub(super) async fn create_upload(
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
    let file = repo::insert(&mut write, &new)
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
        (status = 409, description = "Nothing uploaded yet, not the declared size (the upload is discarded), or the uploaded object changed while it was being checked (complete again)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The content is not the declared type (the upload is discarded)", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn complete_upload(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId<Uuid>,
) -> Result<axum::Json<FileMeta>, ApiError> {
    let file = find_owned(&state, user, id).await?;
    if file.status == "available" {
        // Completing twice is harmless: a client retrying after a lost response gets the file.
        return Ok(axum::Json(file.into()));
    }
    // Storage first, with no transaction and no pool connection held: however slow storage
    // is, completions never take connections (or row locks) that logins and writes need.
    let staging = object_key::staging(user.id, file.id);
    // A key of this completion's own: two completions of one file at once copy to two keys,
    // and the one that loses the write below removes its copy, so a file's object never
    // changes once the file is available.
    let key = object_key::completed(user.id, file.id, Uuid::now_v7());
    match check_and_copy(&state, &file, &staging, &key).await {
        Ok(()) => {}
        Err(refused @ (ApiError::Conflict(_) | ApiError::UnsupportedFileType(_))) => {
            // Refused for what is (or is no longer) at the staging key. A completion running
            // at the same time may have made the file available and removed the staging
            // object: then the file is the answer, as for completing twice.
            let now = repo::find_owned(state.db.read_primary(), user.id, file.id)
                .await?
                .ok_or(ApiError::NotFound)?;
            return match now.status.as_str() {
                "available" => Ok(axum::Json(now.into())),
                _ => Err(refused),
            };
        }
        Err(e) => {
            // Storage failed, perhaps after the copy was made: it must not linger unrecorded.
            discard_object(&state, &key).await;
            return Err(e);
        }
    }
    // A short write, which decides: only a pending file turns available, so of two
    // completions exactly one wins, and a file deleted or purged meanwhile stays gone.
    let recorded = async {
        let mut write = state.db.begin(user.writer()).await?;
        let file = repo::mark_available(&mut write, file.id, &key).await?;
        write.commit().await?;
        Ok::<_, sqlx::Error>(file)
    }
    .await;
    match recorded {
        Ok(Some(file)) => {
            // Best effort: a leftover staging object is swept by the purge job.
            discard_object(&state, &staging).await;
            Ok(axum::Json(file.into()))
        }
        Ok(None) => {
            discard_object(&state, &key).await;
            // Another completion won (the file is available: the same answer as completing
            // twice), or the file is gone (404).
            let file = repo::find_owned(state.db.read_primary(), user.id, file.id)
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(axum::Json(file.into()))
        }
        Err(e) => {
            // Unrecorded, the copy would be an object nothing refers to.
            discard_object(&state, &key).await;
            Err(e.into())
        }
    }
}

/// Checks the staged object against what the file declared (it exists, has the declared size,
/// and its leading bytes are of the declared type; a wrong object is discarded), then copies
/// those very bytes to `key`: every step after the first is conditional on the ETag the first
/// saw, so what is copied is what was checked.
async fn check_and_copy(
    state: &AppState,
    file: &repo::FileRow,
    staging: &str,
    key: &str,
) -> Result<(), ApiError> {
    let Some(object) = state.storage.head_object(staging).await? else {
        return Err(ApiError::Conflict(
            "nothing has been uploaded to this file's URL yet".into(),
        ));
    };
    if object.size != file.size_bytes as u64 {
        discard_object(state, staging).await;
        return Err(ApiError::Conflict(format!(
            "the uploaded object has {} bytes, {} were declared; upload again",
            object.size, file.size_bytes
        )));
    }
    let etag = object.etag.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("object storage gave no ETag for {staging}"))
    })?;
    // The bytes read are those of the object measured above, or none at all.
    let IfMatch::Matched(head) = state
        .storage
        .read_prefix_if_match(staging, crate::files::sniff::SNIFF_LEN, &etag)
        .await?
    else {
        return Err(changed_while_checked());
    };
    let files = &state.config.files;
    let rules = Rules {
        max_bytes: files.max_bytes,
        part_bytes: files.part_bytes,
        allowed_types: &files.allowed_types,
    };
    if let Err(e) = upload::check_type(&head, Some(&file.content_type), rules) {
        discard_object(state, staging).await;
        return Err(e);
    }
    match state
        .storage
        .copy_object_if_match(staging, key, &etag)
        .await?
    {
        IfMatch::Matched(()) => Ok(()),
        // Replaced through the URL between the check and the copy: the file stays pending,
        // and completing again checks the new bytes.
        IfMatch::Changed => Err(changed_while_checked()),
    }
}

fn changed_while_checked() -> ApiError {
    ApiError::Conflict(
        "the uploaded object changed while it was being checked; complete again to check it".into(),
    )
}

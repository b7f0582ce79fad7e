//! The files endpoints under `/api/v1`: streamed uploads, direct-to-storage uploads with a
//! presigned URL, metadata, downloads by redirect, deletion, the owner's listing, and avatars.
//!
//! Only the owner sees a file; anyone else gets the 404 a missing file gets.

mod avatar_change;
mod avatars;
mod direct;
mod framing;
mod owned;
mod streamed;

pub use streamed::MULTIPART_OVERHEAD;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::config::FilesConfig;
use crate::error::ApiError;
use crate::files::repo;
use crate::http::limits::Limits;
use crate::http::rate_limit;
use crate::rate_limit::Policy;

pub const TAG: &str = "files";

/// The routes whose bodies are small JSON, documented with this deployment's upload limits.
/// They take the default request limits (see `http::limits`).
pub fn router(files: &FilesConfig) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(owned::list_files))
        .merge(rate_limit::limited(
            OpenApiRouter::new().routes(routes!(direct::create_upload)),
            Policy::Uploads,
            Method::POST,
        ))
        .routes(routes!(direct::complete_upload))
        .routes(routes!(owned::get_file, owned::delete_file))
        .routes(routes!(owned::download))
        .routes(routes!(avatars::avatar_image));
    document_upload_limits(router.get_openapi_mut(), files);
    router
}

/// The routes whose bodies are files, each with the limits it needs: a streamed upload may
/// take `UPLOAD_TIMEOUT_SECS` and carry `UPLOAD_MAX_BYTES`; an avatar, `AVATAR_MAX_BYTES`.
pub fn uploads(files: &FilesConfig) -> OpenApiRouter<AppState> {
    let limited = |max_bytes: u64| {
        axum::middleware::from_fn_with_state(
            Limits {
                timeout: files.upload_timeout,
                body_bytes: max_bytes + streamed::MULTIPART_OVERHEAD,
            },
            crate::http::limits::enforce,
        )
    };
    // The rate limit outermost: a refused upload is answered before any of its body is read.
    rate_limit::limited(
        OpenApiRouter::new()
            .routes(routes!(streamed::upload_file))
            .layer(limited(files.max_bytes)),
        Policy::Uploads,
        Method::POST,
    )
    .merge(rate_limit::limited(
        OpenApiRouter::new()
            .routes(routes!(avatars::upload_avatar))
            .layer(limited(files.avatar_max_bytes)),
        Policy::Uploads,
        Method::PUT,
    ))
}

/// States `UPLOAD_MAX_BYTES` and `UPLOAD_ALLOWED_TYPES` in the schema of a direct upload, so
/// that a client (or a fuzzer) can tell from the document alone which requests are accepted.
/// They are configuration, which the annotations cannot know.
pub(super) fn document_upload_limits(doc: &mut utoipa::openapi::OpenApi, files: &FilesConfig) {
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

/// Deletes an object nothing refers to. Best effort: a failure is logged, and the object stays
/// until its owner's account is deleted (which removes everything under the owner's prefixes).
pub(super) async fn discard_object(state: &AppState, key: &str) {
    if let Err(e) = state.storage.delete_object(key).await {
        tracing::warn!(%key, error = %e, "could not delete an unrecorded object");
    }
}

/// The caller's file `id`, or 404 (also for someone else's file).
pub(super) async fn find_owned(
    state: &AppState,
    user: AuthUser,
    id: Uuid,
) -> Result<repo::FileRow, ApiError> {
    state
        .db
        .read(&user.caller(), |db| async move {
            repo::find_owned(&db, user.id, id).await
        })
        .await?
        .ok_or(ApiError::NotFound)
}

/// A 302 to a presigned URL. The URL is personal and expires: no cache may keep the redirect.
pub(super) fn redirect_to(url: String) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, url),
            (header::CACHE_CONTROL, "private, no-store".into()),
        ],
    )
        .into_response()
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

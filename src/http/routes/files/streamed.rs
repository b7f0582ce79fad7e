//! `POST /files`: a file streamed through the instance to object storage as it arrives.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;
use utoipa::ToSchema;
use uuid::Uuid;

use super::framing::{FramingLimits, Guarded};
use super::{FileMeta, TAG, discard_object};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::responses::{NoSession, NotInOrg, RoleTooLow};
use crate::error::{ApiError, Problem};
use crate::files::upload::{self, Rules};
use crate::files::{object_key, repo};

/// Room for multipart boundaries and part headers around an uploaded file.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

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
/// Holds one of the instance's upload slots (`UPLOADS_IN_FLIGHT`) until it is dropped: the
/// memory of an upload in flight is one part buffer, and the slots bound how many there are.
pub struct UploadBody {
    request: Request,
    boundary: String,
    length: Option<u64>,
    _slot: OwnedSemaphorePermit,
}

impl FromRequest<AppState> for UploadBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let boundary = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| multer::parse_boundary(v).ok())
            .ok_or_else(|| ApiError::UnsupportedFileType("expected multipart/form-data".into()))?;
        let slot = state.uploads.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("upload_rejections_total").increment(1);
            ApiError::Overloaded {
                what: "uploads",
                retry_after_secs: 1,
            }
        })?;
        Ok(Self {
            request,
            boundary,
            length,
            _slot: slot,
        })
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
    /// The body reaches the multipart parser through the framing guard, with `max_bytes` as
    /// its part limit: each route's own.
    pub(super) async fn store(
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
        let (parts, body) = self.request.into_parts();
        let limits = FramingLimits {
            part_bytes: max_bytes,
        };
        let (guarded, breach) = Guarded::new(body.into_data_stream(), &self.boundary, limits)?;
        let request = Request::from_parts(parts, Body::from_stream(guarded));
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|_| ApiError::UnsupportedFileType("expected multipart/form-data".into()))?;
        let rules = Rules {
            max_bytes,
            part_bytes: state.config.files.part_bytes,
            allowed_types,
        };
        let received = upload::receive(&state.storage, multipart, key, rules, self.length).await;
        // The parser reports a guard's refusal as a broken stream; say which bound it was.
        let breach = breach.lock().ok().and_then(|mut b| b.take());
        match (received, breach) {
            (Err(_), Some(breach)) => Err(breach.into()),
            (received, _) => received,
        }
    }
}

/// Upload a file through the API; it is streamed to object storage as it arrives.
#[utoipa::path(
    post, path = "/files", tag = TAG,
    security(("session" = [])),
    params(super::owned::OrgQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored; the file's metadata", body = FileMeta),
        (status = 400, description = "Broken multipart body, or one past the framing bounds (preamble, part headers, number of parts)", body = Problem, content_type = "application/problem+json"),
        NoSession,
        RoleTooLow,
        NotInOrg,
        (status = 413, description = "Larger than UPLOAD_MAX_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart, or the content is not an allowed type (or not the declared one)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No part named file, or an empty file", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Object storage or the database is unavailable, or UPLOADS_IN_FLIGHT uploads are already being received (see Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn upload_file(
    State(state): State<AppState>,
    user: AuthUser,
    org: Result<Query<super::owned::OrgQuery>, axum::extract::rejection::QueryRejection>,
    body: UploadBody,
) -> Result<Response, ApiError> {
    // A file of an organization: its members (not viewers) add them. Checked before any byte
    // is stored, and again in the write.
    let org = super::owned::org_for_upload(&state, user, org).await?;
    let id = Uuid::now_v7();
    let key = object_key::file(user.id, id);
    let files = &state.config.files;
    let stored = body
        .store(&state, &key, files.max_bytes, &files.allowed_types)
        .await?;
    let new = stored.as_new_file(id, user.id, "upload", &key);
    let recorded = async {
        let mut write = state.db.begin(user.writer()).await?;
        let file = repo::insert(&mut write, &new).await?;
        if let (Some(org), Some(_)) = (org, &file) {
            super::owned::attach_to_org(&mut write, user, id, org).await?;
        }
        write.commit().await?;
        Ok::<_, ApiError>(file)
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
            return Err(e);
        }
    };
    Ok((StatusCode::CREATED, axum::Json(FileMeta::from(file))).into_response())
}

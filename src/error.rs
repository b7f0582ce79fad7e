//! The one mapping from errors to RFC 9457 `application/problem+json` responses.
//!
//! Handlers return [`ApiError`]; each variant documents its status. The response carries a
//! stable `type` that clients branch on. A 5xx body says what kind of failure happened, never
//! why: the cause travels in a response extension and the request middleware logs it once,
//! inside the request's span.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::media_types::PROBLEM_JSON;

/// Field name → what is wrong with it, for validation failures.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://scaleout.dev/problems/validation",
    "title": "The request is not valid",
    "status": 422,
    "errors": {"email": ["is not a valid email address"]}
}))]
pub struct Problem {
    /// A stable identifier of the kind of problem; clients branch on this, not on `title`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For validation failures: each offending field with its messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<FieldErrors>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Self {
        Self {
            kind: format!("https://scaleout.dev/problems/{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "The request took too long",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
    }

    /// A problem for a bare error status produced below the handlers (a 405 from the router,
    /// a 413 from the body limit), so every error body has the same shape.
    pub fn for_status(status: StatusCode) -> Self {
        let title = status.canonical_reason().unwrap_or("Error");
        let kind = match status {
            StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::NOT_FOUND => "not-found",
            s if s.is_server_error() => "internal",
            _ => "http",
        };
        Self::new(status, kind, title)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// The error responses many operations share, for their OpenAPI `responses(...)`: written
/// once here rather than as the same tuple on every handler. Operations whose error means
/// something more specific keep their own tuple for that status.
pub mod responses {
    use utoipa::IntoResponses;

    use super::Problem;

    /// 503: a dependency did not answer in time, or the instance is at its bound for the
    /// work asked (then with `Retry-After`).
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 503,
        description = "A dependency is unavailable, or the instance is busy (see Retry-After)",
        content_type = "application/problem+json"
    )]
    pub struct Unavailable(pub Problem);

    /// 401: the operation needs a session.
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 401,
        description = "No valid session",
        content_type = "application/problem+json"
    )]
    pub struct NoSession(pub Problem);

    /// 403: a browser request from another site (see `http::csrf`).
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 403,
        description = "Cross-site request",
        content_type = "application/problem+json"
    )]
    pub struct CrossSite(pub Problem);

    /// 403: a member whose role does not allow the operation, or a cross-site request.
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 403,
        description = "The caller's role does not allow this, or a cross-site request",
        content_type = "application/problem+json"
    )]
    pub struct RoleTooLow(pub Problem);

    /// 404 under `/orgs/{org_id}`: no such organization among the caller's (its existence is
    /// not revealed), or no such resource in it.
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 404,
        description = "No such organization of the caller's, or no such resource in it",
        content_type = "application/problem+json"
    )]
    pub struct NotInOrg(pub Problem);

    /// 422: well-formed JSON that breaks the rules.
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 422,
        description = "Invalid fields",
        content_type = "application/problem+json"
    )]
    pub struct InvalidFields(pub Problem);

    /// 412: `If-Match` names a version of the resource that is no longer current (someone
    /// changed it since the caller read it); nothing was changed.
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 412,
        description = "If-Match does not match the current version (it changed since it was read); nothing changed",
        content_type = "application/problem+json"
    )]
    pub struct PreconditionFailed(pub Problem);

    /// What `AppJson` refuses before the handler runs: 400, 413, 415.
    #[derive(Debug, IntoResponses)]
    pub enum JsonBody {
        #[response(
            status = 400,
            description = "Malformed JSON",
            content_type = "application/problem+json"
        )]
        Malformed(Problem),
        #[response(
            status = 413,
            description = "Body too large",
            content_type = "application/problem+json"
        )]
        TooLarge(Problem),
        #[response(
            status = 415,
            description = "Not application/json",
            content_type = "application/problem+json"
        )]
        NotJson(Problem),
    }
}

/// Whether `error` (or anything it wraps) is a body cut off by a limit. Limits nest (the
/// ceiling around a route's own), so the cut may arrive wrapped more than once.
pub fn is_body_cut_off(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Why a request failed with a 5xx, for the request log line (never for the client).
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not well-formed JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: a body or parameter that cannot be read at all (a broken multipart body).
    #[error("{detail}")]
    BadRequest { kind: &'static str, detail: String },
    /// 401: no valid session.
    #[error("authentication required")]
    Unauthenticated,
    /// 401: unknown email or wrong password; deliberately indistinguishable.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 403: the request is authenticated but not allowed (wrong password re-entered,
    /// cross-site request).
    #[error("{detail}")]
    Forbidden { kind: &'static str, detail: String },
    /// 404: absent, or not visible to the caller (never "exists but forbidden").
    #[error("not found")]
    NotFound,
    /// 409: the request conflicts with existing data (a duplicate email).
    #[error("{0}")]
    Conflict(String),
    /// 409: a request with this `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still running")]
    IdempotencyKeyInUse,
    /// 410: the thing existed but can no longer be used (an expired, revoked or used
    /// invitation).
    #[error("{0}")]
    Gone(String),
    /// 412: the request's `If-Match` does not name the resource's current version: someone
    /// changed it since the caller read it. Nothing was changed.
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    /// 413: the body is larger than allowed.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 415: an upload whose bytes are not an allowed type, or not the type it claims.
    #[error("{0}")]
    UnsupportedFileType(String),
    /// 422: well-formed JSON that breaks the rules; `errors` says which field and why.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// 422: this `Idempotency-Key` was used for another request (method, path or body).
    #[error("the Idempotency-Key was used for another request")]
    IdempotencyKeyReused,
    /// 429: too many attempts; retry after this many seconds.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// 503: this instance is at its bound for this kind of work (password hashes, uploads in
    /// flight); another instance, or this one shortly, can take the request.
    #[error("too many {what} in flight")]
    Overloaded {
        what: &'static str,
        retry_after_secs: u64,
    },
    /// 503: a rate limit that must hold cannot be checked (Redis is away and the policy fails
    /// closed: signup, login); retry after this many seconds.
    #[error("the {policy} rate limit cannot be checked")]
    LimitUnchecked {
        policy: &'static str,
        retry_after_secs: u64,
    },
    /// 503: a dependency did not answer in time; fast, never a hang.
    #[error("{dependency} unavailable: {cause}")]
    Unavailable {
        dependency: &'static str,
        cause: String,
    },
    /// 500: a bug or an unexpected failure.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// One field's validation failure.
    pub fn invalid(field: &str, message: &str) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_owned(), vec![message.to_owned()]);
        Self::Validation(errors)
    }

    pub fn unavailable(dependency: &'static str, cause: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            dependency,
            cause: cause.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        let problem = match &self {
            Self::MalformedJson(detail) => Problem::new(
                S::BAD_REQUEST,
                "malformed-json",
                "The body is not valid JSON",
            )
            .with_detail(detail.clone()),
            Self::BadRequest { kind, detail } => {
                Problem::new(S::BAD_REQUEST, kind, "Bad request").with_detail(detail.clone())
            }
            Self::Unauthenticated => Problem::new(
                S::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            Self::InvalidCredentials => Problem::new(
                S::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid email or password",
            ),
            Self::Forbidden { kind, detail } => {
                Problem::new(S::FORBIDDEN, kind, "Forbidden").with_detail(detail.clone())
            }
            Self::NotFound => Problem::not_found(),
            Self::Conflict(detail) => {
                Problem::new(S::CONFLICT, "conflict", "Conflict").with_detail(detail.clone())
            }
            Self::IdempotencyKeyInUse => Problem::new(
                S::CONFLICT,
                "idempotency-key-in-use",
                "A request with this Idempotency-Key is still running",
            )
            .with_detail("retry once it has finished to get its answer"),
            Self::IdempotencyKeyReused => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "This Idempotency-Key was used for another request",
            )
            .with_detail("a key stands for one request (method, path and body) for 24 hours; use a new key for a new request"),
            Self::Gone(detail) => {
                Problem::new(S::GONE, "gone", "No longer valid").with_detail(detail.clone())
            }
            Self::PreconditionFailed => Problem::new(
                S::PRECONDITION_FAILED,
                "precondition-failed",
                "The resource changed since it was read",
            )
            .with_detail("If-Match does not match its current ETag; read it again, then retry the change on the new version"),
            Self::PayloadTooLarge => Problem::for_status(S::PAYLOAD_TOO_LARGE),
            Self::UnsupportedMediaType => Problem::for_status(S::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("expected Content-Type: application/json"),
            Self::UnsupportedFileType(detail) => Problem::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-file-type",
                "The file's type is not accepted",
            )
            .with_detail(detail.clone()),
            Self::Validation(errors) => {
                let mut p = Problem::new(
                    S::UNPROCESSABLE_ENTITY,
                    "validation",
                    "The request is not valid",
                );
                p.errors = Some(errors.clone());
                p
            }
            Self::RateLimited { .. } => Problem::new(
                S::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many attempts; retry later",
            ),
            Self::Overloaded { what, .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "The service is busy; retry shortly",
            )
            .with_detail(format!("too many {what} in flight on this instance")),
            Self::LimitUnchecked { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "A dependency is unavailable; retry shortly",
            )
            .with_detail("the rate limiter's store did not answer, and this operation is not served unchecked"),
            Self::Unavailable { dependency, .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "A dependency is unavailable; retry shortly",
            )
            .with_detail(format!("{dependency} did not answer")),
            Self::Internal(_) => Problem::internal(),
        };
        let mut response = problem.into_response();
        if let Self::RateLimited { retry_after_secs }
        | Self::Overloaded {
            retry_after_secs, ..
        }
        | Self::LimitUnchecked {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if response.status().is_server_error() {
            response
                .extensions_mut()
                .insert(ErrorCause(format!("{self:#}")));
        }
        response
    }
}

/// Unique constraints whose violation is the client's doing, with what to tell them: the
/// database decides (two instances racing on one email cannot both succeed), and this table
/// alone turns its verdict into a 409.
const CONFLICTS: &[(&str, &str)] = &[
    (
        "users_email_key",
        "an account with this email already exists",
    ),
    (
        "organizations_slug_key",
        "an organization with this slug already exists",
    ),
];

/// References whose violation is a bad value in the request, with the field it names and
/// what to tell the client: the table's foreign key is the rule (an assignee must be a
/// member of the task's organization), checked by the database in the same statement.
const INVALID_REFERENCES: &[(&str, &str, &str)] = &[(
    "tasks_assignee_fkey",
    "assignee_id",
    "is not a member of the organization",
)];

/// References whose violation means the parent in the request's path was deleted while the
/// request ran (a task created in a project deleted meanwhile): the same 404 the request would
/// have met a moment later.
const VANISHED_PARENTS: &[&str] = &["tasks_project_fkey"];

impl<E: Into<ApiError>> From<crate::cache::CacheError<E>> for ApiError {
    fn from(e: crate::cache::CacheError<E>) -> Self {
        match e {
            // Another request's recompute is slow: running the aggregate here as well would
            // pile the same slow query onto the database once per reader.
            crate::cache::CacheError::Busy => Self::Overloaded {
                what: "recomputes of this value",
                retry_after_secs: 1,
            },
            crate::cache::CacheError::Compute(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_foreign_key_violation()
            && db
                .constraint()
                .is_some_and(|c| VANISHED_PARENTS.contains(&c))
        {
            return Self::NotFound;
        }
        if let sqlx::Error::Database(db) = &e
            && let Some(constraint) = db.constraint()
            && let Some((_, detail)) = CONFLICTS.iter().find(|(name, _)| *name == constraint)
        {
            return Self::Conflict((*detail).to_owned());
        }
        if let sqlx::Error::Database(db) = &e
            && let Some(constraint) = db.constraint()
            && let Some((_, field, message)) = INVALID_REFERENCES
                .iter()
                .find(|(name, _, _)| *name == constraint)
        {
            return Self::invalid(field, message);
        }
        match e {
            // The database is away or saturated: the client may retry, elsewhere or later.
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::unavailable("database", e)
            }
            // 40001 serialization_failure, 40P01 deadlock_detected: the transaction lost a race
            // and was rolled back whole; retrying it is safe.
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("40001" | "40P01")) =>
            {
                Self::unavailable("database", e)
            }
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("57014") => {
                // 57014: query_canceled, which is how statement_timeout ends a query.
                Self::unavailable("database", e)
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<crate::redis_client::RedisError> for ApiError {
    fn from(e: crate::redis_client::RedisError) -> Self {
        Self::unavailable("redis", e)
    }
}

impl From<tower_sessions::session::Error> for ApiError {
    fn from(e: tower_sessions::session::Error) -> Self {
        Self::unavailable("sessions", e)
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::unavailable("object storage", e)
    }
}

/// Why a job could not be enqueued (`jobs::enqueue`). Defined here, at the bottom of the
/// module order, so that mapping it to a status needs no import of the jobs module.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the job cannot be serialised: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("the queue refused the job: {0}")]
    Queue(String),
}

impl From<EnqueueError> for ApiError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::Database(e) => e.into(),
            other => Self::Internal(other.into()),
        }
    }
}

//! The request timeout and body limit, carried by each router as a layer of its own
//! (`.layer(from_fn_with_state(limits, enforce))`): the
//! upload routes declare theirs where they are defined (minutes and hundreds of MiB), every
//! other route gets the tight defaults. No list of paths decides, so renaming a route cannot
//! drop its limits.
//!
//! A declared length over the limit is refused before a byte is read; an undeclared one
//! (chunked) is cut off at the limit, which extractors report as 413. A handler that outlives
//! its timeout is answered 503 problem+json, and its future is dropped, which cancels its
//! pending I/O.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Problem;

/// How long a request may take and how large its body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub body_bytes: u64,
}

impl Limits {
    /// The most any route allows: a backstop around the whole router, so that a route added
    /// without a limits layer of its own is still bounded (by the upload limits at worst).
    /// Where both cut a body, extractors still answer 413 (`error::is_body_cut_off` looks
    /// through the wrapping).
    pub fn ceiling(config: &crate::config::ServeConfig) -> Self {
        let overhead = crate::http::routes::files::MULTIPART_OVERHEAD;
        let files = &config.files;
        Self {
            timeout: config.http.request_timeout.max(files.upload_timeout),
            body_bytes: (config.http.body_limit_bytes as u64)
                .max(files.max_bytes + overhead)
                .max(files.avatar_max_bytes + overhead),
        }
    }

    /// The defaults of every route that does not declare its own (`HTTP_REQUEST_TIMEOUT_MS`,
    /// `HTTP_BODY_LIMIT_BYTES`).
    pub fn from_http(http: &crate::config::HttpConfig) -> Self {
        Self {
            timeout: http.request_timeout,
            body_bytes: http.body_limit_bytes as u64,
        }
    }
}

/// The middleware: `router.layer(from_fn_with_state(limits, limits::enforce))`.
pub async fn enforce(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.body_bytes) {
        return Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
            .with_detail(format!(
                "the body may be at most {} bytes",
                limits.body_bytes
            ))
            .into_response();
    }
    let request = request.map(|body| {
        axum::body::Body::new(http_body_util::Limited::new(
            body,
            usize::try_from(limits.body_bytes).unwrap_or(usize::MAX),
        ))
    });
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit = ?limits.timeout, "request timed out");
            Problem::timeout().into_response()
        }
    }
}

//! Ids in paths. A malformed id is answered exactly like an unknown one (404 problem+json):
//! a client learns nothing from the shape of an id, and no handler parses ids itself.

use std::str::FromStr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::ApiError;

/// The one path parameter of a route, parsed as `T` (a `Uuid`, a job's `Ulid`).
#[derive(Debug, Clone, Copy)]
pub struct PathId<T>(pub T);

impl<S, T> FromRequestParts<S> for PathId<T>
where
    S: Send + Sync,
    T: FromStr + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        raw.parse().map(Self).map_err(|_| ApiError::NotFound)
    }
}

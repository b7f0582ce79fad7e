//! The `AuthUser` extractor: a request's session, checked by `accounts::session` (logged in,
//! within its lifetime, under the current password version). It lives here, above `app`,
//! because the check needs the state's database and configuration.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tower_sessions::Session;

use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, msg)| anyhow::anyhow!("session layer missing: {msg}"))?;
        state
            .sessions
            .authenticate(&session, &state.db, &state.config.auth)
            .await
    }
}

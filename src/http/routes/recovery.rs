//! Account recovery under `/api/v1/auth`: email verification and password reset. None needs a
//! session (the links are opened wherever the email is read).
//!
//! A token that is unknown, used, expired, or (for verification) sent to an address the
//! account has since left is refused with one answer, a 422 naming the `token` field: the
//! client cannot tell which, and has nothing to do but ask for a new one.
//!
//! A reset request answers 202 whatever the address: the request does the same work either
//! way (two rate-limit counters and one queued job); the job looks the address up, so no
//! answer and no timing says whether an account exists.

use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::recovery::{self, Purpose};
use crate::accounts::{repo, validate};
use crate::app::AppState;
use crate::db::Writer;
use crate::error::ApiError;
use crate::error::responses::{CrossSite, InvalidFields, JsonBody, Unavailable};
use crate::http::client_ip::ClientIp;
use crate::http::json::{AppJson, Check, Validate};
use crate::http::rate_limit::{RoutePolicy, limited_as};
use crate::jobs::{self, Job, password_reset_email::PasswordResetEmail};
use crate::rate_limit::{Limit, Policy};

use super::accounts::TAG;

/// Reset emails asked for one address, per window: enough for a lost email or two, too few
/// to flood an inbox.
pub const RESET_MAX_PER_EMAIL: u64 = 5;
/// Reset requests (and confirmations) from one client address, per window.
pub const RESET_MAX_PER_ADDRESS: u64 = 20;
pub const RESET_WINDOW: Duration = Duration::from_secs(3600);

/// A token as emails carry it: 64 hex digits; anything up to this length is looked up.
const TOKEN_MAX: usize = 128;

pub fn router() -> OpenApiRouter<AppState> {
    let reset = OpenApiRouter::new()
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset));
    OpenApiRouter::new()
        .routes(routes!(verify_email))
        // By address: these are for callers who cannot sign in, whatever cookie they send.
        .merge(limited_as(
            reset,
            RoutePolicy::new(Policy::Password, Method::POST).by_address(),
        ))
}

fn token_rule(token: &str) -> Result<(), &'static str> {
    match token.trim().len() {
        0 => Err("is required"),
        n if n > TOKEN_MAX => Err("is not a token"),
        _ => Ok(()),
    }
}

/// The one answer for a token that cannot be used.
fn bad_token() -> ApiError {
    ApiError::invalid("token", "is invalid, used or expired; ask for a new one")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "3f1c0e5d8a9b4c7e2f6a1d0b9c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"}))]
pub struct VerifyEmailRequest {
    /// The token from the verification email.
    #[schema(min_length = 1, max_length = 128)]
    pub token: String,
}

impl<S> Validate<S> for VerifyEmailRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("token", token_rule(&self.token));
    }
}

/// Verify the account's email with the token sent to it. Links are valid for 7 days, once.
#[utoipa::path(
    post, path = "/auth/verify", tag = TAG,
    request_body = VerifyEmailRequest,
    responses(
        (status = 204, description = "The email is verified; the profile shows `email_verified: true`"),
        JsonBody,
        CrossSite,
        (status = 422, description = "Invalid fields, or a token that is unknown, used, expired or for an address the account no longer has",
            body = crate::error::Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn verify_email(
    State(state): State<AppState>,
    AppJson(body): AppJson<VerifyEmailRequest>,
) -> Result<StatusCode, ApiError> {
    let Some(holder) =
        recovery::peek(state.db.read_primary(), &body.token, Purpose::VerifyEmail).await?
    else {
        return Err(bad_token());
    };
    let mut write = state.db.begin(Writer::User(holder.user_id)).await?;
    let used = recovery::consume(&mut write, &body.token, Purpose::VerifyEmail).await?;
    // Dropping `write` without a commit rolls the use back: a token that verifies nothing is
    // not spent.
    let Some(holder) = used else {
        return Err(bad_token());
    };
    if !repo::mark_email_verified(&mut write, holder.user_id, &holder.email).await? {
        return Err(bad_token());
    }
    write.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct PasswordResetRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

impl<S> Validate<S> for PasswordResetRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("email", validate::email(&mut self.email));
    }
}

/// Ask for a password-reset email. The answer is the same whether or not an account uses
/// the address; if one does, it gets a token valid for 30 minutes.
#[utoipa::path(
    post, path = "/auth/password-reset", tag = TAG,
    request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "Accepted: if an account uses this address, a reset email is on its way"),
        JsonBody,
        CrossSite,
        InvalidFields,
        (status = 429, description = "Too many reset requests for this address or from this client; see Retry-After",
            body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another request is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn request_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<PasswordResetRequest>,
) -> Result<StatusCode, ApiError> {
    let limits = [
        Limit {
            key: format!("ratelimit:reset:address:{ip}"),
            max: RESET_MAX_PER_ADDRESS,
            window: RESET_WINDOW,
        },
        Limit {
            key: format!("ratelimit:reset:email:{}", body.email.to_lowercase()),
            max: RESET_MAX_PER_EMAIL,
            window: RESET_WINDOW,
        },
    ];
    for limit in &limits {
        if let Some(retry_after_secs) = limit.hit(&state.redis).await? {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
    }
    // Queued whatever the address: the job decides, after the answer, whether there is anyone
    // to write to.
    let mut write = state.db.begin(Writer::System).await?;
    let job = Job::PasswordResetEmail(PasswordResetEmail { email: body.email });
    jobs::enqueue(&mut write, job, None).await?;
    write.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "token": "3f1c0e5d8a9b4c7e2f6a1d0b9c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e",
    "new_password": "a longer and newer passphrase"
}))]
pub struct ConfirmPasswordResetRequest {
    /// The token from the reset email.
    #[schema(min_length = 1, max_length = 128)]
    pub token: String,
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

impl<S> Validate<S> for ConfirmPasswordResetRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("token", token_rule(&self.token));
        check.rule("new_password", validate::new_password(&self.new_password));
    }
}

/// Set a new password with a reset token. The token works once; every session of the
/// account ends.
#[utoipa::path(
    post, path = "/auth/password-reset/confirm", tag = TAG,
    request_body = ConfirmPasswordResetRequest,
    responses(
        (status = 204, description = "The password is changed and every session of the account has ended; log in with the new one"),
        JsonBody,
        CrossSite,
        (status = 422, description = "Invalid fields, or a token that is unknown, used or expired",
            body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client; see Retry-After",
            body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another attempt is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn confirm_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<ConfirmPasswordResetRequest>,
) -> Result<StatusCode, ApiError> {
    let limit = Limit {
        key: format!("ratelimit:reset-confirm:address:{ip}"),
        max: RESET_MAX_PER_ADDRESS,
        window: RESET_WINDOW,
    };
    if let Some(retry_after_secs) = limit.hit(&state.redis).await? {
        return Err(ApiError::RateLimited { retry_after_secs });
    }
    // A bad token costs one indexed read, not a hash; the hash is made before the transaction
    // opens, so no connection waits on it.
    let Some(holder) =
        recovery::peek(state.db.read_primary(), &body.token, Purpose::PasswordReset).await?
    else {
        return Err(bad_token());
    };
    let hash = state.passwords.hash(body.new_password).await?;
    // The sessions end before the password changes: if Redis fails here nothing has changed
    // and the token is still good, the safe way to fail.
    state.sessions.end_all_except(holder.user_id, None).await?;
    let mut write = state.db.begin(Writer::User(holder.user_id)).await?;
    let Some(holder) = recovery::consume(&mut write, &body.token, Purpose::PasswordReset).await?
    else {
        // Used by a concurrent confirmation since the check.
        return Err(bad_token());
    };
    recovery::revoke(&mut write, holder.user_id, Purpose::PasswordReset).await?;
    let version = repo::set_password(&mut write, holder.user_id, &hash).await?;
    write.commit().await?;
    // Again after the commit: a session started with the old password in between ends too,
    // and the new password version makes any such session worthless even if this fails.
    if let Some(version) = version
        && let Err(e) = state
            .sessions
            .password_changed(holder.user_id, version)
            .await
    {
        tracing::warn!(error = %e, "could not record the new password version after the reset");
    }
    if let Err(e) = state.sessions.end_all_except(holder.user_id, None).await {
        tracing::warn!(error = %e, "could not end the sessions again after the reset");
    }
    Ok(StatusCode::NO_CONTENT)
}

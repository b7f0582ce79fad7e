//! The accounts endpoints under `/api/v1`. Handlers parse and validate, call the repo and the
//! session store, and shape the response; rules about sessions live in `session`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::session::AuthUser;
use crate::accounts::{password, repo, validate};
use crate::app::AppState;
use crate::db::{Caller, Writer};
use crate::error::responses::{CrossSite, InvalidFields, JsonBody, NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::http::client_ip::ClientIp;
use crate::http::json::{self, AppJson, Check, Validate};
use crate::http::path::PathId;
use crate::jobs::{self, Job, delete_account::DeleteAccount, welcome_email::WelcomeEmail};
use crate::rate_limit::Limit;

pub const TAG: &str = "accounts";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(get_me, update_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(get_user))
}

/// The avatar's state, as the profile shows it. The profile owns it (the `users` row holds
/// the status); the files module stores the image and answers `PUT /me/avatar` with it.
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

/// The caller's own account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01936f0e-8a4b-7c3d-9e2f-0a1b2c3d4e5f",
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "avatar": {"status": "ready", "url": "/api/v1/users/01936f0e-8a4b-7c3d-9e2f-0a1b2c3d4e5f/avatar"},
    "created_at": "2026-11-22T08:00:00Z",
    "updated_at": "2026-11-22T08:00:00Z"
}))]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// Null until an avatar is uploaded.
    pub avatar: Option<Avatar>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<repo::User> for Me {
    fn from(u: repo::User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            avatar: Avatar::of(u.id, u.avatar_status.as_deref()),
            name: u.name,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// What anyone may see of a user: never the email.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01936f0e-8a4b-7c3d-9e2f-0a1b2c3d4e5f", "name": "Ada Lovelace", "avatar": null}))]
pub struct PublicUser {
    pub id: Uuid,
    pub name: String,
    /// URL of the avatar image, once one is uploaded and ready.
    pub avatar: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "name": "Ada Lovelace", "password": "correct horse battery staple"}))]
pub struct SignupRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Trimmed; not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
    #[schema(min_length = 12, max_length = 128)]
    pub password: String,
}

impl<S> Validate<S> for SignupRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("email", validate::email(&mut self.email));
        check.rule("name", validate::name(&mut self.name));
        check.rule("password", validate::new_password(&self.password));
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(max_length = 128)]
    pub password: String,
}

impl<S> Validate<S> for LoginRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("email", validate::email(&mut self.email));
        check.rule("password", validate::entered_password(&self.password));
    }
}

/// Fields to change; at least one. Neither can be unset: `null` is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Ada King"}), min_properties = 1)]
pub struct UpdateMeRequest {
    /// Trimmed; not blank, no control characters.
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 100,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(nullable = false, format = Email, max_length = 254)]
    pub email: Option<String>,
}

impl<S> Validate<S> for UpdateMeRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        if let Some(name) = &mut self.name {
            check.rule("name", validate::name(name));
        }
        if let Some(email) = &mut self.email {
            check.rule("email", validate::email(email));
        }
        if self.name.is_none() && self.email.is_none() {
            check.fail("body", "give at least one of: name, email");
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"current_password": "correct horse battery staple", "new_password": "a longer and newer passphrase"}))]
pub struct ChangePasswordRequest {
    #[schema(max_length = 128)]
    pub current_password: String,
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

impl<S> Validate<S> for ChangePasswordRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule(
            "current_password",
            validate::entered_password(&self.current_password),
        );
        check.rule("new_password", validate::new_password(&self.new_password));
    }
}

/// Create an account and log in.
#[utoipa::path(
    post, path = "/auth/signup", tag = TAG,
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created; the response sets the session cookie", body = Me),
        JsonBody,
        CrossSite,
        (status = 409, description = "An account with this email exists", body = Problem, content_type = "application/problem+json"),
        InvalidFields,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn signup(
    State(state): State<AppState>,
    session: Session,
    AppJson(body): AppJson<SignupRequest>,
) -> Result<Response, ApiError> {
    let hash = password::hash(body.password).await?;
    // The account and its welcome email commit together: no account without its email job,
    // no email for an account that was rolled back.
    let id = Uuid::now_v7();
    let mut write = state.db.begin(Writer::User(id)).await?;
    let user = repo::insert(&mut write, id, &body.email, &body.name, &hash).await?;
    let welcome = Job::WelcomeEmail(WelcomeEmail { user_id: user.id });
    jobs::enqueue(&mut write, welcome, Some(user.id)).await?;
    write.commit().await?;
    state.sessions.start(&session, user.id).await?;
    Ok((StatusCode::CREATED, axum::Json(Me::from(user))).into_response())
}

/// The two failed-login counters: per account and per client address.
fn login_limits(state: &AppState, email: &str, ip: &str) -> [Limit; 2] {
    let auth = &state.config.auth;
    [
        Limit {
            key: format!("ratelimit:login:account:{}", email.to_lowercase()),
            max: auth.login_max_failures_per_account,
            window: auth.login_failure_window,
        },
        Limit {
            key: format!("ratelimit:login:address:{ip}"),
            max: auth.login_max_failures_per_address,
            window: auth.login_failure_window,
        },
    ]
}

/// Log in. Unknown email and wrong password get the same answer, in about the same time.
#[utoipa::path(
    post, path = "/auth/login", tag = TAG,
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the response sets a new session cookie", body = Me),
        JsonBody,
        (status = 401, description = "Invalid email or password", body = Problem, content_type = "application/problem+json"),
        CrossSite,
        InvalidFields,
        (status = 429, description = "Too many failed logins for this account or address; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another attempt is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    session: Session,
    AppJson(body): AppJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let limits = login_limits(&state, &body.email, &ip);
    for limit in &limits {
        if let Some(retry_after_secs) = limit.hit(&state.redis).await? {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
    }

    let credentials = repo::credentials_by_email(state.db.read_primary(), &body.email).await?;
    let (id, hash) = credentials.unzip();
    if !password::verify(body.password, hash).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let id = id.ok_or_else(|| anyhow::anyhow!("a verified password has an account"))?;
    // A success clears the account's failures and does not count against the address.
    limits[0].reset(&state.redis).await?;
    limits[1].release(&state.redis).await?;

    state.sessions.start(&session, id).await?;
    let user = repo::find(state.db.read_primary(), id)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    Ok(axum::Json(Me::from(user)).into_response())
}

/// Log out this session.
#[utoipa::path(
    post, path = "/auth/logout", tag = TAG,
    security(("session" = [])),
    responses(
        (status = 204, description = "Logged out; the session no longer exists"),
        NoSession,
        CrossSite,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
) -> Result<StatusCode, ApiError> {
    state.sessions.end(&session, user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Log out everywhere: every session of the caller, on every device.
#[utoipa::path(
    post, path = "/auth/logout-all", tag = TAG,
    security(("session" = [])),
    responses(
        (status = 204, description = "Every session of the caller has ended"),
        NoSession,
        CrossSite,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn logout_all(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
) -> Result<StatusCode, ApiError> {
    state.sessions.end_all_except(user.id, None).await?;
    state.sessions.end(&session, user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(
    get, path = "/me", tag = TAG,
    security(("session" = [])),
    responses(
        (status = 200, description = "The caller's account", body = Me),
        NoSession,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn get_me(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<Me>, ApiError> {
    let me = state
        .db
        .read(&user.caller(), |db| async move {
            repo::find(&db, user.id).await
        })
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(axum::Json(me.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"password": "correct horse battery staple"}))]
pub struct DeleteMeRequest {
    /// The current password, entered again.
    #[schema(max_length = 128)]
    pub password: String,
}

impl<S> Validate<S> for DeleteMeRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("password", validate::entered_password(&self.password));
    }
}

/// A job accepted for later.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"job_id": "01JD3V9W5Q8K2M4N6P8R0T2V4X"}))]
pub struct Accepted {
    /// The job's id, for support and the logs. (The account's sessions have ended, so its
    /// owner cannot follow it at `GET /api/v1/jobs/{id}`.)
    pub job_id: String,
}

/// Delete the caller's account: every session ends now, the data goes in the background.
#[utoipa::path(
    delete, path = "/me", tag = TAG,
    security(("session" = [])),
    request_body = DeleteMeRequest,
    responses(
        (status = 202, description = "Sessions ended; the deletion job is queued", body = Accepted),
        JsonBody,
        NoSession,
        (status = 403, description = "Wrong password, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The deletion is already under way, or the account is the only owner of organizations with other members (named in `detail`)", body = Problem, content_type = "application/problem+json"),
        InvalidFields,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn delete_me(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    AppJson(body): AppJson<DeleteMeRequest>,
) -> Result<Response, ApiError> {
    let current = repo::password_hash(state.db.read_primary(), user.id).await?;
    if current.is_none() {
        return Err(ApiError::Unauthenticated);
    }
    if !password::verify(body.password, current).await? {
        return Err(ApiError::Forbidden {
            kind: "wrong-password",
            detail: "the password is not correct".into(),
        });
    }
    // An organization must keep an owner: its only owner deletes the account after handing
    // ownership over (organizations where the account is alone go with it).
    let standing = crate::workspace::members::standing_of(state.db.read_primary(), user.id).await?;
    let held: Vec<&str> = standing
        .iter()
        .filter(|s| s.only_owner && !s.alone)
        .map(|s| s.slug.as_str())
        .collect();
    if !held.is_empty() {
        return Err(ApiError::Conflict(format!(
            "the account is the only owner of organizations with other members: {}; make another member owner first",
            held.join(", ")
        )));
    }
    // The mark and the job commit together: a marked account always has its deletion job.
    let mut write = state.db.begin(user.writer()).await?;
    if !repo::mark_for_deletion(&mut write, user.id).await? {
        return Err(ApiError::Conflict(
            "the account is already being deleted".into(),
        ));
    }
    let job = Job::DeleteAccount(DeleteAccount { user_id: user.id });
    let job_id = jobs::enqueue(&mut write, job, Some(user.id)).await?;
    write.commit().await?;
    // Marked accounts cannot log in; ending the sessions now logs this one out everywhere. The
    // job ends them again, in case Redis fails here.
    let ended = async {
        state.sessions.end_all_except(user.id, None).await?;
        state.sessions.end(&session, user.id).await
    };
    if let Err(e) = ended.await {
        tracing::warn!(error = %e, "could not end the sessions now; the deletion job will");
    }
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { job_id })).into_response())
}

/// Change the caller's name or email.
#[utoipa::path(
    patch, path = "/me", tag = TAG,
    security(("session" = [])),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "The updated account", body = Me),
        JsonBody,
        NoSession,
        CrossSite,
        (status = 409, description = "Another account has this email", body = Problem, content_type = "application/problem+json"),
        InvalidFields,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<UpdateMeRequest>,
) -> Result<axum::Json<Me>, ApiError> {
    let mut write = state.db.begin(user.writer()).await?;
    let me = repo::update_profile(
        &mut write,
        user.id,
        body.name.as_deref(),
        body.email.as_deref(),
    )
    .await?
    .ok_or(ApiError::Unauthenticated)?;
    write.commit().await?;
    Ok(axum::Json(me.into()))
}

/// Change the caller's password; every other session of the caller ends.
#[utoipa::path(
    put, path = "/me/password", tag = TAG,
    security(("session" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; this session continues under a new id, the others have ended"),
        JsonBody,
        NoSession,
        (status = 403, description = "Wrong current password, or a cross-site request", body = Problem, content_type = "application/problem+json"),
        InvalidFields,
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    session: Session,
    AppJson(body): AppJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let current = repo::password_hash(state.db.read_primary(), user.id).await?;
    if current.is_none() {
        return Err(ApiError::Unauthenticated);
    }
    if !password::verify(body.current_password, current).await? {
        return Err(ApiError::Forbidden {
            kind: "wrong-password",
            detail: "the current password is not correct".into(),
        });
    }
    let hash = password::hash(body.new_password).await?;
    // Other sessions end before the password changes: if Redis fails here, nothing has
    // changed but sessions ended, which is the safe way to fail.
    state.sessions.end_all_except(user.id, session.id()).await?;
    let mut write = state.db.begin(user.writer()).await?;
    repo::set_password(&mut write, user.id, &hash).await?;
    write.commit().await?;
    // The surviving session gets a new id too: a stolen copy of its cookie dies here.
    state.sessions.start(&session, user.id).await?;
    state.sessions.end_all_except(user.id, session.id()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's public profile (no email).
#[utoipa::path(
    get, path = "/users/{id}", tag = TAG,
    params(("id" = String, Path, description = "The user's id (a UUID)")),
    responses(
        (status = 200, description = "The public profile", body = PublicUser),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<axum::Json<PublicUser>, ApiError> {
    // A malformed id names no user: 404, like an unknown one.
    let user = state
        .db
        .read(&caller, |db| async move { repo::find(&db, id).await })
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(PublicUser {
        id: user.id,
        avatar: Avatar::of(user.id, user.avatar_status.as_deref()).and_then(|a| a.url),
        name: user.name,
    }))
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// The pattern is written out in the annotations (they take only a literal): it must be
    /// the one that describes the rule.
    #[test]
    fn the_document_states_the_name_rule() {
        for schema in [SignupRequest::schema(), UpdateMeRequest::schema()] {
            let schema = serde_json::to_value(schema).expect("serialises");
            assert_eq!(
                schema["properties"]["name"]["pattern"],
                validate::NAME_PATTERN,
                "{schema}"
            );
        }
    }
}

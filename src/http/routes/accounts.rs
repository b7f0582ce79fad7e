//! The accounts endpoints under `/api/v1`. Handlers parse and validate, call the repo and the
//! session store, and shape the response; rules about sessions live in `session`.

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::accounts::recovery::{self, Purpose};
use crate::accounts::session::AuthUser;
use crate::accounts::{repo, validate};
use crate::app::AppState;
use crate::db::{Caller, Writer};
use crate::error::responses::{CrossSite, InvalidFields, JsonBody, NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::http::cache;
use crate::http::client_ip::ClientIp;
use crate::http::json::{self, AppJson, Check, Validate};
use crate::http::path::PathId;
use crate::http::rate_limit::limited;
use crate::jobs::verification_email::VerificationEmail;
use crate::jobs::{self, Job, delete_account::DeleteAccount, welcome_email::WelcomeEmail};
use crate::rate_limit::{Backoff, Limit, Policy};

pub const TAG: &str = "accounts";

/// The account routes, each with its own rate-limit policy where it has one (`limited`: on
/// top of the general limit every API route has, see `http::rate_limit`).
pub fn router() -> OpenApiRouter<AppState> {
    let route = OpenApiRouter::new;
    limited(
        route().routes(routes!(signup)),
        Policy::Signup,
        Method::POST,
    )
    .merge(limited(
        route().routes(routes!(login)),
        Policy::Login,
        Method::POST,
    ))
    .merge(limited(
        route().routes(routes!(get_me, update_me, delete_me)),
        Policy::Password,
        Method::DELETE,
    ))
    .merge(limited(
        route().routes(routes!(change_password)),
        Policy::Password,
        Method::PUT,
    ))
    .routes(routes!(logout))
    .routes(routes!(logout_all))
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
    "email_verified": true,
    "name": "Ada Lovelace",
    "avatar": {"status": "ready", "url": "/api/v1/users/01936f0e-8a4b-7c3d-9e2f-0a1b2c3d4e5f/avatar"},
    "created_at": "2026-11-22T08:00:00Z",
    "updated_at": "2026-11-22T08:00:00Z"
}))]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    /// Whether a verification link sent to `email` was used (`POST /auth/verify`). False
    /// after signup and after every email change, until then.
    pub email_verified: bool,
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
            email_verified: u.email_verified,
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
///
/// A signup retried with the same email and password (the first one created the account but
/// its answer was lost, or its session could not be stored) logs in to that account: 200
/// instead of 201. With another password, an existing email is a 409.
#[utoipa::path(
    post, path = "/auth/signup", tag = TAG,
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created; the response sets the session cookie", body = Me),
        (status = 200, description = "The account existed with this email and password (a retried signup): logged in; the response sets the session cookie", body = Me),
        JsonBody,
        CrossSite,
        (status = 409, description = "An account with this email exists", body = Problem, content_type = "application/problem+json"),
        InvalidFields,
        (status = 429, description = "Too many signups from this client address, or too many failed password checks; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another attempt is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    session: Session,
    AppJson(body): AppJson<SignupRequest>,
) -> Result<Response, ApiError> {
    // Every signup counts, taken email or not (a 409 tells whether an email has an account):
    // the `signup` policy around this route counts each one per client address before it
    // gets here, and fails closed while Redis is away.
    if let Some(existing) = repo::credentials_by_email(state.db.read_primary(), &body.email).await?
    {
        // A retry of a signup whose account was committed: the same password logs in. This is
        // a password check like a login's, so it is limited like one.
        let limits = PasswordLimits::new(&state, &existing.email, &ip);
        if !limits
            .verify(&state, body.password, Some(existing.password_hash))
            .await?
        {
            return Err(ApiError::Conflict(
                "an account with this email exists".into(),
            ));
        }
        state
            .sessions
            .start(&session, existing.id, existing.password_version)
            .await?;
        let user = repo::find(state.db.read_primary(), existing.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a verified password has an account"))?;
        return Ok(axum::Json(Me::from(user)).into_response());
    }
    let hash = state.passwords.hash(body.password).await?;
    // The account and its welcome email commit together: no account without its email job,
    // no email for an account that was rolled back.
    let id = Uuid::now_v7();
    let mut write = state.db.begin(Writer::User(id)).await?;
    let user = repo::insert(&mut write, id, &body.email, &body.name, &hash).await?;
    let welcome = Job::WelcomeEmail(WelcomeEmail { user_id: user.id });
    jobs::enqueue(&mut write, welcome, Some(user.id)).await?;
    let verify = VerificationEmail {
        user_id: user.id,
        email: user.email.clone(),
    };
    jobs::enqueue(&mut write, Job::VerificationEmail(verify), Some(user.id)).await?;
    write.commit().await?;
    // If this fails (Redis), the account exists without a session: the client's retry with
    // the same credentials logs in (above) rather than meeting a 409.
    state.sessions.start(&session, user.id, 1).await?;
    Ok((StatusCode::CREATED, axum::Json(Me::from(user))).into_response())
}

/// The limits on checks of an account's password (login, a retried signup, `PUT
/// /me/password`, `DELETE /me`), all counted together:
/// - per account and client address: a few failures, then that address waits for the window
///   to end. Another address (the owner's) is not affected;
/// - per client address, whatever the account: one address guessing across accounts;
/// - per account, from any address: a higher ceiling past which attempts are spaced out, the
///   wait doubling (`Backoff`), so many addresses cannot guess fast, yet the owner is never
///   locked out for longer than one wait.
struct PasswordLimits {
    pair: Limit,
    address: Limit,
    account: Backoff,
}

impl PasswordLimits {
    fn new(state: &AppState, email: &str, ip: &str) -> Self {
        let auth = &state.config.auth;
        let email = email.to_lowercase();
        Self {
            pair: Limit {
                key: format!("ratelimit:login:pair:{email}:{ip}"),
                max: auth.login_max_failures_per_account_and_address,
                window: auth.login_failure_window,
            },
            address: Limit {
                key: format!("ratelimit:login:address:{ip}"),
                max: auth.login_max_failures_per_address,
                window: auth.login_failure_window,
            },
            account: Backoff {
                key: format!("ratelimit:login:account:{email}"),
                after: auth.login_backoff_after_failures_per_account,
                window: auth.login_failure_window,
                base: auth.login_backoff_base,
                max: auth.login_backoff_max,
            },
        }
    }

    /// Counts one attempt, before the check, so concurrent attempts cannot all slip under a
    /// limit; a limit reached is a 429.
    /// An attempt refused by one limit is given back to the limits counted before it: it
    /// never reached the check, so it must not bring the owner's own address closer to its
    /// limit while the account waits out its backoff.
    async fn admit(&self, state: &AppState) -> Result<(), ApiError> {
        if let Some(retry_after_secs) = self.pair.hit(&state.redis).await? {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        if let Some(retry_after_secs) = self.address.hit(&state.redis).await? {
            self.pair.release(&state.redis).await?;
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        if let Some(retry_after_secs) = self.account.hit(&state.redis).await? {
            self.pair.release(&state.redis).await?;
            self.address.release(&state.redis).await?;
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        Ok(())
    }

    /// The check could not be made (no hashing slot, a dependency down): the attempt is given
    /// back everywhere, so an overload is a 503, never a lockout.
    async fn not_checked(&self, state: &AppState) {
        let released = async {
            self.pair.release(&state.redis).await?;
            self.address.release(&state.redis).await?;
            self.account.release(&state.redis).await
        };
        if let Err(e) = released.await {
            tracing::warn!(error = %e, "could not give back an unchecked password attempt");
        }
    }

    /// `password` checked against `hash`, after `admit`; an error gives the attempt back.
    async fn check(
        &self,
        state: &AppState,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, ApiError> {
        match state.passwords.verify(password, hash).await {
            Ok(matched) => Ok(matched),
            Err(e) => {
                self.not_checked(state).await;
                Err(e)
            }
        }
    }

    /// The right password was given: the account's failures are forgotten, and the attempt
    /// does not count against the address.
    async fn succeeded(&self, state: &AppState) -> Result<(), ApiError> {
        self.pair.reset(&state.redis).await?;
        self.account.reset(&state.redis).await?;
        self.address.release(&state.redis).await?;
        Ok(())
    }

    /// `admit`, then `password` checked against `hash`, then `succeeded` if it matched.
    /// `Ok(false)` is a wrong password (or no account).
    async fn verify(
        &self,
        state: &AppState,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, ApiError> {
        self.admit(state).await?;
        if !self.check(state, password, hash).await? {
            return Ok(false);
        }
        self.succeeded(state).await?;
        Ok(true)
    }
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
        (status = 429, description = "Too many failed password checks for this account from this address, from this address, or (slowing down) for this account; see Retry-After",
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
    // Limited before the account is even looked up: a refused attempt costs no query.
    let limits = PasswordLimits::new(&state, &body.email, &ip);
    limits.admit(&state).await?;
    let credentials = repo::credentials_by_email(state.db.read_primary(), &body.email).await?;
    let hash = credentials.as_ref().map(|c| c.password_hash.clone());
    if !limits.check(&state, body.password, hash).await? {
        return Err(ApiError::InvalidCredentials);
    }
    limits.succeeded(&state).await?;
    let credentials =
        credentials.ok_or_else(|| anyhow::anyhow!("a verified password has an account"))?;
    // The version read with the hash: if the password changed meanwhile, this session is
    // already stale and is refused on first use.
    state
        .sessions
        .start(&session, credentials.id, credentials.password_version)
        .await?;
    let user = repo::find(state.db.read_primary(), credentials.id)
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
        (status = 429, description = "Too many failed password checks; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another attempt is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn delete_me(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    session: Session,
    AppJson(body): AppJson<DeleteMeRequest>,
) -> Result<Response, ApiError> {
    let current = repo::credentials(state.db.read_primary(), user.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let limits = PasswordLimits::new(&state, &current.email, &ip);
    if !limits
        .verify(&state, body.password, Some(current.password_hash))
        .await?
    {
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

/// Change the caller's name or email. A new email is unverified until the link sent to it
/// is used.
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
        (status = 429, description = "Too many email changes by this account or from this client address; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another change is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<UpdateMeRequest>,
) -> Result<axum::Json<Me>, ApiError> {
    if body.email.is_some() {
        // A 409 tells whether another account has an email: every change counts, taken or not.
        let auth = &state.config.auth;
        let limits = [
            Limit {
                key: format!("ratelimit:email-change:user:{}", user.id),
                max: auth.email_change_max_per_user,
                window: auth.email_change_window,
            },
            Limit {
                key: format!("ratelimit:email-change:address:{ip}"),
                max: auth.email_change_max_per_address,
                window: auth.email_change_window,
            },
        ];
        for limit in &limits {
            if let Some(retry_after_secs) = limit.hit(&state.redis).await? {
                return Err(ApiError::RateLimited { retry_after_secs });
            }
        }
    }
    let mut write = state.db.begin(user.writer()).await?;
    let me = repo::update_profile(
        &mut write,
        user.id,
        body.name.as_deref(),
        body.email.as_deref(),
    )
    .await?
    .ok_or(ApiError::Unauthenticated)?;
    // A new (or still unverified) address gets a link of its own, committed with the change.
    if body.email.is_some() && !me.email_verified {
        let verify = VerificationEmail {
            user_id: me.id,
            email: me.email.clone(),
        };
        jobs::enqueue(&mut write, Job::VerificationEmail(verify), Some(me.id)).await?;
    }
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
        (status = 409, description = "The password changed meanwhile (a reset, another device); this session has ended", body = Problem, content_type = "application/problem+json"),
        InvalidFields,
        (status = 429, description = "Too many failed password checks; see Retry-After",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until another attempt is allowed"))),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    session: Session,
    AppJson(body): AppJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let current = repo::credentials(state.db.read_primary(), user.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let limits = PasswordLimits::new(&state, &current.email, &ip);
    if !limits
        .verify(&state, body.current_password, Some(current.password_hash))
        .await?
    {
        return Err(ApiError::Forbidden {
            kind: "wrong-password",
            detail: "the current password is not correct".into(),
        });
    }
    let hash = state.passwords.hash(body.new_password).await?;
    // This session continues under a new id and the version this change gives the password,
    // saved before the transaction opens, so no connection or row lock waits on Redis. If Redis
    // fails, nothing has changed and the answer is a 503 (this session has ended, the safe way
    // to fail). After the commit nothing can fail the answer: the change is made.
    let version = current.password_version + 1;
    state.sessions.start(&session, user.id, version).await?;
    let mut write = state.db.begin(user.writer()).await?;
    let set = repo::set_password(&mut write, user.id, &hash)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if set != version {
        // Another change (a reset, another device) came first: this one is not made, and the
        // session started for it would hold that other change's version, so it ends.
        drop(write);
        state.sessions.end(&session, user.id).await?;
        return Err(ApiError::Conflict(
            "the password changed meanwhile; log in again".into(),
        ));
    }
    // A reset link sent before the change must not undo it.
    recovery::revoke(&mut write, user.id, Purpose::PasswordReset).await?;
    write.commit().await?;
    // The other sessions are stale from the commit on (their version is older); these two
    // steps make that immediate (the cached version) and tidy (the records). If Redis fails
    // here, a stale session is refused once the cached version expires (ten minutes).
    let tidy = async {
        state.sessions.password_changed(user.id, version).await?;
        state.sessions.end_all_except(user.id, session.id()).await
    };
    if let Err(e) = tidy.await {
        tracing::warn!(error = %e, "password changed; the other sessions end with the cached version");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A user's public profile (no email).
#[utoipa::path(
    get, path = "/users/{id}", tag = TAG,
    params(("id" = String, Path, description = "The user's id (a UUID)")),
    responses(
        (status = 200, description = "The public profile (`Cache-Control: public`)", body = PublicUser),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    // A malformed id names no user: 404, like an unknown one.
    let user = state
        .db
        .read(&caller, |db| async move { repo::find(&db, id).await })
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = axum::Json(PublicUser {
        id: user.id,
        avatar: Avatar::of(user.id, user.avatar_status.as_deref()).and_then(|a| a.url),
        name: user.name,
    })
    .into_response();
    // The same for every caller: shared caches (the edge) may keep it a few seconds, which
    // bounds how long a changed name takes to show there.
    let http = &state.config.http;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        cache::public(http.public_max_age, http.stale_while_revalidate),
    );
    Ok(response)
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

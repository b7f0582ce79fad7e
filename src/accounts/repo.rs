//! SQL for accounts, checked against the schema at compile time (sqlx's macros; offline data
//! in `.sqlx/`). The executor says where a query runs; handlers choose it at the call site
//! (`db.write()`, `db.read(&caller, ..)`, `db.read_primary()`).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// `pending` or `ready` once an avatar has been uploaded.
    pub avatar_status: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Turns the unique index on lower(email) into a 409: the database decides, so two instances
/// racing on one address cannot both succeed.
fn email_taken(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("users_email_key") => {
            ApiError::Conflict("an account with this email already exists".into())
        }
        _ => e.into(),
    }
}

#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    email: &str,
    name: &str,
    password_hash: &str,
) -> Result<User, ApiError> {
    sqlx::query_as!(
        User,
        "insert into users (id, email, name, password_hash)
         values ($1, $2, $3, $4)
         returning id, email, name, avatar_status, created_at, updated_at",
        Uuid::now_v7(),
        email,
        name,
        password_hash,
    )
    .fetch_one(db)
    .await
    .map_err(email_taken)
}

/// The user and their password hash, for login and password checks.
#[tracing::instrument(skip_all)]
pub async fn credentials_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<(Uuid, String)>, ApiError> {
    let row = sqlx::query!(
        // An account being deleted cannot log in: it answers like an unknown email.
        "select id, password_hash from users
          where lower(email) = lower($1) and deletion_requested_at is null",
        email
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.password_hash)))
}

#[tracing::instrument(skip_all)]
pub async fn password_hash(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<String>, ApiError> {
    Ok(
        sqlx::query_scalar!("select password_hash from users where id = $1", id)
            .fetch_optional(db)
            .await?,
    )
}

#[tracing::instrument(skip_all)]
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "select id, email, name, avatar_status, created_at, updated_at from users where id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

/// Changes the given fields only; `None` keeps the current value.
#[tracing::instrument(skip_all)]
pub async fn update_profile(
    db: impl PgExecutor<'_>,
    id: Uuid,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<Option<User>, ApiError> {
    sqlx::query_as!(
        User,
        "update users
            set name = coalesce($2, name), email = coalesce($3, email), updated_at = now()
          where id = $1
      returning id, email, name, avatar_status, created_at, updated_at",
        id,
        name,
        email,
    )
    .fetch_optional(db)
    .await
    .map_err(email_taken)
}

#[tracing::instrument(skip_all)]
pub async fn set_password(db: impl PgExecutor<'_>, id: Uuid, hash: &str) -> Result<(), ApiError> {
    sqlx::query!(
        "update users set password_hash = $2, updated_at = now() where id = $1",
        id,
        hash
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the account for deletion; false if it already was.
#[tracing::instrument(skip_all)]
pub async fn mark_for_deletion(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, ApiError> {
    let done = sqlx::query!(
        "update users set deletion_requested_at = now(), updated_at = now()
          where id = $1 and deletion_requested_at is null",
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

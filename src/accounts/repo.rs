//! All SQL on `users`, checked against the schema at compile time (sqlx's macros; offline
//! data in `.sqlx/`). Other modules (files, jobs) call these functions rather than carry
//! their own statements on the table. The executor says where a query runs; callers choose
//! it at the call site (a `Write` from `db.begin(..)`, `db.read(&caller, ..)`,
//! `db.read_primary()`). Errors are the database's: `error.rs` alone turns them into HTTP
//! statuses (a taken email, by its constraint name, into a 409).

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Write;

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// `pending` or `ready` once an avatar has been uploaded.
    pub avatar_status: Option<String>,
    /// Whether a verification link sent to the current address was used.
    pub email_verified: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[tracing::instrument(skip_all)]
pub async fn insert(
    write: &mut Write,
    id: Uuid,
    email: &str,
    name: &str,
    password_hash: &str,
) -> Result<User, sqlx::Error> {
    sqlx::query_as!(
        User,
        "insert into users (id, email, name, password_hash)
         values ($1, $2, $3, $4)
         returning id, email, name, avatar_status,
                   email_verified_at is not null as \"email_verified!\", created_at, updated_at",
        id,
        email,
        name,
        password_hash,
    )
    .fetch_one(&mut **write)
    .await
}

/// What a password check needs: the account, its email (the key its limits count under), its
/// password hash, and the password's version (see `set_password`).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub password_version: i64,
}

/// The credentials of the account with `email`, for login. The hash and its version are read
/// in one statement, so a session made from them names the version of the hash it checked.
#[tracing::instrument(skip_all)]
pub async fn credentials_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as!(
        Credentials,
        // An account being deleted cannot log in: it answers like an unknown email.
        "select id, email, password_hash, password_version from users
          where lower(email) = lower($1) and deletion_requested_at is null",
        email
    )
    .fetch_optional(db)
    .await
}

/// The credentials of account `id`, for the checks of its current password.
#[tracing::instrument(skip_all)]
pub async fn credentials(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as!(
        Credentials,
        "select id, email, password_hash, password_version from users where id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

/// The current version of the account's password; `None` once the account is gone.
#[tracing::instrument(skip_all)]
pub async fn password_version(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!("select password_version from users where id = $1", id)
        .fetch_optional(db)
        .await
}

#[tracing::instrument(skip_all)]
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "select id, email, name, avatar_status,
                email_verified_at is not null as \"email_verified!\", created_at, updated_at
           from users where id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

/// Changes the given fields only; `None` keeps the current value. A changed email (other
/// than by letter case) is no longer verified.
#[tracing::instrument(skip_all)]
pub async fn update_profile(
    write: &mut Write,
    id: Uuid,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "update users
            set name = coalesce($2, name), email = coalesce($3, email), updated_at = now(),
                -- A new address is unverified until a link sent to it is used.
                email_verified_at = case when lower($3) is distinct from lower(email)
                                          and $3 is not null
                                         then null else email_verified_at end
          where id = $1
      returning id, email, name, avatar_status,
                   email_verified_at is not null as \"email_verified!\", created_at, updated_at",
        id,
        name,
        email,
    )
    .fetch_optional(&mut **write)
    .await
}

/// Sets the password and bumps its version, returning the new version. Every way of setting a
/// password goes through here, so every one of them ends the sessions made under the old one.
/// `None` when the account is gone.
#[tracing::instrument(skip_all)]
pub async fn set_password(
    write: &mut Write,
    id: Uuid,
    hash: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "update users
            set password_hash = $2, password_version = password_version + 1, updated_at = now()
          where id = $1
      returning password_version",
        id,
        hash
    )
    .fetch_optional(&mut **write)
    .await
}

/// Marks the email verified, if `email` is still the account's address (a link sent to an
/// address the account has since left verifies nothing); false otherwise.
#[tracing::instrument(skip_all)]
pub async fn mark_email_verified(
    write: &mut Write,
    id: Uuid,
    email: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update users set email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
          where id = $1 and lower(email) = lower($2) and deletion_requested_at is null",
        id,
        email
    )
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The account an email belongs to, with its current address, if it may recover access (not
/// being deleted).
#[tracing::instrument(skip_all)]
pub async fn recoverable_by_email(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let row = sqlx::query!(
        "select id, email from users
          where lower(email) = lower($1) and deletion_requested_at is null",
        email
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.email)))
}

/// Marks the account for deletion; false if it already was.
#[tracing::instrument(skip_all)]
pub async fn mark_for_deletion(write: &mut Write, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update users set deletion_requested_at = now(), updated_at = now()
          where id = $1 and deletion_requested_at is null",
        id
    )
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the account asked to be deleted: `None` once it is gone.
#[tracing::instrument(skip_all)]
pub async fn marked_for_deletion(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select deletion_requested_at is not null as "marked!" from users where id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Deletes an account marked for deletion (not one that was not).
#[tracing::instrument(skip_all)]
pub async fn delete_marked(write: &mut Write, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "delete from users where id = $1 and deletion_requested_at is not null",
        id
    )
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Where a welcome email goes: the address and name of an account not being deleted.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub email: String,
    pub name: String,
}

#[tracing::instrument(skip_all)]
pub async fn recipient(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Recipient>, sqlx::Error> {
    sqlx::query_as!(
        Recipient,
        "select email, name from users where id = $1 and deletion_requested_at is null",
        id
    )
    .fetch_optional(db)
    .await
}

// --- avatars: which file is the user's avatar, and the state of its thumbnail ---------------

/// Locks the account's row for an avatar change and returns its current avatar file, if any.
/// `None` when the account is gone or being deleted. The lock orders two avatar changes of one
/// user, so each sees the other's file as the one it replaces.
#[tracing::instrument(skip_all)]
pub async fn lock_for_avatar(
    write: &mut Write,
    id: Uuid,
) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select avatar_file_id from users
          where id = $1 and deletion_requested_at is null
            for update",
        id
    )
    .fetch_optional(&mut **write)
    .await
}

/// Points the account at a new avatar file, waiting for its thumbnail.
#[tracing::instrument(skip_all)]
pub async fn set_avatar_pending(
    write: &mut Write,
    id: Uuid,
    file: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update users
            set avatar_file_id = $2, avatar_status = 'pending', avatar_thumbnail_key = null,
                updated_at = now()
          where id = $1",
        id,
        file
    )
    .execute(&mut **write)
    .await?;
    Ok(())
}

/// Whether `file` is still the avatar of the account (not replaced, not being deleted).
#[tracing::instrument(skip_all)]
pub async fn has_avatar(
    db: impl PgExecutor<'_>,
    id: Uuid,
    file: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "select 1 as \"one!\" from users
          where id = $1 and avatar_file_id = $2 and deletion_requested_at is null",
        id,
        file
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

/// Marks avatar `file` as undecodable, if it is still the account's avatar.
#[tracing::instrument(skip_all)]
pub async fn set_avatar_failed(write: &mut Write, id: Uuid, file: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update users set avatar_status = 'failed', updated_at = now()
          where id = $1 and avatar_file_id = $2 and deletion_requested_at is null",
        id,
        file
    )
    .execute(&mut **write)
    .await?;
    Ok(())
}

/// Marks avatar `file` ready with its thumbnail; false if it is no longer the account's
/// avatar (replaced, or the account is being deleted).
#[tracing::instrument(skip_all)]
pub async fn set_avatar_ready(
    write: &mut Write,
    id: Uuid,
    file: Uuid,
    thumbnail_key: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update users set avatar_status = 'ready', avatar_thumbnail_key = $3, updated_at = now()
          where id = $1 and avatar_file_id = $2 and deletion_requested_at is null",
        id,
        file,
        thumbnail_key
    )
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Drops the account's avatar reference, so that its files can go.
#[tracing::instrument(skip_all)]
pub async fn unhook_avatar(write: &mut Write, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("update users set avatar_file_id = null where id = $1", id)
        .execute(&mut **write)
        .await?;
    Ok(())
}

/// Where the account's thumbnail is, when its avatar is ready.
#[tracing::instrument(skip_all)]
pub async fn thumbnail_key(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "select avatar_thumbnail_key from users where id = $1 and avatar_status = 'ready'",
        id
    )
    .fetch_optional(db)
    .await?
    .flatten())
}

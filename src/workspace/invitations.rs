//! All SQL on `invitations`, and their tokens: single-use, stored only as a SHA-256 hash,
//! valid for [`VALID_FOR`].

use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Role;
use crate::db::Write;

pub const VALID_FOR: time::Duration = time::Duration::days(7);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub role: String,
    pub invited_by: Option<Uuid>,
    pub expires_at: OffsetDateTime,
    pub accepted_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl Invitation {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }

    /// `pending`, `accepted`, `revoked` or `expired`.
    pub fn status(&self, now: OffsetDateTime) -> &'static str {
        if self.accepted_at.is_some() {
            "accepted"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "pending"
        }
    }
}

const COLUMNS: &str =
    "id, org_id, email, role, invited_by, expires_at, accepted_at, revoked_at, created_at";

/// A new token: 256 random bits, hex. Only its hash is stored.
pub fn new_token() -> String {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    format!("{}{}", a.simple(), b.simple())
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn insert(
    write: &mut Write,
    org: Uuid,
    email: &str,
    role: Role,
    invited_by: Uuid,
) -> Result<Invitation, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into invitations (id, org_id, email, role, invited_by, expires_at)
         values ($1, $2, $3, $4, $5, now() + $6::interval) returning {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(email)
    .bind(role.as_str())
    .bind(invited_by)
    .bind(sqlx::postgres::types::PgInterval {
        months: 0,
        days: 7,
        microseconds: 0,
    })
    .fetch_one(&mut **write)
    .await
}

#[tracing::instrument(skip_all, fields(invitation = %id))]
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Invitation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from invitations where id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A page of `org`'s invitations, oldest first, after `after`.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn list(
    db: impl PgExecutor<'_>,
    org: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Invitation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from invitations
          where org_id = $1 and id > coalesce($2::uuid, '00000000-0000-0000-0000-000000000000')
          order by id limit $3"
    )))
    .bind(org)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Revokes a pending invitation of `org`; `None` if there is no such invitation, else
/// whether it was pending (an accepted one cannot be revoked).
#[tracing::instrument(skip_all, fields(org = %org, invitation = %id))]
pub async fn revoke(write: &mut Write, org: Uuid, id: Uuid) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(
        "with target as (select id, accepted_at, revoked_at from invitations
                          where org_id = $1 and id = $2 for update),
              done as (update invitations set revoked_at = now()
                        where id = (select id from target
                                     where accepted_at is null and revoked_at is null)
                    returning id)
         select exists (select 1 from done) from target",
    )
    .bind(org)
    .bind(id)
    .fetch_optional(&mut **write)
    .await
}

/// The invitation a token names, locked until commit (two accepts of one token cannot
/// both succeed), whatever its state.
#[tracing::instrument(skip_all)]
pub async fn claim_by_token(
    write: &mut Write,
    token: &str,
) -> Result<Option<Invitation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from invitations where token_hash = $1 for update"
    )))
    .bind(hash_token(token))
    .fetch_optional(&mut **write)
    .await
}

/// What the email job needs of a pending invitation that has not been emailed yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ToSend {
    pub email: String,
    pub org_name: String,
    pub role: String,
    pub expires_at: OffsetDateTime,
}

/// Gives a pending, not yet emailed invitation the token `token` (its hash); `None` when
/// there is nothing to send (emailed already, revoked, accepted, expired, or gone).
pub async fn issue_token(
    write: &mut Write,
    id: Uuid,
    token: &str,
) -> Result<Option<ToSend>, sqlx::Error> {
    sqlx::query_as(
        "update invitations i set token_hash = $2
           from organizations o
          where i.id = $1 and o.id = i.org_id and o.deletion_requested_at is null
            and i.emailed_at is null and i.accepted_at is null and i.revoked_at is null
            and i.expires_at > now()
      returning i.email, o.name as org_name, i.role, i.expires_at",
    )
    .bind(id)
    .bind(hash_token(token))
    .fetch_optional(&mut **write)
    .await
}

pub async fn mark_emailed(write: &mut Write, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update invitations set emailed_at = now() where id = $1")
        .bind(id)
        .execute(&mut **write)
        .await?;
    Ok(())
}

pub async fn mark_accepted(write: &mut Write, id: Uuid, by: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update invitations set accepted_at = now(), accepted_by = $2 where id = $1")
        .bind(id)
        .bind(by)
        .execute(&mut **write)
        .await?;
    Ok(())
}

/// Deletes up to `limit` of `org`'s invitations; how many went.
pub async fn delete_batch_of_org(
    write: &mut Write,
    org: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from invitations where id in (select id from invitations where org_id = $1 limit $2)",
    )
    .bind(org)
    .bind(limit)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

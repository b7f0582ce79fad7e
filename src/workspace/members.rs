//! All SQL on `memberships`: who belongs to which organization, in which role.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Role;
use crate::db::Write;

/// A member, with the public parts of their account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub role: String,
    pub created_at: OffsetDateTime,
}

impl Member {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }
}

const MEMBER: &str = "select m.user_id, u.name, u.email, m.role, m.created_at
                        from memberships m join users u on u.id = m.user_id";

/// `user`'s role in `org`, if they are a member of an organization that is not being
/// deleted: the one question every request under `/orgs/{org_id}` asks first.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn role_of(
    db: impl PgExecutor<'_>,
    org: Uuid,
    user: Uuid,
) -> Result<Option<Role>, sqlx::Error> {
    let role: Option<String> = sqlx::query_scalar(
        "select m.role from memberships m join organizations o on o.id = m.org_id
          where m.org_id = $1 and m.user_id = $2 and o.deletion_requested_at is null",
    )
    .bind(org)
    .bind(user)
    .fetch_optional(db)
    .await?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// [`role_of`] inside a write, locking the membership row until commit: a role checked here
/// cannot be changed or removed by a concurrent request before this write commits.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn role_of_locked(
    write: &mut Write,
    org: Uuid,
    user: Uuid,
) -> Result<Option<Role>, sqlx::Error> {
    let role: Option<String> = sqlx::query_scalar(
        "select m.role from memberships m join organizations o on o.id = m.org_id
          where m.org_id = $1 and m.user_id = $2 and o.deletion_requested_at is null
            for share of m, o",
    )
    .bind(org)
    .bind(user)
    .fetch_optional(&mut **write)
    .await?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// Adds a member; `None` if they already are one.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn insert(
    write: &mut Write,
    org: Uuid,
    user: Uuid,
    role: Role,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as(
        "with added as (
           insert into memberships (org_id, user_id, role) values ($1, $2, $3)
           on conflict do nothing
           returning user_id, role, created_at)
         select a.user_id, u.name, u.email, a.role, a.created_at
           from added a join users u on u.id = a.user_id",
    )
    .bind(org)
    .bind(user)
    .bind(role.as_str())
    .fetch_optional(&mut **write)
    .await
}

#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn find(
    db: impl PgExecutor<'_>,
    org: Uuid,
    user: Uuid,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{MEMBER} where m.org_id = $1 and m.user_id = $2"
    )))
    .bind(org)
    .bind(user)
    .fetch_optional(db)
    .await
}

/// A page of `org`'s members, by user id (time-ordered), after `after`.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn list(
    db: impl PgExecutor<'_>,
    org: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{MEMBER} where m.org_id = $1 and m.user_id > coalesce($2::uuid, '00000000-0000-0000-0000-000000000000')
          order by m.user_id limit $3"
    )))
    .bind(org)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Locks every owner row of `org` and answers how many owners there are: a change that
/// could leave the organization without an owner holds these locks until it commits, so two
/// owners cannot demote each other at once.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn lock_owners(write: &mut Write, org: Uuid) -> Result<i64, sqlx::Error> {
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "select user_id from memberships where org_id = $1 and role = 'owner'
          order by user_id for update",
    )
    .bind(org)
    .fetch_all(&mut **write)
    .await?;
    Ok(owners.len() as i64)
}

#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn set_role(
    write: &mut Write,
    org: Uuid,
    user: Uuid,
    role: Role,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as(
        "with changed as (
           update memberships set role = $3 where org_id = $1 and user_id = $2
           returning user_id, role, created_at)
         select c.user_id, u.name, u.email, c.role, c.created_at
           from changed c join users u on u.id = c.user_id",
    )
    .bind(org)
    .bind(user)
    .bind(role.as_str())
    .fetch_optional(&mut **write)
    .await
}

/// Removes a member (their tasks become unassigned, by the reference's `set null`).
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn remove(write: &mut Write, org: Uuid, user: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from memberships where org_id = $1 and user_id = $2")
        .bind(org)
        .bind(user)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// An organization as account deletion sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Standing {
    pub org_id: Uuid,
    pub slug: String,
    /// The account is an owner, and no other member is.
    pub only_owner: bool,
    /// Nobody else is a member.
    pub alone: bool,
}

/// Every organization `user` belongs to, with whether they hold it alone: what decides
/// whether the account may be deleted (`only_owner && !alone` blocks it) and which
/// organizations go with it (`alone`).
#[tracing::instrument(skip_all)]
pub async fn standing_of(
    db: impl PgExecutor<'_>,
    user: Uuid,
) -> Result<Vec<Standing>, sqlx::Error> {
    sqlx::query_as(
        "select m.org_id, o.slug,
                m.role = 'owner' and not exists (
                  select 1 from memberships x
                   where x.org_id = m.org_id and x.user_id <> m.user_id and x.role = 'owner'
                ) as only_owner,
                not exists (
                  select 1 from memberships x where x.org_id = m.org_id and x.user_id <> m.user_id
                ) as alone
           from memberships m join organizations o on o.id = m.org_id
          where m.user_id = $1 and o.deletion_requested_at is null
          order by o.slug",
    )
    .bind(user)
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` of `org`'s memberships; how many went.
pub async fn delete_batch_of_org(
    write: &mut Write,
    org: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from memberships where (org_id, user_id) in
           (select org_id, user_id from memberships where org_id = $1 limit $2)",
    )
    .bind(org)
    .bind(limit)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

/// Removes every membership of `user` (their account is going).
pub async fn remove_all_of_user(write: &mut Write, user: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from memberships where user_id = $1")
        .bind(user)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected())
}

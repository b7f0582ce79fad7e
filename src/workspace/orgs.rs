//! All SQL on `organizations`. An organization whose deletion was requested is gone to every
//! query here but the deletion job's.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Role;
use crate::db::Write;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An organization with the caller's role in it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgOfMember {
    #[sqlx(flatten)]
    pub org: Org,
    pub role: String,
}

impl OrgOfMember {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }
}

#[tracing::instrument(skip_all, fields(org = %id))]
pub async fn insert(
    write: &mut Write,
    id: Uuid,
    name: &str,
    slug: &str,
) -> Result<Org, sqlx::Error> {
    sqlx::query_as(
        "insert into organizations (id, name, slug) values ($1, $2, $3)
         returning id, name, slug, created_at, updated_at",
    )
    .bind(id)
    .bind(name)
    .bind(slug)
    .fetch_one(&mut **write)
    .await
}

#[tracing::instrument(skip_all, fields(org = %id))]
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Org>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, slug, created_at, updated_at from organizations
          where id = $1 and deletion_requested_at is null",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A page of `user`'s organizations, in the order they were created, after `after`.
#[tracing::instrument(skip_all)]
pub async fn list_of_member(
    db: impl PgExecutor<'_>,
    user: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrgOfMember>, sqlx::Error> {
    sqlx::query_as(
        "select o.id, o.name, o.slug, o.created_at, o.updated_at, m.role
           from memberships m
           join organizations o on o.id = m.org_id
          where m.user_id = $1 and o.deletion_requested_at is null
            and m.org_id > coalesce($2::uuid, '00000000-0000-0000-0000-000000000000')
          order by m.org_id
          limit $3",
    )
    .bind(user)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[tracing::instrument(skip_all, fields(org = %id))]
pub async fn update(
    write: &mut Write,
    id: Uuid,
    name: Option<&str>,
    slug: Option<&str>,
) -> Result<Option<Org>, sqlx::Error> {
    sqlx::query_as(
        "update organizations
            set name = coalesce($2, name), slug = coalesce($3, slug), updated_at = now()
          where id = $1 and deletion_requested_at is null
      returning id, name, slug, created_at, updated_at",
    )
    .bind(id)
    .bind(name)
    .bind(slug)
    .fetch_optional(&mut **write)
    .await
}

/// Marks the organization for deletion; false if it is gone or already marked.
#[tracing::instrument(skip_all, fields(org = %id))]
pub async fn mark_for_deletion(write: &mut Write, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update organizations set deletion_requested_at = now()
          where id = $1 and deletion_requested_at is null",
    )
    .bind(id)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether `id` is marked for deletion (`None`: gone already).
pub async fn marked_for_deletion(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("select deletion_requested_at is not null from organizations where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Deletes a marked organization once its rows are gone (the last step of the job).
pub async fn delete_marked(write: &mut Write, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "delete from organizations where id = $1 and deletion_requested_at is not null",
    )
    .bind(id)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected() > 0)
}

//! All SQL on `projects`.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Write;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: String,
    pub created_by: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, org_id, name, description, created_by, created_at, updated_at";

#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn insert(
    write: &mut Write,
    org: Uuid,
    id: Uuid,
    name: &str,
    description: &str,
    creator: Uuid,
) -> Result<Project, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into projects (id, org_id, name, description, created_by)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    )))
    .bind(id)
    .bind(org)
    .bind(name)
    .bind(description)
    .bind(creator)
    .fetch_one(&mut **write)
    .await
}

#[tracing::instrument(skip_all, fields(org = %org, project = %id))]
pub async fn find(
    db: impl PgExecutor<'_>,
    org: Uuid,
    id: Uuid,
) -> Result<Option<Project>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from projects where org_id = $1 and id = $2"
    )))
    .bind(org)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The project, with its row locked until `write` ends: the version a conditional change
/// (`If-Match`) compares with cannot change before the change is made.
#[tracing::instrument(skip_all, fields(org = %org, project = %id))]
pub async fn find_locked(
    write: &mut Write,
    org: Uuid,
    id: Uuid,
) -> Result<Option<Project>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from projects where org_id = $1 and id = $2 for update"
    )))
    .bind(org)
    .bind(id)
    .fetch_optional(&mut **write)
    .await
}

/// A page of `org`'s projects, oldest first, after `after`.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn list(
    db: impl PgExecutor<'_>,
    org: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Project>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from projects
          where org_id = $1 and id > coalesce($2::uuid, '00000000-0000-0000-0000-000000000000')
          order by id limit $3"
    )))
    .bind(org)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[tracing::instrument(skip_all, fields(org = %org, project = %id))]
pub async fn update(
    write: &mut Write,
    org: Uuid,
    id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Option<Project>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update projects
            set name = coalesce($3, name), description = coalesce($4, description),
                updated_at = now()
          where org_id = $1 and id = $2
      returning {COLUMNS}"
    )))
    .bind(org)
    .bind(id)
    .bind(name)
    .bind(description)
    .fetch_optional(&mut **write)
    .await
}

/// Deletes a project and everything in it (its tasks' comments, its tasks); false if there
/// was no such project in `org`.
#[tracing::instrument(skip_all, fields(org = %org, project = %id))]
pub async fn delete(write: &mut Write, org: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    super::tasks::delete_all_of_project(write, org, id).await?;
    let done = sqlx::query("delete from projects where org_id = $1 and id = $2")
        .bind(org)
        .bind(id)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes up to `limit` of `org`'s projects that have no tasks left; how many went.
pub async fn delete_batch_of_org(
    write: &mut Write,
    org: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from projects where id in (select id from projects where org_id = $1 limit $2)",
    )
    .bind(org)
    .bind(limit)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

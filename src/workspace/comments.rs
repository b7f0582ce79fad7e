//! All SQL on `comments`.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Write;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Comment {
    pub id: Uuid,
    pub task_id: Uuid,
    pub author_id: Option<Uuid>,
    pub author_name: Option<String>,
    pub body: String,
    pub created_at: OffsetDateTime,
}

/// Adds a comment to task `task` of project `project` in `org`; `None` if there is no such
/// task (the insert names all three, so a task of another organization is never reached).
#[tracing::instrument(skip_all, fields(org = %org, task = %task))]
pub async fn insert(
    write: &mut Write,
    org: Uuid,
    project: Uuid,
    task: Uuid,
    author: Uuid,
    body: &str,
) -> Result<Option<Comment>, sqlx::Error> {
    sqlx::query_as(
        "with added as (
           insert into comments (id, org_id, task_id, author_id, body)
           select $1, $2, t.id, $5, $6 from tasks t
            where t.org_id = $2 and t.project_id = $3 and t.id = $4
           returning id, task_id, author_id, body, created_at)
         select a.id, a.task_id, a.author_id, u.name as author_name, a.body, a.created_at
           from added a left join users u on u.id = a.author_id",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(project)
    .bind(task)
    .bind(author)
    .bind(body)
    .fetch_optional(&mut **write)
    .await
}

/// A page of a task's comments, oldest first, after `after`.
#[tracing::instrument(skip_all, fields(org = %org, task = %task))]
pub async fn list(
    db: impl PgExecutor<'_>,
    org: Uuid,
    task: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Comment>, sqlx::Error> {
    sqlx::query_as(
        "select c.id, c.task_id, c.author_id, u.name as author_name, c.body, c.created_at
           from comments c left join users u on u.id = c.author_id
          where c.task_id = $2 and c.org_id = $1 and c.id > coalesce($3::uuid, '00000000-0000-0000-0000-000000000000')
          order by c.id limit $4",
    )
    .bind(org)
    .bind(task)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` of `org`'s comments; how many went.
pub async fn delete_batch_of_org(
    write: &mut Write,
    org: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from comments where id in (select id from comments where org_id = $1 limit $2)",
    )
    .bind(org)
    .bind(limit)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

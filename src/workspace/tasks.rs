//! All SQL on `tasks`. Lists carry the assignee's name and the comment count by join, in the
//! one statement that reads the page.

use sqlx::PgExecutor;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::db::Write;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Task {
    pub id: Uuid,
    pub org_id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub assignee_name: Option<String>,
    pub due_date: Option<Date>,
    pub created_by: Option<Uuid>,
    pub comment_count: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The statuses a task can have.
pub const STATUSES: [&str; 3] = ["todo", "doing", "done"];

/// The task columns, assignee name and comment count, from `t` (tasks).
const SELECT: &str = "select t.id, t.org_id, t.project_id, t.title, t.description, t.status,
        t.assignee_id, a.name as assignee_name, t.due_date, t.created_by,
        (select count(*) from comments c where c.task_id = t.id) as comment_count,
        t.created_at, t.updated_at
   from tasks t left join users a on a.id = t.assignee_id";

#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub project_id: Uuid,
    pub title: &'a str,
    pub description: &'a str,
    pub status: &'a str,
    pub assignee_id: Option<Uuid>,
    pub due_date: Option<Date>,
    pub created_by: Uuid,
}

/// Records a task. An assignee who is not a member of the organization, or a project of
/// another organization, is refused by the table's references (see `error.rs`).
#[tracing::instrument(skip_all, fields(org = %task.org_id))]
pub async fn insert(write: &mut Write, task: &NewTask<'_>) -> Result<Task, sqlx::Error> {
    sqlx::query(
        "insert into tasks (id, org_id, project_id, title, description, status, assignee_id,
                            due_date, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(task.id)
    .bind(task.org_id)
    .bind(task.project_id)
    .bind(task.title)
    .bind(task.description)
    .bind(task.status)
    .bind(task.assignee_id)
    .bind(task.due_date)
    .bind(task.created_by)
    .execute(&mut **write)
    .await?;
    find(&mut **write, task.org_id, task.project_id, task.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

#[tracing::instrument(skip_all, fields(org = %org, task = %id))]
pub async fn find(
    db: impl PgExecutor<'_>,
    org: Uuid,
    project: Uuid,
    id: Uuid,
) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} where t.org_id = $1 and t.project_id = $2 and t.id = $3"
    )))
    .bind(org)
    .bind(project)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The task as [`find`] reads it, with its row locked until `write` ends: the version a
/// conditional change (`If-Match`) compares with cannot change before the change is made.
#[tracing::instrument(skip_all, fields(org = %org, task = %id))]
pub async fn find_locked(
    write: &mut Write,
    org: Uuid,
    project: Uuid,
    id: Uuid,
) -> Result<Option<Task>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} where t.org_id = $1 and t.project_id = $2 and t.id = $3 for update of t"
    )))
    .bind(org)
    .bind(project)
    .bind(id)
    .fetch_optional(&mut **write)
    .await
}

/// What a task list is filtered by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub status: Option<&'a str>,
    pub assignee: Option<Uuid>,
}

/// A page of a project's tasks, oldest first, after `after`.
#[tracing::instrument(skip_all, fields(org = %org, project = %project))]
pub async fn list(
    db: impl PgExecutor<'_>,
    org: Uuid,
    project: Uuid,
    filter: Filter<'_>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Task>, sqlx::Error> {
    // One statement per combination of filters, not `($n is null or ...)`: a prepared
    // statement's generic plan cannot drop a condition it does not know is void, and then
    // walks the project's whole index instead of the filter's own.
    let status = if filter.status.is_some() {
        "and t.status = $5"
    } else {
        "and $5::text is null"
    };
    let assignee = if filter.assignee.is_some() {
        "and t.assignee_id = $6"
    } else {
        "and $6::uuid is null"
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT}
          where t.org_id = $1 and t.project_id = $2 {status} {assignee}
            and t.id > coalesce($3::uuid, '00000000-0000-0000-0000-000000000000')
          order by t.project_id, t.id limit $4"
    )))
    .bind(org)
    .bind(project)
    .bind(after)
    .bind(limit)
    .bind(filter.status)
    .bind(filter.assignee)
    .fetch_all(db)
    .await
}

/// The fields a change sets; `None` leaves one as it is, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub status: Option<&'a str>,
    pub assignee_id: Option<Option<Uuid>>,
    pub due_date: Option<Option<Date>>,
}

#[tracing::instrument(skip_all, fields(org = %org, task = %id))]
pub async fn update(
    write: &mut Write,
    org: Uuid,
    project: Uuid,
    id: Uuid,
    change: &Change<'_>,
) -> Result<Option<Task>, sqlx::Error> {
    let done = sqlx::query(
        "update tasks
            set title = coalesce($4, title),
                description = coalesce($5, description),
                status = coalesce($6, status),
                assignee_id = case when $7 then $8 else assignee_id end,
                due_date = case when $9 then $10 else due_date end,
                updated_at = now()
          where org_id = $1 and project_id = $2 and id = $3",
    )
    .bind(org)
    .bind(project)
    .bind(id)
    .bind(change.title)
    .bind(change.description)
    .bind(change.status)
    .bind(change.assignee_id.is_some())
    .bind(change.assignee_id.flatten())
    .bind(change.due_date.is_some())
    .bind(change.due_date.flatten())
    .execute(&mut **write)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    find(&mut **write, org, project, id).await
}

/// Deletes a task and its comments; false if there was no such task.
#[tracing::instrument(skip_all, fields(org = %org, task = %id))]
pub async fn delete(
    write: &mut Write,
    org: Uuid,
    project: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "delete from comments where org_id = $1 and task_id = (
           select id from tasks where org_id = $1 and project_id = $2 and id = $3)",
    )
    .bind(org)
    .bind(project)
    .bind(id)
    .execute(&mut **write)
    .await?;
    let done = sqlx::query("delete from tasks where org_id = $1 and project_id = $2 and id = $3")
        .bind(org)
        .bind(project)
        .bind(id)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes every task of a project, and their comments.
pub async fn delete_all_of_project(
    write: &mut Write,
    org: Uuid,
    project: Uuid,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "delete from comments where org_id = $1
            and task_id in (select id from tasks where org_id = $1 and project_id = $2)",
    )
    .bind(org)
    .bind(project)
    .execute(&mut **write)
    .await?;
    let done = sqlx::query("delete from tasks where org_id = $1 and project_id = $2")
        .bind(org)
        .bind(project)
        .execute(&mut **write)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` of `org`'s tasks that have no comments left; how many went.
pub async fn delete_batch_of_org(
    write: &mut Write,
    org: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from tasks where id in (select id from tasks where org_id = $1 limit $2)",
    )
    .bind(org)
    .bind(limit)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

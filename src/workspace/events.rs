//! All SQL on `events`, the activity log: appended in the same unit of work as the change it
//! records, read newest first per organization.

use serde_json::Value;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Write;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub actor_name: Option<String>,
    pub kind: String,
    pub subject_id: Uuid,
    pub payload: Value,
    pub created_at: OffsetDateTime,
}

/// Records that `actor` did `kind` to `subject` in `org`.
#[tracing::instrument(skip_all, fields(org = %org, kind))]
pub async fn append(
    write: &mut Write,
    org: Uuid,
    actor: Uuid,
    kind: &str,
    subject: Uuid,
    payload: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into events (id, org_id, actor_id, kind, subject_id, payload)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(actor)
    .bind(kind)
    .bind(subject)
    .bind(payload)
    .execute(&mut **write)
    .await?;
    Ok(())
}

/// A page of `org`'s feed, newest first, older than `before`.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn feed(
    db: impl PgExecutor<'_>,
    org: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "select e.id, e.actor_id, u.name as actor_name, e.kind, e.subject_id, e.payload,
                e.created_at
           from events e left join users u on u.id = e.actor_id
          where e.org_id = $1 and e.id < coalesce($2::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
          order by e.id desc
          limit $3",
    )
    .bind(org)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Deletes up to `limit` of `org`'s events; how many went.
pub async fn delete_batch_of_org(
    write: &mut Write,
    org: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from events where org_id = $1 and id in (select id from events where org_id = $1 limit $2)",
    )
    .bind(org)
    .bind(limit)
    .execute(&mut **write)
    .await?;
    Ok(done.rows_affected())
}

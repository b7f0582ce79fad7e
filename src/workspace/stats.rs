//! An organization's dashboard: tasks per status per project, open tasks per assignee, member
//! count and the last 7 days of activity. One statement, every part of it an index(-only)
//! range scan that starts at the tenant (see `migrations/20261124007001_stats_indexes.sql`),
//! served through the Redis cache ([`StatsCache`]).
//!
//! Every change of an organization writes an activity event, and the activity is part of the
//! dashboard: so every write site that appends an event invalidates the organization's entry
//! after its commit ([`StatsCache::invalidate`]), as do the deletion of the organization and
//! the end of an account's memberships.

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use sqlx::types::Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::cache::{Cache, CacheError, Source};
use crate::config::CacheConfig;
use crate::db::{Caller, Db};
use crate::redis_client::RedisClient;

/// The cache's name: in keys (`cache:stats:{org}`) and in the metrics' `cache` label.
pub const CACHE: &str = "stats";

/// At most this many projects and assignees are listed (the totals count them all): the
/// answer's size is bounded whatever the organization's.
pub const LIST_LIMIT: i64 = 200;

/// An organization's dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrgStats {
    /// Members of the organization.
    pub members: i64,
    /// Projects of the organization (all of them; `projects` lists the oldest 200).
    pub projects_total: i64,
    /// Tasks per status in each project, oldest project first.
    pub projects: Vec<ProjectStats>,
    /// Tasks not done, per assignee, most first (up to 200 assignees; unassigned tasks are
    /// not listed).
    pub open_tasks_by_assignee: Vec<AssigneeStats>,
    pub activity: Activity,
    /// When this dashboard was computed (RFC 3339): a cached one is older than the request.
    pub computed_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ProjectStats {
    pub project_id: Uuid,
    pub name: String,
    pub todo: i64,
    pub doing: i64,
    pub done: i64,
}

/// An assignee by id only: a name would be cached with the dashboard, and renaming an account
/// does not invalidate the dashboards of its organizations (`GET /users/{id}` has the name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssigneeStats {
    pub user_id: Uuid,
    pub open: i64,
}

/// Events of the activity log in the last 7 days (rolling), in total and per UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Activity {
    pub last_7_days: i64,
    /// Days with events only, oldest first.
    pub by_day: Vec<DayActivity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DayActivity {
    /// A UTC date, `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub day: String,
    pub events: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    members: i64,
    projects_total: i64,
    projects: Json<Vec<ProjectStats>>,
    open_tasks_by_assignee: Json<Vec<AssigneeStats>>,
    activity: Json<Vec<DayActivity>>,
}

/// The smallest UUIDv7 of the millisecond `unix_ms`: events' ids are UUIDv7, so "since then"
/// is a range of the events' primary key `(org_id, id)`, no timestamp index needed.
fn first_v7_of(unix_ms: i128) -> Uuid {
    let ms = u128::try_from(unix_ms.max(0)).unwrap_or(0) & ((1 << 48) - 1);
    Uuid::from_u128(ms << 80)
}

/// Computes `org`'s dashboard in one statement:
/// - tasks per (project, status): index-only on `tasks (org_id, project_id, status)`;
/// - open tasks per assignee: index-only on the partial `tasks (org_id, assignee_id) where
///   status <> 'done'`;
/// - members: index-only on `memberships`' key `(org_id, user_id)`;
/// - activity: a range of `events`' key `(org_id, id)`; the day of an event comes from its id
///   (UUIDv7's first 48 bits are its creation time in milliseconds), so the rows' heap is not
///   read either.
#[tracing::instrument(skip_all, fields(org = %org))]
pub async fn compute(db: impl PgExecutor<'_>, org: Uuid) -> Result<OrgStats, sqlx::Error> {
    let now = OffsetDateTime::now_utc();
    let since = first_v7_of((now.unix_timestamp_nanos() / 1_000_000) - 7 * 24 * 3600 * 1000);
    let row: Row = sqlx::query_as(
        "with counts as (
             select project_id, status, count(*) as n
               from tasks where org_id = $1
              group by project_id, status
         ), listed as (
             select p.id, p.name from projects p where p.org_id = $1 order by p.id limit $3
         ), open_tasks as (
             select assignee_id, count(*) as n
               from tasks
              where org_id = $1 and status <> 'done' and assignee_id is not null
              group by assignee_id
              order by count(*) desc, assignee_id
              limit $3
         ), activity as (
             select (to_timestamp(('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
                                  / 1000.0) at time zone 'UTC')::date as day,
                    count(*) as n
               from events
              where org_id = $1 and id >= $2
              group by 1
         )
         select
           (select count(*) from memberships where org_id = $1) as members,
           (select count(*) from projects where org_id = $1) as projects_total,
           coalesce((select json_agg(json_build_object(
                       'project_id', l.id, 'name', l.name,
                       'todo', coalesce((select n from counts c where c.project_id = l.id and c.status = 'todo'), 0),
                       'doing', coalesce((select n from counts c where c.project_id = l.id and c.status = 'doing'), 0),
                       'done', coalesce((select n from counts c where c.project_id = l.id and c.status = 'done'), 0))
                     order by l.id) from listed l), '[]') as projects,
           coalesce((select json_agg(json_build_object('user_id', o.assignee_id, 'open', o.n)
                     order by o.n desc, o.assignee_id)
                       from open_tasks o), '[]')
             as open_tasks_by_assignee,
           coalesce((select json_agg(json_build_object('day', a.day, 'events', a.n) order by a.day)
                       from activity a), '[]') as activity",
    )
    .bind(org)
    .bind(since)
    .bind(LIST_LIMIT)
    .fetch_one(db)
    .await?;
    let by_day = row.activity.0;
    Ok(OrgStats {
        members: row.members,
        projects_total: row.projects_total,
        projects: row.projects.0,
        open_tasks_by_assignee: row.open_tasks_by_assignee.0,
        activity: Activity {
            last_7_days: by_day.iter().map(|d| d.events).sum(),
            by_day,
        },
        computed_at: now.format(&Rfc3339).unwrap_or_default(),
    })
}

/// The dashboard through the cache: per organization, invalidated by writes, recomputed by one
/// request at a time, read from the database when Redis is away (see `crate::cache`). The
/// API instances and the worker (which invalidates) each hold one, on the cache's Redis
/// (`CACHE_REDIS_URL`).
#[derive(Debug, Clone)]
pub struct StatsCache {
    db: Db,
    cache: Cache,
}

impl StatsCache {
    /// `redis`: the cache's client (`CacheConfig::redis`), not the sessions'.
    pub fn new(db: Db, redis: RedisClient, config: CacheConfig) -> Self {
        Self {
            cache: Cache::new(CACHE, redis, config),
            db,
        }
    }

    /// `org`'s dashboard as `caller` may read it: never older than the caller's own writes
    /// nor than any write whose invalidation has run. [`CacheError::Busy`] when another
    /// request's recompute outlasts `STATS_CACHE_WAIT_MS` and nothing stale can be served.
    pub async fn read(
        &self,
        caller: &Caller,
        org: Uuid,
    ) -> Result<OrgStats, CacheError<sqlx::Error>> {
        let db = &self.db;
        self.cache
            .get(&org.to_string(), |source| async move {
                match source {
                    // A value that will be stored: from a server that has replayed every
                    // invalidated write (a lagging replica's view would outlive its lag).
                    Source::After(position) => {
                        db.read_after(position, |pool| async move { compute(&pool, org).await })
                            .await
                    }
                    // Past invalidations' positions are unknown: only the primary is sure.
                    Source::Primary => compute(db.read_primary(), org).await,
                    Source::Caller => {
                        db.read(caller, |pool| async move { compute(&pool, org).await })
                            .await
                    }
                }
            })
            .await
    }

    /// Voids `org`'s dashboard on every instance, recording the primary's WAL insert position
    /// read now (after the caller's commit, so at least the commit's): later recomputes read a
    /// server that has replayed it. Call once the write that changed it has committed. If the
    /// position cannot be read, only the next recompute reads the primary. Runs to its end
    /// even if the caller is dropped (see [`Cache::invalidate_after`]); never fails.
    pub async fn invalidate(&self, org: Uuid) {
        let db = self.db.clone();
        let position = async move {
            match db.primary_position().await {
                Ok(position) => Some(position),
                Err(e) => {
                    tracing::warn!(error = %e, "write position unknown; the next recompute reads the primary");
                    None
                }
            }
        };
        self.cache
            .invalidate_after(&org.to_string(), position)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_v7_of_a_millisecond_sorts_before_every_id_made_in_it() {
        let id = Uuid::now_v7();
        let ms = i128::from(id.get_timestamp().expect("v7").to_unix().0) * 1000
            + i128::from(id.get_timestamp().expect("v7").to_unix().1 / 1_000_000);
        let first = first_v7_of(ms);
        assert!(first <= id, "{first} > {id}");
        assert!(first_v7_of(ms + 1) > id);
    }
}

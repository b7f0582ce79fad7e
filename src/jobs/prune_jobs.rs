//! Retention for the job queue: succeeded jobs finished more than `JOBS_RETENTION_DAYS` ago
//! are deleted, with the `sent_emails` rows that made their emails idempotent (once the job is
//! gone, nothing can run it again, and the row holds a recipient's address). Failed jobs are
//! kept for inspection. Runs on a schedule (see `schedule`), once per interval across workers.
//!
//! Idempotent: it deletes what is old enough; a second run finds less or nothing.

use serde::{Deserialize, Serialize};

use super::QUEUE;
use super::worker::JobContext;
use crate::db::Writer;

const BATCH: i64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneJobs {
    /// The schedule slot this run belongs to (its deduplication key).
    pub slot: i64,
}

impl PruneJobs {
    #[tracing::instrument(skip_all, fields(slot = self.slot))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        let days = i32::try_from(ctx.state.config.jobs.retention_days).unwrap_or(i32::MAX);
        let mut pruned = 0;
        loop {
            let mut tx = db.begin(Writer::System).await?;
            let ids = sqlx::query_scalar!(
                "delete from apalis.jobs
                  where id in (select id from apalis.jobs
                                where job_type = $1 and status = 'Done'
                                  and done_at < now() - make_interval(days => $2)
                                limit $3)
              returning id",
                QUEUE,
                days,
                BATCH
            )
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                break;
            }
            sqlx::query!("delete from sent_emails where job_id = any($1)", &ids)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            pruned += ids.len();
        }
        tracing::info!(pruned, "old succeeded jobs pruned");
        Ok(())
    }
}

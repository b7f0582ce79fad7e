//! A synthetic job that proves the pipeline end to end: enqueue, pick-up, retries with backoff,
//! failure after the last attempt, recovery from a dead worker. It fails its first
//! `fail_attempts` attempts on purpose and can hold a worker for `hold_ms` first, so those
//! paths can be watched happening (the test suite does; an operator can too).
//!
//! Idempotent: its effect is one `canary_effects` row per job, whatever the number of runs;
//! `runs` counts how often the effect was reached.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::worker::JobContext;
use crate::db::Writer;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canary {
    /// Attempts 1..=fail_attempts fail.
    pub fail_attempts: u32,
    /// Work time before the effect.
    pub hold_ms: u64,
    pub max_attempts: u32,
    /// The first retry's delay, instead of `JOBS_BACKOFF_BASE_MS`: a long one keeps the job
    /// visibly queued between attempts, for as long as someone needs to look at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

impl Canary {
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        // Each attempt's start, once: the gaps between attempts show the backoff.
        let mut write = db.begin(Writer::System).await?;
        sqlx::query!(
            "insert into canary_attempts (job_id, attempt) values ($1, $2)
             on conflict (job_id, attempt) do nothing",
            ctx.job_id,
            i32::try_from(ctx.attempt).unwrap_or(i32::MAX)
        )
        .execute(&mut *write)
        .await?;
        write.commit().await?;
        tokio::time::sleep(Duration::from_millis(self.hold_ms)).await;
        if ctx.attempt <= self.fail_attempts {
            anyhow::bail!(
                "canary: attempt {} of the {} meant to fail",
                ctx.attempt,
                self.fail_attempts
            );
        }
        let mut write = db.begin(Writer::System).await?;
        sqlx::query!(
            "insert into canary_effects (job_id) values ($1)
             on conflict (job_id) do update set runs = canary_effects.runs + 1",
            ctx.job_id
        )
        .execute(&mut *write)
        .await?;
        write.commit().await?;
        Ok(())
    }
}

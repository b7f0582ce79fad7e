//! Recurring jobs, once per interval across all workers.
//!
//! Every worker process ticks; each tick offers the job for the current slot
//! (`floor(now / interval)`) with an idempotency key naming that slot. apalis' unique index on
//! (queue, idempotency key) lets exactly one insert per slot succeed, whichever worker gets there
//! first, so adding workers never multiplies the job, and a worker that is down never skips it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Envelope, Job, QUEUE, prune_jobs::PruneJobs, purge_uploads::PurgeUploads};

/// The slot of `now` for `interval`.
pub fn slot(now: SystemTime, interval: Duration) -> i64 {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    (secs / interval.as_secs().max(1)) as i64
}

/// Offers the purge of abandoned uploads for `slot`; true if this call created it.
pub async fn offer_purge(
    db: &sqlx::PgPool,
    interval: Duration,
    slot: i64,
) -> Result<bool, sqlx::Error> {
    let key = format!("purge_uploads:{}s:{slot}", interval.as_secs());
    offer(db, Job::PurgeUploads(PurgeUploads { slot }), &key).await
}

/// Offers the pruning of old succeeded jobs for `slot`; true if this call created it.
pub async fn offer_prune(
    db: &sqlx::PgPool,
    interval: Duration,
    slot: i64,
) -> Result<bool, sqlx::Error> {
    let key = format!("prune_jobs:{}s:{slot}", interval.as_secs());
    offer(db, Job::PruneJobs(PruneJobs { slot }), &key).await
}

/// Inserts `job` unless a job with the idempotency key `key` exists already.
async fn offer(db: &sqlx::PgPool, job: Job, key: &str) -> Result<bool, sqlx::Error> {
    let max_attempts = job.max_attempts() as i32;
    let envelope = Envelope {
        job,
        owner: None,
        trace: Default::default(),
        lsn: None,
    };
    let bytes = serde_json::to_vec(&envelope).map_err(|e| sqlx::Error::Encode(e.into()))?;
    // The same row apalis' push would write, plus ON CONFLICT, which its push lacks.
    let inserted = sqlx::query!(
        "insert into apalis.jobs
             (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
         values ($1, $2, $3, 'Pending', 0, $4, now(), 0, $5)
         on conflict (job_type, idempotency_key) do nothing",
        ulid::Ulid::generate().to_string(),
        QUEUE,
        bytes,
        max_attempts,
        key
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Offers each slot's purge as its time comes, until `stop` resolves.
pub async fn run(
    db: sqlx::PgPool,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(interval.min(Duration::from_secs(60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let slot = slot(SystemTime::now(), interval);
                match offer_purge(&db, interval, slot).await {
                    Ok(true) => tracing::info!(slot, "scheduled the purge of abandoned uploads"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not offer the scheduled purge"),
                }
                match offer_prune(&db, interval, slot).await {
                    Ok(true) => tracing::info!(slot, "scheduled the pruning of old jobs"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not offer the scheduled pruning"),
                }
            }
            () = &mut stop => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_change_once_per_interval() {
        let hour = Duration::from_secs(3600);
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(slot(at(0), hour), 0);
        assert_eq!(slot(at(3599), hour), 0);
        assert_eq!(slot(at(3600), hour), 1);
        assert_eq!(slot(at(7300), hour), 2);
    }
}

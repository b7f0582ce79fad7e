//! Recurring jobs, once per interval across all workers.
//!
//! Every worker process ticks; each tick offers the job for the current slot
//! (`floor(now / interval)`) with an idempotency key naming that slot. apalis' unique index on
//! (queue, idempotency key) lets exactly one insert per slot succeed, whichever worker gets there
//! first, so adding workers never multiplies the job, and a worker that is down never skips it.
//!
//! The same ticks queue again the account deletions that ran out of attempts, once their
//! cool-off (`JOBS_DELETION_COOLOFF_SECS`) has passed: a deletion must finish eventually, or the
//! account stays marked, unusable, with its data still there. One `update` does it, so two
//! workers ticking at once cannot queue one job twice.

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
/// Queues again, with a fresh set of attempts, every account deletion that ran out of attempts
/// more than `cool_off` ago; returns how many. Each such round has already counted in
/// `jobs_failed_total` (and alerted); the job keeps its id and its last error until it runs.
pub async fn requeue_deletions(db: &sqlx::PgPool, cool_off: Duration) -> Result<u64, sqlx::Error> {
    let micros = i64::try_from(cool_off.as_micros()).unwrap_or(i64::MAX);
    let requeued = sqlx::query!(
        "update apalis.jobs
            set status = 'Pending', attempts = 0, run_at = now(), lock_by = null,
                lock_at = null, done_at = null
          where job_type = $1 and status = 'Failed' and attempts >= max_attempts
            and done_at < now() - make_interval(secs => $2::float8 / 1e6)
            and convert_from(job, 'UTF8')::jsonb -> 'job' ->> 'kind' = 'delete_account'",
        QUEUE,
        micros as f64
    )
    .execute(db)
    .await?
    .rows_affected();
    if requeued > 0 {
        metrics::counter!("jobs_requeued_total", "kind" => "delete_account").increment(requeued);
    }
    Ok(requeued)
}

/// Offers the recurring jobs and queues out-of-attempts deletions again, until `stop`. Ticks
/// at least once a minute, and often enough for a short cool-off.
pub async fn run(
    db: sqlx::PgPool,
    interval: Duration,
    deletion_cooloff: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let every = interval
        .min(deletion_cooloff)
        .min(Duration::from_secs(60))
        .max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
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
                match requeue_deletions(&db, deletion_cooloff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        requeued = n,
                        "queued again account deletions that had run out of attempts"
                    ),
                    Err(e) => tracing::warn!(error = %e, "could not queue failed deletions again"),
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

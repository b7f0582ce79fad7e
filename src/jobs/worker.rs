//! The apalis worker that runs jobs, and what each run goes through: a span that continues
//! the enqueuing request's trace, a timeout, metrics, and on failure a backoff that survives
//! restarts.
//!
//! **Retries.** apalis' Postgres storage runs a failed job again while `attempts <
//! max_attempts`, as soon as its `run_at` is due. Before a failed attempt is recorded, we move
//! `run_at` forward by an exponential backoff, so the delay lives in the database: a worker
//! restarting or dying in between does not forget it, and any worker may take the retry. The
//! last failure leaves the job `Failed`, kept for inspection (`GET /api/v1/jobs/{id}`).
//!
//! **Orphans.** Each worker heartbeats; the jobs of a worker silent for
//! `JOBS_HEARTBEAT_SECS × JOBS_MISSED_HEARTBEATS` are put back in the queue by the others.
//!
//! **Shutdown.** On SIGTERM the worker takes no new jobs, lets running ones finish within the
//! grace period and hands fetched-but-unstarted ones back; what is still running after that is
//! recovered as an orphan.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{
    Attempt, BackendExt as _, BoxDynError, Data, Monitor, TaskId, WorkerBuilder,
    WorkerBuilderExt as _, WorkerContext,
};
use apalis_postgres::PostgresStorage;
use tracing::Instrument;

use super::status::Failure;
use super::{Envelope, Job, QUEUE};
use crate::accounts::session::Sessions;
use crate::config::WorkerConfig;
use crate::db::Db;
use crate::email::Mailer;
use crate::storage::Storage;
use crate::workspace::stats::StatsCache;

/// What jobs can reach.
#[derive(Debug, Clone)]
pub struct JobState {
    pub config: Arc<WorkerConfig>,
    pub db: Db,
    pub storage: Storage,
    pub sessions: Sessions,
    pub mailer: Mailer,
    /// The dashboard cache, on the cache's Redis (`CACHE_REDIS_URL`), for the invalidations
    /// of the writes jobs make.
    pub stats: StatsCache,
}

/// One run of one job.
#[derive(Debug)]
pub struct JobContext<'a> {
    pub state: &'a JobState,
    pub job_id: &'a str,
    /// 1 on the first run.
    pub attempt: u32,
    /// The enqueuing transaction's WAL position.
    pub lsn: Option<crate::db::lsn::Lsn>,
}

impl Job {
    async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        match self {
            Self::DeleteAccount(job) => job.run(ctx).await,
            Self::WelcomeEmail(job) => job.run(ctx).await,
            Self::MakeThumbnail(job) => job.run(ctx).await,
            Self::PurgeUploads(job) => job.run(ctx).await,
            Self::PruneJobs(job) => job.run(ctx).await,
            Self::Canary(job) => job.run(ctx).await,
            Self::VerificationEmail(job) => job.run(ctx).await,
            Self::PasswordResetEmail(job) => job.run(ctx).await,
            Self::DeleteOrg(job) => job.run(ctx).await,
            Self::InvitationEmail(job) => job.run(ctx).await,
        }
    }
}

/// Registers the job metrics at zero, so dashboards and alerts see every series from the start.
pub fn describe_metrics() {
    for kind in Job::KINDS {
        for name in [
            "jobs_enqueued_total",
            "jobs_succeeded_total",
            "jobs_failed_total",
            "jobs_retried_total",
        ] {
            metrics::counter!(name, "kind" => kind).absolute(0);
        }
    }
    metrics::counter!("jobs_worker_restarts_total").absolute(0);
    metrics::counter!("jobs_requeued_total", "kind" => "delete_account").absolute(0);
    metrics::gauge!("jobs_account_deletions_out_of_attempts").set(0.0);
    metrics::gauge!("jobs_queue_depth").set(0.0);
    metrics::gauge!("jobs_oldest_waiting_age_seconds").set(0.0);
}

/// The apalis handler: every job of the queue comes through here.
async fn handle(
    envelope: Envelope,
    state: Data<JobState>,
    id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let kind = envelope.job.kind();
    let job_id = id.to_string();
    let attempt = u32::try_from(attempt.current()).unwrap_or(u32::MAX);
    let span = tracing::info_span!(
        "job",
        kind,
        job_id = %job_id,
        attempt,
        worker = %worker.name(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let carrier: std::collections::HashMap<String, String> =
        envelope.trace.clone().into_iter().collect();
    crate::telemetry::continue_trace(&span, &carrier);

    let ctx = JobContext {
        state: &state,
        job_id: &job_id,
        attempt,
        lsn: envelope.lsn.as_deref().and_then(|l| l.parse().ok()),
    };
    let max = envelope.job.max_attempts();
    let entered = span.enter();
    if attempt > max {
        // Only a worker's death re-queues a job past its last attempt (apalis' orphan recovery
        // does not count): a job that kills its worker must not do so forever.
        metrics::counter!("jobs_failed_total", "kind" => kind).increment(1);
        tracing::error!(
            max,
            "out of attempts: the previous ones ended with their worker"
        );
        return Err(Failure::Internal.as_str().into());
    }
    // No backoff is recorded ahead of the run: apalis marks a job Running only while its
    // `run_at` has passed. A run that ends with its worker is retried after the orphan timeout
    // instead, which spaces out a crash loop just as well, and the check above ends it.
    drop(entered);
    let start = Instant::now();
    let timeout = state.config.jobs.timeout;
    let result = async {
        tracing::info!("job started");
        match tokio::time::timeout(timeout, envelope.job.run(&ctx)).await {
            Ok(result) => result,
            Err(_) => Err(TimedOut(timeout).into()),
        }
    }
    .instrument(span.clone())
    .await;
    let elapsed = start.elapsed().as_secs_f64();

    let _entered = span.enter();
    match result {
        Ok(()) => {
            metrics::histogram!("job_duration_seconds", "kind" => kind, "outcome" => "succeeded")
                .record(elapsed);
            metrics::counter!("jobs_succeeded_total", "kind" => kind).increment(1);
            tracing::info!(elapsed, "job succeeded");
            Ok(())
        }
        Err(error) => {
            metrics::histogram!("job_duration_seconds", "kind" => kind, "outcome" => "failed")
                .record(elapsed);
            if attempt < max {
                let delay = super::backoff(
                    envelope.job.backoff_base(state.config.jobs.backoff_base),
                    state.config.jobs.backoff_max,
                    attempt + 1,
                );
                if let Err(e) = postpone(state.db.primary_pool(), &job_id, delay).await {
                    tracing::warn!(error = %e, "could not record the backoff; the retry comes sooner");
                }
                metrics::counter!("jobs_retried_total", "kind" => kind).increment(1);
                tracing::warn!(error = %format!("{error:#}"), ?delay, max, "job failed; will retry");
            } else {
                metrics::counter!("jobs_failed_total", "kind" => kind).increment(1);
                tracing::error!(error = %format!("{error:#}"), max, "job failed for the last time");
            }
            // What apalis records, and the owner sees: the category only. The full error is in
            // the log line above, with the job's id.
            Err(Failure::of(&error).as_str().into())
        }
    }
}

/// An attempt that ran out of `JOBS_TIMEOUT_SECS`.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct TimedOut(pub Duration);

/// Moves a job's next run `delay` into the future. apalis records the failure without touching
/// `run_at`, and fetches only jobs whose `run_at` has passed.
async fn postpone(db: &sqlx::PgPool, id: &str, delay: Duration) -> Result<(), sqlx::Error> {
    let micros = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
    sqlx::query!(
        "update apalis.jobs set run_at = now() + make_interval(secs => $2::float8 / 1e6)
          where id = $1",
        id,
        micros as f64
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Samples the queue for the depth and age gauges, every few seconds, until `stop`.
pub async fn sample_queue(db: sqlx::PgPool, every: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let sampled = sqlx::query!(
                    r#"select count(*) as "depth!",
                              coalesce(extract(epoch from now() - min(run_at)), 0)::float8 as "oldest!"
                         from apalis.jobs
                        where job_type = $1 and run_at <= now()
                          and (status in ('Pending', 'Queued')
                               or (status = 'Failed' and attempts < max_attempts))"#,
                    QUEUE
                )
                .fetch_one(&db)
                .await;
                match sampled {
                    Ok(s) => {
                        metrics::gauge!("jobs_queue_depth").set(s.depth as f64);
                        metrics::gauge!("jobs_oldest_waiting_age_seconds").set(s.oldest.max(0.0));
                    }
                    Err(e) => tracing::warn!(error = %e, "could not sample the job queue"),
                }
                // Deletions out of attempts, waiting out their cool-off: the alert holds while
                // there are any, however long the cool-off.
                let stuck = sqlx::query_scalar!(
                    r#"select count(*) as "stuck!" from apalis.jobs
                        where job_type = $1 and status = 'Failed' and attempts >= max_attempts
                          and convert_from(job, 'UTF8')::jsonb -> 'job' ->> 'kind' = 'delete_account'"#,
                    QUEUE
                )
                .fetch_one(&db)
                .await;
                match stuck {
                    Ok(n) => metrics::gauge!("jobs_account_deletions_out_of_attempts").set(n as f64),
                    Err(e) => tracing::warn!(error = %e, "could not count failed deletions"),
                }
            }
            () = &mut stop => break,
        }
    }
}

/// How the job runner is started again when it stops on its own (its database connection
/// lost, say): after a delay that doubles with each failure in a row, up to a cap, so a
/// database outage costs a few attempts a minute rather than a tight loop of reconnections
/// and log lines. A runner that ran for `healthy_after` before it failed starts the count
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub base: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
}

impl RestartPolicy {
    pub const DEFAULT: Self = Self {
        base: Duration::from_millis(500),
        max: Duration::from_secs(30),
        healthy_after: Duration::from_secs(60),
    };

    /// The delay before the next start after `failures` failures in a row (counting the last).
    pub fn delay(&self, failures: u32) -> Duration {
        super::backoff(self.base, self.max, failures.saturating_add(1))
    }

    /// The failures in a row once a run of `ran` has failed, after `before` in a row.
    pub fn failures_after(&self, before: u32, ran: Duration) -> u32 {
        if ran >= self.healthy_after {
            1
        } else {
            before.saturating_add(1)
        }
    }
}

/// Runs the apalis worker until `stop` resolves, then shuts it down gracefully. `name` must be
/// unique among running workers (apalis tracks heartbeats and locks by it). A runner that stops
/// on its own is started again under a new name, after the [`RestartPolicy`] delay.
pub async fn run_until(
    state: JobState,
    name: String,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let policy = RestartPolicy::DEFAULT;
    // `stop` resolves once; every run, and the wait between runs, watch it through this.
    let (stopping, watch) = tokio::sync::watch::channel(false);
    let stopped = {
        let watch = watch.clone();
        move || {
            let mut rx = watch.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    tokio::spawn(async move {
        stop.await;
        let _ = stopping.send(true);
    });
    let mut failures = 0;
    for run in 0usize.. {
        let started = Instant::now();
        run_once(&state, format!("{name}-{run}"), stopped()).await?;
        if *watch.borrow() {
            return Ok(());
        }
        failures = policy.failures_after(failures, started.elapsed());
        let delay = policy.delay(failures);
        metrics::counter!("jobs_worker_restarts_total").increment(1);
        tracing::warn!(
            failures,
            ?delay,
            "the job runner stopped; starting it again after a delay"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped() => return Ok(()),
        }
    }
    Ok(())
}

/// One run of the apalis worker, until `stop` resolves or the worker stops on its own.
async fn run_once(
    state: &JobState,
    name: String,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let jobs = state.config.jobs.clone();
    let pool = state.db.primary_pool().clone();
    let grace = state.config.shutdown.grace;
    let config = apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(jobs.concurrency)
        .heartbeat_interval(jobs.heartbeat)
        .missed_heartbeats(jobs.missed_heartbeats);
    let state = state.clone();
    Monitor::new()
        .register(move |_| {
            let backend = PostgresStorage::<Envelope>::new(&pool)
                .with_config(config.clone())
                .with_pubsub()
                .poll_with_interval(jobs.poll_interval);
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .data(state.clone())
                .concurrency(jobs.concurrency)
                .build(handle)
        })
        // apalis would start it again at once, in a loop as tight as the failure is fast: the
        // caller restarts it with a backoff instead.
        .should_restart(|ctx, error| {
            tracing::warn!(worker = %ctx.name(), %error, "the job runner stopped");
            false
        })
        .shutdown_timeout(grace)
        .run_with_signal(async move {
            stop.await;
            Ok(())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_failing_again_and_again_waits_longer_each_time_up_to_the_cap() {
        let policy = RestartPolicy::DEFAULT;
        let quick = Duration::from_millis(10);
        let mut failures = 0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            failures = policy.failures_after(failures, quick);
            delays.push(policy.delay(failures).as_millis());
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn a_runner_that_ran_healthy_for_a_while_restarts_quickly_again() {
        let policy = RestartPolicy::DEFAULT;
        let failures = policy.failures_after(7, policy.healthy_after);
        assert_eq!(failures, 1);
        assert_eq!(policy.delay(failures), policy.base);
    }
}

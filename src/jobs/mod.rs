//! Background jobs: heavy or slow work that a request hands off and a `scaleout worker`
//! process does, on apalis workers over apalis' Postgres storage.
//!
//! **Enqueue is atomic with the write that causes it.** [`enqueue`] inserts the job through the
//! request's own transaction (`apalis_postgres::queries::push_tasks` on `&mut *tx`), so the job
//! commits or rolls back with the write: a rolled-back request leaves no job, a committed one
//! always has its job. We chose this over an outbox table relayed to a queue because the queue
//! already lives in the same Postgres: an outbox would add a relay process and a second copy of
//! every job for no gain in safety.
//!
//! **Every job is idempotent** (running it twice is harmless): delivery is at least once, since a
//! worker can die after the work and before recording it. Each job says how in its module.
//!
//! **A job carries its context**: the owner (who may read its status), the enqueuing request's
//! W3C trace context (the job's span continues that trace), and the primary's WAL position at
//! enqueue time (reads can go to a replica that has replayed it; see `Db::read_after`).
//!
//! One queue holds every kind of job, one apalis worker per process drains it with bounded
//! concurrency; `kind` labels the metrics. Separate queues per kind would isolate a slow kind
//! from the others, at the cost of one more listener and poller each.

pub mod canary;
pub mod delete_account;
pub mod delete_org;
pub mod invitation_email;
pub mod password_reset_email;
pub mod prune_jobs;
pub mod purge_uploads;
pub mod schedule;
pub mod status;
pub mod thumbnail;
pub mod verification_email;
pub mod welcome_email;
pub mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::Write;

/// The apalis queue (the `job_type` column of `apalis.jobs`).
pub const QUEUE: &str = "scaleout";

/// Every kind of job, as stored: `{"kind": "welcome_email", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    DeleteAccount(delete_account::DeleteAccount),
    WelcomeEmail(welcome_email::WelcomeEmail),
    MakeThumbnail(thumbnail::MakeThumbnail),
    PurgeUploads(purge_uploads::PurgeUploads),
    PruneJobs(prune_jobs::PruneJobs),
    Canary(canary::Canary),
    VerificationEmail(verification_email::VerificationEmail),
    PasswordResetEmail(password_reset_email::PasswordResetEmail),
    DeleteOrg(delete_org::DeleteOrg),
    InvitationEmail(invitation_email::InvitationEmail),
}

impl Job {
    /// Every `kind`, for metrics that should exist before the first job of a kind.
    pub const KINDS: [&'static str; 10] = [
        "delete_account",
        "welcome_email",
        "make_thumbnail",
        "purge_uploads",
        "prune_jobs",
        "canary",
        "verification_email",
        "password_reset_email",
        "delete_org",
        "invitation_email",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::DeleteAccount(_) => "delete_account",
            Self::WelcomeEmail(_) => "welcome_email",
            Self::MakeThumbnail(_) => "make_thumbnail",
            Self::PurgeUploads(_) => "purge_uploads",
            Self::PruneJobs(_) => "prune_jobs",
            Self::Canary(_) => "canary",
            Self::VerificationEmail(_) => "verification_email",
            Self::PasswordResetEmail(_) => "password_reset_email",
            Self::DeleteOrg(_) => "delete_org",
            Self::InvitationEmail(_) => "invitation_email",
        }
    }

    /// Runs before the job is kept as failed. Deleting an account must not give up easily:
    /// 25 attempts ride out about two hours of outage at the 5-minute backoff cap (and its
    /// final failure alerts). A recurring purge will run again next interval anyway.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Self::DeleteAccount(_) => 25,
            Self::WelcomeEmail(_) | Self::MakeThumbnail(_) => 5,
            Self::PurgeUploads(_) | Self::PruneJobs(_) => 3,
            Self::Canary(c) => c.max_attempts,
            // Like the welcome email: a few minutes of retries, then kept as failed.
            Self::VerificationEmail(_) | Self::PasswordResetEmail(_) => 5,
            // Like an account's deletion: it must not give up easily.
            Self::DeleteOrg(_) => 25,
            Self::InvitationEmail(_) => 5,
        }
    }
}

impl Job {
    /// The delay before the first retry; later retries double it (see [`backoff`]).
    pub fn backoff_base(&self, configured: Duration) -> Duration {
        match self {
            Self::Canary(c) => c.backoff_ms.map_or(configured, Duration::from_millis),
            _ => configured,
        }
    }
}

/// A job and the context it runs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub job: Job,
    /// The user the job acts for: the only one who may read its status.
    pub owner: Option<Uuid>,
    /// The enqueuing request's W3C trace context (`traceparent`, `tracestate`).
    #[serde(default)]
    pub trace: BTreeMap<String, String>,
    /// `pg_current_wal_insert_lsn()` inside the enqueuing transaction.
    pub lsn: Option<String>,
}

/// A job's id: a ULID, time-ordered, as apalis stores it.
pub type JobId = String;

pub use crate::error::EnqueueError;

/// Records `job` in the unit of work `write`. It becomes visible to workers when (and only
/// if) the write commits, and is counted (`jobs_enqueued_total`) only then.
pub async fn enqueue(
    write: &mut Write,
    job: Job,
    owner: Option<Uuid>,
) -> Result<JobId, EnqueueError> {
    let lsn = sqlx::query_scalar!(r#"select pg_current_wal_insert_lsn()::text as "lsn!""#)
        .fetch_one(&mut **write)
        .await?;
    let kind = job.kind();
    let max_attempts = job.max_attempts() as usize;
    let envelope = Envelope {
        job,
        owner,
        trace: crate::telemetry::current_trace_context(),
        lsn: Some(lsn),
    };
    let id = ulid::Ulid::generate();
    let bytes = serde_json::to_vec(&envelope)?;
    let task = TaskBuilder::new(bytes)
        .task_id(TaskId::from_ulid(id))
        .max_attempts(max_attempts)
        .build();
    apalis_postgres::queries::push_tasks(&mut **write, QUEUE, vec![task])
        .await
        .map_err(|e| match e {
            apalis_postgres::Error::Database(e) => EnqueueError::Database(e),
            other => EnqueueError::Queue(other.to_string()),
        })?;
    write.after_commit(move || {
        metrics::counter!("jobs_enqueued_total", "kind" => kind).increment(1);
    });
    Ok(id.to_string())
}

/// Delay before attempt `next` (2, 3, ...): `base`, doubling each time, at most `cap`.
pub fn backoff(base: Duration, cap: Duration, next: u32) -> Duration {
    let exponent = next.saturating_sub(2).min(20);
    base.saturating_mul(1 << exponent).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        let delays: Vec<u64> = (2..=8).map(|n| backoff(base, cap, n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(base, cap, 1000), cap);
    }

    #[test]
    fn jobs_are_stored_with_their_kind() {
        let job = Job::Canary(canary::Canary {
            fail_attempts: 1,
            hold_ms: 0,
            max_attempts: 3,
            backoff_ms: None,
        });
        let json = serde_json::to_value(&job).expect("serialises");
        assert_eq!(json["kind"], "canary");
        assert!(Job::KINDS.contains(&job.kind()));
        let back: Job = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back.kind(), "canary");
    }
}

//! A job's state as its owner sees it, read from apalis' table.
//!
//! A failed attempt is shown as a category ([`Failure`]), never as the error itself: error
//! text can carry hosts, object keys, SQL or email addresses. The worker logs the full error
//! with the job's id, for operators.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a worker, including between retries.
    Queued,
    Running,
    Succeeded,
    /// Out of attempts (or abandoned); kept for inspection.
    Failed,
}

/// apalis' status column and counters, mapped to [`State`]. A failure with attempts left is
/// waiting for its retry, so it is `queued`.
pub fn state_of(status: &str, attempts: i32, max_attempts: i32) -> State {
    match status {
        "Done" => State::Succeeded,
        "Running" => State::Running,
        "Killed" => State::Failed,
        "Failed" if attempts >= max_attempts => State::Failed,
        _ => State::Queued,
    }
}

/// A job, for `GET /jobs/{id}`.
/// What an owner is told about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Storage,
    Database,
    SessionStore,
    Email,
    TimedOut,
    Internal,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Self::Storage,
        Self::Database,
        Self::SessionStore,
        Self::Email,
        Self::TimedOut,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Storage => "storage unavailable",
            Self::Database => "database unavailable",
            Self::SessionStore => "session store unavailable",
            Self::Email => "email delivery failed",
            Self::TimedOut => "timed out",
            Self::Internal => "internal error",
        }
    }

    /// The category of `error`: the first cause in its chain that names a dependency. Anything
    /// else (a bug, bad data, a refusal of the job's own) is an internal error.
    pub fn of(error: &anyhow::Error) -> Self {
        for cause in error.chain() {
            if cause.is::<crate::storage::StorageError>() {
                return Self::Storage;
            }
            if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
                return if database_unavailable(e) {
                    Self::Database
                } else {
                    Self::Internal
                };
            }
            if cause.is::<crate::redis_client::RedisError>() || cause.is::<redis::RedisError>() {
                return Self::SessionStore;
            }
            if cause.is::<lettre::transport::smtp::Error>() {
                return Self::Email;
            }
            if cause.is::<super::worker::TimedOut>() {
                return Self::TimedOut;
            }
            if let Some(crate::error::ApiError::Unavailable { dependency, .. }) =
                cause.downcast_ref()
            {
                return match *dependency {
                    "database" => Self::Database,
                    "object storage" => Self::Storage,
                    "redis" | "sessions" => Self::SessionStore,
                    _ => Self::Internal,
                };
            }
        }
        Self::Internal
    }

    /// What was stored for an attempt, as shown: a known category, or else (an older row, an
    /// error apalis recorded itself) an internal error, never the stored text.
    pub fn shown(stored: &str) -> &'static str {
        Self::ALL
            .into_iter()
            .map(Self::as_str)
            .find(|c| *c == stored)
            .unwrap_or(Self::Internal.as_str())
    }
}

/// Connection-level failures, timeouts and a server that cannot serve (classes 08, 53, 57):
/// the database, not the job, is the problem.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01JD3V9W5Q8K2M4N6P8R0T2V4X",
    "kind": "delete_account",
    "status": "queued",
    "attempts": 1,
    "max_attempts": 10,
    "last_error": "storage unavailable",
    "next_attempt_at": "2026-11-22T08:00:04Z",
    "finished_at": null
}))]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub status: State,
    /// Attempts made so far.
    pub attempts: i32,
    pub max_attempts: i32,
    /// The error of the latest failed attempt, if the job has not succeeded.
    pub last_error: Option<String>,
    /// When a queued job becomes due (after a failure: the backoff).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
}

/// Job `id` if it acts for `owner`; anyone else's job is `None`, like a missing one.
pub async fn find(
    db: impl sqlx::PgExecutor<'_>,
    id: &str,
    owner: Uuid,
) -> Result<Option<JobView>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select id as "id!", status as "status!", attempts as "attempts!",
                  max_attempts as "max_attempts!", last_result, run_at, done_at,
                  convert_from(job, 'UTF8')::jsonb -> 'job' ->> 'kind' as kind
             from apalis.jobs
            where id = $1 and job_type = $2
              and convert_from(job, 'UTF8')::jsonb ->> 'owner' = $3"#,
        id,
        super::QUEUE,
        owner.to_string()
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        let status = state_of(&r.status, r.attempts, r.max_attempts);
        let last_error = match status {
            State::Succeeded => None,
            _ => r
                .last_result
                .as_ref()
                .and_then(|v| v.get("Err"))
                .and_then(|e| e.as_str())
                .map(|e| Failure::shown(e).to_owned()),
        };
        JobView {
            id: r.id,
            kind: r.kind.unwrap_or_default(),
            status,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            last_error,
            next_attempt_at: (status == State::Queued).then_some(r.run_at),
            finished_at: matches!(status, State::Succeeded | State::Failed)
                .then_some(r.done_at)
                .flatten(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apalis_statuses_map_to_what_owners_see() {
        assert_eq!(state_of("Pending", 0, 5), State::Queued);
        assert_eq!(state_of("Queued", 0, 5), State::Queued);
        assert_eq!(state_of("Running", 1, 5), State::Running);
        assert_eq!(state_of("Done", 3, 5), State::Succeeded);
        assert_eq!(state_of("Failed", 2, 5), State::Queued);
        assert_eq!(state_of("Failed", 5, 5), State::Failed);
        assert_eq!(state_of("Killed", 1, 5), State::Failed);
    }

    #[test]
    fn a_failure_is_shown_as_the_category_of_its_first_known_cause() {
        let storage = crate::storage::StorageError {
            operation: "get_object",
            message: "dispatch failure: connection refused (10.0.0.7:3900)".into(),
        };
        let of = |e: anyhow::Error| Failure::of(&e).as_str();
        assert_eq!(
            of(anyhow::Error::new(storage).context("reading the avatar")),
            "storage unavailable"
        );
        assert_eq!(of(sqlx::Error::PoolTimedOut.into()), "database unavailable");
        assert_eq!(of(sqlx::Error::RowNotFound.into()), "internal error");
        assert_eq!(
            of(crate::error::ApiError::unavailable("sessions", "refused").into()),
            "session store unavailable"
        );
        assert_eq!(
            of(super::super::worker::TimedOut(std::time::Duration::from_secs(1)).into()),
            "timed out"
        );
        assert_eq!(
            of(anyhow::anyhow!("the account ada@example.com is not marked")),
            "internal error"
        );
    }

    #[test]
    fn only_known_categories_are_shown_as_stored() {
        assert_eq!(
            Failure::shown("email delivery failed"),
            "email delivery failed"
        );
        assert_eq!(
            Failure::shown("object storage get_object failed: users/0193/avatars/x"),
            "internal error"
        );
    }
}

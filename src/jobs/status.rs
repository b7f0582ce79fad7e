//! A job's state as its owner sees it, read from apalis' table.

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
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01JD3V9W5Q8K2M4N6P8R0T2V4X",
    "kind": "delete_account",
    "status": "queued",
    "attempts": 1,
    "max_attempts": 10,
    "last_error": "object storage delete_object failed: dispatch failure",
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
                .map(str::to_owned),
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
}

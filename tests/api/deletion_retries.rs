//! An account deletion that used all its attempts is not the end: after a cool-off, the
//! scheduler queues it again, so no account stays half-deleted.

use std::time::Duration;

use scaleout::jobs::{Envelope, Job, QUEUE, delete_account::DeleteAccount};

use crate::helpers::{
    TestUser, eventually, metric, my_id, scrape, signed_up, spawn_app, spawn_worker_with,
    users_with_email,
};

#[tokio::test]
async fn a_deletion_out_of_attempts_is_queued_again_after_the_cool_off_and_finishes() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let owner = my_id(&api).await;
    // The account is marked for deletion, and its deletion job has run out of attempts (as
    // after two hours of a storage outage): failed for good, in apalis' terms.
    let mut write = app
        .state
        .db
        .begin(scaleout::db::Writer::System)
        .await
        .expect("begins");
    assert!(
        scaleout::accounts::repo::mark_for_deletion(&mut write, owner)
            .await
            .expect("marks")
    );
    write.commit().await.expect("commits");
    let envelope = Envelope {
        job: Job::DeleteAccount(DeleteAccount { user_id: owner }),
        owner: Some(owner),
        trace: Default::default(),
        lsn: None,
    };
    let id = ulid::Ulid::generate().to_string();
    let failed_at: time::OffsetDateTime = sqlx::query_scalar(
        "insert into apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                                  done_at, priority, last_result)
         values ($1, $2, $3, 'Failed', 25, 25, now(), now(), 0,
                 '{\"Err\": \"storage unavailable\"}'::jsonb)
         returning done_at",
    )
    .bind(&id)
    .bind(QUEUE)
    .bind(serde_json::to_vec(&envelope).expect("serialises"))
    .fetch_one(db)
    .await
    .expect("records the failed job");
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    let requeued = || async {
        metric(
            &scrape(&metrics_url).await,
            "jobs_requeued_total",
            &[("kind", "delete_account")],
        )
    };
    let requeued_before = requeued().await;

    // A worker whose scheduler queues deletions again two seconds after their last attempt
    // (the topology's own worker waits the default hour).
    let cooloff = Duration::from_secs(2);
    let worker = spawn_worker_with(&[("JOBS_DELETION_COOLOFF_SECS", "2")]);
    let finished: time::OffsetDateTime = eventually(
        "the deletion runs again and succeeds",
        Duration::from_secs(60),
        || async {
            let row: (String, Option<time::OffsetDateTime>) =
                sqlx::query_as("select status, done_at from apalis.jobs where id = $1")
                    .bind(&id)
                    .fetch_one(db)
                    .await
                    .expect("reads the job");
            match row {
                (status, Some(done)) if status == "Done" => Some(done),
                _ => None,
            }
        },
    )
    .await;
    worker.shutdown().await;

    assert_eq!(
        users_with_email(&app.state, &user.email).await,
        0,
        "the account is gone"
    );
    let waited = finished - failed_at;
    assert!(
        waited >= cooloff,
        "queued again {waited} after its last attempt, before the cool-off {cooloff:?}"
    );
    assert!(
        requeued().await > requeued_before,
        "the requeue is counted (jobs_requeued_total)"
    );
}

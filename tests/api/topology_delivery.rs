//! Jobs against stopped services and a swapped worker: the welcome email waits out an SMTP
//! outage, and the purge sweeps stale staging objects. Each stops the topology's worker and
//! runs one in the test process with settings of its own, so these run alone.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::helpers::{
    Down, TestUser, eventually, my_id, presigned_put, signed_up, spawn_app, spawn_worker_with,
    storage,
};
use crate::job_effects::{sent_by, welcome_job, welcome_messages_to};

#[tokio::test]
async fn a_welcome_email_is_retried_while_smtp_is_down_and_delivered_once_when_it_is_back() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    // Five attempts at the suite's 300 ms backoff are spent in under five seconds; from 2 s
    // they span 30 s, ample time to see the retries and bring the sink back before the last.
    let topology_worker = Down::stop("worker");
    let worker = spawn_worker_with(&[("JOBS_BACKOFF_BASE_MS", "2000")]);
    let smtp = Down::stop("smtp");
    let user = TestUser::new();

    let api = signed_up(&app.url(""), &user).await;
    let owner = my_id(&api).await;
    let job = welcome_job(db, owner).await;
    let retrying = api
        .poll_job(&job, |v| {
            v["status"] == "queued" && v["attempts"].as_i64().is_some_and(|n| n >= 2)
        })
        .await;
    let undelivered = welcome_messages_to(&user.email).len();
    smtp.start();
    let delivered = api.poll_job(&job, |v| v["status"] == "succeeded").await;
    worker.shutdown().await;
    topology_worker.start();

    // Why, as a category: the SMTP error itself (with the relay's address) is only logged.
    assert_eq!(
        retrying["last_error"], "email delivery failed",
        "a retried job says why: {retrying}"
    );
    assert!(retrying["next_attempt_at"].is_string(), "{retrying}");
    assert_eq!(
        undelivered, 0,
        "nothing was delivered while the sink was down"
    );
    assert!(
        delivered["attempts"].as_i64() > retrying["attempts"].as_i64(),
        "{delivered}"
    );
    assert_eq!(
        welcome_messages_to(&user.email).len(),
        1,
        "one message once it is back"
    );
    assert_eq!(
        sent_by(db, &job).await,
        vec![(job.clone(), user.email.clone())]
    );
}

async fn exists(key: &str) -> bool {
    storage()
        .head_object(key)
        .await
        .expect("storage answers")
        .is_some()
}

#[tokio::test]
async fn the_purge_sweeps_a_stale_staging_object_and_keeps_fresh_uploads_and_files() {
    use scaleout::files::object_key;

    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    // A staging object no file needs: a completed upload's URL used a second time.
    let (done_id, target) = api.start_upload(5).await;
    assert!(presigned_put(&target, "hello").await.status().is_success());
    let completed = api.post(&format!("/files/{done_id}/complete")).await;
    assert_eq!(completed.status(), StatusCode::OK);
    assert!(presigned_put(&target, "again").await.status().is_success());
    let stale = object_key::staging(owner, done_id);
    assert!(exists(&stale).await);
    // Staging objects are stale past the URL lifetime plus the purge's grace. The topology's
    // worker allows 75 minutes; this one 10 s, so a fresh object put just before the purge
    // stays (10 s is ample for a put followed by one listing), and its sweep touches nothing
    // of another test's, since these tests run alone.
    let window = Duration::from_secs(10);
    let topology_worker = Down::stop("worker");
    let worker = spawn_worker_with(&[
        ("UPLOAD_URL_TTL_SECS", "10"),
        ("JOBS_PURGE_GRACE_SECS", "0"),
    ]);
    let staging = object_key::owner_staging_prefix(owner);
    eventually(
        "storage dates the staging object past the window",
        Duration::from_secs(60),
        || async {
            let cutoff = SystemTime::now() - window;
            let old = storage()
                .list_keys_older_than(&staging, cutoff, 1000)
                .await
                .expect("lists");
            old.contains(&stale).then_some(())
        },
    )
    .await;
    // An upload in progress: its bytes are staged, its file pending and not yet expired.
    let (pending_id, target) = api.start_upload(5).await;
    assert!(presigned_put(&target, "fresh").await.status().is_success());
    let fresh = object_key::staging(owner, pending_id);
    let slot = 40_000_000_000 + i64::from(uuid::Uuid::new_v4().as_u128() as u16);

    assert!(
        scaleout::jobs::schedule::offer_purge(db, Duration::from_secs(17), slot)
            .await
            .expect("offers")
    );
    let key = format!("purge_uploads:17s:{slot}");
    eventually("the purge runs", Duration::from_secs(60), || async {
        let status: String =
            sqlx::query_scalar("select status from apalis.jobs where idempotency_key = $1")
                .bind(&key)
                .fetch_one(db)
                .await
                .expect("the offered job");
        (status == "Done").then_some(())
    })
    .await;
    worker.shutdown().await;
    topology_worker.start();

    assert!(!exists(&stale).await, "the stale staging object is swept");
    assert!(exists(&fresh).await, "a fresh upload's bytes stay");
    let done_key: String = sqlx::query_scalar("select object_key from files where id = $1")
        .bind(done_id)
        .fetch_one(db)
        .await
        .expect("the completed file");
    assert!(
        exists(&done_key).await,
        "the completed file's own object stays"
    );
    let pending: i64 = sqlx::query_scalar("select count(*) from files where id = $1")
        .bind(pending_id)
        .fetch_one(db)
        .await
        .expect("counts");
    assert_eq!(pending, 1, "the upload in progress keeps its file");
}

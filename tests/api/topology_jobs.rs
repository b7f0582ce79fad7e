//! Workers as processes: stopped gracefully, killed mid-job, and sharing a burst. These stop
//! and kill the topology's worker, so they run alone.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::{
    Down, LogMark, canary, canary_runs, enqueue, eventually, job_row, spawn_app, spawn_worker,
};

/// Waits until job `id` is running, and returns the worker that holds it.
async fn running(db: &sqlx::PgPool, id: &str) -> String {
    eventually(
        &format!("job {id} running"),
        Duration::from_secs(30),
        || async {
            match job_row(db, id).await {
                Some((status, _, Some(worker))) if status == "Running" => Some(worker),
                _ => None,
            }
        },
    )
    .await
}

async fn done(db: &sqlx::PgPool, id: &str) -> (i32, String) {
    eventually(
        &format!("job {id} done"),
        Duration::from_secs(60),
        || async {
            match job_row(db, id).await {
                Some((status, attempts, Some(worker))) if status == "Done" => {
                    Some((attempts, worker))
                }
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_topology_worker_stopped_with_sigterm_mid_job_finishes_the_job_and_exits_zero() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let id = enqueue(&app.state.db, vec![canary(0, 7000, 3)], None)
        .await
        .remove(0);
    let holder = running(db, &id).await;
    assert!(
        holder.starts_with("worker1-"),
        "the topology's worker holds the job: {holder}"
    );
    let supervisor = LogMark::new("supervisord");
    let worker_log = LogMark::new("worker");

    // `stack stop` sends SIGTERM and returns once the process has exited.
    let down = Down::stop("worker");
    let (status, _, _) = job_row(db, &id).await.expect("the job is kept");
    let applied_at: Option<time::OffsetDateTime> =
        sqlx::query_scalar("select applied_at from canary_effects where job_id = $1")
            .bind(&id)
            .fetch_optional(db)
            .await
            .expect("reads canary_effects");
    let log = supervisor.since();
    let worker_lines = worker_log.since();
    down.start();

    assert_eq!(
        status, "Done",
        "the running job finished before the worker exited"
    );
    assert_eq!(canary_runs(db, &id).await, 1);
    assert!(applied_at.is_some(), "the job's effect happened");
    // In the worker's own log: the shutdown began, then this job succeeded.
    let position = |needle: &str, job: bool| {
        worker_lines
            .lines()
            .position(|l| l.contains(needle) && (!job || l.contains(&id)))
    };
    let shutdown = position("shutdown requested", false).expect("the worker logged SIGTERM");
    let succeeded = position("job succeeded", true).expect("the worker logged the job's success");
    assert!(
        shutdown < succeeded,
        "SIGTERM arrived while the job ran, and it finished afterwards:\n{worker_lines}"
    );
    assert!(
        log.contains("stopped: worker (exit status 0)"),
        "the worker exited 0 on its own: {log}"
    );
}

#[tokio::test]
async fn a_job_of_a_worker_killed_mid_way_is_finished_by_another_once() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let id = enqueue(&app.state.db, vec![canary(0, 8000, 5)], None)
        .await
        .remove(0);
    let holder = running(db, &id).await;
    assert!(
        holder.starts_with("worker1-"),
        "the topology's worker took it: {holder}"
    );

    let down = Down::kill("worker");
    let rescuer = spawn_worker();
    let (attempts, finisher) = done(db, &id).await;
    rescuer.shutdown().await;
    down.start();

    assert!(finisher.starts_with("test-worker-"), "{finisher}");
    assert!(
        attempts >= 2,
        "the killed run counts as an attempt: {attempts}"
    );
    assert_eq!(canary_runs(db, &id).await, 1, "its effect happened once");
}

#[tokio::test]
async fn two_workers_share_a_burst_of_200_jobs_and_each_job_takes_effect_once() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let second = spawn_worker();

    let ids = enqueue(
        &app.state.db,
        (0..200).map(|_| canary(0, 20, 3)).collect(),
        None,
    )
    .await;
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let (_, worker) = done(db, id).await;
        // "worker1-<ulid>-0" or "test-worker-<id>-<ulid>-0": the process, not the run.
        let process = worker.rsplitn(3, '-').nth(2).unwrap_or(&worker).to_owned();
        *by_worker.entry(process).or_default() += 1;
    }
    second.shutdown().await;

    eprintln!("200 jobs by worker: {by_worker:?}");
    let effects: i64 = sqlx::query_scalar(
        "select count(*) from canary_effects where job_id = any($1) and runs = 1",
    )
    .bind(&ids)
    .fetch_one(db)
    .await
    .expect("counts");
    assert_eq!(effects, 200, "every job took effect exactly once");
    assert_eq!(by_worker.len(), 2, "both workers took jobs: {by_worker:?}");
}

/// The worker here runs in the test process, so its spans reach the test's receiver: the
/// topology's worker is stopped meanwhile, so that this one takes the job.
#[tokio::test]
async fn a_request_that_enqueues_a_job_has_the_job_span_in_its_trace() {
    crate::traces::collector();
    let app = spawn_app().await;
    let down = Down::stop("worker");
    let worker = spawn_worker();

    let trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let mut api = crate::helpers::Api::new(app.url(""));
    let signup = api
        .request(reqwest::Method::POST, "/auth/signup")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&crate::helpers::TestUser::new().signup_body());
    let response = api.send_keeping_cookie(signup).await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);

    let found = eventually(
        "the job span joins the trace",
        Duration::from_secs(30),
        || {
            let trace = trace.clone();
            async move {
                let spans = crate::traces::spans_of(&trace).await;
                let request = spans.iter().find(|s| s.name == "request")?.clone();
                let sql = spans
                    .iter()
                    .find(|s| {
                        s.name == "insert" && crate::traces::descends_from(&spans, s, &request.id)
                    })?
                    .clone();
                let job = spans
                    .iter()
                    .find(|s| {
                        s.name == "job" && crate::traces::descends_from(&spans, s, &request.id)
                    })?
                    .clone();
                // Client spans of the other dependencies: Redis (the read-your-writes position the
                // request records) and SMTP (the email the job sends).
                let under = |name: &str, ancestor: &str| {
                    spans.iter().any(|s| {
                        s.name == name && crate::traces::descends_from(&spans, s, ancestor)
                    })
                };
                (under("redis", &request.id) && under("smtp", &job.id))
                    .then_some((request, sql, job))
            }
        },
    )
    .await;
    worker.shutdown().await;
    down.start();

    let (request, sql, job) = found;
    assert_eq!(request.trace, trace);
    assert_eq!(sql.trace, trace);
    assert_eq!(
        job.trace, trace,
        "the worker's span continues the request's trace"
    );
}

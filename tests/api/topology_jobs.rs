//! Workers as processes: stopped gracefully, killed mid-job, and sharing a burst. These stop
//! and kill the topology's worker, so they run alone.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::{
    canary, canary_runs, enqueue, eventually, job_row, spawn_app, spawn_worker, stack,
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
async fn a_worker_stopped_with_sigterm_finishes_its_running_job_first() {
    let app = spawn_app().await;
    let db = app.state.db.write();
    stack(&["stop", "worker"]);
    let worker = spawn_worker();

    let id = enqueue(db, vec![canary(0, 1500, 3)], None).await.remove(0);
    let holder = running(db, &id).await;
    assert!(holder.starts_with("test-worker-"), "{holder}");
    worker.shutdown().await;
    let (status, _, _) = job_row(db, &id).await.expect("the job is kept");
    stack(&["start", "worker"]);

    assert_eq!(
        status, "Done",
        "the running job finished before the worker stopped"
    );
    assert_eq!(canary_runs(db, &id).await, 1);
}

#[tokio::test]
async fn a_job_of_a_worker_killed_mid_way_is_finished_by_another_once() {
    let app = spawn_app().await;
    let db = app.state.db.write();
    let id = enqueue(db, vec![canary(0, 4000, 5)], None).await.remove(0);
    let holder = running(db, &id).await;
    assert!(
        holder.starts_with("worker1-"),
        "the topology's worker took it: {holder}"
    );

    stack(&["kill", "worker"]);
    let rescuer = spawn_worker();
    let (attempts, finisher) = done(db, &id).await;
    rescuer.shutdown().await;
    stack(&["start", "worker"]);

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
    let db = app.state.db.write();
    let second = spawn_worker();

    let ids = enqueue(db, (0..200).map(|_| canary(0, 20, 3)).collect(), None).await;
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

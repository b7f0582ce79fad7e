//! The topology's worker when Postgres goes away: its job runner stops, and is started again
//! after a growing delay, not in a tight loop; once Postgres is back it runs jobs again.

use std::time::Duration;

use scaleout::jobs::worker::RestartPolicy;

use crate::helpers::{Down, LogMark, canary, canary_runs, eventually, spawn_app};

/// A restart the worker logged: when, and the failures in a row it counted.
#[derive(Debug)]
struct Restart {
    at: time::OffsetDateTime,
    failures: u32,
}

fn restarts_in(log: &str) -> Vec<Restart> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the job runner stopped; starting it again"))
        })
        .filter_map(|v| {
            Some(Restart {
                at: time::OffsetDateTime::parse(
                    v["timestamp"].as_str()?,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()?,
                failures: u32::try_from(v["failures"].as_u64()?).ok()?,
            })
        })
        .collect()
}

#[tokio::test]
async fn a_job_runner_that_loses_the_database_restarts_after_a_growing_delay() {
    let app = spawn_app().await;
    let worker_log = LogMark::new("worker");

    let primary = Down::stop("primary");
    let restarts = eventually(
        "the job runner stopped and was started again three times",
        Duration::from_secs(90),
        || async {
            let restarts = restarts_in(&worker_log.since());
            (restarts.len() >= 3).then_some(restarts)
        },
    )
    .await;
    primary.start();

    // Each restart waited at least the policy's delay after the one before, and the delay
    // grew: a tight loop would log them back to back.
    let policy = RestartPolicy::DEFAULT;
    for (i, pair) in restarts.windows(2).enumerate() {
        assert_eq!(pair[1].failures, pair[0].failures + 1, "{restarts:?}");
        let gap = pair[1].at - pair[0].at;
        let delay = policy.delay(pair[0].failures);
        assert!(
            gap >= delay,
            "restart {} came {gap} after the one before, sooner than its delay {delay:?}: {restarts:?}",
            i + 1
        );
    }

    // Back to work once Postgres is: a job enqueued now runs.
    let db = app.state.db.primary_pool();
    let id = eventually(
        "the primary takes writes again",
        Duration::from_secs(60),
        || {
            let db = &app.state.db;
            async move {
                let mut write = db.begin(scaleout::db::Writer::System).await.ok()?;
                let id = scaleout::jobs::enqueue(&mut write, canary(0, 0, 1), None)
                    .await
                    .ok()?;
                write.commit().await.ok()?;
                Some(id)
            }
        },
    )
    .await;
    eventually(
        "the job runs after the restarts",
        Duration::from_secs(90),
        || async { (canary_runs(db, &id).await == 1).then_some(()) },
    )
    .await;
}

//! The dashboard cache on the real topology: a stampede of cold reads across the three
//! instances runs the aggregate once, and a refill while the replica lags never stores the
//! replica's stale view. Replay is paused for real, so scripts/test runs these alone.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    Api, TestUser, env, eventually, instance_urls, metric, my_id, scrape, signed_up,
};
use crate::topology_replicas::ReplayPaused;
use crate::workspace::{call, id_of, new_org, new_project, new_task};

/// `cache_recomputes_total{cache="stats"}` summed over the three instances.
async fn recomputes() -> f64 {
    let mut total = 0.0;
    for url in env("SCALEOUT_METRICS").split_whitespace().take(3) {
        total += metric(
            &scrape(url).await,
            "cache_recomputes_total",
            &[("cache", "stats")],
        );
    }
    total
}

async fn stats(api: &Api, org: Uuid) -> Value {
    let (status, body) = call(api, Method::GET, &format!("/orgs/{org}/stats"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn two_hundred_cold_reads_across_the_three_instances_run_the_aggregate_once() {
    let instances = instance_urls();
    let owner = signed_up(&instances[0], &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    for title in ["a", "b", "c"] {
        new_task(&owner, org, project, json!({"title": title})).await;
    }
    let before = recomputes().await;

    let mut reads = tokio::task::JoinSet::new();
    for i in 0..200 {
        let api = owner.via(&instances[i % instances.len()]);
        reads.spawn(async move {
            let response = api
                .send(api.request(Method::GET, &format!("/orgs/{org}/stats")))
                .await;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body["computed_at"].clone())
        });
    }
    let mut computed = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    while let Some(read) = reads.join_next().await {
        let (status, at) = read.expect("a read does not panic");
        if status == StatusCode::OK {
            computed.insert(at.to_string());
        } else {
            failures.push(status);
        }
    }

    assert!(
        failures.is_empty(),
        "{} not 200: {failures:?}",
        failures.len()
    );
    assert_eq!(
        computed.len(),
        1,
        "every reader got the one computation: {computed:?}"
    );
    // Counters are scraped after the responses: each recompute is counted before it answers.
    assert_eq!(recomputes().await - before, 1.0, "one recompute fleet-wide");
}

async fn pool(var: &str) -> PgPool {
    PgPool::connect(&env(var)).await.expect("postgres answers")
}

/// Waits until the replica has replayed everything the primary has committed so far.
async fn replica_caught_up() {
    let (primary, replica) = (
        pool("DATABASE_URL").await,
        pool("DATABASE_REPLICA_URL").await,
    );
    let target: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(&primary)
        .await
        .expect("answers");
    eventually(
        "the replica catches up",
        Duration::from_secs(15),
        || async {
            let done: bool = sqlx::query_scalar("select pg_last_wal_replay_lsn() >= $1::pg_lsn")
                .bind(&target)
                .fetch_one(&replica)
                .await
                .expect("answers");
            done.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_refill_while_the_replica_lags_stores_the_change_not_the_replicas_view() {
    let instances = instance_urls();
    let writer = signed_up(&instances[0], &TestUser::new()).await;
    let reader = signed_up(&instances[1], &TestUser::new()).await;
    let org = new_org(&writer).await;
    // A member as an accepted invitation makes one (before any read of the dashboard).
    sqlx::query("insert into memberships (org_id, user_id, role) values ($1, $2, 'member')")
        .bind(org)
        .bind(my_id(&reader).await)
        .execute(&pool("DATABASE_URL").await)
        .await
        .expect("inserts");
    let project = new_project(&writer, org).await;
    let task = id_of(&new_task(&writer, org, project, json!({"title": "a"})).await);
    replica_caught_up().await;
    let warm = stats(&reader, org).await;
    assert_eq!(warm["projects"][0]["todo"], 1, "{warm}");

    let paused = ReplayPaused::start().await;
    let (status, body) = call(
        &writer,
        Method::PATCH,
        &format!("/orgs/{org}/projects/{project}/tasks/{task}"),
        Some(json!({"status": "doing"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_replica: String = sqlx::query_scalar("select status from tasks where id = $1")
        .bind(task)
        .fetch_one(&pool("DATABASE_REPLICA_URL").await)
        .await
        .expect("answers");
    assert_eq!(on_replica, "todo", "the replica really lags");

    // Another member, through another instance: a miss, refilled while the replica lags.
    let refilled = stats(&reader.via(&instances[2]), org).await;
    assert_ne!(refilled["computed_at"], warm["computed_at"], "a refill");
    assert_eq!(refilled["projects"][0]["doing"], 1, "{refilled}");
    paused.resume();

    let next = stats(&reader.via(&instances[1]), org).await;
    assert_eq!(next["projects"][0]["doing"], 1, "{next}");
    assert_eq!(
        next["computed_at"], refilled["computed_at"],
        "served from the cache"
    );
}

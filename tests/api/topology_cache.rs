//! The dashboard cache on the real topology: a stampede of cold reads across the three
//! instances runs the aggregate once, a refill while the replica lags never stores the
//! replica's stale view, and a cache Redis that hangs or dies leaves reads answered from the
//! database in bounded time. Replay is paused and a Redis killed for real, so scripts/test
//! runs these alone.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    Api, Down, TestUser, client, env, eventually, instance_urls, metric, my_id, scrape, signed_up,
    spawn_app_with,
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

/// The version of an entry (the positions its invalidations recorded) is lost, as when
/// `allkeys-lru` evicts it or Redis restarts without persistence, together with a change whose
/// invalidation it held. The refill reads the primary: the replica, lagging, has not replayed
/// that change, and what it would give would be stored for a whole TTL.
#[tokio::test]
async fn a_refill_after_the_version_is_lost_reads_the_primary() {
    let instances = instance_urls();
    let owner = signed_up(&instances[0], &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    let task = id_of(&new_task(&owner, org, project, json!({"title": "a"})).await);
    replica_caught_up().await;
    let warm = stats(&owner, org).await;
    assert_eq!(warm["projects"][0]["todo"], 1, "{warm}");

    let paused = ReplayPaused::start().await;
    // The change whose invalidation the lost version held: written directly, so that only the
    // version's loss (not an invalidation) voids the entry.
    sqlx::query("update tasks set status = 'doing' where id = $1")
        .bind(task)
        .execute(&pool("DATABASE_URL").await)
        .await
        .expect("updates");
    let on_replica: String = sqlx::query_scalar("select status from tasks where id = $1")
        .bind(task)
        .fetch_one(&pool("DATABASE_REPLICA_URL").await)
        .await
        .expect("answers");
    assert_eq!(on_replica, "todo", "the replica really lags");
    let client = redis::Client::open(env("REDIS_URL")).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("cache:stats:{{{org}}}:v"))
        .query_async(&mut conn)
        .await
        .expect("deleted");
    assert_eq!(deleted, 1, "the version existed");

    // Another instance, and a user with no write of their own pending: a plain reader.
    let refilled = stats(&owner.via(&instances[2]), org).await;
    paused.resume();
    assert_ne!(refilled["computed_at"], warm["computed_at"], "a refill");
    assert_eq!(refilled["projects"][0]["doing"], 1, "{refilled}");
}

/// A Redis server of the cache's own (`CACHE_REDIS_URL`), started for one test, so that it can
/// hang and die while the sessions' Redis stays up. Killed when dropped.
struct CacheRedis {
    child: std::process::Child,
    port: u16,
}

impl CacheRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let url = format!("redis://127.0.0.1:{port}/");
        eventually("the cache's Redis answers", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        })
        .await;
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for CacheRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn when_the_caches_redis_hangs_or_dies_reads_come_from_the_database_in_bounded_time() {
    let redis = CacheRedis::start().await;
    let app = spawn_app_with(&[
        ("CACHE_REDIS_URL", &redis.url()),
        ("REDIS_TIMEOUT_MS", "500"),
    ])
    .await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    let count = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let url = metrics_url.clone();
        async move { metric(&scrape(&url).await, name, labels) }
    };
    let stats_cache = &[("cache", "stats")];
    let hits = &[("cache", "stats"), ("result", "hit")];

    let filled = stats(&owner, org).await;
    let hits_before = count("cache_requests_total", hits).await;
    assert_eq!(
        stats(&owner, org).await,
        filled,
        "served from the cache's Redis"
    );
    assert_eq!(count("cache_requests_total", hits).await, hits_before + 1.0);

    for (what, signal) in [("hangs", "-STOP"), ("dies", "-KILL")] {
        redis.signal(signal);
        let fallbacks = count("cache_fallbacks_total", stats_cache).await;
        let started = std::time::Instant::now();
        let read = stats(&owner, org).await;
        let took = started.elapsed();
        assert_eq!(read["members"], 1, "{what}: {read}");
        assert_ne!(
            read["computed_at"], filled["computed_at"],
            "{what}: from the database"
        );
        // One bounded look at the cache (REDIS_TIMEOUT_MS), then the database.
        assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        assert!(
            count("cache_fallbacks_total", stats_cache).await >= fallbacks + 1.0,
            "{what}: the fallback is counted"
        );
    }
}

/// A Redis restart drops every instance's cache connection; the first cache call after it
/// opens a new one at once (one retry) instead of falling back to the database, and the first
/// invalidation after it is not lost.
#[tokio::test]
async fn after_a_redis_restart_the_first_reads_and_invalidations_still_use_the_cache() {
    let instances = instance_urls();
    let owner = signed_up(&instances[0], &TestUser::new()).await;
    let org = new_org(&owner).await;
    // A cache connection open on every instance.
    for instance in &instances {
        stats(&owner.via(instance), org).await;
    }
    let fallbacks = || async {
        let mut total = 0.0;
        for url in env("SCALEOUT_METRICS").split_whitespace().take(3) {
            total += metric(
                &scrape(url).await,
                "cache_fallbacks_total",
                &[("cache", "stats")],
            );
        }
        total
    };

    Down::stop("redis").start();
    // Sessions live in Redis too: every instance ready again before the next request (and
    // before the next test).
    for instance in &instances {
        eventually(
            "ready after the Redis restart",
            Duration::from_secs(60),
            || async {
                let response = client()
                    .get(format!("{instance}/ready"))
                    .send()
                    .await
                    .ok()?;
                (response.status() == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
    // A new account and organization: the restart may have lost the session.
    let owner = signed_up(&instances[0], &TestUser::new()).await;
    let org = new_org(&owner).await;
    let before = fallbacks().await;
    for instance in &instances {
        stats(&owner.via(instance), org).await;
    }
    let project_after = new_project(&owner.via(&instances[1]), org).await;
    let read = stats(&owner.via(&instances[2]), org).await;

    assert_eq!(
        fallbacks().await,
        before,
        "no read fell back to the database"
    );
    assert_eq!(
        read["projects_total"], 1,
        "the invalidation went through: {read}"
    );
    assert_eq!(read["projects"][0]["project_id"], project_after.to_string());
}

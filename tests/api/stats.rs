//! The organization dashboard (`GET /orgs/{id}/stats`) and its Redis cache: what it counts,
//! that a change is in the next read through the cache (any instance), that a cached read
//! costs fewer statements, that a value computed before an invalidation is never stored, and
//! that an unreachable cache is a counted fallback to the database, never an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Api, TestUser, eventually, metric, my_id, scrape, signed_up, spawn_app, spawn_app_with,
    test_config,
};
use crate::workspace::{add_member, call, id_of, new_org, new_project, new_task};
use scaleout::cache::{Cache, CacheError, Source};
use scaleout::db::lsn::Lsn;
use scaleout::workspace::Role;

async fn stats(api: &Api, org: Uuid) -> Value {
    let (status, body) = call(api, Method::GET, &format!("/orgs/{org}/stats"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn project(stats: &Value, id: Uuid) -> &Value {
    stats["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .find(|p| p["project_id"] == id.to_string())
        .unwrap_or_else(|| panic!("project {id} in {stats}"))
}

async fn set_status(api: &Api, org: Uuid, project: Uuid, task: Uuid, status: &str) {
    let (code, body) = call(
        api,
        Method::PATCH,
        &format!("/orgs/{org}/projects/{project}/tasks/{task}"),
        Some(json!({"status": status})),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_dashboard_counts_tasks_open_work_members_and_activity_and_shows_a_change_at_once() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let me = my_id(&owner).await;
    let org = new_org(&owner).await;
    let launch = new_project(&owner, org).await;
    let todo = id_of(
        &new_task(
            &owner,
            org,
            launch,
            json!({"title": "a", "assignee_id": me}),
        )
        .await,
    );
    new_task(
        &owner,
        org,
        launch,
        json!({"title": "b", "status": "doing", "assignee_id": me}),
    )
    .await;
    new_task(
        &owner,
        org,
        launch,
        json!({"title": "c", "status": "done", "assignee_id": me}),
    )
    .await;

    let before = stats(&owner, org).await;
    assert_eq!(before["members"], 1, "{before}");
    assert_eq!(before["projects_total"], 1, "{before}");
    let p = project(&before, launch);
    assert_eq!(
        (p["todo"].as_i64(), p["doing"].as_i64(), p["done"].as_i64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        before["open_tasks_by_assignee"],
        json!([{"user_id": me, "open": 2}]),
        "done tasks are not open"
    );
    // org.created, project.created and three task.created.
    assert_eq!(before["activity"]["last_7_days"], 5, "{before}");
    assert_eq!(
        stats(&owner, org).await,
        before,
        "the second read is the cached one"
    );

    set_status(&owner, org, launch, todo, "done").await;
    let after = stats(&owner, org).await;
    let p = project(&after, launch);
    assert_eq!(
        (p["todo"].as_i64(), p["done"].as_i64()),
        (Some(0), Some(2)),
        "{after}"
    );
    assert_eq!(after["open_tasks_by_assignee"][0]["open"], 1, "{after}");
    assert_eq!(after["activity"]["last_7_days"], 6, "{after}");
}

#[tokio::test]
async fn a_change_through_one_instance_is_in_the_next_read_through_another() {
    let (a, b) = (spawn_app().await, spawn_app().await);
    let reader = signed_up(&a.url(""), &TestUser::new()).await;
    let writer = signed_up(&b.url(""), &TestUser::new()).await;
    let org = new_org(&reader).await;
    add_member(&a, org, my_id(&writer).await, Role::Member).await;
    let launch = new_project(&reader, org).await;
    let task = id_of(&new_task(&reader, org, launch, json!({"title": "a"})).await);

    let cached = stats(&reader, org).await;
    assert_eq!(stats(&reader, org).await, cached, "served from the cache");
    set_status(&writer, org, launch, task, "doing").await;

    let read = stats(&reader, org).await;
    assert_eq!(project(&read, launch)["doing"], 1, "{read}");
    assert_ne!(read["computed_at"], cached["computed_at"]);
}

#[tokio::test]
async fn a_non_member_gets_the_404_of_a_missing_organization() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let stranger = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    stats(&owner, org).await;

    let (status, body) = call(&stranger, Method::GET, &format!("/orgs/{org}/stats"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = call(
        &stranger,
        Method::GET,
        &format!("/orgs/{}/stats", Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_cached_read_runs_fewer_statements_than_a_miss() {
    // The statement counter listens to sqlx's events through the process' subscriber.
    crate::traces::collector();
    let app = spawn_app_with(&[("HTTP_QUERY_COUNT_HEADER", "true")]).await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let queries = || async {
        let response = owner
            .send(owner.request(Method::GET, &format!("/orgs/{org}/stats")))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["x-db-queries"]
            .to_str()
            .expect("ascii")
            .parse::<u32>()
            .expect("a number")
    };
    let miss = queries().await;
    let hit = queries().await;
    // The membership (OrgAccess) on both; the aggregate only on the miss.
    assert!(miss > hit, "miss {miss}, hit {hit}");
}

#[tokio::test]
async fn with_the_cache_unreachable_the_dashboard_comes_from_the_database_and_is_counted() {
    // Sessions stay on the topology's Redis; only the cache's server is gone (nothing listens
    // on port 1), as when a cache Redis of its own fails.
    let app = spawn_app_with(&[("CACHE_REDIS_URL", "redis://127.0.0.1:1/")]).await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    let fallbacks = || async {
        metric(
            &scrape(&metrics_url).await,
            "cache_fallbacks_total",
            &[("cache", "stats")],
        )
    };
    let before = fallbacks().await;

    let started = Instant::now();
    let body = stats(&owner, org).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(body["members"], 1, "{body}");
    assert!(fallbacks().await >= before + 1.0, "the fallback is counted");
}

/// The cache itself, on the topology's Redis: a value computed while an invalidation runs is
/// returned to its reader but never stored (it may predate the change), and the recompute
/// after it reads from at least the invalidation's position.
#[tokio::test]
async fn a_value_computed_across_an_invalidation_is_not_stored() {
    let config = test_config(&[]);
    let redis = scaleout::redis_client::RedisClient::new(&config.redis).expect("redis");
    let cache = Cache::new("test", redis, config.cache.clone());
    let id = Uuid::new_v4().to_string();
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));

    let compute = |invalidate_meanwhile: bool| {
        let (cache, id, runs, seen) = (cache.clone(), id.clone(), runs.clone(), seen.clone());
        move |source: Source| {
            let (cache, id, runs, seen) = (cache.clone(), id.clone(), runs.clone(), seen.clone());
            async move {
                seen.lock().expect("not poisoned").push(source);
                let n = runs.fetch_add(1, Ordering::SeqCst);
                if invalidate_meanwhile {
                    cache.invalidate(&id, Some(Lsn(42))).await;
                }
                Ok::<usize, ()>(n)
            }
        }
    };
    assert_eq!(cache.get(&id, compute(true)).await, Ok(0));
    assert_eq!(
        cache.get(&id, compute(false)).await,
        Ok(1),
        "not stored: computed again"
    );
    assert_eq!(
        cache.get(&id, compute(false)).await,
        Ok(1),
        "stored this time"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        vec![Source::Primary, Source::After(Some(Lsn(42)))],
        "the first fill (no version yet) reads the primary; the recompute after the \
         invalidation reads at least its position"
    );
}

/// Stale-while-revalidate and the recompute lock, on the topology's Redis with the lock taken
/// by hand (as another instance's recompute would hold it): an expired entry is served stale
/// without computing; a missing one is waited for, then computed without being stored.
#[tokio::test]
async fn while_another_recompute_holds_the_lock_readers_get_the_stale_value_or_wait() {
    let config = test_config(&[
        ("STATS_CACHE_STALE_SECS", "30"),
        ("STATS_CACHE_JITTER_PERCENT", "0"),
        ("STATS_CACHE_WAIT_MS", "300"),
    ]);
    let redis = scaleout::redis_client::RedisClient::new(&config.redis).expect("redis");
    let cache = Cache::new("test", redis.clone(), config.cache.clone());
    let id = Uuid::new_v4().to_string();
    let (entry, lock) = (
        format!("cache:test:{{{id}}}"),
        format!("cache:test:{{{id}}}:lock"),
    );
    let conn = redis.conn().await.expect("redis");
    let command = |args: Vec<String>| {
        let mut conn = conn.clone();
        async move {
            let mut cmd = redis::cmd(&args[0]);
            for arg in &args[1..] {
                cmd.arg(arg);
            }
            cmd.query_async::<redis::Value>(&mut conn)
                .await
                .expect("redis answers");
        }
    };
    let value = |n: u32| move |_: Source| async move { Ok::<u32, ()>(n) };

    assert_eq!(cache.get(&id, value(1)).await, Ok(1), "a miss fills");
    assert_eq!(cache.get(&id, value(2)).await, Ok(1), "a hit");
    // Past its freshness: only the stale window (30 s) is left of its life.
    command(vec!["PEXPIRE".into(), entry.clone(), "29000".into()]).await;
    command(vec![
        "SET".into(),
        lock.clone(),
        "another".into(),
        "PX".into(),
        "5000".into(),
    ])
    .await;
    assert_eq!(
        cache.get(&id, value(3)).await,
        Ok(1),
        "stale while another recomputes"
    );
    command(vec!["DEL".into(), lock.clone()]).await;
    assert_eq!(cache.get(&id, value(4)).await, Ok(4), "this one recomputes");
    assert_eq!(cache.get(&id, value(5)).await, Ok(4), "and stored");

    command(vec!["DEL".into(), entry.clone()]).await;
    command(vec![
        "SET".into(),
        lock.clone(),
        "another".into(),
        "PX".into(),
        "5000".into(),
    ])
    .await;
    // Ten readers of one instance at once: they wait together (one polls Redis), then answer
    // busy rather than each running the aggregate the holder is running.
    let started = Instant::now();
    let readers: Vec<_> = (0..10).map(|n| cache.get(&id, value(100 + n))).collect();
    let answers = futures_util::future::join_all(readers).await;
    let took = started.elapsed();
    assert!(
        answers.iter().all(|a| *a == Err(CacheError::Busy)),
        "{answers:?}"
    );
    assert!(took >= Duration::from_millis(300), "they waited first");
    assert!(
        took < Duration::from_millis(1500),
        "they waited together, not one after another: {took:?}"
    );
    // The holder died (its lock is gone): a waiter takes the lock and recomputes.
    let late = tokio::spawn({
        let cache = cache.clone();
        let id = id.clone();
        async move { cache.get(&id, value(7)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    command(vec!["DEL".into(), lock]).await;
    assert_eq!(late.await.expect("no panic"), Ok(7), "the lock vanished");
    assert_eq!(cache.get(&id, value(8)).await, Ok(7), "and it stored");
}

/// Concurrent misses of one instance run the aggregate once: the request that recomputes
/// stores the value, and the ones queued behind it look again and find it.
#[tokio::test]
async fn concurrent_misses_on_one_instance_run_the_aggregate_once() {
    let config = test_config(&[]);
    let redis = scaleout::redis_client::RedisClient::new(&config.redis).expect("redis");
    let cache = Cache::new("test", redis, config.cache.clone());
    let id = Uuid::new_v4().to_string();
    let runs = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let runs = runs.clone();
            cache.get(&id, move |_: Source| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // A slow aggregate: the other readers arrive while it runs.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<u32, ()>(7)
                }
            })
        })
        .collect();
    let answers = futures_util::future::join_all(readers).await;
    assert!(answers.iter().all(|a| *a == Ok(7)), "{answers:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one aggregate for ten readers"
    );
}

/// A missing version (evicted, or lost with a Redis restart) loses the positions of past
/// invalidations: the refill reads the primary and recreates the version. After an
/// invalidation whose position was unknown, only the next recompute reads the primary.
#[tokio::test]
async fn without_a_known_position_only_the_next_refill_reads_the_primary() {
    let config = test_config(&[]);
    let redis = scaleout::redis_client::RedisClient::new(&config.redis).expect("redis");
    let cache = Cache::new("test", redis.clone(), config.cache.clone());
    let id = Uuid::new_v4().to_string();
    let (entry, version) = (
        format!("cache:test:{{{id}}}"),
        format!("cache:test:{{{id}}}:v"),
    );
    let mut conn = redis.conn().await.expect("redis");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let get = |n: u32| {
        let seen = seen.clone();
        cache.get(&id, move |source: Source| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("not poisoned").push(source);
                Ok::<u32, ()>(n)
            }
        })
    };
    let sources = || std::mem::take(&mut *seen.lock().expect("not poisoned"));

    cache.invalidate(&id, Some(Lsn(7))).await;
    assert_eq!(get(1).await, Ok(1));
    assert_eq!(sources(), vec![Source::After(Some(Lsn(7)))]);

    // The version is evicted: the entry it validated is no longer served.
    redis::cmd("DEL")
        .arg(&version)
        .query_async::<i64>(&mut conn)
        .await
        .expect("deleted");
    assert_eq!(get(2).await, Ok(2), "not the entry of a lost version");
    assert_eq!(get(3).await, Ok(2), "stored, with a version of its own");
    assert_eq!(sources(), vec![Source::Primary]);

    // A position that could not be read: the next recompute reads the primary, and only it.
    cache.invalidate(&id, None).await;
    assert_eq!(get(4).await, Ok(4));
    assert_eq!(get(5).await, Ok(4));
    redis::cmd("DEL")
        .arg(&entry)
        .query_async::<i64>(&mut conn)
        .await
        .expect("deleted");
    cache.invalidate(&id, Some(Lsn(9))).await;
    assert_eq!(get(6).await, Ok(6));
    assert_eq!(
        sources(),
        vec![Source::Primary, Source::After(Some(Lsn(9)))],
        "the mark lasted one recompute"
    );
    cache.invalidate(&id, None).await;
    cache.invalidate(&id, None).await;
    redis::cmd("DEL")
        .arg(&entry)
        .query_async::<i64>(&mut conn)
        .await
        .expect("deleted");
    assert_eq!(get(7).await, Ok(7));
    assert_eq!(get(8).await, Ok(7));
    // Expired, not invalidated: the mark was cleared by the primary's store.
    redis::cmd("DEL")
        .arg(&entry)
        .query_async::<i64>(&mut conn)
        .await
        .expect("deleted");
    assert_eq!(get(9).await, Ok(9));
    assert_eq!(
        sources(),
        vec![Source::Primary, Source::After(Some(Lsn(9)))],
        "no failed position is recorded as a position"
    );
}

/// An invalidation runs to its end even when the request that made the write is dropped right
/// after its commit (the client left, a timeout): it runs in a task of its own.
#[tokio::test]
async fn an_invalidation_outlives_its_dropped_caller() {
    let config = test_config(&[]);
    let redis = scaleout::redis_client::RedisClient::new(&config.redis).expect("redis");
    let cache = Cache::new("test", redis, config.cache.clone());
    let id = Uuid::new_v4().to_string();
    let value = |n: u32| move |_: Source| async move { Ok::<u32, ()>(n) };
    assert_eq!(cache.get(&id, value(1)).await, Ok(1));
    assert_eq!(cache.get(&id, value(2)).await, Ok(1), "cached");

    // Polled once (it starts), then dropped, as a cancelled handler's future would be.
    {
        let invalidation = std::pin::pin!(cache.invalidate(&id, Some(Lsn(1))));
        assert!(
            futures_util::poll!(invalidation).is_pending(),
            "dropped before it finished"
        );
    }

    eventually("the invalidation completes", Duration::from_secs(5), || {
        let cache = cache.clone();
        let id = id.clone();
        async move { (cache.get(&id, value(3)).await == Ok(3)).then_some(()) }
    })
    .await;
}

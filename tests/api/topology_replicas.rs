//! Reads on the replica, writes on the primary, read-your-writes across instances. Lag is
//! injected for real: replay is paused on the replica (`pg_wal_replay_pause()`). These tests
//! change what every reader sees, so scripts/test runs them alone, one at a time.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    Api, TestUser, client, edge_url, env, eventually, instance_urls, scrape, signed_up, stack,
};

async fn ops() -> PgPool {
    PgPool::connect(&env("DATABASE_REPLICA_OPS_URL"))
        .await
        .expect("the ops role reaches the replica")
}

async fn primary() -> PgPool {
    PgPool::connect(&env("DATABASE_URL"))
        .await
        .expect("the primary answers")
}

async fn set_replay(paused: bool) {
    let sql = if paused {
        "select pg_wal_replay_pause()"
    } else {
        "select pg_wal_replay_resume()"
    };
    sqlx::query(sql)
        .execute(&ops().await)
        .await
        .expect("replay control");
}

/// The name the replica itself holds for `id`, read directly.
async fn name_on_replica(id: &str) -> Option<String> {
    let replica = PgPool::connect(&env("DATABASE_REPLICA_URL"))
        .await
        .expect("replica");
    sqlx::query_scalar("select name from users where id = $1::uuid")
        .bind(id)
        .fetch_optional(&replica)
        .await
        .expect("reads")
}

async fn id_of(api: &Api) -> String {
    let me: Value = api.me().await.json().await.expect("json");
    me["id"].as_str().expect("an id").to_owned()
}

async fn rename(api: &Api, name: &str) {
    let response = api
        .send(
            api.request(Method::PATCH, "/me")
                .json(&json!({"name": name})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn profile_name(api: &Api, id: &str) -> Option<String> {
    let response = api
        .send(api.request(Method::GET, &format!("/users/{id}")))
        .await;
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["name"].as_str().map(str::to_owned)
}

/// Waits until `reader` sees `name` for user `id` (the replica has replayed it).
async fn until_profile_reads(reader: &Api, id: &str, name: &str) {
    eventually(
        &format!("profile {id} reads {name}"),
        Duration::from_secs(15),
        || async { (profile_name(reader, id).await.as_deref() == Some(name)).then_some(()) },
    )
    .await;
}

/// `db_read_routing_total` of one instance, for a target and reason.
async fn routed(instance: usize, target: &str, reason: &str) -> f64 {
    let url = env("SCALEOUT_METRICS")
        .split_whitespace()
        .nth(instance)
        .expect("a metrics url")
        .to_owned();
    let text = scrape(&url).await;
    let wanted = format!("db_read_routing_total{{target=\"{target}\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_writer_reads_their_own_write_on_every_instance_while_replay_is_paused() {
    set_replay(false).await;
    let [a, b, c] = <[String; 3]>::try_from(instance_urls()).expect("three instances");
    let user = TestUser::new();
    let writer = signed_up(&a, &user).await;
    let id = id_of(&writer).await;
    until_profile_reads(&Api::new(&b), &id, &user.name).await;

    set_replay(true).await;
    rename(&writer, "Renamed While Paused").await;
    let mut names = Vec::new();
    for i in 0..50 {
        let base = [&a, &b, &c][i % 3];
        let me: Value = writer.via(base).me().await.json().await.expect("json");
        names.push(me["name"].as_str().unwrap_or_default().to_owned());
    }
    let on_replica = name_on_replica(&id).await;
    set_replay(false).await;

    assert!(
        names.iter().all(|n| n == "Renamed While Paused"),
        "{names:?}"
    );
    assert_eq!(
        on_replica.as_deref(),
        Some(user.name.as_str()),
        "the replica really lagged"
    );
}

#[tokio::test]
async fn others_read_the_replica_and_see_the_write_once_replay_resumes() {
    set_replay(false).await;
    let [a, b, c] = <[String; 3]>::try_from(instance_urls()).expect("three instances");
    let x = TestUser::new();
    let writer = signed_up(&a, &x).await;
    let x_id = id_of(&writer).await;
    let reader = signed_up(&b, &TestUser::new()).await.via(&c);
    until_profile_reads(&reader, &x_id, &x.name).await;

    set_replay(true).await;
    rename(&writer, "New Name").await;
    let seen_while_paused = profile_name(&reader, &x_id).await;
    set_replay(false).await;

    assert_eq!(
        seen_while_paused.as_deref(),
        Some(x.name.as_str()),
        "served by the replica"
    );
    until_profile_reads(&reader, &x_id, "New Name").await;
}

#[tokio::test]
async fn a_stopped_replica_fails_no_read_and_reads_return_once_it_is_back() {
    set_replay(false).await;
    let instances = instance_urls();
    let user = TestUser::new();
    let api = signed_up(&instances[0], &user).await;
    let id = id_of(&api).await;
    until_profile_reads(&Api::new(&instances[1]), &id, &user.name).await;

    stack(&["stop", "replica"]);
    let mut statuses = Vec::new();
    for base in &instances {
        statuses.push(api.via(base).me().await.status());
        let anonymous = Api::new(base);
        statuses.push(
            anonymous
                .send(anonymous.request(Method::GET, &format!("/users/{id}")))
                .await
                .status(),
        );
        statuses.push(
            anonymous
                .send(anonymous.request(Method::GET, ""))
                .await
                .status(),
        );
    }
    let ready = client()
        .get(format!("{}/ready", instances[0]))
        .send()
        .await
        .expect("ready");
    let ready_status = ready.status();
    let ready_body: Value = ready.json().await.expect("json");
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = client()
            .get(format!("{}/api/v1", edge_url()))
            .send()
            .await
            .expect("nginx");
        served_by.insert(
            r.headers()["x-instance-id"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
    }
    stack(&["start", "replica"]);

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(
        ready_status,
        StatusCode::OK,
        "still in rotation: {ready_body}"
    );
    assert_eq!(ready_body["status"], "degraded");
    assert_eq!(ready_body["down"], json!(["replica"]));
    assert_eq!(served_by.len(), 3, "{served_by:?}");
    // Back: anonymous reads on app1 are routed to the replica again.
    let anonymous = Api::new(&instances[0]);
    eventually(
        "reads return to the replica",
        Duration::from_secs(30),
        || async {
            let before = routed(0, "replica", "replica").await;
            let r = anonymous
                .send(anonymous.request(Method::GET, &format!("/users/{id}")))
                .await;
            (r.status() == StatusCode::OK && routed(0, "replica", "replica").await > before)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn past_the_byte_lag_threshold_everyone_reads_the_primary() {
    set_replay(false).await;
    let [a, b, _] = <[String; 3]>::try_from(instance_urls()).expect("three instances");
    let x = TestUser::new();
    let writer = signed_up(&a, &x).await;
    let x_id = id_of(&writer).await;
    let reader = signed_up(&b, &TestUser::new()).await;
    until_profile_reads(&reader, &x_id, &x.name).await;

    set_replay(true).await;
    rename(&writer, "Renamed Before The Flood").await;
    let before_flood = profile_name(&reader, &x_id).await;
    let unhealthy_before = routed(1, "primary", "unhealthy").await;
    // More WAL than the threshold, written while the replica cannot replay it.
    let threshold: i64 = env("REPLICA_MAX_LAG_BYTES").parse().expect("bytes");
    let primary = primary().await;
    let start: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(&primary)
        .await
        .expect("lsn");
    loop {
        sqlx::query(
            "insert into users (id, email, name, password_hash)
             select gen_random_uuid(), 'filler-' || gen_random_uuid() || '@example.com', 'filler', 'x'
               from generate_series(1, 5000)",
        )
        .execute(&primary)
        .await
        .expect("filler");
        let written: i64 = sqlx::query_scalar("select (pg_current_wal_lsn() - $1::pg_lsn)::bigint")
            .bind(&start)
            .fetch_one(&primary)
            .await
            .expect("diff");
        if written > 2 * threshold {
            break;
        }
    }
    // Reads move to the primary: the reader sees the write the replica has not replayed.
    eventually(
        "reads move to the primary",
        Duration::from_secs(15),
        || async {
            let name = profile_name(&reader, &x_id).await?;
            (name == "Renamed Before The Flood").then_some(())
        },
    )
    .await;
    let unhealthy_reads = routed(1, "primary", "unhealthy").await;
    set_replay(false).await;
    sqlx::query("delete from users where email like 'filler-%'")
        .execute(&primary)
        .await
        .expect("cleanup");

    assert_eq!(
        before_flood.as_deref(),
        Some(x.name.as_str()),
        "replica served before the flood"
    );
    assert!(
        unhealthy_reads > unhealthy_before,
        "counted as reads for an unhealthy replica"
    );
}

//! Reads on the replica, writes on the primary, read-your-writes across instances. Lag is
//! injected for real: replay is paused on the replica (`pg_wal_replay_pause()`). These tests
//! change what every reader sees, so scripts/test runs them alone, one at a time.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use scaleout::db::Caller;

use crate::helpers::{
    Api, Down, TestUser, client, edge_url, env, eventually, instance_urls, metric, read_on_standby,
    scrape, signed_up, spawn_app, spawn_app_with,
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

/// Replay paused on the replica until this is dropped: resumed even when an assertion fails,
/// so one failing test does not leave every later reader on a stale replica.
pub(crate) struct ReplayPaused;

impl ReplayPaused {
    pub(crate) async fn start() -> Self {
        set_replay(true).await;
        Self
    }

    /// Resumes replay now.
    pub(crate) fn resume(self) {}
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        // Drop cannot await: resume from a thread with a runtime of its own.
        let resumed = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(set_replay(false));
        })
        .join();
        // Asserting during a test's own panic would abort the whole test binary.
        if resumed.is_err() && !std::thread::panicking() {
            panic!("replay did not resume");
        }
    }
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

    let paused = ReplayPaused::start().await;
    writer.rename("Renamed While Paused").await;
    let mut names = Vec::new();
    for i in 0..50 {
        let base = [&a, &b, &c][i % 3];
        let me: Value = writer.via(base).me().await.json().await.expect("json");
        names.push(me["name"].as_str().unwrap_or_default().to_owned());
    }
    let on_replica = name_on_replica(&id).await;
    paused.resume();

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

    let paused = ReplayPaused::start().await;
    writer.rename("New Name").await;
    let seen_while_paused = profile_name(&reader, &x_id).await;
    paused.resume();

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

    let down = Down::stop("replica");
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
    down.start();

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

    let paused = ReplayPaused::start().await;
    writer.rename("Renamed Before The Flood").await;
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
    paused.resume();
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

#[tokio::test]
async fn past_the_time_lag_threshold_reads_move_to_the_primary_and_come_back() {
    set_replay(false).await;
    // A second of time lag is too much; bytes are not the reason here (a gigabyte allowed).
    let app = spawn_app_with(&[
        ("REPLICA_MAX_LAG_MS", "1000"),
        ("REPLICA_MAX_LAG_BYTES", "1073741824"),
        ("REPLICA_PROBE_INTERVAL_MS", "100"),
    ])
    .await;
    let db = &app.state.db;
    eventually(
        "the replica serves reads",
        Duration::from_secs(15),
        || async { read_on_standby(db, Caller::Anonymous).await.then_some(()) },
    )
    .await;

    let paused = ReplayPaused::start().await;
    // A small write the replica cannot replay: a few hundred bytes of WAL, then time passes.
    let marker = format!("lag-{}", uuid::Uuid::new_v4());
    sqlx::query("insert into canary_effects (job_id) values ($1)")
        .bind(&marker)
        .execute(db.primary_pool())
        .await
        .expect("writes");
    eventually(
        "reads move to the primary",
        Duration::from_secs(15),
        || async { (!read_on_standby(db, Caller::Anonymous).await).then_some(()) },
    )
    .await;
    let lag_bytes: i64 = sqlx::query_scalar("select (pg_current_wal_lsn() - $1::pg_lsn)::bigint")
        .bind(replayed_on_replica().await)
        .fetch_one(db.primary_pool())
        .await
        .expect("the byte lag");
    paused.resume();

    assert!(
        lag_bytes < 1_073_741_824,
        "the byte lag ({lag_bytes}) is under its threshold: time alone moved the reads"
    );
    eventually(
        "reads return to the replica",
        Duration::from_secs(15),
        || async { read_on_standby(db, Caller::Anonymous).await.then_some(()) },
    )
    .await;
    sqlx::query("delete from canary_effects where job_id = $1")
        .bind(&marker)
        .execute(db.primary_pool())
        .await
        .expect("cleans up");
}

/// The replica's replay position, read from the replica itself.
async fn replayed_on_replica() -> String {
    sqlx::query_scalar("select pg_last_wal_replay_lsn()::text")
        .fetch_one(&ops().await)
        .await
        .expect("the replay position")
}

#[tokio::test]
async fn a_replica_lost_between_probes_fails_the_read_over_to_the_primary() {
    set_replay(false).await;
    // One probe at start, none after: the instance believes the replica healthy when it goes.
    let app = spawn_app_with(&[("REPLICA_PROBE_INTERVAL_MS", "3600000")]).await;
    let db = &app.state.db;
    let metrics = format!("http://{}/metrics", app.internal_addr);
    eventually(
        "the replica serves reads",
        Duration::from_secs(15),
        || async { read_on_standby(db, Caller::Anonymous).await.then_some(()) },
    )
    .await;
    let failover = [("target", "primary"), ("reason", "failover")];
    let unhealthy = [("target", "primary"), ("reason", "unhealthy")];
    let before = scrape(&metrics).await;

    let down = Down::stop("replica");
    let first = read_on_standby(db, Caller::Anonymous).await;
    let second = read_on_standby(db, Caller::Anonymous).await;
    let after = scrape(&metrics).await;
    down.start();

    assert!(
        !first,
        "the read that found the replica gone ran on the primary"
    );
    assert!(!second, "and so does the next one");
    let grew = |labels: &[(&str, &str)]| {
        metric(&after, "db_read_routing_total", labels)
            - metric(&before, "db_read_routing_total", labels)
    };
    assert!(grew(&failover) >= 1.0, "counted as a failover");
    assert!(
        grew(&unhealthy) >= 1.0,
        "the replica is marked down at once, without waiting for a probe"
    );
}

#[tokio::test]
async fn a_job_reads_what_its_request_wrote_while_the_replica_lags() {
    set_replay(false).await;
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();

    let paused = ReplayPaused::start().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let id = id_of(&api).await;
    // The signup's email jobs (welcome, verification) read the new account at the position
    // the signup recorded: on the primary, since the replica has not replayed it. Each email
    // is recorded once sent.
    eventually(
        "the signup emails are sent",
        Duration::from_secs(30),
        || async {
            let sent: i64 =
                sqlx::query_scalar("select count(*) from sent_emails where user_id = $1::uuid")
                    .bind(&id)
                    .fetch_one(db)
                    .await
                    .expect("counts");
            (sent == 2).then_some(())
        },
    )
    .await;
    let on_replica = name_on_replica(&id).await;
    paused.resume();

    assert_eq!(
        on_replica, None,
        "the replica really lagged behind the signup"
    );
}

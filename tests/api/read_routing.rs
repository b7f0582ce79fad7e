//! Read-your-writes as an instance keeps it: the write position a user's write leaves in
//! Redis, the newer of two positions kept, the position dropped once the replica has replayed
//! it, and with Redis unreachable every user read on the primary.

use std::collections::HashMap;
use std::time::Duration;

use scaleout::db::{Caller, Db, Writer};

use crate::helpers::{TestApp, TestUser, eventually, my_id, read_on_standby, signed_up, spawn_app};

/// The write position stored for `user`, as Redis holds it.
async fn stored_position(app: &TestApp, user: uuid::Uuid) -> Option<u64> {
    let mut conn = app.state.redis.conn().await.expect("Redis answers");
    let value: Option<String> = redis::cmd("GET")
        .arg(format!("ryw:lsn:{user}"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    value.map(|v| v.parse().expect("a decimal position"))
}

async fn store_position(app: &TestApp, user: uuid::Uuid, position: u64) {
    let mut conn = app.state.redis.conn().await.expect("Redis answers");
    let () = redis::cmd("SET")
        .arg(format!("ryw:lsn:{user}"))
        .arg(position.to_string())
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .expect("SET");
}

#[tokio::test]
async fn a_write_position_is_stored_and_dropped_once_the_replica_has_replayed_it() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let id = my_id(&api).await;

    api.rename("Written Just Now").await;
    let stored = stored_position(&app, id).await;

    assert!(stored.is_some(), "the write left its position in Redis");
    // Reads of this user drop the position as soon as the replica has replayed it.
    eventually(
        "the position is dropped",
        Duration::from_secs(15),
        || async {
            let me: serde_json::Value = api.me().await.json().await.expect("JSON");
            assert_eq!(me["name"], "Written Just Now", "the writer reads the write");
            stored_position(&app, id).await.is_none().then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_committed_unit_of_work_records_its_writers_position_and_a_dropped_one_nothing() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let id = my_id(&api).await;
    let forget = |app: &TestApp| {
        let redis = app.state.redis.clone();
        async move {
            let mut conn = redis.conn().await.expect("Redis answers");
            let () = redis::cmd("DEL")
                .arg(format!("ryw:lsn:{id}"))
                .query_async(&mut conn)
                .await
                .expect("DEL");
        }
    };
    let rename = |name: &'static str| {
        let db = app.state.db.clone();
        async move {
            let mut write = db.begin(Writer::User(id)).await.expect("begins");
            sqlx::query("update users set name = $2 where id = $1")
                .bind(id)
                .bind(name)
                .execute(&mut *write)
                .await
                .expect("updates");
            write
        }
    };

    // Dropped: rolled back, and nothing recorded for the writer.
    forget(&app).await;
    drop(rename("Never Committed").await);
    let after_drop = stored_position(&app, id).await;
    // Committed: no call but `commit()`, and the writer's reads are pinned to the primary.
    rename("Committed").await.commit().await.expect("commits");
    let after_commit = stored_position(&app, id).await;

    assert_eq!(after_drop, None);
    assert!(after_commit.is_some(), "the commit recorded the position");
    let me: serde_json::Value = api.me().await.json().await.expect("JSON");
    assert_eq!(me["name"], "Committed");
}

#[tokio::test]
async fn after_commit_steps_run_after_a_commit_and_never_after_a_rollback() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = spawn_app().await;
    let step = |ran: &Arc<AtomicBool>| {
        let ran = ran.clone();
        move || ran.store(true, Ordering::SeqCst)
    };

    let rolled_back = Arc::new(AtomicBool::new(false));
    let mut write = app.state.db.begin(Writer::System).await.expect("begins");
    write.after_commit(step(&rolled_back));
    drop(write);
    let committed = Arc::new(AtomicBool::new(false));
    let mut write = app.state.db.begin(Writer::System).await.expect("begins");
    write.after_commit(step(&committed));
    let before_commit = committed.load(Ordering::SeqCst);
    write.commit().await.expect("commits");

    assert!(
        !rolled_back.load(Ordering::SeqCst),
        "a dropped write runs no step"
    );
    assert!(!before_commit, "steps wait for the commit");
    assert!(
        committed.load(Ordering::SeqCst),
        "a committed write runs its steps"
    );
}

#[tokio::test]
async fn of_two_write_positions_the_newer_one_is_kept() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let id = my_id(&api).await;

    // A position far beyond the primary's (as if a later write had been recorded through
    // another instance first): this write's older position must not replace it.
    let far_ahead = 1_u64 << 60;
    store_position(&app, id, far_ahead).await;
    api.rename("First").await;
    let kept = stored_position(&app, id).await;

    // An old position: this write's newer one replaces it.
    store_position(&app, id, 1).await;
    api.rename("Second").await;
    let replaced = stored_position(&app, id).await;
    let current: String = sqlx::query_scalar("select pg_current_wal_insert_lsn()::text")
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("the primary's position");
    let current: scaleout::db::lsn::Lsn = current.parse().expect("an LSN");

    assert_eq!(kept, Some(far_ahead));
    assert!(
        replaced.is_some_and(|p| p > 1 && p <= current.0),
        "{replaced:?} is this write's position (at most {})",
        current.0
    );
}

#[tokio::test]
async fn with_redis_unreachable_users_read_the_primary_and_anonymous_readers_the_replica() {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    // Nothing listens on the discard port: every Redis call fails fast.
    vars.insert("REDIS_URL".into(), "redis://127.0.0.1:9/".into());
    vars.insert("REDIS_TIMEOUT_MS".into(), "200".into());
    let config = scaleout::config::DatabaseConfig::from_source(&vars).expect("database config");
    let redis = scaleout::redis_client::RedisClient::new(
        &scaleout::config::RedisConfig::from_source(&vars).expect("redis config"),
    )
    .expect("a client");
    let db = Db::connect_lazy(&config, "test-no-redis", Some(redis)).expect("pools");
    db.probe().await;
    let anonymous = read_on_standby(&db, Caller::Anonymous).await;
    let user = read_on_standby(&db, Caller::User(uuid::Uuid::new_v4())).await;

    assert!(anonymous, "no write to wait for: the replica");
    assert!(
        !user,
        "a user's last write position is unknown: the primary, never a possibly stale replica"
    );
    db.close().await;
}

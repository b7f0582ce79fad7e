//! Several read replicas (`DATABASE_REPLICA_URLS`): plain reads spread over the healthy ones,
//! and a user who just wrote reads from a replica that has replayed the write (or the
//! primary), never from one that has not. The topology's second replica (`replica2`) serves
//! only these tests: pausing its replay changes nothing for any other test, so they run with
//! the others, one after the other (`SERIAL`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use scaleout::config::{DatabaseConfig, RedisConfig};
use scaleout::db::{Caller, Db, Writer};
use scaleout::redis_client::RedisClient;
use sqlx::PgPool;

use crate::helpers::{TestUser, env, eventually, my_id, signed_up, spawn_app};

/// Both tests use replica2, and one pauses its replay.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn port_of(url: &str) -> u16 {
    let authority = url.split('@').nth(1).expect("user@host:port");
    let port = authority.split(['/', '?']).next().expect("host:port");
    port.rsplit(':')
        .next()
        .expect("a port")
        .parse()
        .expect("a number")
}

/// A `Db` reading from the topology's two replicas, the first named through `localhost` so
/// that its metrics series are this test's alone.
async fn two_replica_db() -> (Db, u16, u16) {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let first = env("DATABASE_REPLICA_URL").replace("@127.0.0.1:", "@localhost:");
    let second = env("DATABASE_REPLICA2_URL");
    vars.remove("DATABASE_REPLICA_URL");
    vars.insert("DATABASE_REPLICA_URLS".into(), format!("{first},{second}"));
    let config = DatabaseConfig::from_source(&vars).expect("database config");
    let redis = RedisClient::new(&RedisConfig::from_source(&vars).expect("redis config"))
        .expect("a Redis client");
    let db = Db::connect_lazy(&config, "test-two-replicas", Some(redis)).expect("pools");
    let names: Vec<String> = db.replicas().map(|(name, _)| name.to_owned()).collect();
    assert_eq!(
        names,
        [
            format!("localhost:{}", port_of(&first)),
            format!("127.0.0.1:{}", port_of(&second))
        ],
        "one pool per listed replica, named host:port"
    );
    // Every replica healthy before reading (a replica of unknown lag gets no reads).
    db.probe().await;
    (db, port_of(&first), port_of(&second))
}

/// The port of the server that ran the read.
async fn served_by(db: &Db, caller: Caller) -> u16 {
    db.read(&caller, |pool| async move {
        sqlx::query_scalar::<_, i32>("select inet_server_port()")
            .fetch_one(&pool)
            .await
    })
    .await
    .expect("the read succeeds") as u16
}

#[tokio::test]
async fn plain_reads_spread_over_two_replicas() {
    let _serial = SERIAL.lock().await;
    let (db, first, second) = two_replica_db().await;

    let mut served: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..20 {
        *served
            .entry(served_by(&db, Caller::Anonymous).await)
            .or_default() += 1;
    }

    // Both replicas take reads, and nothing else does (the primary only when none is healthy).
    assert_eq!(
        served.keys().copied().collect::<Vec<_>>(),
        {
            let mut both = vec![first, second];
            both.sort_unstable();
            both
        },
        "served by {served:?}"
    );
    assert!(
        served.values().all(|&n| n >= 5),
        "spread, not stuck on one: {served:?}"
    );
    db.close().await;
}

async fn replica2_ops() -> PgPool {
    PgPool::connect(&env("DATABASE_REPLICA2_OPS_URL"))
        .await
        .expect("the ops role reaches replica2")
}

/// Replay paused on replica2 until this is dropped, resumed even when an assertion fails.
struct Replica2Paused;

impl Replica2Paused {
    async fn start() -> Self {
        set_replay(true).await;
        Self
    }
}

impl Drop for Replica2Paused {
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
        if resumed.is_err() && !std::thread::panicking() {
            panic!("replay did not resume on replica2");
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
        .execute(&replica2_ops().await)
        .await
        .expect("replay control");
}

#[tokio::test]
async fn with_replay_paused_on_one_replica_a_writer_reads_the_other_or_the_primary_never_stale() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let id = my_id(&api).await;
    let (db, first, second) = two_replica_db().await;
    let primary_port = port_of(&env("DATABASE_URL"));
    let name_of = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("select name from users where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
    };
    // The signup has reached replica2, so that its stale view below is the old name.
    eventually("replica2 has the user", Duration::from_secs(15), || {
        let pool = db.replicas().nth(1).expect("replica2").1.clone();
        async move { name_of(pool).await.ok() }
    })
    .await;

    let paused = Replica2Paused::start().await;
    let mut write = db.begin(Writer::User(id)).await.expect("begins");
    sqlx::query("update users set name = 'Written While Paused' where id = $1")
        .bind(id)
        .execute(&mut *write)
        .await
        .expect("updates");
    write.commit().await.expect("commits");
    let on_replica2 = name_of(db.replicas().nth(1).expect("replica2").1.clone())
        .await
        .expect("replica2 answers");
    // The first replica replays the write; from then on the writer may read there.
    eventually(
        "the first replica has replayed the write",
        Duration::from_secs(15),
        || {
            let pool = db.replicas().next().expect("first").1.clone();
            async move { (name_of(pool).await.ok()? == "Written While Paused").then_some(()) }
        },
    )
    .await;
    let mut served: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..20 {
        let (name, port) = db
            .read(&Caller::User(id), |pool| async move {
                sqlx::query_as::<_, (String, i32)>(
                    "select name, inet_server_port() from users where id = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
            })
            .await
            .expect("the read succeeds");
        assert_eq!(name, "Written While Paused", "the writer reads their write");
        *served.entry(port as u16).or_default() += 1;
    }
    // An anonymous reader may still be sent to replica2 (within the lag bound): only the
    // writer's reads avoid it.
    let mut anonymous_on_second = false;
    for _ in 0..10 {
        anonymous_on_second |= served_by(&db, Caller::Anonymous).await == second;
    }
    drop(paused);

    assert_ne!(
        on_replica2, "Written While Paused",
        "replica2 really lagged behind the write"
    );
    assert!(
        !served.contains_key(&second),
        "never the replica that has not replayed the write: {served:?}"
    );
    assert!(
        served.contains_key(&first),
        "the replica that has replayed it serves the writer: {served:?} (primary {primary_port})"
    );
    assert!(
        anonymous_on_second,
        "replica2, healthy within its lag bound, still serves reads that wait for no write"
    );
    db.close().await;
}

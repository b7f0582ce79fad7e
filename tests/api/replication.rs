//! The two pools: writes on the primary, reads on a real streaming replica.

use std::time::Duration;

use crate::helpers::{eventually, spawn_app};

#[tokio::test]
async fn a_row_written_on_the_primary_is_read_back_through_the_replica() {
    let app = spawn_app().await;
    let db = &app.state.db;
    let id = uuid::Uuid::new_v4();
    let email = format!("{id}@replication.test");

    sqlx::query("insert into users (id, email, name, password_hash) values ($1, $2, 'R', 'x')")
        .bind(id)
        .bind(&email)
        .execute(db.primary_pool())
        .await
        .expect("the primary accepts the write");

    let found: String = eventually(
        "the row reaches the replica",
        Duration::from_secs(10),
        || async {
            sqlx::query_scalar("select email from users where id = $1")
                .bind(id)
                .fetch_optional(db.replica())
                .await
                .expect("the replica answers")
        },
    )
    .await;
    assert_eq!(found, email);
    let in_recovery: bool = sqlx::query_scalar("select pg_is_in_recovery()")
        .fetch_one(db.replica())
        .await
        .expect("answers");
    assert!(
        in_recovery,
        "the replica pool reaches a standby, not the primary"
    );
}

#[tokio::test]
async fn a_write_through_the_replica_pool_is_refused() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();

    let err =
        sqlx::query("insert into users (id, email, name, password_hash) values ($1, $2, 'R', 'x')")
            .bind(id)
            .bind(format!("{id}@replication.test"))
            .execute(app.state.db.replica())
            .await
            .expect_err("the replica refuses writes");

    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    // 25006: read_only_sql_transaction.
    assert_eq!(code.as_deref(), Some("25006"), "{err}");
}

#[tokio::test]
async fn every_connection_names_its_instance_and_has_a_statement_timeout() {
    let app = spawn_app().await;
    for pool in [app.state.db.primary_pool(), app.state.db.replica()] {
        let (name, timeout): (String, String) = sqlx::query_as(
            "select current_setting('application_name'), current_setting('statement_timeout')",
        )
        .fetch_one(pool)
        .await
        .expect("answers");
        assert!(name.starts_with(app.state.instance_id()), "{name}");
        assert_ne!(timeout, "0", "a statement timeout is set");
    }
    let read_only: String = sqlx::query_scalar("show default_transaction_read_only")
        .fetch_one(app.state.db.replica())
        .await
        .expect("answers");
    assert_eq!(read_only, "on");
}

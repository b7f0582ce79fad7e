//! What jobs do, counted after they finish: one welcome email per signup, and an account
//! deletion that run twice has the effect of once. The topology's worker runs them.

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{
    Api, TestUser, enqueue, env, eventually, my_id, signed_up, spawn_app, storage, users_with_email,
};

/// The messages the SMTP sink has stored for `address` (its Maildir's `new/`).
pub fn messages_to(address: &str) -> Vec<String> {
    let new = std::path::PathBuf::from(env("SMTP_MAIL_DIR")).join("new");
    std::fs::read_dir(new)
        .into_iter()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter(|text| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .any(|l| l.starts_with("To:") && l.contains(address))
        })
        .collect()
}

/// The welcome messages the sink has stored for `address` (signup also sends a verification
/// email).
pub fn welcome_messages_to(address: &str) -> Vec<String> {
    messages_to(address)
        .into_iter()
        .filter(|m| m.contains("Subject: Welcome to scaleout"))
        .collect()
}

/// The `sent_emails` rows of job `job`, as (job id, recipient).
pub async fn sent_by(db: &sqlx::PgPool, job: &str) -> Vec<(String, String)> {
    sqlx::query_as("select job_id, recipient from sent_emails where job_id = $1")
        .bind(job)
        .fetch_all(db)
        .await
        .expect("reads sent_emails")
}

/// The id of `user`'s welcome email job (enqueued with the signup).
pub async fn welcome_job(db: &sqlx::PgPool, user: Uuid) -> String {
    sqlx::query_scalar(
        "select id from apalis.jobs
          where convert_from(job, 'UTF8')::jsonb ->> 'owner' = $1
            and convert_from(job, 'UTF8')::jsonb -> 'job' ->> 'kind' = 'welcome_email'",
    )
    .bind(user.to_string())
    .fetch_one(db)
    .await
    .expect("the signup committed its welcome email job")
}

/// apalis' status and attempts of job `id`, once it is `Done`.
pub async fn done(db: &sqlx::PgPool, id: &str) -> i32 {
    eventually(
        &format!("job {id} done"),
        Duration::from_secs(60),
        || async {
            let (status, attempts, _) = crate::helpers::job_row(db, id).await?;
            (status == "Done").then_some(attempts)
        },
    )
    .await
}

#[tokio::test]
async fn a_signup_sends_exactly_one_welcome_email_and_records_it_once() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let user = TestUser::new();

    let api = signed_up(&app.url(""), &user).await;

    let id = my_id(&api).await;
    let job = welcome_job(db, id).await;
    done(db, &job).await;
    // The sink stores a message before it answers, and the job records the handoff after
    // that answer: once the job is done, its message is in the Maildir.
    let messages = welcome_messages_to(&user.email);
    assert_eq!(messages.len(), 1, "one welcome message to {}", user.email);
    assert!(
        messages[0]
            .to_lowercase()
            .contains(&format!("message-id: <{}@scaleout>", job.to_lowercase())),
        "the message carries the job's Message-ID: {}",
        messages[0]
    );
    assert_eq!(sent_by(db, &job).await, vec![(job, user.email.clone())]);
}

async fn count(db: &sqlx::PgPool, query: &'static str, user: Uuid) -> i64 {
    sqlx::query_scalar(query)
        .bind(user)
        .fetch_one(db)
        .await
        .expect("counts")
}

#[tokio::test]
async fn deleting_an_account_twice_has_the_effect_of_deleting_it_once() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let gone = my_id(&api).await;
    let first = api.delete_account(&user).await;
    done(db, &first).await;
    // The email is free again: a new account takes it, with a file of its own.
    let mut reborn = Api::new(app.url(""));
    assert_eq!(reborn.signup(&user).await.status(), StatusCode::CREATED);
    let kept = my_id(&reborn).await;
    let upload = reborn
        .upload(b"still here\n".to_vec(), "kept.txt", "text/plain")
        .await;
    assert_eq!(upload.status(), StatusCode::CREATED);
    let prefix = scaleout::files::object_key::owner_prefix(kept);
    let objects = storage().list_keys(&prefix).await.expect("lists");
    assert_eq!(objects.len(), 1, "{objects:?}");

    // The same deletion again, as a redelivered job would run it.
    let job = scaleout::jobs::Job::DeleteAccount(scaleout::jobs::delete_account::DeleteAccount {
        user_id: gone,
    });
    let second = enqueue(&app.state.db, vec![job], Some(gone))
        .await
        .remove(0);
    let attempts = done(db, &second).await;

    assert_eq!(attempts, 1, "succeeded on its first attempt");
    assert_eq!(
        count(db, "select count(*) from users where id = $1", gone).await,
        0
    );
    assert_eq!(users_with_email(&app.state, &user.email).await, 1);
    assert_eq!(
        reborn.me().await.status(),
        StatusCode::OK,
        "its session lives"
    );
    assert_eq!(
        count(db, "select count(*) from files where owner_id = $1", kept).await,
        1
    );
    assert_eq!(
        storage().list_keys(&prefix).await.expect("lists"),
        objects,
        "its objects stay"
    );
}

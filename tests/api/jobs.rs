//! Background jobs, run by the topology's worker (and by workers the tests start): enqueued
//! with the write that causes them, retried with backoff, kept when they fail, and visible to
//! their owner.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Api, TestUser, canary, canary_attempt_starts, canary_backing_off, canary_runs, enqueue, env,
    eventually, my_id, no_redirect_client, presigned_put, signed_up, spawn_app, storage,
};

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_job_and_a_committed_one_always_has_it() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();

    let mut write = app
        .state
        .db
        .begin(scaleout::db::Writer::System)
        .await
        .expect("begins");
    let rolled_back = scaleout::jobs::enqueue(&mut write, canary(0, 0, 1), None)
        .await
        .expect("enqueues");
    // The request fails after enqueueing: its unit of work is dropped, never committed.
    drop(write);

    let committed = enqueue(&app.state.db, vec![canary(0, 0, 1)], None)
        .await
        .remove(0);

    assert_eq!(crate::helpers::job_row(db, &rolled_back).await, None);
    assert!(crate::helpers::job_row(db, &committed).await.is_some());
    eventually(
        "the committed job runs",
        Duration::from_secs(30),
        || async { (canary_runs(db, &committed).await == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_job_that_fails_twice_succeeds_on_the_third_attempt_after_a_doubling_backoff() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let db = app.state.db.primary_pool();
    let base = Duration::from_millis(env("JOBS_BACKOFF_BASE_MS").parse().expect("milliseconds"));
    let id = enqueue(&app.state.db, vec![canary(2, 0, 5)], Some(owner))
        .await
        .remove(0);

    let done = api.poll_job(&id, |v| v["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["last_error"], Value::Null);
    assert_eq!(done["kind"], "canary");
    assert_eq!(canary_runs(db, &id).await, 1);

    // The gaps between attempt starts are at least the backoff, which doubles. Only lower
    // bounds: how soon a due job is picked up depends on the machine's load.
    let starts = canary_attempt_starts(db, &id).await;
    assert_eq!(starts.len(), 3, "{starts:?}");
    let (first, second) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(
        first >= base,
        "the first retry came {first} after the first attempt, before the base delay {base:?}"
    );
    assert!(
        second >= base * 2,
        "the second retry came {second} after the second attempt, before twice the base delay"
    );
}

#[tokio::test]
async fn between_attempts_a_job_is_queued_with_its_error_and_the_time_of_its_next_attempt() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let db = app.state.db.primary_pool();
    // A first retry four minutes away (under the 5-minute cap of every backoff): the job
    // stays queued for as long as the test looks.
    let id = enqueue(
        &app.state.db,
        vec![canary_backing_off(1, 3, Duration::from_secs(240))],
        Some(owner),
    )
    .await
    .remove(0);

    let retrying = api
        .poll_job(&id, |v| v["status"] == "queued" && v["attempts"] == 1)
        .await;
    // A category, never the error's own text (which the worker logs).
    assert_eq!(retrying["last_error"], "internal error", "{retrying}");
    let next = time::OffsetDateTime::parse(
        retrying["next_attempt_at"]
            .as_str()
            .expect("a next attempt time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let wait = next - time::OffsetDateTime::now_utc();
    assert!(
        wait > time::Duration::minutes(3),
        "the next attempt is the backoff away: {retrying}"
    );
    assert_eq!(canary_runs(db, &id).await, 0, "no effect yet");

    // Due now: the worker picks it up again and the second attempt succeeds.
    sqlx::query("update apalis.jobs set run_at = now() where id = $1")
        .bind(&id)
        .execute(db)
        .await
        .expect("moves the retry forward");
    let done = api.poll_job(&id, |v| v["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["next_attempt_at"], Value::Null);
    assert_eq!(canary_runs(db, &id).await, 1);
}

#[tokio::test]
async fn a_job_that_always_fails_is_kept_as_failed_after_its_last_attempt() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let id = enqueue(&app.state.db, vec![canary(u32::MAX, 0, 3)], Some(owner))
        .await
        .remove(0);

    let failed = api.poll_job(&id, |v| v["status"] == "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(failed["max_attempts"], 3);
    assert_eq!(failed["last_error"], "internal error", "{failed}");
    assert!(failed["finished_at"].is_string());
    assert_eq!(canary_runs(app.state.db.primary_pool(), &id).await, 0);
}

#[tokio::test]
async fn a_job_is_visible_to_its_owner_only() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let stranger = signed_up(&app.url(""), &TestUser::new()).await;
    let id = enqueue(
        &app.state.db,
        vec![canary(0, 0, 1)],
        Some(my_id(&owner).await),
    )
    .await
    .remove(0);

    let mine = owner
        .send(owner.request(Method::GET, &format!("/jobs/{id}")))
        .await;
    assert_eq!(mine.status(), StatusCode::OK);
    for (who, api, path) in [
        ("another user", &stranger, format!("/jobs/{id}")),
        ("a malformed id", &owner, "/jobs/not-a-job".to_owned()),
        (
            "an unknown id",
            &owner,
            "/jobs/01JD3V9W5Q8K2M4N6P8R0T2V4X".to_owned(),
        ),
    ] {
        let response = api.send(api.request(Method::GET, &path)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{who}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let anonymous = Api::new(app.url(""));
    let response = anonymous
        .send(anonymous.request(Method::GET, &format!("/jobs/{id}")))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_the_account_removes_its_data_and_objects_ends_its_sessions_and_frees_the_email() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let id = my_id(&api).await;
    let db = app.state.db.primary_pool();
    // Both signup emails (welcome, verification) have been sent and recorded: the deletion has
    // sent_emails rows to remove, so the check below can fail.
    eventually(
        "the signup emails are recorded",
        Duration::from_secs(30),
        || async {
            let rows: i64 =
                sqlx::query_scalar("select count(*) from sent_emails where user_id = $1")
                    .bind(id)
                    .fetch_one(db)
                    .await
                    .expect("counts");
            (rows == 2).then_some(())
        },
    )
    .await;
    let upload = api
        .upload(b"to be deleted\n".to_vec(), "a.txt", "text/plain")
        .await;
    assert_eq!(upload.status(), StatusCode::CREATED);
    let avatar = api
        .upload_to(
            Method::PUT,
            "/me/avatar",
            png(64, 64),
            "me.png",
            "image/png",
        )
        .await;
    assert_eq!(avatar.status(), StatusCode::ACCEPTED);
    let prefix = scaleout::files::object_key::owner_prefix(id);
    assert!(
        !storage()
            .list_keys(&prefix)
            .await
            .expect("lists")
            .is_empty()
    );
    // A direct upload's bytes wait in the staging area until `complete`.
    let (_, upload) = api.start_upload(5).await;
    assert!(presigned_put(&upload, "hello").await.status().is_success());
    let staging = scaleout::files::object_key::owner_staging_prefix(id);
    assert!(
        !storage()
            .list_keys(&staging)
            .await
            .expect("lists")
            .is_empty()
    );

    let wrong = api
        .send(
            api.request(Method::DELETE, "/me")
                .json(&json!({"password": "not my password"})),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        api.me().await.status(),
        StatusCode::OK,
        "a refused deletion changes nothing"
    );

    let job_id = api.delete_account(&user).await;

    // At once: the session is gone and the account cannot log in.
    assert_eq!(api.me().await.status(), StatusCode::UNAUTHORIZED);
    let mut again = Api::new(app.url(""));
    assert_eq!(again.login(&user).await.status(), StatusCode::UNAUTHORIZED);

    // Then the job removes everything.
    eventually(
        "the account is deleted",
        Duration::from_secs(30),
        || async {
            let left: i64 = sqlx::query_scalar("select count(*) from users where id = $1")
                .bind(id)
                .fetch_one(db)
                .await
                .expect("counts");
            (left == 0).then_some(())
        },
    )
    .await;
    for (table, query) in [
        ("files", "select count(*) from files where owner_id = $1"),
        (
            "sent_emails",
            "select count(*) from sent_emails where user_id = $1",
        ),
    ] {
        let rows: i64 = sqlx::query_scalar(query)
            .bind(id)
            .fetch_one(db)
            .await
            .expect("counts");
        assert_eq!(rows, 0, "{table}");
    }
    for prefix in [&prefix, &staging] {
        assert_eq!(
            storage().list_keys(prefix).await.expect("lists"),
            Vec::<String>::new(),
            "{prefix}"
        );
    }
    // apalis records the outcome just after the job's last statement (the account's row).
    eventually(
        "the deletion job is recorded as done",
        Duration::from_secs(10),
        || async {
            let (status, _, _) = crate::helpers::job_row(db, &job_id)
                .await
                .expect("the job is kept");
            (status == "Done").then_some(())
        },
    )
    .await;

    let mut reborn = Api::new(app.url(""));
    assert_eq!(reborn.signup(&user).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_welcome_email_reaches_the_smtp_sink() {
    let app = spawn_app().await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let mail = std::path::PathBuf::from(crate::helpers::env("SMTP_MAIL_DIR")).join("new");

    let message = eventually("the welcome email", Duration::from_secs(30), || {
        let (mail, to) = (mail.clone(), user.email.clone());
        async move {
            std::fs::read_dir(&mail)
                .ok()?
                .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                .find(|text| {
                    text.lines()
                        .any(|l| l.starts_with("To:") && l.contains(&to))
                        && text.contains("Subject: Welcome to scaleout")
                })
        }
    })
    .await;
    assert!(
        message.contains("Subject: Welcome to scaleout"),
        "{message}"
    );
    assert!(
        message.contains(&format!("Hello {}", user.name)),
        "{message}"
    );
}

#[tokio::test]
async fn an_avatar_gets_a_thumbnail_and_turns_ready() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let uploaded = api
        .upload_to(
            Method::PUT,
            "/me/avatar",
            png(600, 300),
            "me.png",
            "image/png",
        )
        .await;
    assert_eq!(uploaded.status(), StatusCode::ACCEPTED);

    let avatar = eventually("the avatar is ready", Duration::from_secs(30), || async {
        let me = json_of(api.me().await).await;
        (me["avatar"]["status"] == "ready").then(|| me["avatar"].clone())
    })
    .await;
    let url = avatar["url"].as_str().expect("a URL once ready");

    let redirect = no_redirect_client()
        .get(format!("{}{url}", app.url("")))
        .send()
        .await
        .expect("answers");
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let thumbnail = reqwest::get(location).await.expect("storage answers");
    assert_eq!(thumbnail.status(), StatusCode::OK);
    let image = image::load_from_memory(&thumbnail.bytes().await.expect("bytes"))
        .expect("the thumbnail is an image");
    assert_eq!((image.width(), image.height()), (256, 128));
}

#[tokio::test]
async fn a_recurring_job_is_created_once_per_slot_however_many_workers_offer_it() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool().clone();
    // A slot no schedule has reached: far in the future, unique to this run.
    let interval = Duration::from_secs(7);
    let slot = 10_000_000_000 + i64::from(rand_u16());

    let offers = (0..6).map(|_| {
        let db = db.clone();
        tokio::spawn(async move {
            scaleout::jobs::schedule::offer_purge(&db, interval, slot)
                .await
                .expect("offers")
        })
    });
    let mut created = 0;
    for offer in offers {
        if offer.await.expect("does not panic") {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    let rows: i64 =
        sqlx::query_scalar("select count(*) from apalis.jobs where idempotency_key = $1")
            .bind(format!("purge_uploads:7s:{slot}"))
            .fetch_one(&db)
            .await
            .expect("counts");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn the_purge_removes_abandoned_direct_uploads_and_their_objects() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let (id, upload) = api.start_upload(5).await;
    assert!(presigned_put(&upload, "hello").await.status().is_success());
    let db = app.state.db.primary_pool();
    // Abandoned long ago: never completed, its URL expired well past the purge's grace.
    sqlx::query("update files set upload_expires_at = now() - interval '2 days' where id = $1")
        .bind(id)
        .execute(db)
        .await
        .expect("updates");

    let slot = 20_000_000_000 + i64::from(rand_u16());
    assert!(
        scaleout::jobs::schedule::offer_purge(db, Duration::from_secs(11), slot)
            .await
            .expect("offers")
    );

    eventually(
        "the abandoned upload is purged",
        Duration::from_secs(30),
        || async {
            let left: i64 = sqlx::query_scalar("select count(*) from files where id = $1")
                .bind(id)
                .fetch_one(db)
                .await
                .expect("counts");
            (left == 0).then_some(())
        },
    )
    .await;
    let owner = my_id(&api).await;
    for prefix in [
        scaleout::files::object_key::owner_prefix(owner),
        scaleout::files::object_key::owner_staging_prefix(owner),
    ] {
        let keys = storage().list_keys(&prefix).await.expect("lists");
        assert_eq!(keys, Vec::<String>::new(), "{prefix}");
    }
}

fn rand_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4();
    u16::from_le_bytes([bytes.as_bytes()[0], bytes.as_bytes()[1]])
}

/// A real PNG of the given size.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 200])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encodes");
    out.into_inner()
}

#[tokio::test]
async fn pruning_deletes_old_succeeded_jobs_and_their_email_records_and_keeps_failed_ones() {
    let app = spawn_app().await;
    let db = app.state.db.primary_pool();
    let user = my_id(&signed_up(&app.url(""), &TestUser::new()).await).await;
    let ids = enqueue(
        &app.state.db,
        vec![canary(0, 0, 1), canary(0, 0, 1), canary(9, 0, 1)],
        None,
    )
    .await;
    eventually("the three jobs finish", Duration::from_secs(30), || async {
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(crate::helpers::job_row(db, id).await?.0);
        }
        (statuses == ["Done", "Done", "Failed"]).then_some(())
    })
    .await;
    // Finished a month ago: the first succeeded job and the failed one.
    sqlx::query("update apalis.jobs set done_at = now() - interval '30 days' where id = any($1)")
        .bind([ids[0].clone(), ids[2].clone()])
        .execute(db)
        .await
        .expect("ages the jobs");
    sqlx::query(
        "insert into sent_emails (job_id, user_id, recipient) values ($1, $2, 'x@example.com')",
    )
    .bind(&ids[0])
    .bind(user)
    .execute(db)
    .await
    .expect("records an email");

    let slot = 30_000_000_000 + i64::from(rand_u16());
    assert!(
        scaleout::jobs::schedule::offer_prune(db, Duration::from_secs(13), slot)
            .await
            .expect("offers")
    );

    eventually(
        "the old succeeded job is pruned",
        Duration::from_secs(30),
        || async {
            crate::helpers::job_row(db, &ids[0])
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        crate::helpers::job_row(db, &ids[1]).await.is_some(),
        "a recent one stays"
    );
    assert!(
        crate::helpers::job_row(db, &ids[2]).await.is_some(),
        "a failed one stays"
    );
    let emails: i64 = sqlx::query_scalar("select count(*) from sent_emails where job_id = $1")
        .bind(&ids[0])
        .fetch_one(db)
        .await
        .expect("counts");
    assert_eq!(emails, 0);
}

//! Object storage hung (SIGSTOP: it keeps its connections open and answers nothing), not
//! down. Requests waiting on it must not hold what requests that do not need it depend on: a
//! pool connection, a row lock. Garage is shared by every test, so this freezes it only here,
//! where the topology tests run one at a time.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::{
    Api, Frozen, TestUser, eventually, metric, my_id, presigned_put, scrape, signed_up,
    spawn_app_with, storage,
};

#[tokio::test]
async fn completions_waiting_on_frozen_storage_leave_logins_and_writes_working() {
    // A pool of three primary connections for ten completions: holding one per completion
    // across the storage calls would leave none for anything else. Storage calls may take
    // 15 s each (twice that with the SDK's retry), and requests 60 s, so the completions
    // really do wait on the frozen store for as long as the test looks.
    let app = spawn_app_with(&[
        ("DATABASE_POOL_MAX", "3"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "2000"),
        ("S3_TIMEOUT_MS", "15000"),
        ("HTTP_REQUEST_TIMEOUT_MS", "60000"),
    ])
    .await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let owner = my_id(&api).await;
    let mut files = Vec::new();
    for seed in 0..10 {
        let (id, target) = api.start_upload(64).await;
        let put = presigned_put(&target, text(64, seed)).await;
        assert!(put.status().is_success(), "PUT: {}", put.status());
        files.push(id);
    }
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    let waiting_on_storage = || async {
        metric(
            &scrape(&metrics_url).await,
            "storage_requests_in_flight",
            &[("operation", "head_object")],
        )
    };
    let before = waiting_on_storage().await;

    let frozen = Frozen::pause("s3");
    // The completions' own client waits as long as their requests may take.
    let patient = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("a client"),
        ..api.clone()
    };
    let completions: Vec<_> = files
        .iter()
        .map(|id| {
            let (api, path) = (patient.clone(), format!("/files/{id}/complete"));
            tokio::spawn(async move { api.post(&path).await.status() })
        })
        .collect();
    // Every one of the ten is waiting on storage (with connections held across storage
    // calls, seven would still be queued for a connection, and fail when the wait ran out).
    eventually(
        "ten completions waiting on storage",
        Duration::from_secs(20),
        || async { (waiting_on_storage().await >= before + 10.0).then_some(()) },
    )
    .await;

    // Meanwhile, everything that does not need storage works, within its usual timeouts.
    let me = api.me().await.status();
    let mut again = Api::new(app.url(""));
    let login = again.login(&user).await.status();
    let renamed = again
        .send(
            again
                .request(Method::PATCH, "/me")
                .json(&serde_json::json!({"name": "Renamed Meanwhile"})),
        )
        .await
        .status();
    let ready = app.get("/ready").await;
    let ready_status = ready.status();
    let ready_body: serde_json::Value = ready.json().await.expect("a JSON report");
    let all_still_waiting = completions.iter().all(|c| !c.is_finished());
    frozen.resume();

    let mut outcomes = Vec::new();
    for completion in completions {
        outcomes.push(completion.await.expect("a completion does not panic"));
    }
    assert_eq!(me, StatusCode::OK, "GET /me");
    assert_eq!(login, StatusCode::OK, "login");
    assert_eq!(renamed, StatusCode::OK, "a profile update");
    // Storage is optional: the instance says so and stays in rotation.
    assert_eq!(ready_status, StatusCode::OK, "/ready: {ready_body}");
    assert_eq!(
        ready_body["checks"]["primary"]["status"], "up",
        "{ready_body}"
    );
    assert!(
        all_still_waiting,
        "the completions were still waiting on storage while the others were served"
    );
    // No completion hangs or breaks: each either finished or met the storage timeout.
    assert!(
        outcomes
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{outcomes:?}"
    );

    // Once storage answers again, every file completes, each with exactly one object.
    for id in &files {
        eventually(
            "the file completes once storage is back",
            Duration::from_secs(60),
            || async {
                let status = patient
                    .post(&format!("/files/{id}/complete"))
                    .await
                    .status();
                (status == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
    let objects = storage()
        .list_keys(&scaleout::files::object_key::owner_prefix(owner))
        .await
        .expect("lists the owner's objects");
    assert_eq!(objects.len(), 10, "one object per file: {objects:?}");
}

/// `len` bytes of plain text, distinct per `seed`.
fn text(len: usize, seed: u64) -> Vec<u8> {
    format!("file {seed}: all work and no play\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

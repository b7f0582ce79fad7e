//! `Idempotency-Key`: a repeated unsafe request with the same key gets the first answer and
//! does not run again; another request under the key is refused; so is one while the first
//! is still running. Keys belong to their caller.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Api, TestApp, TestUser, client_from, loopback_address, signed_up, spawn_app, users_with_email,
};

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn signup_with_key(api: &Api, user: &TestUser, key: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/signup")
            .header("idempotency-key", key)
            .json(&user.signup_body()),
    )
    .await
}

async fn rename_with_key(api: &Api, name: &str, key: &str) -> reqwest::Response {
    api.send(
        api.request(Method::PATCH, "/me")
            .header("idempotency-key", key)
            .json(&json!({"name": name})),
    )
    .await
}

async fn problem_type(response: reqwest::Response) -> String {
    let problem: Value = response.json().await.expect("a problem");
    problem["type"].as_str().unwrap_or_default().to_owned()
}

fn anonymous(app: &TestApp) -> Api {
    Api::new(app.url(""))
}

#[tokio::test]
async fn a_repeated_signup_logs_in_with_a_fresh_session_and_creates_one_account() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let key = key();
    let first = signup_with_key(&anonymous(&app), &user, &key).await;
    assert_eq!(first.status(), StatusCode::CREATED);

    // The first answer was lost: a new client (no cookie) repeats it.
    let mut retry = anonymous(&app);
    let request = retry
        .request(Method::POST, "/auth/signup")
        .header("idempotency-key", &key)
        .json(&user.signup_body());
    let again = retry.send_keeping_cookie(request).await;

    // Not a replay without the cookie (the client would believe it is logged in), and not a
    // 409 "email taken": the signup runs again and logs in.
    assert_eq!(again.status(), StatusCode::OK, "not a 409 'email taken'");
    assert!(!again.headers().contains_key("idempotent-replayed"));
    assert!(again.headers().contains_key("set-cookie"));
    assert_eq!(
        retry.me().await.status(),
        StatusCode::OK,
        "the retry is logged in"
    );
    assert_eq!(users_with_email(&app.state, &user.email).await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_and_runs_nothing() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let key = key();
    assert_eq!(
        rename_with_key(&api, "First Name", &key).await.status(),
        StatusCode::OK
    );

    let response = rename_with_key(&api, "Other Name", &key).await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        problem_type(response)
            .await
            .ends_with("/idempotency-key-reused")
    );
    let me: Value = api.me().await.json().await.expect("JSON");
    assert_eq!(me["name"], "First Name", "the other body did not run");
}

#[tokio::test]
async fn a_key_whose_first_request_is_still_running_answers_409() {
    let app = spawn_app().await;
    let address = loopback_address();
    let api = Api {
        client: client_from(address),
        ..Api::new(app.url(""))
    };
    let user = TestUser::new();
    let key = key();
    // The first request sends its head and half its body, then waits: it is running.
    let body = serde_json::to_vec(&user.signup_body()).expect("JSON");
    let (half, rest) = body.split_at(body.len() / 2);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    tx.send(Ok(half.to_vec())).await.expect("sends");
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let first = tokio::spawn({
        let request = api
            .request(Method::POST, "/auth/signup")
            .header("idempotency-key", &key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream));
        async move { request.send().await.expect("the API answers") }
    });

    // Once its key is claimed (it is read, hashed, and the handler waits for the rest)...
    let claimed = scaleout::http::idempotency::redis_key(&format!("address:{address}"), &key);
    crate::helpers::eventually(
        "the first request to claim its key",
        std::time::Duration::from_secs(10),
        || async {
            let mut conn = app.state.redis.conn().await.ok()?;
            let exists: bool = redis::cmd("EXISTS")
                .arg(&claimed)
                .query_async(&mut conn)
                .await
                .ok()?;
            exists.then_some(())
        },
    )
    .await;
    // ...the same request again is told to wait.
    let second = signup_with_key(&api, &user, &key).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert!(
        problem_type(second)
            .await
            .ends_with("/idempotency-key-in-use")
    );
    assert_eq!(users_with_email(&app.state, &user.email).await, 0);

    tx.send(Ok(rest.to_vec())).await.expect("sends");
    drop(tx);
    let first = first.await.expect("the first request finishes");
    assert_eq!(first.status(), StatusCode::CREATED);
    // Now finished, the key is free again (an answer that started a session is not kept):
    // the repeat logs in to the one account.
    let again = signup_with_key(&api, &user, &key).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(users_with_email(&app.state, &user.email).await, 1);
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    let app = spawn_app().await;
    let ada = signed_up(&app.url(""), &TestUser::new()).await;
    let bob = signed_up(&app.url(""), &TestUser::new()).await;
    let key = key();

    let first = rename_with_key(&ada, "Same Name", &key).await;
    let other_user = rename_with_key(&bob, "Same Name", &key).await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(other_user.status(), StatusCode::OK);
    assert!(
        !other_user.headers().contains_key("idempotent-replayed"),
        "another user's key of the same name runs normally"
    );
    let (ada_me, bob_me): (Value, Value) = (
        first.json().await.expect("JSON"),
        other_user.json().await.expect("JSON"),
    );
    assert_ne!(ada_me["id"], bob_me["id"], "each got their own answer");
    let bob_now: Value = bob.me().await.json().await.expect("JSON");
    assert_eq!(bob_now["name"], "Same Name");
}

#[tokio::test]
async fn a_replayed_change_does_not_run_again() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let key = key();
    let first = rename_with_key(&api, "First Name", &key).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.expect("JSON");
    // A change made since, without the key, is not undone by the replay.
    api.rename("Changed Since").await;

    let replay = rename_with_key(&api, "First Name", &key).await;

    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.expect("JSON");
    assert_eq!(replayed, first, "the first answer, as it was");
    let now: Value = api.me().await.json().await.expect("JSON");
    assert_eq!(now["name"], "Changed Since");
}

#[tokio::test]
async fn requests_without_a_key_or_with_a_safe_method_are_not_kept() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let key = key();
    let get = api
        .send(
            api.request(Method::GET, "/me")
                .header("idempotency-key", &key),
        )
        .await;
    assert_eq!(get.status(), StatusCode::OK);
    // The key is still free for an unsafe request.
    let rename = rename_with_key(&api, "Fresh Name", &key).await;
    assert_eq!(rename.status(), StatusCode::OK);
    assert!(!rename.headers().contains_key("idempotent-replayed"));
}

#[tokio::test]
async fn a_malformed_key_is_a_400() {
    let app = spawn_app().await;
    let api = anonymous(&app);
    let response = signup_with_key(&api, &TestUser::new(), &"k".repeat(256)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        problem_type(response)
            .await
            .ends_with("/invalid-idempotency-key")
    );
}

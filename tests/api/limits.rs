//! Bounded work per instance: password hashes and uploads in flight (503 with `Retry-After`
//! past the bound), the framing of multipart bodies, and made-up methods in the metrics.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    Api, PNG_HEAD, TestUser, file_bytes, metric, scrape, signed_up, spawn_app, spawn_app_with,
    users_with_email,
};

/// The status, `Retry-After` and problem `type` of a response.
async fn overload_of(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.unwrap_or_default();
    (status, retry_after, body["type"].clone())
}

#[tokio::test]
async fn signups_past_the_hashing_bound_get_503_with_retry_after_instead_of_piling_up() {
    let app = spawn_app_with(&[
        ("PASSWORD_HASHES_IN_FLIGHT", "1"),
        ("PASSWORD_HASH_WAIT_MS", "300"),
    ])
    .await;
    // The one hashing slot is busy (as with a long hash in progress).
    let held = app.state.passwords.slot().await.expect("the slot is free");

    let users: Vec<TestUser> = (0..6).map(|_| TestUser::new()).collect();
    let signups = users.iter().map(|user| {
        let mut api = Api::new(app.url(""));
        async move { overload_of(api.signup(user).await).await }
    });
    let answers = futures_util::future::join_all(signups).await;

    for (status, retry_after, kind) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(kind, "https://scaleout.dev/problems/overloaded");
    }
    for user in &users {
        assert_eq!(users_with_email(&app.state, &user.email).await, 0);
    }

    // Once the slot is free, hashing goes on.
    drop(held);
    let mut api = Api::new(app.url(""));
    assert_eq!(
        api.signup(&TestUser::new()).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn logins_wait_for_a_hashing_slot_within_the_configured_wait() {
    let app = spawn_app_with(&[
        ("PASSWORD_HASHES_IN_FLIGHT", "1"),
        ("PASSWORD_HASH_WAIT_MS", "10000"),
    ])
    .await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let held = app.state.passwords.slot().await.expect("the slot is free");

    // A login waits for the slot rather than failing, and succeeds once it is released.
    let mut api = Api::new(app.url(""));
    let login = tokio::spawn(async move { api.login(&user).await.status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!login.is_finished(), "the login waits for the held slot");
    drop(held);

    assert_eq!(login.await.expect("no panic"), StatusCode::OK);
}

#[tokio::test]
async fn uploads_past_the_in_flight_bound_get_503_with_retry_after() {
    let app = spawn_app_with(&[("UPLOADS_IN_FLIGHT", "1")]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;

    // One upload in progress: its body is fed by hand and held open.
    let (feed, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
        .file_name("slow.png")
        .mime_str("image/png")
        .expect("a type");
    let request = api
        .request(Method::POST, "/files")
        .multipart(reqwest::multipart::Form::new().part("file", part));
    let first = tokio::spawn(async move { request.send().await });
    feed.send(Ok(file_bytes(PNG_HEAD, 4096, 21)))
        .await
        .expect("the request reads");
    crate::helpers::eventually(
        "the first upload holds the slot",
        Duration::from_secs(10),
        || async { (app.state.uploads.available_permits() == 0).then_some(()) },
    )
    .await;

    let second = api
        .upload(file_bytes(PNG_HEAD, 4096, 22), "b.png", "image/png")
        .await;
    let avatar = api
        .upload_to(
            Method::PUT,
            "/me/avatar",
            file_bytes(PNG_HEAD, 4096, 23),
            "a.png",
            "image/png",
        )
        .await;

    for refused in [second, avatar] {
        let (status, retry_after, kind) = overload_of(refused).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(kind, "https://scaleout.dev/problems/overloaded");
    }

    // The first upload finishes; its slot is free for the next.
    drop(feed);
    let first = first
        .await
        .expect("no panic")
        .expect("the instance answers");
    assert_eq!(first.status(), StatusCode::CREATED);
    let third = api
        .upload(file_bytes(PNG_HEAD, 4096, 24), "c.png", "image/png")
        .await;
    assert_eq!(third.status(), StatusCode::CREATED);
}

/// A multipart request with the boundary `XyZ` and `body`, sent chunked.
async fn multipart_raw(api: &Api, method: Method, path: &str, body: Vec<u8>) -> reqwest::Response {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    api.send(
        api.request(method, path)
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            ))),
    )
    .await
}

#[tokio::test]
async fn multipart_bodies_past_their_framing_bounds_are_refused() {
    let app = spawn_app_with(&[("AVATAR_MAX_BYTES", "65536")]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;

    let no_boundary = vec![b'a'; 1024 * 1024];
    let endless_headers = [
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n".as_slice(),
        &b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(4096),
    ]
    .concat();
    let big_avatar = [
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
          Content-Type: image/png\r\n\r\n"
            .as_slice(),
        &file_bytes(PNG_HEAD, 70_000, 31),
        b"\r\n--XyZ--\r\n",
    ]
    .concat();

    for (what, method, path, body, status, detail) in [
        (
            "no boundary",
            Method::POST,
            "/files",
            no_boundary.clone(),
            StatusCode::BAD_REQUEST,
            Some("no multipart boundary"),
        ),
        (
            "no boundary, avatar",
            Method::PUT,
            "/me/avatar",
            no_boundary,
            StatusCode::BAD_REQUEST,
            Some("no multipart boundary"),
        ),
        (
            "endless part headers",
            Method::POST,
            "/files",
            endless_headers,
            StatusCode::BAD_REQUEST,
            Some("headers are longer"),
        ),
        (
            "an avatar part over AVATAR_MAX_BYTES",
            Method::PUT,
            "/me/avatar",
            big_avatar,
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
    ] {
        let response = multipart_raw(&api, method, path, body).await;
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{what}"
        );
        let problem: Value = response.json().await.expect("a problem");
        if let Some(detail) = detail {
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(detail)),
                "{what}: {problem}"
            );
        }
    }
}

#[tokio::test]
async fn made_up_methods_are_counted_under_one_label_value() {
    let app = spawn_app().await;
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    let other = |text: &str| metric(text, "http_requests_total", &[("method", "other")]);
    let before = other(&scrape(&metrics_url).await);

    let mut sent = Vec::new();
    for _ in 0..20 {
        let method =
            format!("X{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).to_uppercase();
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).expect("a token"),
                app.url("/api/v1"),
            )
            .send()
            .await
            .expect("the app answers");
        assert!(response.status().is_client_error());
        sent.push(method);
    }
    let after = scrape(&metrics_url).await;

    assert!(
        other(&after) - before >= 20.0,
        "every made-up method is counted as other"
    );
    for method in &sent {
        assert!(
            !after.contains(method.as_str()),
            "{method} became a label value"
        );
    }
}

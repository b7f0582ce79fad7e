//! Sessions as the README describes them: the cookie's flags, expiry after inactivity and at
//! the absolute lifetime, every session of an account ended with it or with a password change
//! (also one whose login raced the change), untouched sessions not written back on every
//! request, retried signups, and browser requests from the site's own origin accepted through
//! nginx.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Api, TestUser, edge_url, eventually, my_id, session_cookie, session_set_cookie, signed_up,
    spawn_app, spawn_app_with,
};

fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn the_session_cookie_is_http_only_same_site_lax_and_secure_when_configured() {
    let secure = spawn_app_with(&[("SESSION_COOKIE_SECURE", "true")]).await;
    let plain = spawn_app_with(&[("SESSION_COOKIE_SECURE", "false")]).await;

    let mut api = Api::new(secure.url(""));
    let on_https = api.signup(&TestUser::new()).await;
    let mut api = Api::new(plain.url(""));
    let on_http = api.signup(&TestUser::new()).await;

    let on_https = attributes(&session_set_cookie(&on_https).expect("a session cookie"));
    let on_http = attributes(&session_set_cookie(&on_http).expect("a session cookie"));
    for flags in [&on_https, &on_http] {
        assert!(flags.contains(&"httponly".to_owned()), "{flags:?}");
        assert!(flags.contains(&"samesite=lax".to_owned()), "{flags:?}");
        assert!(flags.contains(&"path=/".to_owned()), "{flags:?}");
        // Expiry on inactivity: the cookie carries its own end, renewed with the session.
        assert!(
            flags
                .iter()
                .any(|a| a.starts_with("expires=") || a.starts_with("max-age=")),
            "{flags:?}"
        );
    }
    assert!(on_https.contains(&"secure".to_owned()), "{on_https:?}");
    assert!(!on_http.contains(&"secure".to_owned()), "{on_http:?}");
}

#[tokio::test]
async fn a_session_used_within_its_inactivity_period_lives_on_and_an_idle_one_expires() {
    let app = spawn_app_with(&[("SESSION_INACTIVITY_SECS", "4")]).await;
    let active = signed_up(&app.url(""), &TestUser::new()).await;
    let idle = signed_up(&app.url(""), &TestUser::new()).await;

    // Waiting for the clock is the point here. Used every half second for 6 s (the allowance
    // is 4 s, so a use must renew it), while the other session sits idle; then 6 s idle.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        statuses.push(active.me().await.status());
    }
    let idle_status = idle.me().await.status();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after_idling = active.me().await.status();

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "each use renews the session: {statuses:?}"
    );
    assert_eq!(
        idle_status,
        StatusCode::UNAUTHORIZED,
        "a session idle for 6 s of a 4 s allowance has expired"
    );
    assert_eq!(after_idling, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_the_account_ends_its_sessions_on_every_client() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let laptop = signed_up(&app.url(""), &user).await;
    let mut phone = Api::new(app.url(""));
    assert_eq!(phone.login(&user).await.status(), StatusCode::OK);
    assert_eq!(phone.me().await.status(), StatusCode::OK);

    laptop.delete_account(&user).await;

    assert_eq!(laptop.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        phone.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "the other client's session ended too"
    );
}

#[tokio::test]
async fn a_browser_request_from_the_sites_own_origin_changes_state_through_nginx() {
    let api = signed_up(&edge_url(), &TestUser::new()).await;
    // The origin a browser sends for a page served by this deployment over plain HTTP.
    let origin = edge_url();

    let same_origin = api
        .send(
            api.request(Method::PATCH, "/me")
                .header("origin", &origin)
                .header("sec-fetch-site", "same-origin")
                .json(&json!({"name": "Renamed From The Page"})),
        )
        .await;
    let foreign = api
        .send(
            api.request(Method::PATCH, "/me")
                .header("origin", "http://evil.example")
                .json(&json!({"name": "Pwned"})),
        )
        .await;

    assert_eq!(same_origin.status(), StatusCode::OK);
    let me: Value = same_origin.json().await.expect("JSON");
    assert_eq!(me["name"], "Renamed From The Page");
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let me: Value = api.me().await.json().await.expect("JSON");
    assert_eq!(
        me["name"], "Renamed From The Page",
        "the refused request changed nothing"
    );
}

#[tokio::test]
async fn a_session_ended_while_one_of_its_requests_is_in_flight_fails_neither_and_stays_ended() {
    const MIB: usize = 1024 * 1024;
    let app = spawn_app_with(&[("UPLOAD_PART_BYTES", &(5 * MIB).to_string())]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = crate::helpers::my_id(&api).await;
    // An upload fed by hand, so that it is still in flight when the session ends.
    let (feed, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
        .file_name("slow.txt")
        .mime_str("text/plain")
        .expect("a type");
    let request = api
        .request(Method::POST, "/files")
        .multipart(reqwest::multipart::Form::new().part("file", part));
    // Its own time bound: it stays open across the waits below.
    let request = request.timeout(Duration::from_secs(120));
    let upload = tokio::spawn(async move { request.send().await });
    let text = b"a line of text\n".repeat(6 * MIB / 15);
    let (head, tail) = text.split_at(5 * MIB + MIB / 2);
    for chunk in head.chunks(256 * 1024) {
        feed.send(Ok(chunk.to_vec()))
            .await
            .expect("the instance reads");
    }
    // A first part in storage: the handler runs, so the request was authenticated.
    crate::helpers::eventually(
        "the upload is in flight",
        Duration::from_secs(20),
        || async { (!crate::helpers::unfinished_uploads(owner).await.is_empty()).then_some(()) },
    )
    .await;

    let logout = api.post("/auth/logout").await;
    for chunk in tail.chunks(256 * 1024) {
        feed.send(Ok(chunk.to_vec()))
            .await
            .expect("the instance reads");
    }
    drop(feed);
    let uploaded = upload
        .await
        .expect("the request task does not panic")
        .expect("the instance answers");

    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        uploaded.status(),
        StatusCode::CREATED,
        "the request that began with a valid session completes"
    );
    assert_eq!(
        api.me().await.status(),
        StatusCode::UNAUTHORIZED,
        "saving that request's session did not bring the ended session back"
    );
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_active() {
    let app = spawn_app_with(&[
        ("SESSION_MAX_LIFETIME_SECS", "3"),
        ("SESSION_INACTIVITY_SECS", "600"),
    ])
    .await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let started = tokio::time::Instant::now();

    let first = api.me().await.status();
    // Used every 100 ms until refused: activity does not extend the lifetime.
    eventually("the lifetime ends", Duration::from_secs(30), || async {
        (api.me().await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let lived = started.elapsed();
    let mut again = Api::new(app.url(""));
    let relogin = again.login(&user).await.status();

    assert_eq!(first, StatusCode::OK);
    assert!(
        lived >= Duration::from_secs(3),
        "not before the lifetime: {lived:?}"
    );
    assert_eq!(relogin, StatusCode::OK, "a new login starts a new lifetime");
    assert_eq!(again.me().await.status(), StatusCode::OK);
}

/// The seconds the session record of `api`'s cookie has left in Redis.
async fn record_ttl(app: &crate::helpers::TestApp, api: &Api) -> i64 {
    let cookie = api.cookie.as_deref().expect("a session cookie");
    let id = cookie.trim_start_matches("scaleout_session=");
    let mut conn = app.state.redis.conn().await.expect("redis");
    redis::cmd("TTL")
        .arg(id)
        .query_async(&mut conn)
        .await
        .expect("TTL")
}

#[tokio::test]
async fn an_untouched_session_is_not_written_back_on_every_request() {
    let app = spawn_app_with(&[("SESSION_INACTIVITY_SECS", "600")]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let fresh = record_ttl(&app, &api).await;

    // Letting the clock run is the point: the record's TTL falls unless a request rewrites it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut statuses = Vec::new();
    let mut set_cookies = 0;
    for _ in 0..5 {
        let response = api.me().await;
        statuses.push(response.status());
        set_cookies += usize::from(session_set_cookie(&response).is_some());
    }
    let rename = api
        .send(
            api.request(Method::PATCH, "/me")
                .json(&json!({"name": "Renamed"})),
        )
        .await;
    let after = record_ttl(&app, &api).await;

    assert!((590..=600).contains(&fresh), "{fresh}");
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(rename.status(), StatusCode::OK);
    assert!(
        after <= fresh - 2,
        "reads and a write did not rewrite the record: {fresh} then {after}"
    );
    assert_eq!(set_cookies, 0, "nor re-send the cookie");
}

#[tokio::test]
async fn a_password_change_ends_a_session_whose_login_was_checking_the_old_password() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let new_password = "a brand new passphrase, long enough";
    // Logins with the old password are sent all through the change, so that some read the old
    // hash before the change commits and finish after it. Rounds until one such late login
    // answered 200 (the race happened); every session a login made must then be refused.
    for round in 0..8 {
        let user = TestUser {
            email: format!("r{round}-{}", user.email),
            ..user.clone()
        };
        let changer = signed_up(&app.url(""), &user).await;
        let id = my_id(&changer).await;
        let base = app.url("");
        let logins: Vec<_> = (0..12)
            .map(|i| {
                let base = base.clone();
                let user = user.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(40 * i)).await;
                    let mut api = Api::new(base);
                    let status = api.login(&user).await.status();
                    (status, tokio::time::Instant::now(), api)
                })
            })
            .collect();
        let change = changer
            .send(changer.request(Method::PUT, "/me/password").json(&json!({
                "current_password": user.password,
                "new_password": new_password,
            })))
            .await;
        let changed_at = tokio::time::Instant::now();
        assert_eq!(change.status(), StatusCode::NO_CONTENT);
        let mut late = 0;
        for login in logins {
            let (status, at, api) = login.await.expect("the login task");
            if status != StatusCode::OK {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "old password after the change"
                );
                continue;
            }
            late += usize::from(at > changed_at);
            assert!(api.cookie.is_some(), "a 200 login sets a cookie");
            assert_eq!(
                api.me().await.status(),
                StatusCode::UNAUTHORIZED,
                "a session made with the old password does not outlive its change ({id})"
            );
        }
        if late > 0 {
            return;
        }
    }
    panic!("no login with the old password finished after the change in eight rounds");
}

#[tokio::test]
async fn a_retried_signup_with_the_same_credentials_logs_in() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let first = signed_up(&app.url(""), &user).await;
    let id = my_id(&first).await;

    // The first answer was lost (or its session could not be stored): the client retries.
    let mut retry = Api::new(app.url(""));
    let again = retry.signup(&user).await;
    let status = again.status();
    let cookie = session_cookie(&again);
    let body: Value = again.json().await.expect("JSON");
    let mut other = Api::new(app.url(""));
    let other_password = other
        .signup(&TestUser {
            password: "another passphrase entirely".into(),
            ..user.clone()
        })
        .await;

    assert_eq!(status, StatusCode::OK, "logged in, not a 409");
    assert_eq!(body["id"], id.to_string(), "to the existing account");
    assert!(cookie.is_some());
    assert_eq!(retry.me().await.status(), StatusCode::OK);
    assert_eq!(
        other_password.status(),
        StatusCode::CONFLICT,
        "another password is a taken email"
    );
    assert!(other.cookie.is_none());
}

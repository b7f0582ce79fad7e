//! Accounts and sessions: sessions live in Redis, so every instance honours every cookie.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Api, TestUser, client_from, concrete_path, documented_operations, eventually, instance_urls,
    loopback_address, session_cookie, signed_up, spawn_app, users_with_email,
};

#[tokio::test]
async fn a_session_made_through_one_instance_works_through_the_others() {
    let [a, b, c] = <[String; 3]>::try_from(instance_urls()).expect("three instances");
    let user = TestUser::new();

    let api = signed_up(&a, &user).await;

    for base in [&a, &b, &c] {
        let response = api.via(base).me().await;
        assert_eq!(response.status(), StatusCode::OK, "through {base}");
        let me: Value = response.json().await.expect("json");
        assert_eq!(me["email"], user.email);
    }
}

#[tokio::test]
async fn logout_through_one_instance_ends_the_session_on_all() {
    let [a, b, c] = <[String; 3]>::try_from(instance_urls()).expect("three instances");
    let api = signed_up(&a, &TestUser::new()).await;

    let response = api.via(&b).post("/auth/logout").await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for base in [&a, &c] {
        assert_eq!(
            api.via(base).me().await.status(),
            StatusCode::UNAUTHORIZED,
            "{base}"
        );
    }
}

#[tokio::test]
async fn logout_all_ends_the_sessions_of_every_client() {
    let [a, b, _] = <[String; 3]>::try_from(instance_urls()).expect("three instances");
    let user = TestUser::new();
    let laptop = signed_up(&a, &user).await;
    let mut phone = Api::new(&b);
    assert_eq!(phone.login(&user).await.status(), StatusCode::OK);
    assert_ne!(laptop.cookie, phone.cookie);

    let response = laptop.post("/auth/logout-all").await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(laptop.me().await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(phone.me().await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_keeps_this_one() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let mut this = signed_up(&app.url(""), &user).await;
    let mut other = Api::new(app.url(""));
    assert_eq!(other.login(&user).await.status(), StatusCode::OK);
    let old_cookie = this.cookie.clone();

    let request = this.request(Method::PUT, "/me/password").json(&json!({
        "current_password": user.password,
        "new_password": "a brand new passphrase",
    }));
    let response = this.send_keeping_cookie(request).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_ne!(
        this.cookie, old_cookie,
        "the surviving session has a new id"
    );
    assert_eq!(this.me().await.status(), StatusCode::OK);
    assert_eq!(other.me().await.status(), StatusCode::UNAUTHORIZED);
    let stale = Api {
        cookie: old_cookie,
        ..this.clone()
    };
    assert_eq!(stale.me().await.status(), StatusCode::UNAUTHORIZED);
    let mut relogin = Api::new(app.url(""));
    let new_user = TestUser {
        password: "a brand new passphrase".into(),
        ..user
    };
    assert_eq!(relogin.login(&new_user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_session_id_from_before_login_is_worthless_after_it() {
    let app = spawn_app().await;
    // A session planted in a victim's browser (here: the attacker's own).
    let attacker = signed_up(&app.url(""), &TestUser::new()).await;
    let planted = attacker.cookie.clone();
    let victim = TestUser::new();
    signed_up(&app.url(""), &victim).await;

    let mut browser = Api {
        cookie: planted.clone(),
        ..Api::new(app.url(""))
    };
    assert_eq!(browser.login(&victim).await.status(), StatusCode::OK);

    assert_ne!(browser.cookie, planted, "login issues a new session id");
    let me: Value = browser.me().await.json().await.expect("json");
    assert_eq!(me["email"], victim.email);
    let old = Api {
        cookie: planted,
        ..browser.clone()
    };
    assert_eq!(old.me().await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cross_site_requests_that_change_state_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;

    let foreign_logout = api
        .send(
            api.request(Method::POST, "/auth/logout")
                .header("origin", "https://evil.example"),
        )
        .await;
    let cross_site_patch = api
        .send(
            api.request(Method::PATCH, "/me")
                .header("sec-fetch-site", "cross-site")
                .json(&json!({"name": "Pwned"})),
        )
        .await;

    for response in [foreign_logout, cross_site_patch] {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let me = api.me().await;
    assert_eq!(me.status(), StatusCode::OK, "still logged in");
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["name"], user.name, "name unchanged");
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_identical_answers() {
    let app = spawn_app().await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;

    let wrong_password = Api::new(app.url(""))
        .login(&TestUser {
            password: "not the password at all".into(),
            ..user.clone()
        })
        .await;
    let unknown_email = Api::new(app.url("")).login(&TestUser::new()).await;

    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.status(), unknown_email.status());
    let a = wrong_password.text().await.expect("body");
    let b = unknown_email.text().await.expect("body");
    assert_eq!(a, b);
}

#[tokio::test]
async fn failed_logins_over_three_instances_share_one_limit() {
    let instances = instance_urls();
    let user = TestUser::new();
    signed_up(&instances[0], &user).await;
    let wrong = TestUser {
        password: "not the password at all".into(),
        ..user.clone()
    };
    // One client address for the whole test, whichever instance it calls.
    let client = client_from(loopback_address());
    let from_here = |base: &String| Api {
        client: client.clone(),
        ..Api::new(base)
    };

    // The default limit per account and address is 5: spread the failures over the three
    // instances.
    for i in 0..5 {
        let api = from_here(&instances[i % 3]);
        let response = api
            .send(
                api.request(Method::POST, "/auth/login")
                    .json(&wrong.login_body()),
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let api = from_here(&instances[2]);
    let limited = api
        .send(
            api.request(Method::POST, "/auth/login")
                .json(&user.login_body()),
        )
        .await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after > 0);
}

#[tokio::test]
async fn the_public_profile_shows_no_email() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let me: Value = api.me().await.json().await.expect("json");
    let id = me["id"].as_str().expect("an id").to_owned();

    // Read from the replica: poll until it has replayed the signup.
    let profile: Value = eventually(
        "profile on the replica",
        std::time::Duration::from_secs(10),
        || {
            let (api, id) = (Api::new(app.url("")), id.clone());
            async move {
                let r = api
                    .send(api.request(Method::GET, &format!("/users/{id}")))
                    .await;
                if r.status() == StatusCode::OK {
                    r.json().await.ok()
                } else {
                    None
                }
            }
        },
    )
    .await;

    assert_eq!(profile["name"], user.name);
    assert!(profile.get("email").is_none(), "{profile}");
    let missing = api
        .send(api.request(Method::GET, "/users/not-a-uuid"))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// One row of a bad-input table: what is sent and the status expected.
struct Bad {
    case: &'static str,
    body: Body,
    status: StatusCode,
}

enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

fn bad(case: &'static str, body: Value, status: StatusCode) -> Bad {
    Bad {
        case,
        body: Body::Json(body),
        status,
    }
}

fn raw(case: &'static str, content_type: &'static str, body: &[u8], status: StatusCode) -> Bad {
    Bad {
        case,
        body: Body::Raw(content_type, body.to_vec()),
        status,
    }
}

/// Rows every JSON endpoint shares.
fn malformed_rows() -> Vec<Bad> {
    vec![
        raw(
            "malformed JSON",
            "application/json",
            b"{,}",
            StatusCode::BAD_REQUEST,
        ),
        raw(
            "truncated JSON",
            "application/json",
            b"{\"",
            StatusCode::BAD_REQUEST,
        ),
        raw(
            "wrong content type",
            "text/plain",
            b"{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        raw(
            "no content type",
            "",
            b"{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        raw(
            "oversize body",
            "application/json",
            format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024)).as_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ]
}

async fn send_bad(api: &Api, method: Method, path: &str, row: &Bad) -> Value {
    let request = api.request(method, path);
    let request = match &row.body {
        Body::Json(v) => request.json(v),
        Body::Raw("", bytes) => request.body(bytes.clone()),
        Body::Raw(ct, bytes) => request.header("content-type", *ct).body(bytes.clone()),
    };
    let response = api.send(request).await;
    assert_eq!(response.status(), row.status, "{path}: {}", row.case);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{path}: {}",
        row.case
    );
    let problem: Value = response.json().await.expect("json");
    assert_eq!(
        problem["status"],
        row.status.as_u16(),
        "{path}: {}",
        row.case
    );
    problem
}

#[tokio::test]
async fn bad_signups_are_4xx_problems_and_create_nothing() {
    let app = spawn_app().await;
    let taken = TestUser::new();
    signed_up(&app.url(""), &taken).await;
    let user = TestUser::new();
    let (e, n, p) = (
        user.email.as_str(),
        user.name.as_str(),
        user.password.as_str(),
    );
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let mut rows = vec![
        bad(
            "missing field",
            json!({"email": e, "name": n}),
            unprocessable,
        ),
        bad(
            "bad email",
            json!({"email": "not-an-email", "name": n, "password": p}),
            unprocessable,
        ),
        bad(
            "short password",
            json!({"email": e, "name": n, "password": "short"}),
            unprocessable,
        ),
        bad(
            "empty name",
            json!({"email": e, "name": "  ", "password": p}),
            unprocessable,
        ),
        bad(
            "unknown field",
            json!({"email": e, "name": n, "password": p, "admin": true}),
            unprocessable,
        ),
        bad(
            "wrong types",
            json!({"email": 42, "name": n, "password": p}),
            unprocessable,
        ),
        bad("not an object", json!([e, n, p]), unprocessable),
        bad(
            "duplicate email, other case",
            json!({"email": taken.email.to_uppercase(), "name": n, "password": p}),
            StatusCode::CONFLICT,
        ),
    ];
    rows.extend(malformed_rows());

    let api = Api::new(app.url(""));
    for row in &rows {
        let problem = send_bad(&api, Method::POST, "/auth/signup", row).await;
        if row.status == unprocessable && row.case != "not an object" {
            assert!(problem["errors"].is_object(), "{}: {problem}", row.case);
        }
    }

    assert_eq!(users_with_email(&app.state, &user.email).await, 0);
    assert_eq!(users_with_email(&app.state, &taken.email).await, 1);
}

#[tokio::test]
async fn bad_profile_and_password_changes_are_4xx_problems_and_change_nothing() {
    let app = spawn_app().await;
    let other = TestUser::new();
    signed_up(&app.url(""), &other).await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;

    let mut patch_rows = vec![
        bad("nothing to change", json!({}), unprocessable),
        bad("bad email", json!({"email": "nope"}), unprocessable),
        bad(
            "too long name",
            json!({"name": "x".repeat(101)}),
            unprocessable,
        ),
        bad("unknown field", json!({"password": "x"}), unprocessable),
        bad("wrong types", json!({"name": 7}), unprocessable),
        bad(
            "email of another account",
            json!({"email": other.email}),
            StatusCode::CONFLICT,
        ),
    ];
    patch_rows.extend(malformed_rows());
    for row in &patch_rows {
        send_bad(&api, Method::PATCH, "/me", row).await;
    }

    let mut password_rows = vec![
        bad(
            "missing field",
            json!({"new_password": "long enough passphrase"}),
            unprocessable,
        ),
        bad(
            "short new password",
            json!({"current_password": user.password, "new_password": "short"}),
            unprocessable,
        ),
        bad(
            "wrong current password",
            json!({"current_password": "wrong wrong wrong", "new_password": "long enough passphrase"}),
            StatusCode::FORBIDDEN,
        ),
    ];
    password_rows.extend(malformed_rows());
    for row in &password_rows {
        send_bad(&api, Method::PUT, "/me/password", row).await;
    }

    let mut login_rows = vec![
        bad("missing field", json!({"email": user.email}), unprocessable),
        bad(
            "bad email",
            json!({"email": "nope", "password": user.password}),
            unprocessable,
        ),
        bad(
            "unknown field",
            json!({"email": user.email, "password": user.password, "x": 1}),
            unprocessable,
        ),
    ];
    login_rows.extend(malformed_rows());
    let anonymous = Api::new(app.url(""));
    for row in &login_rows {
        send_bad(&anonymous, Method::POST, "/auth/login", row).await;
    }

    let me: Value = api.me().await.json().await.expect("json");
    assert_eq!(me["name"], user.name);
    assert_eq!(me["email"], user.email);
    let mut relogin = Api::new(app.url(""));
    assert_eq!(
        relogin.login(&user).await.status(),
        StatusCode::OK,
        "password unchanged"
    );
}

#[tokio::test]
async fn every_operation_the_document_marks_as_secured_needs_a_session() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let secured: Vec<(Method, String)> = documented_operations(&doc)
        .into_iter()
        .filter(|(_, _, operation)| {
            operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("session").is_some()))
        })
        .map(|(method, path, _)| (method, concrete_path(&path)))
        .collect();
    assert!(
        secured.len() >= 10,
        "the document marks {} operations as secured",
        secured.len()
    );

    let client = crate::helpers::client();
    for (method, path) in &secured {
        // A well-formed body, so that only the missing session can be the reason for a refusal.
        let response = client
            .request(method.clone(), app.url(path))
            .json(&json!({}))
            .send()
            .await
            .expect("answers");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        assert!(
            session_cookie(&response).is_none(),
            "{method} {path} starts no session"
        );
    }
}

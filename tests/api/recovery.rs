//! Account recovery end to end: the topology's worker sends the emails to the SMTP sink, and
//! the tests read the tokens from there, as a user would.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Api, TestApp, TestUser, client_from, eventually, loopback_address, signed_up, spawn_app,
};
use crate::job_effects::{done, messages_to};

/// The token of the first email to `address` whose subject is `subject`, once it arrives.
async fn emailed_token(address: &str, subject: &str) -> String {
    eventually(
        &format!("an email '{subject}' to {address}"),
        Duration::from_secs(30),
        || async {
            messages_to(address)
                .into_iter()
                .find(|m| m.contains(&format!("Subject: {subject}")))
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
                })
        },
    )
    .await
}

const VERIFY: &str = "Verify your email address";
const RESET: &str = "Reset your scaleout password";

async fn email_verified(api: &Api) -> bool {
    let me: Value = api.me().await.json().await.expect("JSON");
    me["email_verified"]
        .as_bool()
        .expect("email_verified is a bool")
}

async fn verify(api: &Api, token: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/verify")
            .json(&json!({"token": token})),
    )
    .await
}

/// An anonymous client of `app` from an address of its own (the reset limits count per address).
fn anonymous(app: &TestApp) -> Api {
    Api {
        client: client_from(loopback_address()),
        ..Api::new(app.url(""))
    }
}

async fn ask_reset(api: &Api, email: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/password-reset")
            .json(&json!({"email": email})),
    )
    .await
}

async fn confirm_reset(api: &Api, token: &str, new_password: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/password-reset/confirm")
            .json(&json!({"token": token, "new_password": new_password})),
    )
    .await
}

/// A refused token: 422 naming the `token` field.
async fn assert_token_refused(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.expect("a problem");
    assert!(problem["errors"]["token"].is_array(), "{problem}");
}

async fn expire_tokens_of(app: &TestApp, email: &str) {
    let expired = sqlx::query(
        "update account_tokens set expires_at = now() - interval '1 second'
          where lower(email) = lower($1)",
    )
    .bind(email)
    .execute(app.state.db.primary_pool())
    .await
    .expect("expires the tokens");
    assert!(expired.rows_affected() >= 1, "a token to expire");
}

#[tokio::test]
async fn a_signup_emails_a_link_that_verifies_the_email_once() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    assert!(!email_verified(&api).await, "a new account is unverified");

    let token = emailed_token(&user.email, VERIFY).await;
    // From another client, with no session: the link works wherever the email is read.
    let elsewhere = anonymous(&app);
    assert_eq!(
        verify(&elsewhere, &token).await.status(),
        StatusCode::NO_CONTENT
    );

    assert!(email_verified(&api).await);
    assert_token_refused(verify(&elsewhere, &token).await).await;
    let stored: i64 = sqlx::query_scalar("select count(*) from account_tokens where email = $1")
        .bind(&user.email)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("counts");
    let in_clear: i64 = sqlx::query_scalar(
        "select count(*) from account_tokens where encode(token_hash, 'hex') = $1",
    )
    .bind(&token)
    .fetch_one(app.state.db.primary_pool())
    .await
    .expect("counts");
    assert_eq!((stored, in_clear), (1, 0), "stored once, and only hashed");
}

#[tokio::test]
async fn an_email_change_is_unverified_until_the_link_sent_to_the_new_address_is_used() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let first = emailed_token(&user.email, VERIFY).await;
    assert_eq!(verify(&api, &first).await.status(), StatusCode::NO_CONTENT);
    assert!(email_verified(&api).await);

    let new_email = TestUser::new().email;
    let changed = api
        .send(
            api.request(Method::PATCH, "/me")
                .json(&json!({"email": new_email})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let me: Value = changed.json().await.expect("JSON");
    assert_eq!(me["email_verified"], false, "{me}");

    let second = emailed_token(&new_email, VERIFY).await;
    assert_ne!(first, second);
    assert_eq!(verify(&api, &second).await.status(), StatusCode::NO_CONTENT);
    assert!(email_verified(&api).await);
}

#[tokio::test]
async fn an_expired_verification_link_is_refused() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let token = emailed_token(&user.email, VERIFY).await;

    expire_tokens_of(&app, &user.email).await;

    assert_token_refused(verify(&api, &token).await).await;
    assert!(!email_verified(&api).await);
}

#[tokio::test]
async fn a_password_reset_sets_the_password_ends_every_session_and_works_once() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let first_device = signed_up(&app.url(""), &user).await;
    let mut second_device = Api::new(app.url(""));
    assert_eq!(second_device.login(&user).await.status(), StatusCode::OK);

    let stranger = anonymous(&app);
    // Any letter case finds the account.
    let asked = ask_reset(&stranger, &user.email.to_uppercase()).await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = emailed_token(&user.email, RESET).await;
    let new_password = "a brand new passphrase for recovery";
    assert_eq!(
        confirm_reset(&stranger, &token, new_password)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    for device in [&first_device, &second_device] {
        assert_eq!(device.me().await.status(), StatusCode::UNAUTHORIZED);
    }
    let mut api = Api::new(app.url(""));
    assert_eq!(api.login(&user).await.status(), StatusCode::UNAUTHORIZED);
    let renewed = TestUser {
        password: new_password.into(),
        ..user.clone()
    };
    assert_eq!(api.login(&renewed).await.status(), StatusCode::OK);

    assert_token_refused(confirm_reset(&stranger, &token, "yet another passphrase here").await)
        .await;
    let mut again = Api::new(app.url(""));
    assert_eq!(again.login(&renewed).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_reset_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let stranger = anonymous(&app);
    assert_eq!(
        ask_reset(&stranger, &user.email).await.status(),
        StatusCode::ACCEPTED
    );
    let token = emailed_token(&user.email, RESET).await;

    sqlx::query(
        "update account_tokens set expires_at = now() - interval '1 second'
          where lower(email) = lower($1) and purpose = 'password_reset'",
    )
    .bind(&user.email)
    .execute(app.state.db.primary_pool())
    .await
    .expect("expires the token");

    assert_token_refused(confirm_reset(&stranger, &token, "a passphrase too late").await).await;
    let mut api = Api::new(app.url(""));
    assert_eq!(api.login(&user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_reset_for_an_unknown_email_is_accepted_the_same_and_sends_nothing() {
    let app = spawn_app().await;
    let unknown = TestUser::new().email;
    let stranger = anonymous(&app);

    let response = ask_reset(&stranger, &unknown).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.bytes().await.expect("a body").is_empty());
    // The job ran to its end, and found no one to write to.
    let db = app.state.db.primary_pool();
    let job: String = sqlx::query_scalar(
        "select id from apalis.jobs
          where convert_from(job, 'UTF8')::jsonb -> 'job' ->> 'email' = $1",
    )
    .bind(&unknown)
    .fetch_one(db)
    .await
    .expect("the request queued a job, as for a known address");
    done(db, &job).await;
    assert!(messages_to(&unknown).is_empty());
}

#[tokio::test]
async fn reset_requests_are_limited_per_email_whatever_the_address() {
    let app = spawn_app().await;
    let email = TestUser::new().email;
    let max = scaleout::http::routes::recovery::RESET_MAX_PER_EMAIL;
    for _ in 0..max {
        let from_anywhere = anonymous(&app);
        assert_eq!(
            ask_reset(&from_anywhere, &email).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let response = ask_reset(&anonymous(&app), &email).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    // Another address is not affected.
    assert_eq!(
        ask_reset(&anonymous(&app), &TestUser::new().email)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn reset_requests_are_limited_per_client_address() {
    let app = spawn_app().await;
    let one_address = anonymous(&app);
    let max = scaleout::http::routes::recovery::RESET_MAX_PER_ADDRESS;
    for _ in 0..max {
        let email = TestUser::new().email;
        assert_eq!(
            ask_reset(&one_address, &email).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let over = ask_reset(&one_address, &TestUser::new().email).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        ask_reset(&anonymous(&app), &TestUser::new().email)
            .await
            .status(),
        StatusCode::ACCEPTED,
        "another address is not limited"
    );
}

#[tokio::test]
async fn a_malformed_or_unknown_token_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let api = anonymous(&app);
    assert_token_refused(verify(&api, "not-a-token").await).await;
    assert_token_refused(verify(&api, "").await).await;
    assert_token_refused(confirm_reset(&api, &"f".repeat(64), "a fine new passphrase").await).await;
}

#[tokio::test]
async fn a_password_change_spends_the_reset_links_sent_before_it() {
    let app = spawn_app().await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    assert_eq!(
        ask_reset(&anonymous(&app), &user.email).await.status(),
        StatusCode::ACCEPTED
    );
    let token = emailed_token(&user.email, RESET).await;
    let changed = api
        .send(api.request(Method::PUT, "/me/password").json(&json!({
            "current_password": user.password,
            "new_password": "the owner's own new passphrase",
        })))
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);

    // Whoever saw the old email cannot take the account back with it.
    assert_token_refused(confirm_reset(&anonymous(&app), &token, "an intruder's passphrase").await)
        .await;
    let owner = TestUser {
        password: "the owner's own new passphrase".into(),
        ..user.clone()
    };
    let mut fresh = Api::new(app.url(""));
    assert_eq!(fresh.login(&owner).await.status(), StatusCode::OK);
}

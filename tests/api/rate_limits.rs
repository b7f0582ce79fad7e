//! Login limits, shared by every instance through Redis: per account, per client address (the
//! address nginx saw, which a client cannot forge), reset by a successful login, and over when
//! their window ends.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::{
    Api, TestUser, client_from, edge_url, eventually, loopback_address, signed_up, spawn_app_with,
};

/// The instances' login limits: the topology sets none, so they are the configured defaults,
/// read the way the instances read them.
fn auth_config() -> scaleout::config::AuthConfig {
    let vars: HashMap<String, String> = std::env::vars().collect();
    scaleout::config::AuthConfig::from_source(&vars).expect("auth config")
}

/// A client of nginx connecting from its own loopback address.
fn from_address(address: std::net::IpAddr) -> Api {
    Api {
        client: client_from(address),
        ..Api::new(edge_url())
    }
}

/// A failed login for `email` through `api`, with a forged `X-Real-IP` and
/// `X-Forwarded-For` naming `claimed`.
async fn failed_login(api: &Api, email: &str, claimed: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/login")
            .header("x-real-ip", claimed)
            .header("x-forwarded-for", claimed)
            .json(&serde_json::json!({"email": email, "password": "not the password at all"})),
    )
    .await
}

/// Sends failed logins for distinct unknown accounts (so the per-account limit never trips)
/// until the address limit answers 429; returns how many were answered 401 first.
async fn exhaust_address_limit(api: &Api, claimed: &str, max: u64) -> u64 {
    let mut refused = 0;
    for _ in 0..=max {
        let response = failed_login(api, &TestUser::new().email, claimed).await;
        match response.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => break,
            other => panic!("a failed login answered {other}"),
        }
    }
    refused
}

#[tokio::test]
async fn failed_logins_from_one_address_are_limited_whatever_the_account() {
    let max = auth_config().login_max_failures_per_address;
    let attacker = from_address(loopback_address());
    let bystander = from_address(loopback_address());

    let refused = exhaust_address_limit(&attacker, "203.0.113.7", max).await;
    let next = failed_login(&attacker, &TestUser::new().email, "203.0.113.7").await;
    let other_address = failed_login(&bystander, &TestUser::new().email, "203.0.113.7").await;

    assert_eq!(refused, max, "{max} failures allowed per address");
    assert_eq!(next.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(next.headers().contains_key("retry-after"));
    assert_eq!(
        other_address.status(),
        StatusCode::UNAUTHORIZED,
        "another client address has its own count"
    );
}

#[tokio::test]
async fn a_forged_x_real_ip_through_nginx_neither_escapes_nor_frames_an_address() {
    let max = auth_config().login_max_failures_per_address;
    let attacker_address = loopback_address();
    let victim_address = loopback_address();
    let attacker = from_address(attacker_address);
    let victim = from_address(victim_address);

    // The attacker claims to be the victim on every request: nginx replaces the header with
    // the address it saw, so the failures count against the attacker alone.
    let refused = exhaust_address_limit(&attacker, &victim_address.to_string(), max).await;
    let escaped = failed_login(&attacker, &TestUser::new().email, "198.51.100.9").await;
    let victim_login = failed_login(&victim, &TestUser::new().email, "198.51.100.9").await;

    assert_eq!(refused, max);
    assert_eq!(
        escaped.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "claiming another address does not escape the limit"
    );
    assert_eq!(
        victim_login.status(),
        StatusCode::UNAUTHORIZED,
        "the claimed address was never charged"
    );
}

#[tokio::test]
async fn a_successful_login_resets_the_accounts_failure_count() {
    let max = auth_config().login_max_failures_per_account;
    let user = TestUser::new();
    signed_up(&edge_url(), &user).await;
    let api = from_address(loopback_address());
    let wrong = || failed_login(&api, &user.email, "192.0.2.1");

    let mut before = Vec::new();
    for _ in 1..max {
        before.push(wrong().await.status());
    }
    let mut login = Api {
        client: api.client.clone(),
        ..Api::new(edge_url())
    };
    let success = login.login(&user).await.status();
    let mut after = Vec::new();
    for _ in 0..max {
        after.push(wrong().await.status());
    }
    let over = wrong().await.status();

    assert!(
        before.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{before:?}"
    );
    assert_eq!(
        success,
        StatusCode::OK,
        "one under the limit, the right password works"
    );
    assert!(
        after.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "the count started again at zero: {after:?}"
    );
    assert_eq!(
        over,
        StatusCode::TOO_MANY_REQUESTS,
        "and the limit still holds"
    );
}

#[tokio::test]
async fn a_login_limit_ends_with_its_window() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "2"),
        // Long enough that three logins (Argon2 each) land inside it on a loaded machine.
        ("LOGIN_FAILURE_WINDOW_SECS", "8"),
    ])
    .await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let api = Api::new(app.url(""));
    for _ in 0..2 {
        let response = failed_login(&api, &user.email, "192.0.2.1").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let mut limited = Api::new(app.url(""));
    let response = limited.login(&user).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(
        (1..=8).contains(&retry_after),
        "within the window: {retry_after}"
    );

    // Each try counts, but the window is fixed from its first failure: it ends regardless.
    eventually("the window ends", Duration::from_secs(40), || {
        let mut api = Api::new(app.url(""));
        let user = user.clone();
        async move { (api.login(&user).await.status() == StatusCode::OK).then_some(()) }
    })
    .await;
}

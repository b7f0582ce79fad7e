//! Limits on password checks, signups and email changes, shared by every instance through
//! Redis; and the client address they count by: the peer, or behind a trusted proxy the
//! rightmost `X-Forwarded-For` entry no trusted proxy wrote.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{
    Api, TestApp, TestUser, client_from, edge_url, eventually, loopback_address, signed_up,
    spawn_app_with,
};

/// The instances' limits: the topology sets none, so they are the configured defaults, read
/// the way the instances read them.
fn auth_config() -> scaleout::config::AuthConfig {
    let vars: HashMap<String, String> = std::env::vars().collect();
    scaleout::config::AuthConfig::from_source(&vars).expect("auth config")
}

/// A client of `base` connecting from its own loopback address.
fn from_address(base: String, address: std::net::IpAddr) -> Api {
    Api {
        client: client_from(address),
        ..Api::new(base)
    }
}

/// A failed login for `email` through `api`, with a forged `X-Forwarded-For` naming `claimed`.
async fn failed_login(api: &Api, email: &str, claimed: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/login")
            .header("x-forwarded-for", claimed)
            .json(&json!({"email": email, "password": "not the password at all"})),
    )
    .await
}

/// A login of `user` through `api` with the `X-Forwarded-For` chain `chain`.
async fn login_via(api: &Api, user: &TestUser, chain: &str) -> reqwest::Response {
    api.send(
        api.request(Method::POST, "/auth/login")
            .header("x-forwarded-for", chain)
            .json(&user.login_body()),
    )
    .await
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds")
}

/// Sends failed logins for distinct unknown accounts (so no per-account limit trips) until
/// the address limit answers 429; returns how many were answered 401 first.
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

/// An in-process app that trusts every loopback peer as a proxy, so a test names the client
/// in `X-Forwarded-For`; and 10.0.0.0/8 as a second tier of proxies.
async fn app_behind_proxies(overrides: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8")];
    vars.extend_from_slice(overrides);
    spawn_app_with(&vars).await
}

#[tokio::test]
async fn failed_logins_from_one_address_are_limited_whatever_the_account() {
    let max = auth_config().login_max_failures_per_address;
    let attacker = from_address(edge_url(), loopback_address());
    let bystander = from_address(edge_url(), loopback_address());

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
async fn a_forged_x_forwarded_for_through_nginx_neither_escapes_nor_frames_an_address() {
    let max = auth_config().login_max_failures_per_address;
    let attacker_address = loopback_address();
    let victim_address = loopback_address();
    let attacker = from_address(edge_url(), attacker_address);
    let victim = from_address(edge_url(), victim_address);

    // The attacker claims to be the victim on every request: nginx appends the address it
    // saw, which is the rightmost entry, so the failures count against the attacker alone.
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
async fn failures_from_one_address_do_not_lock_the_owner_out_from_another() {
    let max = auth_config().login_max_failures_per_account_and_address;
    let user = TestUser::new();
    signed_up(&edge_url(), &user).await;
    let attacker = from_address(edge_url(), loopback_address());

    let mut failures = Vec::new();
    for _ in 0..max {
        failures.push(
            failed_login(&attacker, &user.email, "192.0.2.1")
                .await
                .status(),
        );
    }
    let attacker_again = attacker
        .send(
            attacker
                .request(Method::POST, "/auth/login")
                .json(&user.login_body()),
        )
        .await;
    let mut owner = from_address(edge_url(), loopback_address());
    let owner_login = owner.login(&user).await;

    assert!(
        failures.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{failures:?}"
    );
    assert_eq!(
        attacker_again.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "that address is done with this account, even with the right password"
    );
    assert_eq!(
        owner_login.status(),
        StatusCode::OK,
        "the owner, from another address, is not locked out"
    );
    assert_eq!(owner.me().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_count() {
    let max = auth_config().login_max_failures_per_account_and_address;
    let user = TestUser::new();
    signed_up(&edge_url(), &user).await;
    let api = from_address(edge_url(), loopback_address());
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
        ("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS", "2"),
        // Long enough that three logins (Argon2 each) land inside it on a loaded machine.
        ("LOGIN_FAILURE_WINDOW_SECS", "8"),
    ])
    .await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let address = loopback_address();
    let api = from_address(app.url(""), address);
    for _ in 0..2 {
        let response = failed_login(&api, &user.email, "192.0.2.1").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let mut limited = from_address(app.url(""), address);
    let response = limited.login(&user).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = retry_after(&response);
    assert!(
        (1..=8).contains(&retry_after),
        "within the window: {retry_after}"
    );

    // Each try counts, but the window is fixed from its first failure: it ends regardless.
    eventually("the window ends", Duration::from_secs(40), || {
        let mut api = from_address(app.url(""), address);
        let user = user.clone();
        async move { (api.login(&user).await.status() == StatusCode::OK).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address_with_headers() {
    // An instance that trusts no proxy (the default; the topology's instances trust nginx's
    // 127.0.0.1 only): a client calling it directly is counted by its own address, whatever
    // it claims.
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS", "3")]).await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let api = from_address(app.url(""), loopback_address());

    let mut failures = Vec::new();
    for i in 0..3 {
        let claimed = format!("203.0.113.{i}");
        failures.push(failed_login(&api, &user.email, &claimed).await.status());
    }
    let fresh_claim = login_via(&api, &user, "198.51.100.77").await;

    assert!(
        failures.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{failures:?}"
    );
    assert_eq!(
        fresh_claim.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a new X-Forwarded-For does not make a new client"
    );
}

#[tokio::test]
async fn through_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
    let app = app_behind_proxies(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS", "3")]).await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let proxy = from_address(app.url(""), loopback_address());

    // A forged entry that changes every time, the real client, then an inner proxy hop.
    let mut failures = Vec::new();
    for i in 0..3 {
        let chain = format!("198.51.100.{i}, 203.0.113.9, 10.1.1.1");
        failures.push(failed_login(&proxy, &user.email, &chain).await.status());
    }
    let same_client = login_via(&proxy, &user, "192.0.2.200, 203.0.113.9, 10.1.1.1").await;
    let next_client = login_via(&proxy, &user, "203.0.113.9, 203.0.113.10, 10.1.1.1").await;

    assert!(
        failures.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{failures:?}"
    );
    assert_eq!(
        same_client.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the forged left part is ignored, the trusted hop skipped: the same client"
    );
    assert_eq!(
        next_client.status(),
        StatusCode::OK,
        "another rightmost untrusted address is another client"
    );
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let app = app_behind_proxies(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS", "3")]).await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let proxy = from_address(app.url(""), loopback_address());

    // Three addresses of one /64.
    let mut failures = Vec::new();
    for client in [
        "2001:db8:aa:bb::1",
        "2001:db8:aa:bb::2:3",
        "2001:db8:aa:bb:ffff:ffff:ffff:ffff",
    ] {
        failures.push(failed_login(&proxy, &user.email, client).await.status());
    }
    let same_64 = login_via(&proxy, &user, "2001:db8:aa:bb::4242").await;
    let next_64 = login_via(&proxy, &user, "2001:db8:aa:bc::1").await;

    assert!(
        failures.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{failures:?}"
    );
    assert_eq!(
        same_64.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "another address in the same /64 is the same client"
    );
    assert_eq!(next_64.status(), StatusCode::OK, "another /64 is not");
}

#[tokio::test]
async fn past_the_per_account_ceiling_logins_slow_down_and_the_owner_still_gets_in() {
    let app = app_behind_proxies(&[
        ("LOGIN_BACKOFF_AFTER_FAILURES_PER_ACCOUNT", "3"),
        // Longer than a login's Argon2 on a loaded machine, so the next try meets the wait.
        ("LOGIN_BACKOFF_BASE_MS", "4000"),
        ("LOGIN_BACKOFF_MAX_SECS", "60"),
    ])
    .await;
    let user = TestUser::new();
    signed_up(&app.url(""), &user).await;
    let proxy = from_address(app.url(""), loopback_address());
    // Each failure from a new address: the per-address limits never trip, only the account's.
    let mut n = 0;
    let mut from_anywhere = || {
        n += 1;
        format!("203.0.113.{n}")
    };

    let mut under_ceiling = Vec::new();
    for _ in 0..3 {
        let r = failed_login(&proxy, &user.email, &from_anywhere()).await;
        under_ceiling.push(r.status());
    }
    let first_past = failed_login(&proxy, &user.email, &from_anywhere()).await;
    let waiting = failed_login(&proxy, &user.email, &from_anywhere()).await;
    let first_wait = retry_after(&waiting);
    let after_wait = eventually("the first wait ends", Duration::from_secs(30), || {
        let chain = from_anywhere();
        let proxy = &proxy;
        let email = user.email.clone();
        async move {
            let r = failed_login(proxy, &email, &chain).await;
            (r.status() == StatusCode::UNAUTHORIZED).then_some(r.status())
        }
    })
    .await;
    let waiting_longer = failed_login(&proxy, &user.email, &from_anywhere()).await;
    let second_wait = retry_after(&waiting_longer);
    let owner = eventually("the owner gets in", Duration::from_secs(60), || {
        let chain = from_anywhere();
        let proxy = &proxy;
        let user = user.clone();
        async move {
            let r = login_via(proxy, &user, &chain).await;
            (r.status() != StatusCode::TOO_MANY_REQUESTS).then_some(r.status())
        }
    })
    .await;

    assert!(
        under_ceiling.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{under_ceiling:?}"
    );
    assert_eq!(
        first_past.status(),
        StatusCode::UNAUTHORIZED,
        "past the ceiling an attempt still gets checked"
    );
    assert_eq!(waiting.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=4).contains(&first_wait), "{first_wait}");
    assert_eq!(after_wait, StatusCode::UNAUTHORIZED);
    assert_eq!(waiting_longer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        second_wait > first_wait,
        "the wait grows: {first_wait} then {second_wait}"
    );
    assert_eq!(
        owner,
        StatusCode::OK,
        "after the wait the right password works: slowed, not locked out"
    );
}

#[tokio::test]
async fn current_password_checks_share_the_login_limits() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS", "3")]).await;
    let user = TestUser::new();
    let api = signed_up(&app.url(""), &user).await;
    let wrong = "not the password at all";

    let change = |current: &str| {
        api.request(Method::PUT, "/me/password")
            .json(&json!({"current_password": current, "new_password": "a brand new passphrase"}))
    };
    let mut failures = vec![api.send(change(wrong)).await.status()];
    failures.push(api.send(change(wrong)).await.status());
    let delete = |password: &str| {
        api.request(Method::DELETE, "/me")
            .json(&json!({ "password": password }))
    };
    failures.push(api.send(delete(wrong)).await.status());
    let change_limited = api.send(change(&user.password)).await;
    let delete_limited = api.send(delete(&user.password)).await;
    let mut elsewhere = Api::new(app.url(""));
    let login_elsewhere = elsewhere.login(&user).await;

    assert_eq!(
        failures,
        [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN
        ]
    );
    assert_eq!(change_limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(change_limited.headers().contains_key("retry-after"));
    assert_eq!(delete_limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        login_elsewhere.status(),
        StatusCode::OK,
        "from another address the owner is not locked out, and the password is unchanged"
    );
}

/// A signup of `email` with a password nobody has.
async fn probe(api: &Api, email: &str) -> reqwest::Response {
    let body = json!({"email": email, "name": "Prober", "password": "a guess at nothing"});
    api.send(api.request(Method::POST, "/auth/signup").json(&body))
        .await
}

#[tokio::test]
async fn signups_are_limited_per_address_taken_email_or_not() {
    let app = spawn_app_with(&[("RATE_LIMIT_SIGNUP", "3/3600")]).await;
    let taken = TestUser::new();
    signed_up(&app.url(""), &taken).await;
    let prober = Api::new(app.url(""));

    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(probe(&prober, &taken.email).await.status());
    }
    let limited = probe(&prober, &taken.email).await;
    let limited_fresh = probe(&prober, &TestUser::new().email).await;
    let other_address = probe(&Api::new(app.url("")), &taken.email).await;

    assert_eq!(answers, [StatusCode::CONFLICT; 3]);
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        limited_fresh.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a free email gets the same answer: nothing learnt past the limit"
    );
    assert_eq!(other_address.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn email_changes_are_limited_per_user_taken_email_or_not() {
    let app = spawn_app_with(&[("EMAIL_CHANGE_MAX_PER_USER", "2")]).await;
    let taken = TestUser::new();
    signed_up(&app.url(""), &taken).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let change = |email: &str| {
        api.send(
            api.request(Method::PATCH, "/me")
                .json(&json!({ "email": email })),
        )
    };

    let free = change(&TestUser::new().email).await.status();
    let conflict = change(&taken.email).await.status();
    let limited = change(&taken.email).await;
    // From another address, the same account is still limited.
    let elsewhere = Api {
        client: client_from(loopback_address()),
        ..api.clone()
    };
    let limited_elsewhere = elsewhere
        .send(
            elsewhere
                .request(Method::PATCH, "/me")
                .json(&json!({ "email": TestUser::new().email })),
        )
        .await;
    let rename = api
        .send(
            api.request(Method::PATCH, "/me")
                .json(&json!({ "name": "Still Renamable" })),
        )
        .await;

    assert_eq!(free, StatusCode::OK);
    assert_eq!(conflict, StatusCode::CONFLICT);
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited_elsewhere.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rename.status(), StatusCode::OK, "names are not limited");
}

//! The API's request limits (GCRA in Redis, `http::rate_limit`): the draft's headers on every
//! answer, the 429 problem and what it leaves unchanged, the key (account or address), and
//! what each policy does while Redis is away. Each test runs its own in-process app with the
//! policy it measures made tight; its clients come from addresses of their own, so no other
//! test shares a counter with it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    Api, TestUser, client_from, loopback_address, metric, scrape, spawn_app_with, users_with_email,
};

/// The members of a structured-field list header (all its lines), as written.
fn members(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| m.trim().to_owned())
        .collect()
}

/// The `r` (remaining) of `policy` in the `RateLimit` header.
fn remaining(response: &reqwest::Response, policy: &str) -> Option<u64> {
    let prefix = format!("\"{policy}\";");
    members(response, "ratelimit")
        .iter()
        .find_map(|m| m.strip_prefix(&prefix).map(str::to_owned))
        .and_then(|params| {
            params
                .split(';')
                .find_map(|p| p.strip_prefix("r="))
                .and_then(|r| r.parse().ok())
        })
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// An anonymous read that needs nothing but the database: a profile that does not exist.
fn anonymous_read(api: &Api) -> reqwest::RequestBuilder {
    api.request(Method::GET, &format!("/users/{}", uuid::Uuid::new_v4()))
}

#[tokio::test]
async fn answers_carry_the_policy_and_a_remaining_count_that_counts_down() {
    let app = spawn_app_with(&[("RATE_LIMIT_ANONYMOUS", "5/60")]).await;
    let api = Api::new(app.url(""));

    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = api.send(anonymous_read(&api)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            members(&response, "ratelimit-policy"),
            ["\"anonymous\";q=5;w=60"]
        );
        seen.push(remaining(&response, "anonymous").expect("a RateLimit member"));
    }
    assert_eq!(seen, [4, 3, 2]);
}

#[tokio::test]
async fn past_the_quota_a_request_gets_the_429_problem_with_retry_after() {
    let app = spawn_app_with(&[("RATE_LIMIT_ANONYMOUS", "3/60")]).await;
    let api = Api::new(app.url(""));
    for i in 0..3 {
        let response = api.send(anonymous_read(&api)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "request {i}");
    }

    let refused = api.send(anonymous_read(&api)).await;

    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // One request back every 20 s (3 a minute).
    let wait = retry_after(&refused).expect("Retry-After in seconds");
    assert!((1..=20).contains(&wait), "Retry-After: {wait}");
    assert_eq!(remaining(&refused, "anonymous"), Some(0));
    let body: Value = refused.json().await.expect("a problem");
    assert_eq!(body["type"], "https://scaleout.dev/problems/rate-limited");
    assert_eq!(body["status"], 429);

    // Another address has an allowance of its own.
    let other = Api::new(app.url(""));
    assert_eq!(
        other.send(anonymous_read(&other)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_refused_signup_creates_nothing_and_names_both_policies() {
    let app = spawn_app_with(&[("RATE_LIMIT_SIGNUP", "1/3600")]).await;
    let address = loopback_address();
    let mut first = Api {
        client: client_from(address),
        ..Api::new(app.url(""))
    };
    let admitted = first.signup(&TestUser::new()).await;
    assert_eq!(admitted.status(), StatusCode::CREATED);
    // The route's policy, then the general one (whatever its quota in this environment).
    let policies = members(&admitted, "ratelimit-policy");
    assert_eq!(policies.len(), 2, "{policies:?}");
    assert_eq!(policies[0], "\"signup\";q=1;w=3600");
    assert!(policies[1].starts_with("\"anonymous\";q="), "{policies:?}");

    let user = TestUser::new();
    let mut second = Api {
        client: client_from(address),
        ..Api::new(app.url(""))
    };
    let refused = second.signup(&user).await;

    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused).is_some_and(|s| s >= 1));
    assert_eq!(remaining(&refused, "signup"), Some(0));
    assert!(second.cookie.is_none(), "no session was started");
    assert_eq!(users_with_email(&app.state, &user.email).await, 0);
}

#[tokio::test]
async fn signups_count_by_address_even_with_the_previous_signups_session() {
    let app = spawn_app_with(&[("RATE_LIMIT_SIGNUP", "2/3600")]).await;
    // One client that keeps each signup's session cookie and sends it with the next.
    let mut api = Api {
        client: client_from(loopback_address()),
        ..Api::new(app.url(""))
    };
    let first = api.signup(&TestUser::new()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = api.signup(&TestUser::new()).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert!(api.cookie.is_some(), "signed in as the second account");
    let user = TestUser::new();

    let third = api.signup(&user).await;

    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(remaining(&third, "signup"), Some(0));
    assert_eq!(users_with_email(&app.state, &user.email).await, 0);
}

#[tokio::test]
async fn the_plans_and_the_service_root_are_limited_by_address_without_a_session() {
    let app = spawn_app_with(&[("RATE_LIMIT_ANONYMOUS", "2/60")]).await;
    let api = Api::new(app.url(""));

    let plans = api.send(api.request(Method::GET, "/plans")).await;
    assert_eq!(plans.status(), StatusCode::OK);
    assert_eq!(
        members(&plans, "ratelimit-policy"),
        ["\"anonymous\";q=2;w=60"]
    );
    assert_eq!(remaining(&plans, "anonymous"), Some(1));
    assert!(
        plans.headers().get("set-cookie").is_none(),
        "no session: shared caches keep the plans"
    );
    // The service root counts against the same allowance.
    let root = api.send(api.request(Method::GET, "")).await;
    assert_eq!(root.status(), StatusCode::OK);
    assert_eq!(remaining(&root, "anonymous"), Some(0));

    let refused = api.send(api.request(Method::GET, "/plans")).await;

    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused).is_some_and(|s| s >= 1));
    assert!(refused.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn signed_in_users_count_by_account_not_by_their_shared_address() {
    let app = spawn_app_with(&[("RATE_LIMIT_USER", "3/60")]).await;
    let address = loopback_address();
    let mut alice = Api {
        client: client_from(address),
        ..Api::new(app.url(""))
    };
    let mut bob = alice.clone();
    assert_eq!(
        alice.signup(&TestUser::new()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        bob.signup(&TestUser::new()).await.status(),
        StatusCode::CREATED
    );

    for i in 0..3 {
        let response = alice.me().await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        assert_eq!(
            members(&response, "ratelimit-policy"),
            ["\"user\";q=3;w=60"]
        );
    }
    assert_eq!(alice.me().await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Same address, another account: a whole allowance of its own.
    let response = bob.me().await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(remaining(&response, "user"), Some(2));
}

#[tokio::test]
async fn with_the_limiter_off_nothing_is_counted_or_announced() {
    let app = spawn_app_with(&[("RATE_LIMITS", "off"), ("RATE_LIMIT_ANONYMOUS", "1/60")]).await;
    let api = Api::new(app.url(""));
    for _ in 0..3 {
        let response = api.send(anonymous_read(&api)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get("ratelimit").is_none());
        assert!(response.headers().get("ratelimit-policy").is_none());
    }
}

/// Redis refuses connections (nothing listens on its port): a dead store, as an instance sees
/// it after Redis went away.
async fn app_without_redis(overrides: &[(&str, &str)]) -> crate::helpers::TestApp {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("redis://{}/", dead.local_addr().expect("bound"));
    drop(dead);
    let mut vars = vec![("REDIS_URL", url.as_str())];
    vars.extend_from_slice(overrides);
    spawn_app_with(&vars).await
}

#[tokio::test]
async fn without_redis_signup_and_login_fail_closed_with_a_fast_503() {
    let app = app_without_redis(&[]).await;
    let user = TestUser::new();
    for (path, body) in [
        ("/auth/signup", user.signup_body()),
        ("/auth/login", user.login_body()),
    ] {
        let api = Api::new(app.url(""));
        let start = Instant::now();
        let response = api.send(api.request(Method::POST, path).json(&body)).await;
        let took = start.elapsed();

        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
        assert!(retry_after(&response).is_some_and(|s| s >= 1), "{path}");
        let problem: Value = response.json().await.expect("a problem");
        assert_eq!(problem["type"], "https://scaleout.dev/problems/unavailable");
    }
    assert_eq!(users_with_email(&app.state, &user.email).await, 0);
}

#[tokio::test]
async fn without_redis_reads_are_limited_per_instance_at_the_quota_over_the_instances() {
    // 6 a minute for the fleet of 3: 2 for this instance alone.
    let app = app_without_redis(&[
        ("RATE_LIMIT_ANONYMOUS", "6/60"),
        ("RATE_LIMIT_INSTANCES", "3"),
    ])
    .await;
    let api = Api::new(app.url(""));
    let before = metric(
        &scrape(&format!("http://{}/metrics", app.internal_addr)).await,
        "rate_limit_decisions_total",
        &[("policy", "anonymous"), ("result", "fallback_limited")],
    );

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let response = api.send(anonymous_read(&api)).await;
        assert!(start.elapsed() < Duration::from_secs(3), "never a hang");
        if response.status() == StatusCode::NOT_FOUND {
            assert_eq!(
                members(&response, "ratelimit-policy"),
                ["\"anonymous\";q=2;w=60"],
                "the local share is announced"
            );
        }
        statuses.push(response.status());
    }

    assert_eq!(
        statuses,
        [
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let after = metric(
        &scrape(&format!("http://{}/metrics", app.internal_addr)).await,
        "rate_limit_decisions_total",
        &[("policy", "anonymous"), ("result", "fallback_limited")],
    );
    assert!(after > before, "the fallback's refusal is counted");
}

#[tokio::test]
async fn the_password_uploads_and_invitations_policies_each_refuse_past_their_quota() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PASSWORD", "1/3600"),
        ("RATE_LIMIT_UPLOADS", "1/3600"),
        ("RATE_LIMIT_INVITATIONS", "1/3600"),
    ])
    .await;
    let mut api = Api {
        client: client_from(loopback_address()),
        ..Api::new(app.url(""))
    };
    assert_eq!(
        api.signup(&TestUser::new()).await.status(),
        StatusCode::CREATED
    );
    let org = uuid::Uuid::new_v4();
    let routes = [
        (Method::PUT, "/me/password".to_owned(), "password"),
        (Method::POST, "/files/uploads".to_owned(), "uploads"),
        (
            Method::POST,
            format!("/orgs/{org}/invitations"),
            "invitations",
        ),
    ];
    for (method, path, policy) in routes {
        // The policy counts before the route looks at the request: an empty body is enough.
        let send = || {
            api.send(
                api.request(method.clone(), &path)
                    .json(&serde_json::json!({})),
            )
        };
        let first = send().await;
        assert_ne!(first.status(), StatusCode::TOO_MANY_REQUESTS, "{policy}");
        assert_eq!(remaining(&first, policy), Some(0), "{policy}");

        let refused = send().await;

        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{policy} past its quota"
        );
        assert_eq!(remaining(&refused, policy), Some(0), "{policy}");
        assert!(retry_after(&refused).is_some_and(|s| s >= 1), "{policy}");
    }
}

#[tokio::test]
async fn password_resets_count_by_address_whatever_session_comes_along() {
    let app = spawn_app_with(&[("RATE_LIMIT_PASSWORD", "1/3600")]).await;
    let address = loopback_address();
    let user = TestUser::new();
    let mut signed_in = Api {
        client: client_from(address),
        ..Api::new(app.url(""))
    };
    assert_eq!(signed_in.signup(&user).await.status(), StatusCode::CREATED);
    async fn reset(api: &Api, email: &str) -> reqwest::Response {
        api.send(
            api.request(Method::POST, "/auth/password-reset")
                .json(&serde_json::json!({ "email": email })),
        )
        .await
    }
    let with_session = reset(&signed_in, &user.email).await;
    assert_eq!(with_session.status(), StatusCode::ACCEPTED);
    let anonymous = Api {
        client: client_from(address),
        ..Api::new(app.url(""))
    };

    let refused = reset(&anonymous, &user.email).await;

    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same address, with or without a session, has one allowance"
    );
}

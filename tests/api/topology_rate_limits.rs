//! The API's request limits across the real fleet: one client sending to the three instances
//! directly, in parallel, gets no more than the policy's quota in total (the decisions are
//! one GCRA in Redis, not one per instance); and with Redis hung, signups fail closed fast
//! while reads go on under each instance's local share.
//!
//! The topology's environment (deploy/local/scaleout.env) keeps every policy generous except
//! signup, 30 an hour per address: the policy these tests measure.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::helpers::{
    Api, Frozen, TestUser, client_from, eventually, instance_urls, loopback_address,
};

/// The topology's signup quota per address (deploy/local/scaleout.env).
const SIGNUP_QUOTA: usize = 30;

/// Users with these emails, counted on the primary.
async fn users_with_emails(emails: &[String]) -> i64 {
    let pool = sqlx::PgPool::connect(&crate::helpers::env("DATABASE_URL"))
        .await
        .expect("the primary accepts");
    sqlx::query_scalar("select count(*) from users where email = any($1)")
        .bind(emails)
        .fetch_one(&pool)
        .await
        .expect("counts")
}

#[tokio::test]
async fn a_client_spread_over_the_three_instances_gets_the_quota_once_in_total() {
    let instances = instance_urls();
    assert_eq!(instances.len(), 3);
    // One client (one address), three instances, every request at once.
    let address = loopback_address();
    let users: Vec<TestUser> = (0..SIGNUP_QUOTA * 2).map(|_| TestUser::new()).collect();
    let signups = users.iter().enumerate().map(|(i, user)| {
        let api = Api {
            client: client_from(address),
            ..Api::new(instances[i % 3].clone())
        };
        async move {
            let response = api
                .send(
                    api.request(Method::POST, "/auth/signup")
                        .json(&user.signup_body()),
                )
                .await;
            let instance = response
                .headers()
                .get("x-instance-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let ratelimit: Vec<String> = response
                .headers()
                .get_all("ratelimit")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|m| m.trim().to_owned())
                .collect();
            (response.status(), instance, ratelimit)
        }
    });
    let answers = futures_util::future::join_all(signups).await;

    let count = |status: StatusCode| answers.iter().filter(|(s, ..)| *s == status).count();
    let created = count(StatusCode::CREATED);
    let limited = count(StatusCode::TOO_MANY_REQUESTS);
    // A hashing slot busy for too long on one instance: admitted by the limiter (it counts),
    // then not created.
    let unavailable = count(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        created + limited + unavailable,
        answers.len(),
        "{answers:?}"
    );
    // GCRA lets exactly the quota through at once, and nothing more: not a request fewer
    // (another limit binding first would show here), not one more (a limit per instance).
    assert_eq!(
        created + unavailable,
        SIGNUP_QUOTA,
        "the fleet admits the quota once: {answers:?}"
    );
    assert_eq!(limited, answers.len() - SIGNUP_QUOTA, "{answers:?}");
    // Every refusal is the signup policy's, with nothing left.
    for (status, _, ratelimit) in &answers {
        if *status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                ratelimit.iter().any(|m| m.starts_with("\"signup\";r=0;")),
                "{ratelimit:?}"
            );
        }
    }
    // All three instances answered (which one admits the first requests is a race; the
    // total is not).
    for instance in ["app1", "app2", "app3"] {
        assert!(
            answers
                .iter()
                .any(|(_, id, _)| id.as_deref() == Some(instance)),
            "{instance} answered none: {answers:?}"
        );
    }
    let emails: Vec<String> = users.iter().map(|u| u.email.clone()).collect();
    assert_eq!(
        users_with_emails(&emails).await,
        i64::try_from(created).expect("small"),
        "a refused signup creates nothing"
    );
}

#[tokio::test]
async fn with_redis_hung_signups_fail_closed_fast_and_reads_go_on_under_the_local_limiter() {
    let app1 = instance_urls()[0].clone();
    let frozen = Frozen::pause("redis");

    let api = Api::new(app1.clone());
    let start = Instant::now();
    let signup = api
        .send(
            api.request(Method::POST, "/auth/signup")
                .json(&TestUser::new().signup_body()),
        )
        .await;
    let took = start.elapsed();
    assert_eq!(signup.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(signup.headers().contains_key("retry-after"));
    // Bounded by the Redis timeout, never a hang.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // An anonymous read needs no Redis: it is answered, under the local share of the quota.
    let read = api
        .send(api.request(Method::GET, &format!("/users/{}", uuid::Uuid::new_v4())))
        .await;
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let policy = read.headers()["ratelimit-policy"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(policy.starts_with("\"anonymous\";q="), "{policy}");

    frozen.resume();
    // Back to Redis' decisions once it answers again (an instance stops deciding locally
    // within a second of a failure), on every instance, so no later test meets the outage.
    for instance in instance_urls() {
        eventually(
            "signups decided by Redis again",
            Duration::from_secs(30),
            || {
                let api = Api::new(instance.clone());
                async move {
                    let response = api
                        .send(
                            api.request(Method::POST, "/auth/signup")
                                .json(&TestUser::new().signup_body()),
                        )
                        .await;
                    (response.status() == StatusCode::CREATED).then_some(())
                }
            },
        )
        .await;
    }
}

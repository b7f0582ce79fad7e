//! The real topology: three `scaleout serve` processes behind nginx, under supervisord.
//! These tests stop and kill real processes, so scripts/test runs them one at a time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    TestUser, Traffic, client, edge_url, env, eventually, instance_urls, signed_up, stack,
};

/// Which instance answered a request through nginx.
async fn served_by(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    Some(
        response
            .headers()
            .get("x-instance-id")?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

/// Polls until nginx has sent a request to `instance` again (its passive check has expired).
async fn wait_until_in_rotation(instance: &str) {
    let client = client();
    let url = format!("{}/api/v1", edge_url());
    eventually(&format!("{instance} back in rotation"), Duration::from_secs(30), || {
        let (client, url) = (client.clone(), url.clone());
        async move { (served_by(&client, &url).await.as_deref() == Some(instance)).then_some(()) }
    })
    .await;
}

async fn ready_of(instance_url: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{instance_url}/ready"))
        .send()
        .await
        .expect("the instance answers");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn thirty_requests_through_nginx_are_served_by_all_three_instances() {
    let client = client();
    let url = format!("{}/api/v1", edge_url());

    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let instance = served_by(&client, &url)
            .await
            .expect("a 200 with X-Instance-Id");
        seen.insert(instance);
    }

    assert_eq!(
        seen,
        BTreeSet::from(["app1".to_owned(), "app2".to_owned(), "app3".to_owned()])
    );
}

/// Stops `service`, checks that `/ready` of an instance names it with `expected` status,
/// starts it again and waits for `/ready` to recover.
async fn ready_names_a_stopped_dependency(service: &str, dependency: &str, expected: StatusCode) {
    let instance = &instance_urls()[0];
    assert_eq!(ready_of(instance).await.0, StatusCode::OK);

    stack(&["stop", service]);
    let (status, body) = ready_of(instance).await;
    stack(&["start", service]);

    assert_eq!(status, expected, "{body}");
    assert_eq!(body["down"], serde_json::json!([dependency]), "{body}");
    assert_eq!(body["checks"][dependency]["status"], "down");
    assert_eq!(
        client()
            .get(format!("{instance}/health"))
            .send()
            .await
            .expect("answers")
            .status(),
        StatusCode::OK,
        "liveness does not depend on {dependency}"
    );
    eventually(
        &format!("ready again after {service} restarts"),
        Duration::from_secs(30),
        || async { (ready_of(instance).await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
}

/// Reads fall back to the primary, so a replica outage is reported but keeps the instance
/// in rotation (200, `degraded`).
#[tokio::test]
async fn ready_names_the_replica_when_it_is_stopped_and_stays_in_rotation() {
    ready_names_a_stopped_dependency("replica", "replica", StatusCode::OK).await;
}

#[tokio::test]
async fn ready_is_503_and_names_redis_when_it_is_stopped() {
    ready_names_a_stopped_dependency("redis", "redis", StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test]
async fn a_killed_instance_loses_no_request_and_serves_again_once_restarted() {
    let traffic = Traffic::start(format!("{}/api/v1", edge_url()), 4, Duration::from_secs(60));
    eventually("traffic flowing", Duration::from_secs(10), || async {
        (traffic.ok_count() > 50).then_some(())
    })
    .await;

    stack(&["kill", "app1"]);
    let app1 = instance_urls()[0].clone();
    assert!(
        client().get(format!("{app1}/health")).send().await.is_err(),
        "app1 is really gone"
    );
    let before = traffic.ok_count();
    eventually(
        "traffic flowing after the kill",
        Duration::from_secs(10),
        || async { (traffic.ok_count() > before + 300).then_some(()) },
    )
    .await;
    let (ok, failures) = traffic.finish().await;

    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    stack(&["start", "app1"]);
    wait_until_in_rotation("app1").await;
}

#[tokio::test]
async fn a_terminated_instance_drains_without_failed_requests_and_exits_zero() {
    let drain: u64 = env("SHUTDOWN_DRAIN_SECS").parse().expect("a number");
    let grace: u64 = env("SHUTDOWN_GRACE_SECS").parse().expect("a number");
    let app2 = instance_urls()[1].clone();
    let traffic = Traffic::start(format!("{}/api/v1", edge_url()), 4, Duration::from_secs(60));
    eventually("traffic flowing", Duration::from_secs(10), || async {
        (traffic.ok_count() > 50).then_some(())
    })
    .await;

    // `stack stop` sends SIGTERM and returns once the process has exited.
    let started = Instant::now();
    let stop = tokio::task::spawn_blocking(|| stack(&["stop", "app2"]));
    let health = eventually(
        "app2 reports draining",
        Duration::from_secs(drain),
        || async {
            let r = client().get(format!("{app2}/health")).send().await.ok()?;
            (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    stop.await.expect("stack stop ran");
    let took = started.elapsed();
    let (ok, failures) = traffic.finish().await;
    stack(&["start", "app2"]);

    let () = health;
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert!(
        took <= Duration::from_secs(drain + grace),
        "exited after {took:?}, bound is drain {drain}s + grace {grace}s"
    );
    let supervisor_log = stack(&["logs", "supervisord"]);
    assert!(
        supervisor_log.contains("stopped: app2 (exit status 0)"),
        "app2 exited 0: {supervisor_log}"
    );
    wait_until_in_rotation("app2").await;
}

#[tokio::test]
async fn a_session_outlives_the_instance_that_created_it() {
    let app1 = instance_urls()[0].clone();
    let api = signed_up(&app1, &TestUser::new()).await;

    stack(&["kill", "app1"]);
    let through_nginx = api.via(&edge_url());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(through_nginx.me().await.status());
    }
    stack(&["start", "app1"]);

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    wait_until_in_rotation("app1").await;
}

//! The real topology: three `scaleout serve` processes behind nginx, under supervisord.
//! These tests stop and kill real processes, so scripts/test runs them one at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    Down, LogMark, TestUser, Traffic, client, edge_url, eventually, instance_urls, signed_up,
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

/// Waits until `/ready` of `instance` is 200 with every dependency up (an earlier test may
/// have just restarted one).
async fn wait_until_ready(instance: &str, what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        let (status, body) = ready_of(instance).await;
        (status == StatusCode::OK && body["status"] == "ready").then_some(())
    })
    .await;
}

/// Stops `service` and checks that `/ready` of an instance names `dependency` alone as down,
/// answering `expected` (`503 unavailable` for a required dependency, `200 degraded` for one
/// the instance can do without), while `/health` stays 200; then starts it again and waits
/// for `/ready` to recover.
async fn ready_names_a_stopped_dependency(
    service: &'static str,
    dependency: &str,
    expected: (StatusCode, &str),
) {
    let instance = &instance_urls()[0];
    wait_until_ready(instance, "ready before the test").await;

    let down = Down::stop(service);
    // The first check after the stop may still find a pooled connection being torn down.
    let (status, body) = eventually(
        &format!("ready reports {dependency} down"),
        Duration::from_secs(30),
        || async {
            let (status, body) = ready_of(instance).await;
            (body["checks"][dependency]["status"] == "down").then_some((status, body))
        },
    )
    .await;
    let health = client()
        .get(format!("{instance}/health"))
        .send()
        .await
        .expect("answers")
        .status();
    down.start();

    assert_eq!(
        (status, body["status"].as_str()),
        (expected.0, Some(expected.1)),
        "{body}"
    );
    assert_eq!(body["down"], serde_json::json!([dependency]), "{body}");
    assert_eq!(
        health,
        StatusCode::OK,
        "liveness does not depend on {dependency}"
    );
    // Every instance, not only the one asked: each holds its own connections to the restarted
    // service, and a later test must not meet a stale one on another instance.
    for instance in instance_urls() {
        wait_until_ready(&instance, &format!("ready again after {service} restarts")).await;
    }
}

/// Reads fall back to the primary, so a replica outage is reported but keeps the instance
/// in rotation (200, `degraded`).
#[tokio::test]
async fn ready_names_the_replica_when_it_is_stopped_and_stays_in_rotation() {
    ready_names_a_stopped_dependency("replica", "replica", (StatusCode::OK, "degraded")).await;
}

#[tokio::test]
async fn ready_is_503_and_names_redis_when_it_is_stopped() {
    ready_names_a_stopped_dependency(
        "redis",
        "redis",
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    )
    .await;
}

#[tokio::test]
async fn ready_is_503_and_names_the_primary_when_it_is_stopped() {
    ready_names_a_stopped_dependency(
        "primary",
        "primary",
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    )
    .await;
}

/// Every instance sees the same storage outage: failing readiness would take the whole API
/// out of rotation, so storage degrades it instead (uploads answer 503 meanwhile).
#[tokio::test]
async fn ready_names_object_storage_when_it_is_stopped_and_stays_in_rotation() {
    ready_names_a_stopped_dependency("s3", "storage", (StatusCode::OK, "degraded")).await;
}

#[tokio::test]
async fn a_killed_instance_loses_no_request_and_serves_again_once_restarted() {
    let traffic = Traffic::start(format!("{}/api/v1", edge_url()), 4, Duration::from_secs(60));
    eventually("traffic flowing", Duration::from_secs(10), || async {
        (traffic.ok_count() > 50).then_some(())
    })
    .await;

    let down = Down::kill("app1");
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
    down.start();
    wait_until_in_rotation("app1").await;
}

#[tokio::test]
async fn a_terminated_instance_drains_without_failed_requests_and_exits_zero() {
    let app2 = instance_urls()[1].clone();
    let supervisor = LogMark::new("supervisord");
    let traffic = Traffic::start(format!("{}/api/v1", edge_url()), 4, Duration::from_secs(60));
    eventually("traffic flowing", Duration::from_secs(10), || async {
        (traffic.ok_count() > 50).then_some(())
    })
    .await;

    // `stack stop` sends SIGTERM and returns once the process has exited; the guard starts
    // app2 again even if an assertion below fails.
    let stop = tokio::task::spawn_blocking(|| Down::stop("app2"));
    // Seen before the process exits (the drain lasts seconds): /health turns 503 first.
    eventually("app2 reports draining", Duration::from_secs(30), || async {
        let r = client().get(format!("{app2}/health")).send().await.ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let down = stop.await.expect("stack stop ran");
    let (ok, failures) = traffic.finish().await;
    let log = supervisor.since();
    down.start();

    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    // supervisord sends SIGKILL after drain + grace (+ a margin, see deploy/local/stack): an
    // exit status of 0 means app2 finished its drain and exited on its own before that.
    assert!(
        log.contains("stopped: app2 (exit status 0)"),
        "app2 exited 0: {log}"
    );
    wait_until_in_rotation("app2").await;
}

#[tokio::test]
async fn a_session_outlives_the_instance_that_created_it() {
    let app1 = instance_urls()[0].clone();
    let api = signed_up(&app1, &TestUser::new()).await;

    let down = Down::kill("app1");
    let through_nginx = api.via(&edge_url());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(through_nginx.me().await.status());
    }
    down.start();

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    wait_until_in_rotation("app1").await;
}

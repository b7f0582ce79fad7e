//! Readiness against the real processes: the primary and object storage stopped under a
//! running instance. A required dependency takes the instance out of rotation (503), an
//! optional one only degrades it (200), and liveness never depends on either.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Down, client, eventually, instance_urls};

async fn get(url: &str) -> (StatusCode, Value) {
    let response = client()
        .get(url)
        .send()
        .await
        .expect("the instance answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// Waits until the instance at `base` is ready with every dependency up (an earlier test may
/// have just restarted one).
async fn wait_until_ready(base: &str, what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        let (status, body) = get(&format!("{base}/ready")).await;
        (status == StatusCode::OK && body["status"] == "ready").then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_the_primary_stopped_ready_is_503_naming_it_health_stays_200_and_ready_returns() {
    let instance = instance_urls()[0].clone();
    wait_until_ready(&instance, "ready before the test").await;

    let down = Down::stop("primary");
    // The first check after the stop may still find a pooled connection being torn down.
    let (status, body) = eventually(
        "ready reports the primary down",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(&format!("{instance}/ready")).await;
            (body["checks"]["primary"]["status"] == "down").then_some((status, body))
        },
    )
    .await;
    let (health, _) = get(&format!("{instance}/health")).await;
    down.start();

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["down"], json!(["primary"]), "{body}");
    assert_eq!(
        health,
        StatusCode::OK,
        "liveness does not depend on the primary"
    );
    wait_until_ready(&instance, "ready again once the primary is back").await;
}

#[tokio::test]
async fn with_object_storage_stopped_ready_is_200_degraded_naming_storage() {
    let instance = instance_urls()[0].clone();
    wait_until_ready(&instance, "ready before the test").await;

    let down = Down::stop("s3");
    let (status, body) = eventually(
        "ready reports storage down",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(&format!("{instance}/ready")).await;
            (body["checks"]["storage"]["status"] == "down").then_some((status, body))
        },
    )
    .await;
    let (health, _) = get(&format!("{instance}/health")).await;
    down.start();

    assert_eq!(status, StatusCode::OK, "still in rotation: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["down"], json!(["storage"]), "{body}");
    assert_eq!(
        health,
        StatusCode::OK,
        "liveness does not depend on storage"
    );
    wait_until_ready(&instance, "ready again once storage is back").await;
}

//! nginx's retries on the next instance when one fails: GET and HEAD always, unsafe requests
//! only when they carry an `Idempotency-Key` (the instances answer a repeat from what the
//! first attempt kept). An unsafe request without a key reaches at most one instance.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Down, LogMark, TestUser, edge_url, eventually, signed_up};

/// Whether nginx logged a PATCH of `name` answered 200 after trying more than one instance.
fn retried_patch_in(log: &str) -> bool {
    log.lines().any(|line| {
        line.contains("\"method\":\"PATCH\"")
            && line.contains("\"status\":200")
            && line
                .split("\"upstream\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .is_some_and(|upstreams| upstreams.contains(", "))
    })
}

#[tokio::test]
async fn with_an_instance_down_nginx_retries_keyed_changes_and_never_unkeyed_ones() {
    let api = signed_up(&edge_url(), &TestUser::new()).await;
    let down = Down::kill("app1");
    // nginx learns that app1 is down from a failed attempt, then tries it again every
    // fail_timeout (5 s): each time, one request meets the dead instance first.

    // Without a key, that request is not tried elsewhere: its client gets the failure.
    eventually(
        "an unkeyed change meeting the dead instance",
        Duration::from_secs(30),
        || async {
            let response = api
                .send(
                    api.request(Method::PATCH, "/me")
                        .json(&json!({"name": "Without Key"})),
                )
                .await;
            match response.status() {
                StatusCode::BAD_GATEWAY => Some(()),
                StatusCode::OK => None,
                other => panic!("an unkeyed change answered {other}"),
            }
        },
    )
    .await;

    // With a key, every change succeeds, and the one that meets the dead instance was
    // carried on to another.
    let mark = LogMark::new("nginx");
    eventually(
        "a keyed change retried on the next instance",
        Duration::from_secs(30),
        || async {
            let response = api
                .send(
                    api.request(Method::PATCH, "/me")
                        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                        .json(&json!({"name": "With Key"})),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK, "a keyed change failed");
            retried_patch_in(&mark.since()).then_some(())
        },
    )
    .await;
    down.start();
}

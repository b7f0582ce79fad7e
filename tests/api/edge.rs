//! What nginx, the edge, lets through: `/health` but not `/ready`, and the auth endpoints at a
//! bounded rate per client address.

use reqwest::{Method, StatusCode};

use crate::helpers::{Api, client, client_from, edge_url, instance_urls, loopback_address};

#[tokio::test]
async fn ready_is_not_reachable_through_nginx_but_health_is() {
    let client = client();

    let ready = client
        .get(format!("{}/ready", edge_url()))
        .send()
        .await
        .expect("nginx answers");
    let health = client
        .get(format!("{}/health", edge_url()))
        .send()
        .await
        .expect("nginx answers");
    let direct = client
        .get(format!("{}/ready", instance_urls()[0]))
        .send()
        .await
        .expect("the instance answers");

    assert_eq!(ready.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        ready
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert!(
        ready.headers().get("x-instance-id").is_none(),
        "nginx answered itself; no instance ran the checks"
    );
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        direct.status(),
        StatusCode::OK,
        "probes use the instance's port"
    );
}

#[tokio::test]
async fn a_burst_of_auth_requests_from_one_address_is_cut_at_the_edge() {
    // 80 at once from one address: nginx queues 40 past its rate and refuses the rest. The
    // bodies are invalid, so the instances answer a cheap 422 to those that pass.
    let address = loopback_address();
    let api = Api {
        client: client_from(address),
        ..Api::new(edge_url())
    };
    let burst = (0..80).map(|_| {
        let api = api.clone();
        async move {
            let response = api
                .send(
                    api.request(Method::POST, "/auth/signup")
                        .json(&serde_json::json!({})),
                )
                .await;
            let retry_after = response.headers().contains_key("retry-after");
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (response.status(), retry_after, kind)
        }
    });
    let answers = futures_util::future::join_all(burst).await;
    let bystander = Api {
        client: client_from(loopback_address()),
        ..Api::new(edge_url())
    };
    let other_address = bystander
        .send(
            bystander
                .request(Method::POST, "/auth/signup")
                .json(&serde_json::json!({})),
        )
        .await
        .status();

    let limited: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(
        limited.iter().all(|(_, retry_after, kind)| *retry_after
            && kind.as_deref() == Some("application/problem+json")),
        "{limited:?}"
    );
    assert!(
        answers.iter().all(|(status, ..)| [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::UNPROCESSABLE_ENTITY
        ]
        .contains(status)),
        "{answers:?}"
    );
    assert_eq!(
        other_address,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another address has its own allowance"
    );
}

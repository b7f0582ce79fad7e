//! The OpenAPI document is generated from the serving router: every documented operation is
//! served, and every route that served a request is documented.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};

use crate::helpers::{scrape, spawn_app};

#[tokio::test]
async fn the_openapi_document_and_the_router_agree() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");

    // Every documented operation is served: no 405, and no fallback 404 for fixed paths.
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
            let response = app
                .client
                .request(method.clone(), app.url(&concrete))
                .json(&serde_json::json!({}))
                .send()
                .await
                .expect("answers");
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if !path.contains('{') {
                assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path}");
            }
        }
    }

    // Every route template that served a request above is in the document.
    let metrics = scrape(&format!("http://{}/metrics", app.internal_addr)).await;
    let served: BTreeSet<&str> = metrics
        .split("route=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|route| *route != "unmatched")
        .collect();
    for route in served {
        assert!(
            paths.contains_key(route),
            "{route} is served but not documented"
        );
    }
}

#[tokio::test]
async fn the_docs_page_points_at_the_document() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("text");
    assert!(html.contains("/api-docs/openapi.json"));
}

//! The OpenAPI document is generated from the serving router: every documented operation is
//! served, and every route that served a request is documented.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};

use crate::helpers::{concrete_path, documented_operations, metric, scrape, spawn_app};

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
    let operations: Vec<(Method, String)> = documented_operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    assert!(
        operations.len() >= 20,
        "the document lists {} operations",
        operations.len()
    );
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    // The recorder is process-wide: what counts is the increase our own requests cause.
    let before = scrape(&metrics_url).await;

    // Every documented operation is served: the router matches its template (the request is
    // counted under that route, not as `unmatched`) and its method (no 405).
    for (method, path) in &operations {
        let response = app
            .client
            .request(method.clone(), app.url(&concrete_path(path)))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("answers");
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
    let after = scrape(&metrics_url).await;
    for (method, path) in &operations {
        let labels = [("route", path.as_str()), ("method", method.as_str())];
        let served = metric(&after, "http_requests_total", &labels)
            - metric(&before, "http_requests_total", &labels);
        assert!(
            served >= 1.0,
            "{method} {path} is documented but no request was routed to it"
        );
    }

    // Every route template that served a request is in the document.
    let served: BTreeSet<&str> = after
        .split("route=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|route| *route != "unmatched")
        .collect();
    assert!(!served.is_empty(), "no route served a request");
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
    assert!(html.contains("/docs/assets/docs.js"), "{html}");
    let script = app.get("/docs/assets/docs.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script
            .text()
            .await
            .expect("text")
            .contains("/api-docs/openapi.json")
    );
}

#[tokio::test]
async fn the_docs_page_and_its_assets_come_from_the_instance_under_a_strict_csp() {
    let app = spawn_app().await;
    for path in [
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .expect("ASCII");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
    let html = app.get("/docs").await.text().await.expect("text");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert_eq!(
        app.get("/docs/assets/nothing.js").await.status(),
        StatusCode::NOT_FOUND
    );
}

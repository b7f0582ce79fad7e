//! `/health`, `/ready`, the ids every response carries, and the start of a graceful shutdown.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{eventually, metric, scrape, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_answers_ok_with_the_instance_id() {
    let app = spawn_app().await;

    let response = app.get("/health").await;

    assert_eq!(response.status(), StatusCode::OK);
    let instance = app.state.instance_id().to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["instance"], instance);
}

#[tokio::test]
async fn ready_reports_every_dependency_up() {
    let app = spawn_app().await;

    let response = app.get("/ready").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    for dependency in ["primary", "replica", "redis", "storage"] {
        assert_eq!(
            body["checks"][dependency]["status"], "up",
            "{dependency}: {body}"
        );
    }
    assert_eq!(body["down"], serde_json::json!([]));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_the_instance_id() {
    let app = spawn_app().await;

    let generated = app.get("/health").await;
    let echoed = app
        .client
        .get(app.url("/no-such-route"))
        .header("x-request-id", "req-from-the-edge")
        .send()
        .await
        .expect("answers");

    let id = generated.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a fresh uuid, got {id}");
    assert_eq!(echoed.headers()["x-request-id"], "req-from-the-edge");
    for response in [&generated, &echoed] {
        assert_eq!(response.headers()["x-instance-id"], app.state.instance_id());
    }
}

#[tokio::test]
async fn unknown_paths_are_problem_json_404s() {
    let app = spawn_app().await;

    let response = app.get("/no-such-route").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], 404);
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/not-found"))
    );
}

#[tokio::test]
async fn every_documented_operation_refuses_a_body_over_its_limit_with_413() {
    let app = spawn_app_with(&[
        ("HTTP_BODY_LIMIT_BYTES", "1024"),
        ("UPLOAD_MAX_BYTES", "200000"),
        ("AVATAR_MAX_BYTES", "100000"),
    ])
    .await;
    let doc = app.openapi().await;
    let operations = crate::helpers::documented_operations(&doc);
    assert!(operations.len() >= 20, "{} operations", operations.len());

    // Each route's own limit: the uploads theirs (plus room for the multipart framing), every
    // other operation the JSON default. A declared length over it is refused before any byte
    // is read, before authentication.
    let overhead = scaleout::http::routes::files::MULTIPART_OVERHEAD;
    for (method, path, _) in &operations {
        let limit = match (method.as_str(), path.as_str()) {
            ("POST", "/api/v1/files") => 200_000 + overhead,
            ("PUT", "/api/v1/me/avatar") => 100_000 + overhead,
            _ => 1024,
        };
        let over = usize::try_from(limit + 1).expect("small");
        let response = app
            .client
            .request(
                method.clone(),
                app.url(&crate::helpers::concrete_path(path)),
            )
            .header("content-type", "application/json")
            .body(vec![b' '; over])
            .send()
            .await
            .expect("answers");
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path} with {over} bytes"
        );
    }
    // The avatar's limit is its own, not the (larger) upload limit.
    let within_upload_limit = app
        .client
        .put(app.url("/api/v1/me/avatar"))
        .header("content-type", "application/json")
        .body(vec![
            b' ';
            100_000 + 2 * usize::try_from(overhead).expect("small")
        ])
        .send()
        .await
        .expect("answers");
    assert_eq!(within_upload_limit.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_request_whose_body_stalls_is_answered_503_when_its_time_is_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[("HTTP_REQUEST_TIMEOUT_MS", "300")]).await;

    // Ten bytes of a hundred promised, then nothing: the handler waits for the body.
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connects");
    stream
        .write_all(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: scaleout\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .expect("writes");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    // The server answers and closes; the bound only guards against a server that never does.
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = stream.read(&mut chunk).await.expect("reads");
            answer.extend_from_slice(&chunk[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;

    assert!(read.is_ok(), "the server answered a stalled body");
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
}

#[tokio::test]
async fn shutdown_turns_health_503_at_once_then_stops_and_exits_cleanly() {
    // A drain long enough that the requests below land inside it on a loaded machine.
    let mut app = spawn_app_with(&[("SHUTDOWN_DRAIN_SECS", "5")]).await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);

    app.signal_shutdown();

    // Draining: /health says 503, other requests are still served, with Connection: close.
    let draining = eventually("health turns 503", Duration::from_secs(5), || async {
        let r = app.get("/health").await;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    let body: Value = draining.json().await.expect("json");
    assert_eq!(body["status"], "draining");
    let served = app.get("/api/v1").await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["connection"], "close");

    // After the drain the process stops on its own, without error. The bound only catches a
    // server that never stops (drain 5 s, default grace 10 s, and room for a loaded machine).
    let result = tokio::time::timeout(Duration::from_secs(60), app.stopped)
        .await
        .expect("stops after the drain")
        .expect("the server task does not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        reqwest::get(format!("http://{}/health", app.addr))
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn the_metrics_listener_is_separate_and_labels_routes_by_template() {
    let app = spawn_app().await;
    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    let health = [("route", "/health"), ("method", "GET"), ("status", "200")];
    // The recorder is process-wide: count what these requests add.
    let before = metric(&scrape(&metrics_url).await, "http_requests_total", &health);
    for _ in 0..5 {
        assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    }

    let metrics = scrape(&metrics_url).await;

    let counted = metric(&metrics, "http_requests_total", &health) - before;
    assert!(counted >= 5.0, "5 requests counted as {counted}");
    assert_eq!(
        app.get("/metrics").await.status(),
        StatusCode::NOT_FOUND,
        "metrics are not served on the public port"
    );
}

/// Runs the image's HEALTHCHECK command, `scaleout healthcheck`, against `internal`.
async fn healthcheck(internal: std::net::SocketAddr) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_scaleout"))
        .arg("healthcheck")
        .env_clear()
        .env("SCALEOUT_METRICS_ADDR", internal.to_string())
        .output()
        .await
        .expect("the binary runs")
}

#[tokio::test]
async fn the_healthcheck_subcommand_follows_the_instance_health() {
    let mut app = spawn_app_with(&[("SHUTDOWN_DRAIN_SECS", "5")]).await;
    let internal = app.internal_addr;

    let healthy = healthcheck(internal).await;
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    // Draining: /health answers 503, and the container turns unhealthy (exit 1).
    app.signal_shutdown();
    let draining = eventually(
        "healthcheck fails while draining",
        Duration::from_secs(5),
        || async {
            let output = healthcheck(internal).await;
            (output.status.code() == Some(1)).then_some(output)
        },
    )
    .await;
    assert!(
        String::from_utf8_lossy(&draining.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&draining.stderr)
    );

    // Stopped: nothing listens, still 1, and promptly (the probe's own 2 s bound).
    let _ = tokio::time::timeout(Duration::from_secs(60), app.stopped)
        .await
        .expect("stops after the drain");
    let started = std::time::Instant::now();
    let gone = healthcheck(internal).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(3));
}

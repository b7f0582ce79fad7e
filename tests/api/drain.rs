//! Graceful shutdown of an in-process instance: readiness says `draining` from the signal on,
//! and a request already in flight finishes even after the listener has closed.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestUser, eventually, my_id, sha256_hex, signed_up, spawn_app_with, storage};

#[tokio::test]
async fn ready_is_503_draining_from_the_shutdown_signal_while_every_dependency_is_up() {
    // A drain far longer than the test, so the listener is still open for every poll.
    let mut app = spawn_app_with(&[("SHUTDOWN_DRAIN_SECS", "60")]).await;
    let before = app.get("/ready").await;
    assert_eq!(before.status(), StatusCode::OK);

    app.signal_shutdown();

    let draining = eventually("ready turns 503", Duration::from_secs(30), || async {
        let response = app.get("/ready").await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    let body: Value = draining.json().await.expect("a JSON body");
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(
        body["down"],
        serde_json::json!([]),
        "draining, not a dependency: {body}"
    );
    for dependency in ["primary", "replica", "redis", "storage"] {
        assert_eq!(
            body["checks"][dependency]["status"], "up",
            "{dependency}: {body}"
        );
    }
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.expect("reads");
        assert!(
            n > 0,
            "the connection closed before a response: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await.expect("reads");
        assert!(n > 0, "the connection closed mid-body");
        buffer.extend_from_slice(&chunk[..n]);
    }
    (status, buffer[header_end..header_end + length].to_vec())
}

async fn listener_closed(addr: SocketAddr) -> Option<()> {
    TcpStream::connect(addr).await.is_err().then_some(())
}

#[tokio::test]
async fn an_upload_in_flight_when_shutdown_is_signalled_finishes_and_the_server_then_exits_cleanly()
{
    let mut app = spawn_app_with(&[
        ("SHUTDOWN_DRAIN_SECS", "1"),
        // The upload must outlive the listener, not the grace period: bound generously.
        ("SHUTDOWN_GRACE_SECS", "60"),
    ])
    .await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let cookie = api.cookie.clone().expect("a session");
    let content = "a line of a slow upload\n".repeat(4000).into_bytes();
    let boundary = "scaleout-drain-test";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (first, rest) = body.split_at(body.len() / 2);
    // One keep-alive connection, served once already: the server has accepted it, so the
    // upload on it is a request in flight, not a connection waiting in the listen queue.
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: scaleout\r\n\r\n")
        .await
        .expect("writes");
    assert_eq!(read_response(&mut stream).await.0, 200);
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: scaleout\r\nCookie: {cookie}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    stream.write_all(first).await.expect("writes");
    stream.flush().await.expect("flushes");

    app.signal_shutdown();
    // The drain ends and the listener closes while the upload is still half sent.
    eventually("the listener closes", Duration::from_secs(30), || {
        listener_closed(app.addr)
    })
    .await;
    stream.write_all(rest).await.expect("writes the rest");
    stream.flush().await.expect("flushes");
    let (status, response) = read_response(&mut stream).await;

    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&response));
    let file: Value = serde_json::from_slice(&response).expect("a JSON body");
    assert_eq!(file["sha256"], sha256_hex(&content));
    let stopped = tokio::time::timeout(Duration::from_secs(120), &mut app.stopped)
        .await
        .expect("the server stops after its last request")
        .expect("the server task does not panic");
    assert!(stopped.is_ok(), "exits cleanly: {stopped:?}");
    let id: uuid::Uuid = file["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    let key = scaleout::files::object_key::file(owner, id);
    let stored = storage().head_object(&key).await.expect("storage answers");
    assert_eq!(
        stored.map(|o| o.size),
        Some(content.len() as u64),
        "the upload is stored whole"
    );
}

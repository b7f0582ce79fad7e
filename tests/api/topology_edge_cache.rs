//! The edge cache: nginx in front of the instances keeps the public reads (plans, profiles,
//! avatar redirects) as their `Cache-Control` allows, never anything personal, shields the
//! origin while every instance is down, and shows a change within its documented bound.
//! These tests stop the instances, so scripts/test runs them alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Down, TestUser, client, edge_url, eventually, instance_urls, my_id, signed_up,
};

/// A GET through the edge without a session: the status, `X-Cache-Status` and the body.
async fn anonymous(path: &str) -> (StatusCode, String, String) {
    let r = client()
        .get(format!("{}{path}", edge_url()))
        .send()
        .await
        .expect("the edge answers");
    cache_status_and_body(r).await
}

async fn cache_status_and_body(r: reqwest::Response) -> (StatusCode, String, String) {
    let status = r.status();
    let cache = r
        .headers()
        .get("x-cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, cache, r.text().await.expect("a body"))
}

/// The path of a public profile nobody asked the edge for yet: a user signed up for the test
/// (the edge keys by path alone, so each test needs paths of its own to start from an empty
/// entry).
async fn fresh_profile() -> (crate::helpers::Api, String) {
    let api = signed_up(&edge_url(), &TestUser::new()).await;
    let path = format!("/api/v1/users/{}", my_id(&api).await);
    readable_anonymously(&path).await;
    (api, path)
}

/// Waits until an anonymous read of `path` answers 200 straight from an instance (not through
/// the edge, whose cache it must not touch): anonymous reads go to a replica, which may not
/// have a new account yet, and until then the edge would get (and not store) a 404.
async fn readable_anonymously(path: &str) {
    let url = format!("{}{path}", instance_urls().remove(0));
    eventually(
        "the profile on the replica",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let r = client().get(url).send().await.ok()?;
                (r.status() == StatusCode::OK).then_some(())
            }
        },
    )
    .await;
}

/// The plans as the edge holds them: asked until answered from the cache (an entry past its
/// max-age is refreshed by the first request, in the background when a stale copy exists).
async fn plans_from_the_edge(path: &str) -> String {
    eventually(
        "the plans from the edge cache",
        Duration::from_secs(10),
        || async {
            let (status, cache, body) = anonymous(path).await;
            (status == StatusCode::OK && cache == "HIT").then_some(body)
        },
    )
    .await
}

/// Waits until every instance's `/ready` is 200 with every dependency up.
async fn every_instance_ready(what: &str) {
    for instance in instance_urls() {
        eventually(what, Duration::from_secs(60), || {
            let instance = instance.clone();
            async move {
                let r = client()
                    .get(format!("{instance}/ready"))
                    .send()
                    .await
                    .ok()?;
                let status = r.status();
                let body: Value = r.json().await.ok()?;
                (status == StatusCode::OK && body["status"] == "ready").then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn a_second_anonymous_get_is_served_by_the_edge_whatever_its_query_or_coding() {
    let (_api, path) = fresh_profile().await;
    let (status, first, body) = anonymous(&path).await;
    assert_eq!((status, first.as_str()), (StatusCode::OK, "MISS"));
    let (status, second, again) = anonymous(&path).await;
    assert_eq!((status, second.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(again, body);
    // A query makes no entry of its own (nor reaches an instance): the same entry answers.
    let (status, cache, queried) = anonymous(&format!("{path}?t={}", Uuid::new_v4())).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(queried, body);
    // Two spellings of the same coding share one entry (the first stores the gzip variant).
    let mut caches = Vec::new();
    for spelling in ["gzip, deflate", "deflate;q=0.5, gzip"] {
        let r = client()
            .get(format!("{}{path}", edge_url()))
            .header("accept-encoding", spelling)
            .send()
            .await
            .expect("answers");
        caches.push(cache_status_and_body(r).await.1);
    }
    assert_eq!(caches, ["MISS", "HIT"]);

    // The plans: served from the cache too, and answered 304 by the edge itself.
    let plans = plans_from_the_edge("/api/v1/plans").await;
    assert!(plans.contains("\"plans\""), "{plans}");
    let tag = client()
        .get(format!("{}/api/v1/plans", edge_url()))
        .send()
        .await
        .expect("answers")
        .headers()
        .get("etag")
        .cloned()
        .expect("an ETag");
    let revalidated = client()
        .get(format!("{}/api/v1/plans", edge_url()))
        .header("if-none-match", tag)
        .send()
        .await
        .expect("answers");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn concurrent_misses_for_one_key_reach_the_origin_once() {
    let (_api, path) = fresh_profile().await;
    let answers = futures_util::future::join_all((0..20).map(|_| anonymous(&path))).await;
    let mut statuses: Vec<&str> = answers.iter().map(|(_, c, _)| c.as_str()).collect();
    statuses.sort_unstable();
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::OK));
    // One request went to an instance; the others waited for its answer (proxy_cache_lock).
    assert_eq!(
        statuses.iter().filter(|c| **c == "MISS").count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn nothing_personal_is_cached_at_the_edge() {
    let user = TestUser::new();
    let api = signed_up(&edge_url(), &user).await;
    let id = my_id(&api).await;
    let path = format!("/api/v1/users/{id}");
    readable_anonymously(&path).await;

    // With a session cookie: never answered from the cache, never stored.
    for _ in 0..2 {
        let r = client()
            .get(format!("{}{path}", edge_url()))
            .header("cookie", api.cookie.as_deref().expect("a session"))
            .send()
            .await
            .expect("answers");
        let (status, cache, _) = cache_status_and_body(r).await;
        assert_eq!((status, cache.as_str()), (StatusCode::OK, "BYPASS"));
    }
    // So the next client without one is the first to store it: what the personal request got
    // was not kept for anyone else.
    let (status, cache, _) = anonymous(&path).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"));
    let (_, cache, _) = anonymous(&path).await;
    assert_eq!(cache, "HIT");
    // And a stored public entry is not served to a request with a session either.
    let r = client()
        .get(format!("{}{path}", edge_url()))
        .header("cookie", api.cookie.as_deref().expect("a session"))
        .send()
        .await
        .expect("answers");
    assert_eq!(cache_status_and_body(r).await.1, "BYPASS");

    // Private answers on a cached path (an unknown user's 404 is `private, no-cache`) are
    // never stored, however often they are asked for.
    let missing = format!("/api/v1/users/{}", Uuid::now_v7());
    for _ in 0..3 {
        let (status, cache, _) = anonymous(&missing).await;
        assert_eq!((status, cache.as_str()), (StatusCode::NOT_FOUND, "MISS"));
    }
    // User data elsewhere is never even looked up in the cache.
    let me = api.me().await;
    assert_eq!(me.status(), StatusCode::OK);
    assert!(me.headers().get("x-cache-status").is_none());
    assert_eq!(
        me.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("private, no-cache")
    );
}

#[tokio::test]
async fn with_every_instance_stopped_a_cached_public_page_still_answers() {
    let plans = "/api/v1/plans".to_owned();
    let (_api, profile) = fresh_profile().await;
    let plans_body = plans_from_the_edge(&plans).await;
    let (_, _, profile_body) = anonymous(&profile).await;
    assert_eq!(anonymous(&profile).await.1, "HIT");

    let downs: Vec<Down> = ["app1", "app2", "app3"]
        .into_iter()
        .map(Down::stop)
        .collect();
    // Really down: what the edge does not hold fails.
    let uncached = client()
        .get(format!("{}/api/v1", edge_url()))
        .send()
        .await
        .expect("the edge answers");
    assert!(
        uncached.status().is_server_error(),
        "no instance: {}",
        uncached.status()
    );
    // What it holds answers, fresh (HIT) or, past its max-age, stale (STALE).
    for (path, body) in [(&plans, &plans_body), (&profile, &profile_body)] {
        let (status, cache, got) = anonymous(path).await;
        assert_eq!(status, StatusCode::OK, "{path} ({cache})");
        assert!(
            ["HIT", "STALE", "UPDATING"].contains(&cache.as_str()),
            "{path}: {cache}"
        );
        assert_eq!(&got, body);
    }
    drop(downs);
    every_instance_ready("every instance ready again after the edge test").await;
}

#[tokio::test]
async fn a_changed_public_profile_shows_at_the_edge_within_its_max_age() {
    let instance = instance_urls().remove(0);
    let api = signed_up(&instance, &TestUser::new()).await;
    let id = my_id(&api).await;
    let path = format!("/api/v1/users/{id}");

    readable_anonymously(&path).await;
    let first = client()
        .get(format!("{}{path}", edge_url()))
        .send()
        .await
        .expect("answers");
    let max_age: u64 = first
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(|cc| {
            cc.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age="))
                .and_then(|n| n.parse().ok())
        })
        .expect("a public max-age");
    let (_, cache, body) = cache_status_and_body(first).await;
    assert_eq!(cache, "MISS");
    let old: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(anonymous(&path).await.1, "HIT");

    // The change, right after the edge stored the profile: the worst case for the bound.
    let new_name = format!("Renamed {}", Uuid::new_v4().simple());
    let renamed = api
        .send(
            api.request(reqwest::Method::PATCH, "/me")
                .json(&json!({"name": new_name})),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let changed_at = Instant::now();
    // Meanwhile the edge still answers the old name (from its cache, not the origin).
    let (_, cache, body) = anonymous(&path).await;
    let meanwhile: Value = serde_json::from_str(&body).expect("JSON");
    if cache == "HIT" {
        assert_eq!(meanwhile["name"], old["name"]);
    }

    let margin = Duration::from_secs(3);
    let bound = Duration::from_secs(max_age) + margin;
    let shown = eventually(
        "the new name at the edge",
        bound + Duration::from_secs(10),
        || {
            let (path, new_name) = (path.clone(), new_name.clone());
            async move {
                let (status, cache, body) = anonymous(&path).await;
                let v: Value = serde_json::from_str(&body).ok()?;
                (status == StatusCode::OK && v["name"] == new_name.as_str()).then_some(cache)
            }
        },
    )
    .await;
    let took = changed_at.elapsed();
    println!(
        "edge freshness: the new name showed {:.2} s after the change (max-age {max_age} s, \
         bound {:.0} s; answered {shown})",
        took.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert!(
        took <= bound,
        "the edge took {took:?} to show the change (bound {bound:?})"
    );
}

/// An origin standing in for the three instances on their own ports: it answers every request
/// with a public, cacheable 200, and with a `Set-Cookie` while `sets_cookie` is on. The real
/// instances never set a cookie on a public read, so only a stand-in can show what nginx does
/// with one that does. Plain threads, so dropping it closes the ports at once (before the
/// instances start again), also when the test fails.
struct StandInOrigin {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl StandInOrigin {
    fn start(sets_cookie: Arc<AtomicBool>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = instance_urls()
            .into_iter()
            .map(|url| {
                let addr = url.trim_start_matches("http://").to_owned();
                let listener = std::net::TcpListener::bind(&addr).expect("the instance's port");
                listener.set_nonblocking(true).expect("non-blocking");
                let (stop, sets_cookie) = (stop.clone(), sets_cookie.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((socket, _)) => answer(socket, sets_cookie.load(Ordering::SeqCst)),
                            // Nothing to accept: look again shortly (and at the stop flag).
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for StandInOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn answer(mut socket: std::net::TcpStream, sets_cookie: bool) {
    use std::io::{Read, Write};
    let _ = socket.set_nonblocking(false);
    let _ = socket.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = r#"{"from":"stand-in"}"#;
    let cookie = if sets_cookie {
        "Set-Cookie: stand_in=personal; Path=/; HttpOnly\r\n"
    } else {
        ""
    };
    let _ = write!(
        socket,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
         Cache-Control: public, max-age=60\r\n{cookie}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A path on a cached location that no request used: the stand-in origin answers any path.
fn random_path() -> String {
    format!("/api/v1/users/{}", Uuid::new_v4())
}

#[tokio::test]
async fn an_answer_that_sets_a_cookie_is_never_stored_at_the_edge() {
    let downs: Vec<Down> = ["app1", "app2", "app3"]
        .into_iter()
        .map(Down::stop)
        .collect();
    let sets_cookie = Arc::new(AtomicBool::new(true));
    let origin = StandInOrigin::start(sets_cookie.clone());
    // nginx may still count the stopped instances' failures against their ports for a moment.
    eventually(
        "the stand-in origin answering through the edge",
        Duration::from_secs(30),
        || async {
            let (status, _, body) = anonymous(&random_path()).await;
            (status == StatusCode::OK && body.contains("stand-in")).then_some(())
        },
    )
    .await;

    // A public, cacheable answer that sets a cookie: fetched from the origin every time.
    let path = random_path();
    for _ in 0..3 {
        let (status, cache, body) = anonymous(&path).await;
        assert!(body.contains("stand-in"));
        assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"));
    }
    // The same answer without the cookie is stored: what kept the first one out was the cookie.
    sets_cookie.store(false, Ordering::SeqCst);
    let path = random_path();
    assert_eq!(anonymous(&path).await.1, "MISS");
    assert_eq!(anonymous(&path).await.1, "HIT");

    drop(origin);
    drop(downs);
    every_instance_ready("every instance ready again after the stand-in origin").await;
}

//! HTTP caching against the in-process app: entity tags and 304s, `If-Match` on task and
//! project changes (412 when stale, nothing changed), `Cache-Control` of user and public data,
//! compression by `Accept-Encoding`, and the public plan catalog.

use std::io::Read;

use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
    VARY,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Api, TestUser, client, my_id, signed_up, spawn_app};
use crate::workspace::{add_member, call, new_org, new_project, new_task, replica_caught_up};
use scaleout::workspace::Role;

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn etag(response: &reqwest::Response) -> String {
    header(response, ETAG).unwrap_or_else(|| panic!("an ETag on {response:?}"))
}

#[tokio::test]
async fn a_get_carries_an_etag_and_if_none_match_is_answered_304_without_a_body() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    // A single resource (the caller's account), a list (their organizations), and public
    // data (the plan catalog).
    new_org(&api).await;
    for path in ["/me", "/orgs", "/plans"] {
        let first = api.send(api.request(Method::GET, path)).await;
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        let tag = etag(&first);
        assert!(
            tag.starts_with('"') && tag.len() > 10,
            "{path}: a strong tag {tag}"
        );
        let body = first.bytes().await.expect("a body");

        let again = api
            .send(api.request(Method::GET, path).header(IF_NONE_MATCH, &tag))
            .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(etag(&again), tag, "{path}: the 304 names the version held");
        assert!(header(&again, CACHE_CONTROL).is_some(), "{path}");
        assert!(
            again.bytes().await.expect("read").is_empty(),
            "{path}: no body"
        );

        // Among other tags, or as `*`, it matches too; another tag does not.
        let listed = api
            .send(
                api.request(Method::GET, path)
                    .header(IF_NONE_MATCH, format!("\"stale\", {tag}")),
            )
            .await;
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED, "{path}");
        let other = api
            .send(
                api.request(Method::GET, path)
                    .header(IF_NONE_MATCH, "\"stale\""),
            )
            .await;
        assert_eq!(other.status(), StatusCode::OK, "{path}");
        assert_eq!(other.bytes().await.expect("a body"), body, "{path}");
    }
}

#[tokio::test]
async fn user_data_is_private_and_public_data_is_public_with_max_age() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let me = my_id(&api).await;
    let org = new_org(&api).await;
    for path in [
        "/me".to_owned(),
        "/orgs".to_owned(),
        format!("/orgs/{org}"),
        format!("/orgs/{org}/projects"),
    ] {
        let r = api.send(api.request(Method::GET, &path)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&r, CACHE_CONTROL).as_deref(),
            Some("private, no-cache"),
            "{path}"
        );
        // A HEAD says the same of caching, and carries no tag of its empty body.
        let head = api.send(api.request(Method::HEAD, &path)).await;
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
        assert_eq!(
            header(&head, CACHE_CONTROL).as_deref(),
            Some("private, no-cache"),
            "HEAD {path}"
        );
        assert_eq!(header(&head, ETAG), None, "HEAD {path}");
    }
    let config = &app.state.config.http;
    let profile = client()
        .get(app.url(&format!("/api/v1/users/{me}")))
        .send()
        .await
        .expect("answers");
    assert_eq!(profile.status(), StatusCode::OK);
    assert_eq!(
        header(&profile, CACHE_CONTROL),
        Some(format!(
            "public, max-age={}, stale-while-revalidate={}",
            config.public_max_age.as_secs(),
            config.stale_while_revalidate.as_secs()
        ))
    );
    assert!(header(&profile, VARY).is_some_and(|v| v.contains("accept-encoding")));
    let plans = client()
        .get(app.url("/api/v1/plans"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        header(&plans, CACHE_CONTROL),
        Some(format!(
            "public, max-age={}, stale-while-revalidate={}",
            config.plans_max_age.as_secs(),
            config.stale_while_revalidate.as_secs()
        ))
    );
    // No session is started for an anonymous public read: nothing personal to keep apart.
    assert!(plans.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn the_plan_catalog_is_public_ordered_and_from_the_table() {
    let app = spawn_app().await;
    let response = client()
        .get(app.url("/api/v1/plans"))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    let plans = body["plans"].as_array().expect("a list of plans");
    let ids: Vec<&str> = plans.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["free", "team", "business", "enterprise"], "{body}");
    let team = &plans[1];
    assert_eq!(team["monthly_price_cents"], 1200, "{team}");
    assert_eq!(team["currency"], "USD");
    assert_eq!(team["max_members"], 25);
    assert!(plans[2]["max_projects"].is_null(), "no limit: {}", plans[2]);
    let in_table: i64 = sqlx::query_scalar("select count(*) from plans")
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("counts");
    assert_eq!(plans.len() as i64, in_table);
}

/// The task's title as the primary has it.
async fn title_of(app: &crate::helpers::TestApp, task: Uuid) -> String {
    sqlx::query_scalar("select title from tasks where id = $1")
        .bind(task)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("reads the task")
}

#[tokio::test]
async fn a_patch_with_a_stale_if_match_is_412_and_changes_nothing() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&api).await;
    let project = new_project(&api, org).await;
    let task = new_task(&api, org, project, json!({"title": "First"})).await;
    let task_id: Uuid = task["id"].as_str().expect("an id").parse().expect("a uuid");
    let task_path = format!("/orgs/{org}/projects/{project}/tasks/{task_id}");

    let read = api.send(api.request(Method::GET, &task_path)).await;
    assert_eq!(read.status(), StatusCode::OK);
    let v1 = etag(&read);

    // The tag as read: the change is made, and the answer carries the new version, which is
    // what a GET shows from then on.
    let changed = api
        .send(
            api.request(Method::PATCH, &task_path)
                .header(IF_MATCH, &v1)
                .json(&json!({"title": "Second"})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let v2 = etag(&changed);
    assert_ne!(v1, v2);
    let reread = api.send(api.request(Method::GET, &task_path)).await;
    assert_eq!(etag(&reread), v2, "GET shows the tag PATCH compares");

    // The old tag again: 412 problem, nothing changed.
    let stale = api
        .send(
            api.request(Method::PATCH, &task_path)
                .header(IF_MATCH, &v1)
                .json(&json!({"title": "Third"})),
        )
        .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        header(&stale, CONTENT_TYPE).as_deref(),
        Some("application/problem+json")
    );
    let problem: Value = stale.json().await.expect("a problem");
    assert_eq!(
        problem["type"], "https://scaleout.dev/problems/precondition-failed",
        "{problem}"
    );
    assert_eq!(title_of(&app, task_id).await, "Second");
    // A weak form of the current tag is not enough for a change (strong comparison) ...
    let weak = api
        .send(
            api.request(Method::PATCH, &task_path)
                .header(IF_MATCH, format!("W/{v2}"))
                .json(&json!({"title": "Third"})),
        )
        .await;
    assert_eq!(weak.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(title_of(&app, task_id).await, "Second");
    // ... and without If-Match a change is unconditional, as before.
    let blind = api
        .send(
            api.request(Method::PATCH, &task_path)
                .json(&json!({"status": "doing"})),
        )
        .await;
    assert_eq!(blind.status(), StatusCode::OK);

    // Projects alike.
    let project_path = format!("/orgs/{org}/projects/{project}");
    let read = api.send(api.request(Method::GET, &project_path)).await;
    let p1 = etag(&read);
    let renamed = api
        .send(
            api.request(Method::PATCH, &project_path)
                .header(IF_MATCH, &p1)
                .json(&json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let stale = api
        .send(
            api.request(Method::PATCH, &project_path)
                .header(IF_MATCH, &p1)
                .json(&json!({"name": "Clobbered"})),
        )
        .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let name: String = sqlx::query_scalar("select name from projects where id = $1")
        .bind(project)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("reads the project");
    assert_eq!(name, "Renamed");
    // A task or project that does not exist is still a 404, whatever the tag.
    let missing = api
        .send(
            api.request(
                Method::PATCH,
                &format!("/orgs/{org}/projects/{project}/tasks/{}", Uuid::now_v7()),
            )
            .header(IF_MATCH, &v2)
            .json(&json!({"title": "Ghost"})),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_editors_the_second_with_the_tag_it_read_gets_412_then_succeeds_on_the_new_one() {
    let app = spawn_app().await;
    let alice = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&alice).await;
    let project = new_project(&alice, org).await;
    let task = new_task(&alice, org, project, json!({"title": "Shared"})).await;
    let task_id: Uuid = task["id"].as_str().expect("an id").parse().expect("a uuid");
    let path = format!("/orgs/{org}/projects/{project}/tasks/{task_id}");
    let bob: Api = signed_up(&app.url(""), &TestUser::new()).await;
    let bob_id = my_id(&bob).await;
    add_member(&app, org, bob_id, Role::Member).await;
    // Bob reads what Alice wrote (another user's write: after the replica's lag).
    replica_caught_up(&app).await;

    let alice_tag = etag(&alice.send(alice.request(Method::GET, &path)).await);
    let bob_tag = etag(&bob.send(bob.request(Method::GET, &path)).await);
    assert_eq!(alice_tag, bob_tag, "one version, one tag, whoever reads it");

    let (status, _) = {
        let r = alice
            .send(
                alice
                    .request(Method::PATCH, &path)
                    .header(IF_MATCH, &alice_tag)
                    .json(&json!({"title": "Alice's title"})),
            )
            .await;
        (r.status(), ())
    };
    assert_eq!(status, StatusCode::OK);
    let bob_edit = bob
        .send(
            bob.request(Method::PATCH, &path)
                .header(IF_MATCH, &bob_tag)
                .json(&json!({"title": "Bob's title"})),
        )
        .await;
    assert_eq!(
        bob_edit.status(),
        StatusCode::PRECONDITION_FAILED,
        "Bob's edit would overwrite Alice's"
    );
    assert_eq!(title_of(&app, task_id).await, "Alice's title");

    // Bob reads the new version and makes his change on top of it.
    replica_caught_up(&app).await;
    let (status, current) = call(&bob, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["title"], "Alice's title");
    let fresh = etag(&bob.send(bob.request(Method::GET, &path)).await);
    let retried = bob
        .send(
            bob.request(Method::PATCH, &path)
                .header(IF_MATCH, &fresh)
                .json(&json!({"title": "Bob's title"})),
        )
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(title_of(&app, task_id).await, "Bob's title");
}

fn decode(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("gzip decodes");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("brotli decodes");
        }
        "zstd" => out = zstd::decode_all(bytes).expect("zstd decodes"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

#[tokio::test]
async fn responses_over_1_kib_are_compressed_in_each_coding_with_a_tag_of_their_own() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/plans");
    let identity = client().get(&url).send().await.expect("answers");
    assert!(header(&identity, CONTENT_ENCODING).is_none());
    let identity_tag = etag(&identity);
    let plain = identity.bytes().await.expect("a body");
    let min = usize::from(app.state.config.http.compression_min_bytes);
    assert!(plain.len() >= min, "the catalog is {} bytes", plain.len());

    for coding in ["gzip", "br", "zstd"] {
        let r = client()
            .get(&url)
            .header(ACCEPT_ENCODING, coding)
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, CONTENT_ENCODING).as_deref(), Some(coding));
        assert!(
            header(&r, VARY).is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
            "{coding}: Vary"
        );
        // A byte-different variant: a strong tag of its own, derived from the identity one.
        let tag = etag(&r);
        assert_eq!(
            tag,
            format!("{}-{coding}\"", identity_tag.trim_end_matches('"')),
            "{coding}"
        );
        let body = r.bytes().await.expect("a body");
        assert!(body.len() < plain.len(), "{coding}: smaller");
        assert_eq!(decode(coding, &body), plain, "{coding}: the same content");

        // Revalidating with the tag of the compressed variant: 304, that tag.
        let again = client()
            .get(&url)
            .header(ACCEPT_ENCODING, coding)
            .header(IF_NONE_MATCH, &tag)
            .send()
            .await
            .expect("answers");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{coding}");
        assert_eq!(etag(&again), tag);
        assert!(again.bytes().await.expect("read").is_empty());
    }

    // Under the threshold: not compressed, whatever the client accepts.
    let small = client()
        .get(app.url("/api/v1"))
        .header(ACCEPT_ENCODING, "gzip, br, zstd")
        .send()
        .await
        .expect("answers");
    assert_eq!(small.status(), StatusCode::OK);
    assert!(header(&small, CONTENT_ENCODING).is_none());
    assert!(small.bytes().await.expect("a body").len() < min);
}

#[tokio::test]
async fn the_document_states_304_and_412_where_they_can_occur() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let paths = doc["paths"].as_object().expect("paths");
    let mut gets = 0;
    for (path, item) in paths {
        if let Some(get) = item.get("get")
            && path.starts_with("/api/")
            && get["responses"].get("200").is_some()
        {
            gets += 1;
            assert!(get["responses"].get("304").is_some(), "GET {path}: 304");
        }
    }
    assert!(gets > 10, "{gets} GETs");
    for path in [
        "/api/v1/orgs/{org_id}/projects/{project_id}",
        "/api/v1/orgs/{org_id}/projects/{project_id}/tasks/{task_id}",
    ] {
        let patch = &doc["paths"][path]["patch"];
        assert!(patch["responses"].get("412").is_some(), "PATCH {path}: 412");
        let params = patch["parameters"].as_array().expect("parameters");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "If-Match" && p["in"] == "header"),
            "PATCH {path}: If-Match"
        );
    }
}

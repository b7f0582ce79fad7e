//! Query discipline, proven: every foreign key leads an index (read from the catalog), and
//! every list costs the same number of statements for a page of 1 as for a page of 100 (no
//! N+1), counted per request and exported by route.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Api, TestUser, my_id, scrape, signed_up, spawn_app_with};
use crate::workspace::{add_member, call, id_of, new_org, new_project, new_task};
use scaleout::workspace::Role;

#[tokio::test]
async fn every_foreign_key_leads_an_index() {
    let app = crate::helpers::spawn_app().await;
    // For each foreign key: its table and columns, and whether some index of that table
    // starts with exactly those columns (in any order among the first n).
    let unindexed: Vec<(String, String)> = sqlx::query_as(
        "select c.conrelid::regclass::text, c.conname
           from pg_constraint c
          where c.contype = 'f'
            and c.connamespace = 'public'::regnamespace
            and not exists (
              select 1 from pg_index i
               where i.indrelid = c.conrelid
                 and (select array_agg(k order by k)
                        from unnest((i.indkey::int2[])[0:cardinality(c.conkey) - 1]) k)
                     = (select array_agg(k order by k) from unnest(c.conkey) k))
          order by 1, 2",
    )
    .fetch_all(app.state.db.primary_pool())
    .await
    .expect("reads the catalog");
    assert!(
        unindexed.is_empty(),
        "foreign keys not led by an index: {unindexed:?}"
    );
    // The check reads real keys: the workspace declares several.
    let keys: i64 = sqlx::query_scalar(
        "select count(*) from pg_constraint where contype = 'f' and conrelid = 'tasks'::regclass",
    )
    .fetch_one(app.state.db.primary_pool())
    .await
    .expect("counts");
    assert!(keys >= 4, "{keys}");
}

fn queries(response: &reqwest::Response) -> u64 {
    response.headers()["x-db-queries"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("an X-Db-Queries header")
}

#[tokio::test]
async fn a_page_of_one_and_a_page_of_a_hundred_take_the_same_number_of_statements() {
    // The statement counter listens to sqlx's events through the process' subscriber.
    crate::traces::collector();
    let app = spawn_app_with(&[("HTTP_QUERY_COUNT_HEADER", "true")]).await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    new_project(&owner, org).await;
    let mut task = uuid::Uuid::nil();
    for i in 0..3 {
        let member = signed_up(&app.url(""), &TestUser::new()).await;
        let id = my_id(&member).await;
        add_member(&app, org, id, Role::Member).await;
        task = id_of(
            &new_task(
                &owner,
                org,
                project,
                json!({"title": format!("t{i}"), "assignee_id": id}),
            )
            .await,
        );
        for _ in 0..2 {
            let (status, _) = call(
                &member,
                Method::POST,
                &format!("/orgs/{org}/projects/{project}/tasks/{task}/comments"),
                Some(json!({"body": "c"})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let (status, _) = call(
            &owner,
            Method::POST,
            &format!("/orgs/{org}/invitations"),
            Some(json!({"email": format!("i{i}@example.com"), "role": "viewer"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        new_org(&owner).await;
        owner.upload(b"hello".to_vec(), "a.txt", "text/plain").await;
    }
    let lists = [
        "/files".to_owned(),
        "/orgs".to_owned(),
        format!("/orgs/{org}/members"),
        format!("/orgs/{org}/invitations"),
        format!("/orgs/{org}/projects"),
        format!("/orgs/{org}/projects/{project}/tasks"),
        format!("/orgs/{org}/projects/{project}/tasks/{task}/comments"),
        format!("/orgs/{org}/activity"),
    ];
    let get = |path: String| {
        let owner: Api = owner.clone();
        async move {
            let response = owner.send(owner.request(Method::GET, &path)).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let n = queries(&response);
            let body: serde_json::Value = response.json().await.expect("json");
            (n, body["items"].as_array().map_or(0, Vec::len))
        }
    };
    for list in &lists {
        let (one, one_items) = get(format!("{list}?limit=1")).await;
        let (hundred, hundred_items) = get(format!("{list}?limit=100")).await;
        assert_eq!(one_items, 1, "{list}");
        assert!(hundred_items > 1, "{list}: a page of several items");
        assert_eq!(
            one, hundred,
            "{list}: {one} statements for 1 item, {hundred} for {hundred_items}"
        );
        assert!(one <= 6, "{list}: {one} statements");
    }
    // Exported per route, whatever the header setting.
    let metrics = scrape(&format!("http://{}/metrics", app.internal_addr)).await;
    let route = "/api/v1/orgs/{org_id}/projects/{project_id}/tasks";
    assert!(
        crate::helpers::metric(
            &metrics,
            "http_request_db_queries_count",
            &[("route", route)]
        ) >= 2.0,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("db_queries"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Off by default: the header tells clients about internals.
    let plain = crate::helpers::spawn_app().await;
    let response = owner
        .via(&plain.url(""))
        .send(owner.via(&plain.url("")).request(Method::GET, "/orgs"))
        .await;
    assert!(response.headers().get("x-db-queries").is_none());
}

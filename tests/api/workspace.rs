//! The workspace through the API: organizations, members and roles, projects, tasks,
//! comments, the activity feed; tenant isolation and the role matrix as tables; pagination
//! under concurrent inserts; bad input that changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Api, TestApp, TestUser, edge_url, my_id, signed_up, spawn_app, spawn_worker};
use scaleout::workspace::Role;

/// Sends `method path [body]` and returns the status and the JSON body (null when none).
pub async fn call(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = api.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = api.send(request).await;
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn id_of(v: &Value) -> Uuid {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an id in {v}"))
}

/// A unique slug.
pub fn slug() -> String {
    format!("org-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// A new organization of `api`'s user (its owner).
pub async fn new_org(api: &Api) -> Uuid {
    let (status, org) = call(
        api,
        Method::POST,
        "/orgs",
        Some(json!({"name": "Acme", "slug": slug()})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    id_of(&org)
}

pub async fn new_project(api: &Api, org: Uuid) -> Uuid {
    let (status, p) = call(
        api,
        Method::POST,
        &format!("/orgs/{org}/projects"),
        Some(json!({"name": "Launch"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    id_of(&p)
}

pub async fn new_task(api: &Api, org: Uuid, project: Uuid, body: Value) -> Value {
    let (status, t) = call(
        api,
        Method::POST,
        &format!("/orgs/{org}/projects/{project}/tasks"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t
}

/// Makes `user` a member of `org` with `role`, as an accepted invitation would (the
/// invitation path itself is tested in `workspace_invitations`).
pub async fn add_member(app: &TestApp, org: Uuid, user: Uuid, role: Role) {
    let mut write = app
        .state
        .db
        .begin(scaleout::db::Writer::User(user))
        .await
        .expect("begins");
    scaleout::workspace::members::insert(&mut write, org, user, role)
        .await
        .expect("inserts")
        .expect("not a member yet");
    write.commit().await.expect("commits");
}

/// Waits until the replica has replayed everything committed so far: what one user wrote is
/// then visible to another (each user reads their own writes at once; others' after the lag).
pub async fn replica_caught_up(app: &TestApp) {
    let lsn: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("reads the primary's position");
    let replica = app.state.db.replica().clone();
    crate::helpers::eventually("the replica catches up", Duration::from_secs(30), || {
        let (replica, lsn) = (replica.clone(), lsn.clone());
        async move {
            sqlx::query_scalar::<_, bool>("select pg_last_wal_replay_lsn() >= $1::pg_lsn")
                .bind(lsn)
                .fetch_one(&replica)
                .await
                .ok()
                .filter(|caught_up| *caught_up)
        }
    })
    .await;
}

/// A signed-up user with `role` in `org`.
pub async fn member(app: &TestApp, org: Uuid, role: Role) -> (Api, Uuid) {
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let id = my_id(&api).await;
    add_member(app, org, id, role).await;
    (api, id)
}

/// Every row of every workspace table that belongs to `org`, counted on the primary: what
/// "nothing changed" compares.
pub async fn footprint(app: &TestApp, org: Uuid) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in [
        "memberships",
        "invitations",
        "projects",
        "tasks",
        "comments",
        "events",
        "files",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from {table} where org_id = $1"
        )))
        .bind(org)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("counts");
        out.push((table.to_owned(), n));
    }
    let org_row: (String, String) = sqlx::query_as("select name || '/' || slug, coalesce(deletion_requested_at::text, '') from organizations where id = $1")
        .bind(org)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("the organization exists");
    out.push((
        format!("organization {}", org_row.0),
        i64::from(org_row.1.is_empty()),
    ));
    let state: String = sqlx::query_scalar(
        "select coalesce(string_agg(t.title || t.status || coalesce(t.assignee_id::text, ''), ',' order by t.id), '')
           || coalesce((select string_agg(user_id::text || role, ',' order by user_id) from memberships where org_id = $1), '')
           || coalesce((select string_agg(name || description, ',' order by id) from projects where org_id = $1), '')
           from tasks t where t.org_id = $1",
    )
    .bind(org)
    .fetch_one(app.state.db.primary_pool())
    .await
    .expect("reads");
    out.push((state, 0));
    out
}

#[tokio::test]
async fn an_organization_is_created_listed_read_renamed_and_its_creator_is_owner() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let s = slug();
    let (status, org) = call(
        &api,
        Method::POST,
        "/orgs",
        Some(json!({"name": " Acme ", "slug": s})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    assert_eq!(
        (
            org["name"].as_str(),
            org["slug"].as_str(),
            org["role"].as_str()
        ),
        (Some("Acme"), Some(s.as_str()), Some("owner"))
    );
    let id = id_of(&org);

    let (status, list) = call(&api, Method::GET, "/orgs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["next_cursor"], Value::Null);

    let (status, patched) = call(
        &api,
        Method::PATCH,
        &format!("/orgs/{id}"),
        Some(json!({"name": "Acme Inc."})),
    )
    .await;
    assert_eq!(
        (status, patched["name"].as_str()),
        (StatusCode::OK, Some("Acme Inc.")),
        "{patched}"
    );
    // Read back at once (read-your-writes), through the same instance and another one.
    let other = spawn_app().await;
    for base in [app.url(""), other.url("")] {
        let (status, read) = call(&api.via(&base), Method::GET, &format!("/orgs/{id}"), None).await;
        assert_eq!(
            (status, read["name"].as_str()),
            (StatusCode::OK, Some("Acme Inc."))
        );
    }
    // A taken slug is a conflict.
    let (status, _) = call(
        &api,
        Method::POST,
        "/orgs",
        Some(json!({"name": "Copy", "slug": s})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, members) = call(&api, Method::GET, &format!("/orgs/{id}/members"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(members["items"][0]["role"], "owner", "{members}");
}

#[tokio::test]
async fn projects_tasks_and_comments_round_trip_and_every_change_is_in_the_feed_newest_first() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let (dev, dev_id) = member(&app, org, Role::Member).await;
    let project = new_project(&owner, org).await;
    let base = format!("/orgs/{org}/projects/{project}");

    let (status, p) = call(
        &owner,
        Method::PATCH,
        &base,
        Some(json!({"description": "All of it"})),
    )
    .await;
    assert_eq!(
        (status, p["description"].as_str()),
        (StatusCode::OK, Some("All of it"))
    );

    let task = new_task(
        &dev,
        org,
        project,
        json!({"title": "Write", "assignee_id": dev_id, "due_date": "2026-12-01"}),
    )
    .await;
    assert_eq!(task["status"], "todo");
    assert_eq!(task["assignee"]["id"], dev_id.to_string());
    assert_eq!(task["due_date"], "2026-12-01");
    let task_id = id_of(&task);
    let (status, t) = call(
        &dev,
        Method::PATCH,
        &format!("{base}/tasks/{task_id}"),
        Some(json!({"status": "doing", "assignee_id": null, "due_date": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(
        (t["status"].as_str(), &t["assignee"], &t["due_date"]),
        (Some("doing"), &Value::Null, &Value::Null)
    );

    let (status, c) = call(
        &dev,
        Method::POST,
        &format!("{base}/tasks/{task_id}/comments"),
        Some(json!({"body": "On it.\nSoon."})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["author"]["id"], dev_id.to_string());
    let (status, comments) = call(
        &dev,
        Method::GET,
        &format!("{base}/tasks/{task_id}/comments"),
        None,
    )
    .await;
    assert_eq!(
        (status, comments["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let (_, t) = call(&dev, Method::GET, &format!("{base}/tasks/{task_id}"), None).await;
    assert_eq!(t["comment_count"], 1);

    let (status, feed) = call(&dev, Method::GET, &format!("/orgs/{org}/activity"), None).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = feed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "comment.created",
            "task.updated",
            "task.created",
            "project.updated",
            "project.created",
            "org.created"
        ],
        "{feed}"
    );

    let (status, _) = call(
        &dev,
        Method::DELETE,
        &format!("{base}/tasks/{task_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&dev, Method::GET, &format!("{base}/tasks/{task_id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    new_task(&dev, org, project, json!({"title": "Another"})).await;
    let (status, _) = call(&owner, Method::DELETE, &base, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&owner, Method::GET, &format!("{base}/tasks"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, feed) = call(
        &dev,
        Method::GET,
        &format!("/orgs/{org}/activity?limit=1"),
        None,
    )
    .await;
    assert_eq!(feed["items"][0]["kind"], "project.deleted");
}

#[tokio::test]
async fn tasks_filter_by_status_and_assignee() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let owner_id = my_id(&owner).await;
    let org = new_org(&owner).await;
    let (_, dev) = member(&app, org, Role::Member).await;
    let project = new_project(&owner, org).await;
    for (status, assignee) in [
        ("todo", Some(dev)),
        ("doing", Some(dev)),
        ("done", Some(owner_id)),
        ("todo", None),
    ] {
        new_task(
            &owner,
            org,
            project,
            json!({"title": "t", "status": status, "assignee_id": assignee}),
        )
        .await;
    }
    let count = |query: String| {
        let owner = owner.clone();
        async move {
            let (status, page) = call(
                &owner,
                Method::GET,
                &format!("/orgs/{org}/projects/{project}/tasks{query}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"].as_array().map(Vec::len).unwrap_or(0)
        }
    };
    assert_eq!(count(String::new()).await, 4);
    assert_eq!(count("?status=todo".into()).await, 2);
    assert_eq!(count(format!("?assignee={dev}")).await, 2);
    assert_eq!(count(format!("?assignee={dev}&status=doing")).await, 1);
    assert_eq!(count(format!("?assignee={owner_id}&status=todo")).await, 0);
}

/// Every route under `/orgs/{org_id}`, with real ids of the victim organization's resources.
fn victim_routes(
    org: Uuid,
    project: Uuid,
    task: Uuid,
    invitation: Uuid,
    owner: Uuid,
) -> Vec<(Method, String, Option<Value>)> {
    let o = format!("/orgs/{org}");
    let p = format!("{o}/projects/{project}");
    let t = format!("{p}/tasks/{task}");
    vec![
        (Method::GET, o.clone(), None),
        (Method::PATCH, o.clone(), Some(json!({"name": "Pwned"}))),
        (Method::DELETE, o.clone(), None),
        (Method::GET, format!("{o}/members"), None),
        (
            Method::PATCH,
            format!("{o}/members/{owner}"),
            Some(json!({"role": "viewer"})),
        ),
        (Method::DELETE, format!("{o}/members/{owner}"), None),
        (Method::GET, format!("{o}/invitations"), None),
        (
            Method::POST,
            format!("{o}/invitations"),
            Some(json!({"email": "x@example.com", "role": "admin"})),
        ),
        (
            Method::DELETE,
            format!("{o}/invitations/{invitation}"),
            None,
        ),
        (Method::GET, format!("{o}/projects"), None),
        (
            Method::POST,
            format!("{o}/projects"),
            Some(json!({"name": "Mine now"})),
        ),
        (Method::GET, p.clone(), None),
        (Method::PATCH, p.clone(), Some(json!({"name": "Mine now"}))),
        (Method::DELETE, p.clone(), None),
        (Method::GET, format!("{p}/tasks"), None),
        (
            Method::POST,
            format!("{p}/tasks"),
            Some(json!({"title": "Mine now"})),
        ),
        (Method::GET, t.clone(), None),
        (Method::PATCH, t.clone(), Some(json!({"status": "done"}))),
        (Method::DELETE, t.clone(), None),
        (Method::GET, format!("{t}/comments"), None),
        (
            Method::POST,
            format!("{t}/comments"),
            Some(json!({"body": "hi"})),
        ),
        (Method::GET, format!("{o}/activity"), None),
    ]
}

/// A victim organization with a project, a task, a comment and an invitation.
async fn victim(app: &TestApp) -> (Api, Uuid, Uuid, Uuid, Uuid, Uuid) {
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let owner_id = my_id(&owner).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    let task = id_of(&new_task(&owner, org, project, json!({"title": "Secret"})).await);
    let (status, _) = call(
        &owner,
        Method::POST,
        &format!("/orgs/{org}/projects/{project}/tasks/{task}/comments"),
        Some(json!({"body": "secret"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, inv) = call(
        &owner,
        Method::POST,
        &format!("/orgs/{org}/invitations"),
        Some(json!({"email": "friend@example.com", "role": "member"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    (owner, owner_id, org, project, task, id_of(&inv))
}

#[tokio::test]
async fn a_member_of_another_organization_gets_404_on_every_route_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, owner_id, org, project, task, invitation) = victim(&app).await;
    // The attacker owns an organization of their own: every role there, none here.
    let attacker = signed_up(&app.url(""), &TestUser::new()).await;
    let own = new_org(&attacker).await;
    let own_project = new_project(&attacker, own).await;
    let before = footprint(&app, org).await;
    let routes = victim_routes(org, project, task, invitation, owner_id);
    assert_eq!(routes.len(), 22);
    for (method, path, body) in &routes {
        let (status, problem) = call(&attacker, method.clone(), path, body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
        assert_eq!(
            problem["type"], "https://scaleout.dev/problems/not-found",
            "{method} {path}"
        );
    }
    // Mixing the attacker's own organization with the victim's resources is no way in either.
    for path in [
        format!("/orgs/{own}/projects/{project}"),
        format!("/orgs/{own}/projects/{project}/tasks"),
        format!("/orgs/{own}/projects/{own_project}/tasks/{task}"),
        format!("/orgs/{own}/projects/{project}/tasks/{task}/comments"),
    ] {
        let (status, _) = call(&attacker, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for (method, path) in [
        (Method::PATCH, format!("/orgs/{own}/projects/{project}")),
        (Method::DELETE, format!("/orgs/{own}/projects/{project}")),
        (
            Method::PATCH,
            format!("/orgs/{own}/projects/{own_project}/tasks/{task}"),
        ),
        (
            Method::DELETE,
            format!("/orgs/{own}/projects/{own_project}/tasks/{task}"),
        ),
        (
            Method::DELETE,
            format!("/orgs/{own}/invitations/{invitation}"),
        ),
        (Method::PATCH, format!("/orgs/{own}/members/{owner_id}")),
        (Method::DELETE, format!("/orgs/{own}/members/{owner_id}")),
    ] {
        let body = (method == Method::PATCH)
            .then(|| json!({"name": "x", "status": "done", "role": "viewer"}));
        let (status, _) = call(&attacker, method.clone(), &path, body).await;
        assert!(
            matches!(
                status,
                StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY
            ),
            "{method} {path}: {status}"
        );
    }
    let (status, _) = call(
        &attacker,
        Method::POST,
        &format!("/orgs/{own}/projects/{project}/tasks/{task}/comments"),
        Some(json!({"body": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A task in the attacker's organization cannot be assigned to the victim's owner.
    let (status, problem) = call(
        &attacker,
        Method::POST,
        &format!("/orgs/{own}/projects/{own_project}/tasks"),
        Some(json!({"title": "t", "assignee_id": owner_id})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["errors"]["assignee_id"].is_array(), "{problem}");
    assert_eq!(
        footprint(&app, org).await,
        before,
        "the victim's data is unchanged"
    );
    // Anonymous callers get 401, not a hint either way.
    let anonymous = Api::new(app.url(""));
    let (status, _) = call(&anonymous, Method::GET, &format!("/orgs/{org}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_role_matrix() {
    use Role::{Admin, Member, Owner, Viewer};
    let app = spawn_app().await;
    // (action, the weakest role allowed)
    let actions: &[(&str, Role)] = &[
        ("read org", Viewer),
        ("list members", Viewer),
        ("list projects", Viewer),
        ("read project", Viewer),
        ("list tasks", Viewer),
        ("read task", Viewer),
        ("list comments", Viewer),
        ("read activity", Viewer),
        ("create task", Member),
        ("edit task", Member),
        ("comment", Member),
        ("delete task", Member),
        ("rename org", Admin),
        ("create project", Admin),
        ("edit project", Admin),
        ("delete project", Admin),
        ("invite", Admin),
        ("list invitations", Admin),
        ("revoke invitation", Admin),
        ("change a member's role", Admin),
        ("remove a member", Admin),
        ("make an owner", Owner),
        ("delete org", Owner),
    ];
    for role in Role::ALL {
        // A fresh organization per role: some actions delete things.
        let owner = signed_up(&app.url(""), &TestUser::new()).await;
        let org = new_org(&owner).await;
        let (actor, _) = member(&app, org, role).await;
        let o = format!("/orgs/{org}");
        for (action, needed) in actions {
            let project = new_project(&owner, org).await;
            let p = format!("{o}/projects/{project}");
            let task = id_of(&new_task(&owner, org, project, json!({"title": "t"})).await);
            let t = format!("{p}/tasks/{task}");
            // A member to act on, and an invitation to revoke, for the actions that need one.
            let target = if action.contains("member") || action.contains("owner") {
                member(&app, org, Member).await.1
            } else {
                Uuid::nil()
            };
            let inv = if *action == "revoke invitation" {
                let (_, inv) = call(
                    &owner,
                    Method::POST,
                    &format!("{o}/invitations"),
                    Some(json!({"email": "m@example.com", "role": "viewer"})),
                )
                .await;
                id_of(&inv)
            } else {
                Uuid::nil()
            };
            replica_caught_up(&app).await;
            let (method, path, body) = match *action {
                "read org" => (Method::GET, o.clone(), None),
                "list members" => (Method::GET, format!("{o}/members"), None),
                "list projects" => (Method::GET, format!("{o}/projects"), None),
                "read project" => (Method::GET, p.clone(), None),
                "list tasks" => (Method::GET, format!("{p}/tasks"), None),
                "read task" => (Method::GET, t.clone(), None),
                "list comments" => (Method::GET, format!("{t}/comments"), None),
                "read activity" => (Method::GET, format!("{o}/activity"), None),
                "create task" => (
                    Method::POST,
                    format!("{p}/tasks"),
                    Some(json!({"title": "x"})),
                ),
                "edit task" => (Method::PATCH, t.clone(), Some(json!({"status": "done"}))),
                "comment" => (
                    Method::POST,
                    format!("{t}/comments"),
                    Some(json!({"body": "x"})),
                ),
                "delete task" => (Method::DELETE, t.clone(), None),
                "rename org" => (Method::PATCH, o.clone(), Some(json!({"name": "Renamed"}))),
                "create project" => (
                    Method::POST,
                    format!("{o}/projects"),
                    Some(json!({"name": "x"})),
                ),
                "edit project" => (Method::PATCH, p.clone(), Some(json!({"name": "x"}))),
                "delete project" => (Method::DELETE, p.clone(), None),
                "invite" => (
                    Method::POST,
                    format!("{o}/invitations"),
                    Some(json!({"email": "n@example.com", "role": "member"})),
                ),
                "list invitations" => (Method::GET, format!("{o}/invitations"), None),
                "revoke invitation" => (Method::DELETE, format!("{o}/invitations/{inv}"), None),
                "change a member's role" => (
                    Method::PATCH,
                    format!("{o}/members/{target}"),
                    Some(json!({"role": "viewer"})),
                ),
                "remove a member" => (Method::DELETE, format!("{o}/members/{target}"), None),
                "make an owner" => (
                    Method::PATCH,
                    format!("{o}/members/{target}"),
                    Some(json!({"role": "owner"})),
                ),
                "delete org" => (Method::DELETE, o.clone(), None),
                other => unreachable!("{other}"),
            };
            let (status, body) = call(&actor, method.clone(), &path, body).await;
            if role.at_least(*needed) {
                assert!(
                    status.is_success(),
                    "{role:?} may {action}: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role:?} may not {action}: {body}"
                );
                assert_eq!(
                    body["type"],
                    "https://scaleout.dev/problems/insufficient-role"
                );
            }
            if *action == "delete org" {
                break;
            }
        }
    }
}

#[tokio::test]
async fn an_organization_always_keeps_an_owner() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let owner_id = my_id(&owner).await;
    let org = new_org(&owner).await;
    let (admin, _) = member(&app, org, Role::Admin).await;
    let o = format!("/orgs/{org}");
    let (status, _) = call(
        &owner,
        Method::PATCH,
        &format!("{o}/members/{owner_id}"),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the last owner cannot step down"
    );
    let (status, _) = call(
        &owner,
        Method::DELETE,
        &format!("{o}/members/{owner_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "the last owner cannot leave");
    let (status, _) = call(
        &admin,
        Method::DELETE,
        &format!("{o}/members/{owner_id}"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an admin cannot remove an owner"
    );
    // Hand over, then leave.
    let (admin2, admin2_id) = member(&app, org, Role::Admin).await;
    let (status, m) = call(
        &owner,
        Method::PATCH,
        &format!("{o}/members/{admin2_id}"),
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!(
        (status, m["role"].as_str()),
        (StatusCode::OK, Some("owner"))
    );
    let (status, _) = call(
        &owner,
        Method::DELETE,
        &format!("{o}/members/{owner_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&owner, Method::GET, &o, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "gone for the one who left");
    let (status, org_view) = call(&admin2, Method::GET, &o, None).await;
    assert_eq!(
        (status, org_view["role"].as_str()),
        (StatusCode::OK, Some("owner"))
    );
}

#[tokio::test]
async fn walking_every_page_returns_every_task_once_while_tasks_are_inserted() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    let mut existing = BTreeSet::new();
    for i in 0..23 {
        existing.insert(id_of(
            &new_task(&owner, org, project, json!({"title": format!("t{i}")})).await,
        ));
    }
    let writer = {
        let owner = owner.clone();
        tokio::spawn(async move {
            let mut added = Vec::new();
            for i in 0..15 {
                added.push(id_of(
                    &new_task(&owner, org, project, json!({"title": format!("new {i}")})).await,
                ));
            }
            added
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=4&cursor={c}"),
            None => "?limit=4".into(),
        };
        let (status, page) = call(
            &owner,
            Method::GET,
            &format!("/orgs/{org}/projects/{project}/tasks{query}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 4);
        seen.extend(items.iter().map(id_of));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let added = writer.await.expect("the writer finishes");
    let unique: BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no task twice");
    assert!(
        existing.is_subset(&unique),
        "every task that existed at the start"
    );
    assert!(
        unique
            .iter()
            .all(|id| existing.contains(id) || added.contains(id)),
        "nothing else"
    );
    // Pages are in creation order, without gaps.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}

#[tokio::test]
async fn bad_limits_and_cursors_are_422_naming_the_parameter_on_every_list() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    let task = id_of(&new_task(&owner, org, project, json!({"title": "t"})).await);
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
    // A real cursor, edited.
    let (_, page) = call(
        &owner,
        Method::GET,
        &format!("/orgs/{org}/activity?limit=1"),
        None,
    )
    .await;
    let real = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let tampered = format!(
        "{}{}",
        &real[..47],
        if real.ends_with('0') { '1' } else { '0' }
    );
    for list in &lists {
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("cursor=yesterday", "cursor"),
            (&*format!("cursor={tampered}"), "cursor"),
            (&*format!("cursor={}", Uuid::now_v7()), "cursor"),
        ] {
            let (status, problem) =
                call(&owner, Method::GET, &format!("{list}?{query}"), None).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{list}?{query}: {problem}"
            );
            assert!(
                problem["errors"][field].is_array(),
                "{list}?{query}: {problem}"
            );
        }
        let (status, _) = call(&owner, Method::GET, &format!("{list}?limit=100"), None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
    }
    for (query, field) in [("status=later", "status"), ("assignee=me", "assignee")] {
        let (status, problem) = call(
            &owner,
            Method::GET,
            &format!("/orgs/{org}/projects/{project}/tasks?{query}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(problem["errors"][field].is_array(), "{query}: {problem}");
    }
}

#[tokio::test]
async fn bad_bodies_are_422_naming_every_field_and_change_nothing() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    let task = id_of(&new_task(&owner, org, project, json!({"title": "t"})).await);
    let outsider = my_id(&signed_up(&app.url(""), &TestUser::new()).await).await;
    let (_, target) = member(&app, org, Role::Member).await;
    let o = format!("/orgs/{org}");
    let p = format!("{o}/projects/{project}");
    let t = format!("{p}/tasks/{task}");
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(Method, String, Value, &[&str])> = vec![
        (Method::POST, "/orgs".into(), json!({}), &["name", "slug"]),
        (
            Method::POST,
            "/orgs".into(),
            json!({"name": 1, "slug": "ok"}),
            &["name"],
        ),
        (
            Method::POST,
            "/orgs".into(),
            json!({"name": long(101), "slug": "Not A Slug"}),
            &["name", "slug"],
        ),
        (
            Method::POST,
            "/orgs".into(),
            json!({"name": "a", "slug": slug(), "plan": "pro"}),
            &["plan"],
        ),
        (Method::PATCH, o.clone(), json!({}), &["body"]),
        (Method::PATCH, o.clone(), json!({"name": null}), &["name"]),
        (
            Method::PATCH,
            o.clone(),
            json!({"slug": long(41)}),
            &["slug"],
        ),
        (
            Method::PATCH,
            format!("{o}/members/{target}"),
            json!({"role": "king"}),
            &["role"],
        ),
        (
            Method::PATCH,
            format!("{o}/members/{target}"),
            json!({}),
            &["role"],
        ),
        (
            Method::POST,
            format!("{o}/invitations"),
            json!({"email": "nope", "role": "admin", "x": 1}),
            &["email", "x"],
        ),
        // A value no variant of an enum fits stops the parse there: it is named alone.
        (
            Method::POST,
            format!("{o}/invitations"),
            json!({"email": "nope", "role": "owner"}),
            &["role"],
        ),
        (
            Method::POST,
            format!("{o}/invitations"),
            json!({"email": "a@example.com"}),
            &["role"],
        ),
        (
            Method::POST,
            format!("{o}/projects"),
            json!({"name": "", "description": long(2001)}),
            &["name", "description"],
        ),
        (
            Method::POST,
            format!("{o}/projects"),
            json!({"name": "a", "owner": "me"}),
            &["owner"],
        ),
        (Method::PATCH, p.clone(), json!({}), &["body"]),
        (Method::PATCH, p.clone(), json!({"name": ["a"]}), &["name"]),
        (Method::POST, format!("{p}/tasks"), json!({}), &["title"]),
        (
            Method::POST,
            format!("{p}/tasks"),
            json!({"title": long(201), "description": 5}),
            &["title", "description"],
        ),
        (
            Method::POST,
            format!("{p}/tasks"),
            json!({"title": "a", "status": "blocked"}),
            &["status"],
        ),
        (
            Method::POST,
            format!("{p}/tasks"),
            json!({"title": "a", "assignee_id": "me", "due_date": "tomorrow"}),
            &["assignee_id", "due_date"],
        ),
        (
            Method::POST,
            format!("{p}/tasks"),
            json!({"title": "a", "assignee_id": outsider}),
            &["assignee_id"],
        ),
        (
            Method::POST,
            format!("{p}/tasks"),
            json!({"title": "a", "priority": 1}),
            &["priority"],
        ),
        (
            Method::PATCH,
            t.clone(),
            json!({"status": "blocked"}),
            &["status"],
        ),
        (
            Method::PATCH,
            t.clone(),
            json!({"description": null, "title": null}),
            &["description", "title"],
        ),
        (
            Method::PATCH,
            t.clone(),
            json!({"status": null}),
            &["status"],
        ),
        (
            Method::PATCH,
            t.clone(),
            json!({"assignee_id": outsider}),
            &["assignee_id"],
        ),
        (
            Method::PATCH,
            t.clone(),
            json!({"due_date": "2026-02-30"}),
            &["due_date"],
        ),
        (Method::PATCH, t.clone(), json!({}), &["body"]),
        (
            Method::POST,
            format!("{t}/comments"),
            json!({"body": "   "}),
            &["body"],
        ),
        (
            Method::POST,
            format!("{t}/comments"),
            json!({"body": long(10_001)}),
            &["body"],
        ),
        (
            Method::POST,
            format!("{t}/comments"),
            json!({"text": "hi"}),
            &["body", "text"],
        ),
        (
            Method::POST,
            "/invitations/accept".into(),
            json!({}),
            &["token"],
        ),
        (
            Method::POST,
            "/invitations/accept".into(),
            json!({"token": 5}),
            &["token"],
        ),
    ];
    let before = footprint(&app, org).await;
    for (method, path, body, fields) in &cases {
        let (status, problem) = call(&owner, method.clone(), path, Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path} {body}: {problem}"
        );
        let named: BTreeSet<&str> = problem["errors"]
            .as_object()
            .map(|e| e.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            named,
            fields.iter().copied().collect(),
            "{method} {path} {body}: {problem}"
        );
    }
    assert_eq!(footprint(&app, org).await, before, "nothing changed");
}

/// Polls until `org` has no row left anywhere, organization included.
async fn gone(app: &TestApp, org: Uuid) {
    let db = app.state.db.primary_pool().clone();
    crate::helpers::eventually(
        "the organization's rows are deleted",
        Duration::from_secs(60),
        || {
            let db = db.clone();
            async move {
                let mut left = 0i64;
                for table in [
                    "memberships",
                    "invitations",
                    "projects",
                    "tasks",
                    "comments",
                    "events",
                    "files",
                ] {
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "select count(*) from {table} where org_id = $1"
                    )))
                    .bind(org)
                    .fetch_one(&db)
                    .await
                    .expect("counts");
                    left += n;
                }
                let n: i64 = sqlx::query_scalar("select count(*) from organizations where id = $1")
                    .bind(org)
                    .fetch_one(&db)
                    .await
                    .expect("counts");
                (left + n == 0).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_an_organization_answers_202_and_its_rows_go_in_the_background() {
    let app = spawn_app().await;
    let worker = spawn_worker();
    let (owner, _, org, _, _, _) = victim(&app).await;
    let (viewer, _) = member(&app, org, Role::Viewer).await;
    let (status, accepted) = call(&owner, Method::DELETE, &format!("/orgs/{org}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert!(accepted["job_id"].is_string(), "{accepted}");
    replica_caught_up(&app).await;
    // Gone at once, for every member, before the job has run.
    for api in [&owner, &viewer] {
        let (status, _) = call(api, Method::GET, &format!("/orgs/{org}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = call(api, Method::GET, "/orgs", None).await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    }
    let (status, _) = call(&owner, Method::DELETE, &format!("/orgs/{org}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted once");
    gone(&app, org).await;
    worker.shutdown().await;
}

#[tokio::test]
async fn account_deletion_waits_for_ownership_to_move_and_takes_organizations_held_alone() {
    let app = spawn_app().await;
    let worker = spawn_worker();
    let user = TestUser::new();
    let mut api = signed_up(&app.url(""), &user).await;
    let id = my_id(&api).await;
    let alone = new_org(&api).await;
    let project = new_project(&api, alone).await;
    new_task(&api, alone, project, json!({"title": "mine"})).await;
    let shared = new_org(&api).await;
    let (other, other_id) = member(&app, shared, Role::Member).await;
    let (status, problem) = call(
        &api,
        Method::DELETE,
        "/me",
        Some(json!({"password": user.password})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let slug_of_shared: String = sqlx::query_scalar("select slug from organizations where id = $1")
        .bind(shared)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("reads");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&slug_of_shared)),
        "names the organization: {problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| !d.contains(&format!("{alone}")))
    );
    let (status, _) = call(&api, Method::GET, "/me", None).await;
    assert_eq!(status, StatusCode::OK, "the account is still there");
    // Ownership moves; then the account can go.
    let (status, _) = call(
        &api,
        Method::PATCH,
        &format!("/orgs/{shared}/members/{other_id}"),
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let job = api.delete_account(&user).await;
    assert!(!job.is_empty());
    api.cookie = None;
    gone(&app, alone).await;
    let db = app.state.db.primary_pool().clone();
    crate::helpers::eventually("the account is deleted", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::query_scalar("select count(*) from users where id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .expect("counts");
            (n == 0).then_some(())
        }
    })
    .await;
    replica_caught_up(&app).await;
    let (status, members) = call(
        &other,
        Method::GET,
        &format!("/orgs/{shared}/members"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        members["items"].as_array().map(Vec::len),
        Some(1),
        "only the new owner is left: {members}"
    );
    let (_, org) = call(&other, Method::GET, &format!("/orgs/{shared}"), None).await;
    assert_eq!(org["role"], "owner");
    worker.shutdown().await;
}

#[tokio::test]
async fn the_workspace_answers_through_nginx() {
    let edge = edge_url();
    let owner = signed_up(&edge, &TestUser::new()).await;
    let org = new_org(&owner).await;
    let project = new_project(&owner, org).await;
    let task = id_of(&new_task(&owner, org, project, json!({"title": "via nginx"})).await);
    // Read back at once through the load balancer, whichever instance answers.
    for _ in 0..6 {
        let (status, t) = call(
            &owner,
            Method::GET,
            &format!("/orgs/{org}/projects/{project}/tasks/{task}"),
            None,
        )
        .await;
        assert_eq!(
            (status, t["title"].as_str()),
            (StatusCode::OK, Some("via nginx"))
        );
        let (status, _) = call(
            &owner,
            Method::PATCH,
            &format!("/orgs/{org}/projects/{project}/tasks/{task}"),
            Some(json!({"status": "done"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, page) = call(
            &owner,
            Method::GET,
            &format!("/orgs/{org}/projects/{project}/tasks?status=done"),
            None,
        )
        .await;
        assert_eq!(
            (status, page["items"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(1)),
            "read-your-writes through any instance"
        );
    }
    let (status, feed) = call(
        &owner,
        Method::GET,
        &format!("/orgs/{org}/activity?limit=2"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(feed["items"][0]["kind"], "task.updated");
    assert!(feed["next_cursor"].is_string());
}

#[tokio::test]
async fn an_organizations_files_are_read_by_its_members_and_deleted_by_its_admins() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let (uploader, _) = member(&app, org, Role::Member).await;
    let (viewer, _) = member(&app, org, Role::Viewer).await;
    let (colleague, _) = member(&app, org, Role::Member).await;
    let (admin, _) = member(&app, org, Role::Admin).await;
    let outsider = signed_up(&app.url(""), &TestUser::new()).await;
    let upload = |api: Api, path: String| async move {
        let response = api
            .upload_to(
                Method::POST,
                &path,
                b"team notes\n".to_vec(),
                "notes.txt",
                "text/plain",
            )
            .await;
        let status = response.status();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, file) = upload(uploader.clone(), format!("/files?org_id={org}")).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let file = id_of(&file);
    let (status, _) = upload(viewer.clone(), format!("/files?org_id={org}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "viewers only read");
    let (status, _) = upload(outsider.clone(), format!("/files?org_id={org}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a member");

    replica_caught_up(&app).await;
    for api in [&viewer, &colleague, &admin, &owner] {
        let (status, meta) = call(api, Method::GET, &format!("/files/{file}"), None).await;
        assert_eq!(status, StatusCode::OK, "{meta}");
        assert_eq!(api.download(&file.to_string()).await, b"team notes\n");
        let (status, list) = call(api, Method::GET, &format!("/files?org_id={org}"), None).await;
        assert_eq!(
            (status, list["items"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(1))
        );
    }
    let (status, _) = call(&outsider, Method::GET, &format!("/files/{file}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &outsider,
        Method::GET,
        &format!("/files?org_id={org}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&outsider, Method::DELETE, &format!("/files/{file}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&colleague, Method::DELETE, &format!("/files/{file}"), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a member deletes only their own"
    );
    let (status, _) = call(&admin, Method::DELETE, &format!("/files/{file}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&uploader, Method::GET, &format!("/files/{file}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

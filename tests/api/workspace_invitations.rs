//! Invitations end to end: the email read from the SMTP sink, its token accepted once; a
//! used, revoked or expired token refused with 410, and the token never stored in clear.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Api, TestUser, eventually, signed_up, spawn_app, spawn_worker};
use crate::job_effects::messages_to;
use crate::workspace::{call, id_of, new_org};

/// Invites `email` into `org` as `role`; the invitation's id.
async fn invite(owner: &Api, org: Uuid, email: &str, role: &str) -> Uuid {
    let (status, inv) = call(
        owner,
        Method::POST,
        &format!("/orgs/{org}/invitations"),
        Some(json!({"email": email, "role": role})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    assert_eq!(inv["status"], "pending");
    id_of(&inv)
}

/// The token of an invitation email to `email` other than those `known`, once the sink has
/// it.
async fn token_for(email: &str, known: &[&str]) -> String {
    eventually(
        "the invitation email reaches the SMTP sink",
        Duration::from_secs(60),
        || async {
            messages_to(email).iter().find_map(|m| {
                m.lines()
                    .map(str::trim)
                    .find(|l| {
                        l.len() == 64
                            && l.bytes().all(|b| b.is_ascii_hexdigit())
                            && !known.contains(l)
                    })
                    .map(str::to_owned)
            })
        },
    )
    .await
}

async fn accept(api: &Api, token: &str) -> (StatusCode, serde_json::Value) {
    call(
        api,
        Method::POST,
        "/invitations/accept",
        Some(json!({"token": token})),
    )
    .await
}

#[tokio::test]
async fn an_invitation_is_emailed_and_accepted_once() {
    let app = spawn_app().await;
    let worker = spawn_worker();
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let invitee = TestUser::new();
    let id = invite(&owner, org, &invitee.email, "admin").await;
    let token = token_for(&invitee.email, &[]).await;

    // Stored hashed only, and never in the job queue.
    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("select token_hash from invitations where id = $1")
            .bind(id)
            .fetch_one(app.state.db.primary_pool())
            .await
            .expect("reads");
    assert_eq!(
        stored.as_deref(),
        Some(&scaleout::workspace::invitations::hash_token(&token)[..])
    );
    let in_queue: i64 = sqlx::query_scalar(
        "select count(*) from apalis.jobs where position($1 in convert_from(job, 'UTF8')) > 0",
    )
    .bind(&token)
    .fetch_one(app.state.db.primary_pool())
    .await
    .expect("reads");
    assert_eq!(in_queue, 0);

    let joiner = signed_up(&app.url(""), &invitee).await;
    let (status, _) = call(&joiner, Method::GET, &format!("/orgs/{org}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a member yet");
    let (status, accepted) = accept(&joiner, &token).await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["org_id"], org.to_string());
    assert_eq!(accepted["member"]["role"], "admin");
    let (status, view) = call(&joiner, Method::GET, &format!("/orgs/{org}"), None).await;
    assert_eq!(
        (status, view["role"].as_str()),
        (StatusCode::OK, Some("admin"))
    );

    // Used: refused, for anyone.
    let (status, problem) = accept(&joiner, &token).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");
    assert_eq!(problem["type"], "https://scaleout.dev/problems/gone");
    let stranger = signed_up(&app.url(""), &TestUser::new()).await;
    let (status, _) = accept(&stranger, &token).await;
    assert_eq!(status, StatusCode::GONE);
    let (status, _) = accept(&stranger, &"0".repeat(64)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown token");
    let anonymous = Api::new(app.url(""));
    let (status, _) = accept(&anonymous, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, list) = call(
        &owner,
        Method::GET,
        &format!("/orgs/{org}/invitations"),
        None,
    )
    .await;
    assert_eq!(list["items"][0]["status"], "accepted", "{list}");
    let (_, feed) = call(
        &owner,
        Method::GET,
        &format!("/orgs/{org}/activity?limit=1"),
        None,
    )
    .await;
    assert_eq!(feed["items"][0]["kind"], "member.joined");
    worker.shutdown().await;
}

#[tokio::test]
async fn revoked_and_expired_invitations_are_gone() {
    let app = spawn_app().await;
    let worker = spawn_worker();
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let org = new_org(&owner).await;
    let invitee = TestUser::new();
    let joiner = signed_up(&app.url(""), &invitee).await;

    let revoked = invite(&owner, org, &invitee.email, "member").await;
    let first = token_for(&invitee.email, &[]).await;
    let token = first.clone();
    let (status, _) = call(
        &owner,
        Method::DELETE,
        &format!("/orgs/{org}/invitations/{revoked}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &owner,
        Method::DELETE,
        &format!("/orgs/{org}/invitations/{revoked}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "revoked already");
    let (status, problem) = accept(&joiner, &token).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");

    let expired = invite(&owner, org, &invitee.email, "member").await;
    let token = token_for(&invitee.email, &[&first]).await;
    sqlx::query("update invitations set expires_at = now() - interval '1 second' where id = $1")
        .bind(expired)
        .execute(app.state.db.primary_pool())
        .await
        .expect("ages the invitation");
    let (status, problem) = accept(&joiner, &token).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{problem}"
    );
    let (status, _) = call(&joiner, Method::GET, &format!("/orgs/{org}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "never joined");
    let (_, list) = call(
        &owner,
        Method::GET,
        &format!("/orgs/{org}/invitations"),
        None,
    )
    .await;
    let statuses: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["status"].as_str())
        .collect();
    assert_eq!(statuses, ["revoked", "expired"]);
    worker.shutdown().await;
}

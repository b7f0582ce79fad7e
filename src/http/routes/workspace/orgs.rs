//! Organizations, their members and roles, and the activity feed.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{OrgAccess, TAG, UserRef, forbidden};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::ApiError;
use crate::error::responses::{
    CrossSite, InvalidFields, JsonBody, NoSession, NotInOrg, RoleTooLow, Unavailable,
};
use crate::http::json::{self, AppJson, Check, Validate};
use crate::http::page::{self, PageQuery};
use crate::jobs::{self, Job, delete_org::DeleteOrg};
use crate::page_of;
use crate::workspace::stats::OrgStats;
use crate::workspace::{Role, events, members, orgs, validate};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org, list_orgs))
        .routes(routes!(get_org, update_org, delete_org))
        .routes(routes!(list_members))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(activity))
        .routes(routes!(stats))
}

/// An organization, with the caller's role in it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01936f0e-8a4b-7c3d-9e2f-0a1b2c3d4e5f", "name": "Acme", "slug": "acme",
    "role": "owner", "created_at": "2026-11-22T08:00:00Z", "updated_at": "2026-11-22T08:00:00Z"
}))]
pub struct OrgView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl OrgView {
    fn of(org: orgs::Org, role: Role) -> Self {
        Self {
            id: org.id,
            name: org.name,
            slug: org.slug,
            role,
            created_at: org.created_at,
            updated_at: org.updated_at,
        }
    }
}

page_of!(OrgPage, OrgView, "A page of organizations.");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme", "slug": "acme"}))]
pub struct CreateOrgRequest {
    /// Trimmed; not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
    /// Unique; lower-case letters, digits and inner hyphens.
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = "^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"
    )]
    pub slug: String,
}

impl<S> Validate<S> for CreateOrgRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("name", validate::name(&mut self.name));
        check.rule("slug", validate::slug(&self.slug));
    }
}

/// Fields to change; at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Inc."}), min_properties = 1)]
pub struct UpdateOrgRequest {
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 100,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 40,
        pattern = "^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"
    )]
    pub slug: Option<String>,
}

impl<S> Validate<S> for UpdateOrgRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        if let Some(name) = &mut self.name {
            check.rule("name", validate::name(name));
        }
        if let Some(slug) = &self.slug {
            check.rule("slug", validate::slug(slug));
        }
        if self.name.is_none() && self.slug.is_none() {
            check.fail("body", "give at least one of: name, slug");
        }
    }
}

/// Create an organization; the caller becomes its owner.
#[utoipa::path(
    post, path = "/orgs", tag = TAG,
    security(("session" = [])),
    request_body = CreateOrgRequest,
    responses(
        (status = 201, description = "Created; the caller is its owner", body = OrgView),
        JsonBody, NoSession, CrossSite,
        (status = 409, description = "The slug is taken", body = crate::error::Problem, content_type = "application/problem+json"),
        InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn create_org(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<CreateOrgRequest>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let mut write = state.db.begin(user.writer()).await?;
    let org = orgs::insert(&mut write, id, &body.name, &body.slug).await?;
    members::insert(&mut write, id, user.id, Role::Owner).await?;
    events::append(
        &mut write,
        id,
        user.id,
        "org.created",
        id,
        json!({"name": org.name}),
    )
    .await?;
    write.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(OrgView::of(org, Role::Owner)),
    )
        .into_response())
}

/// The caller's organizations.
#[utoipa::path(
    get, path = "/orgs", tag = TAG,
    security(("session" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the caller's organizations", body = OrgPage),
        NoSession, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn list_orgs(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<OrgPage>, ApiError> {
    let page = query.map_err(|e| page::query_rejection(&e))?.0.page()?;
    let rows = state
        .db
        .read(&user.caller(), |db| async move {
            orgs::list_of_member(&db, user.id, page.after, page.fetch()).await
        })
        .await?;
    let (rows, next) = page.finish(rows, |r| r.org.id);
    let items = rows
        .into_iter()
        .map(|r| {
            let role = r.role();
            OrgView::of(r.org, role)
        })
        .collect();
    Ok(axum::Json(OrgPage::new(items, next)))
}

/// An organization of the caller's.
#[utoipa::path(
    get, path = "/orgs/{org_id}", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id")),
    responses(
        (status = 200, description = "The organization", body = OrgView),
        NoSession, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn get_org(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<axum::Json<OrgView>, ApiError> {
    let org_id = access.org;
    let org = state
        .db
        .read(&access.user.caller(), |db| async move {
            orgs::find(&db, org_id).await
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(OrgView::of(org, access.role)))
}

/// Rename an organization or change its slug (admins and owners).
#[utoipa::path(
    patch, path = "/orgs/{org_id}", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id")),
    request_body = UpdateOrgRequest,
    responses(
        (status = 200, description = "The updated organization", body = OrgView),
        JsonBody, NoSession, RoleTooLow, NotInOrg,
        (status = 409, description = "The slug is taken", body = crate::error::Problem, content_type = "application/problem+json"),
        InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn update_org(
    State(state): State<AppState>,
    access: OrgAccess,
    AppJson(body): AppJson<UpdateOrgRequest>,
) -> Result<axum::Json<OrgView>, ApiError> {
    let mut write = access.begin(&state, Role::Admin).await?;
    let org = orgs::update(
        &mut write,
        access.org,
        body.name.as_deref(),
        body.slug.as_deref(),
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "org.updated",
        access.org,
        json!({"name": org.name, "slug": org.slug}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok(axum::Json(OrgView::of(org, access.role)))
}

/// A job accepted for later.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"job_id": "01JD3V9W5Q8K2M4N6P8R0T2V4X"}))]
pub struct DeletionAccepted {
    /// Follow it at `GET /api/v1/jobs/{id}`.
    pub job_id: String,
}

/// Delete an organization (owners): it is gone at once; its data is removed in the
/// background, in batches.
#[utoipa::path(
    delete, path = "/orgs/{org_id}", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id")),
    responses(
        (status = 202, description = "Gone now; the deletion job is queued", body = DeletionAccepted),
        NoSession, RoleTooLow, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn delete_org(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<Response, ApiError> {
    let mut write = access.begin(&state, Role::Owner).await?;
    if !orgs::mark_for_deletion(&mut write, access.org).await? {
        return Err(ApiError::NotFound);
    }
    let job = Job::DeleteOrg(DeleteOrg { org_id: access.org });
    let job_id = jobs::enqueue(&mut write, job, Some(access.user.id)).await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DeletionAccepted { job_id }),
    )
        .into_response())
}

/// A member of an organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: OffsetDateTime,
}

impl From<members::Member> for MemberView {
    fn from(m: members::Member) -> Self {
        Self {
            role: m.role(),
            user_id: m.user_id,
            name: m.name,
            email: m.email,
            joined_at: m.created_at,
        }
    }
}

page_of!(MemberPage, MemberView, "A page of members.");

/// The organization's members.
#[utoipa::path(
    get, path = "/orgs/{org_id}/members", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id"), PageQuery),
    responses(
        (status = 200, description = "A page of members", body = MemberPage),
        NoSession, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn list_members(
    State(state): State<AppState>,
    access: OrgAccess,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<MemberPage>, ApiError> {
    let page = query.map_err(|e| page::query_rejection(&e))?.0.page()?;
    let org = access.org;
    let rows = state
        .db
        .read(&access.user.caller(), |db| async move {
            members::list(&db, org, page.after, page.fetch()).await
        })
        .await?;
    let (rows, next) = page.finish(rows, |m| m.user_id);
    Ok(axum::Json(MemberPage::new(
        rows.into_iter().map(MemberView::from).collect(),
        next,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "admin"}))]
pub struct UpdateMemberRequest {
    pub role: Role,
}

impl<S> Validate<S> for UpdateMemberRequest {
    fn validate(&mut self, _: &S, _: &mut Check) {}
}

/// Change a member's role. Admins manage non-owners; owners also make and unmake owners.
/// An organization keeps at least one owner.
#[utoipa::path(
    patch, path = "/orgs/{org_id}/members/{user_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("user_id" = Uuid, Path, description = "The member's user id"),
    ),
    request_body = UpdateMemberRequest,
    responses(
        (status = 200, description = "The member, with the new role", body = MemberView),
        JsonBody, NoSession, RoleTooLow, NotInOrg,
        (status = 409, description = "It would leave the organization without an owner", body = crate::error::Problem, content_type = "application/problem+json"),
        InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn update_member(
    State(state): State<AppState>,
    access: OrgAccess,
    AppJson(body): AppJson<UpdateMemberRequest>,
) -> Result<axum::Json<MemberView>, ApiError> {
    let target = access.id("user_id")?;
    let (mut write, caller, owners) = access.begin_member_change(&state, Role::Admin).await?;
    let current = members::find(&mut *write, access.org, target)
        .await?
        .ok_or(ApiError::NotFound)?
        .role();
    if (current == Role::Owner || body.role == Role::Owner) && caller != Role::Owner {
        return Err(forbidden(Role::Owner));
    }
    if current == Role::Owner && body.role != Role::Owner && owners <= 1 {
        return Err(ApiError::Conflict(
            "an organization keeps at least one owner: make another member owner first".into(),
        ));
    }
    let member = members::set_role(&mut write, access.org, target, body.role)
        .await?
        .ok_or(ApiError::NotFound)?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "member.role_changed",
        target,
        json!({"from": current.as_str(), "to": body.role.as_str()}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok(axum::Json(member.into()))
}

/// Remove a member, or leave (the caller's own id). Admins remove non-owners; owners also
/// remove owners. The last owner cannot leave.
#[utoipa::path(
    delete, path = "/orgs/{org_id}/members/{user_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("user_id" = Uuid, Path, description = "The member's user id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        NoSession, RoleTooLow, NotInOrg,
        (status = 409, description = "The last owner cannot leave", body = crate::error::Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn remove_member(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<StatusCode, ApiError> {
    let target = access.id("user_id")?;
    let leaving = target == access.user.id;
    let needed = if leaving { Role::Viewer } else { Role::Admin };
    let (mut write, caller, owners) = access.begin_member_change(&state, needed).await?;
    let current = members::find(&mut *write, access.org, target)
        .await?
        .ok_or(ApiError::NotFound)?
        .role();
    if current == Role::Owner && !leaving && caller != Role::Owner {
        return Err(forbidden(Role::Owner));
    }
    if current == Role::Owner && owners <= 1 {
        return Err(ApiError::Conflict(
            "the last owner cannot leave: make another member owner, or delete the organization"
                .into(),
        ));
    }
    members::remove(&mut write, access.org, target).await?;
    let kind = if leaving {
        "member.left"
    } else {
        "member.removed"
    };
    events::append(
        &mut write,
        access.org,
        access.user.id,
        kind,
        target,
        json!({}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok(StatusCode::NO_CONTENT)
}

/// An entry of the activity feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    /// Who did it; null once their account is gone.
    pub actor: Option<UserRef>,
    /// `org.created`, `project.updated`, `task.created`, `comment.created`, `member.joined`, ...
    pub kind: String,
    /// The id of what changed.
    pub subject_id: Uuid,
    /// A few fields of the change.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

page_of!(
    EventPage,
    EventView,
    "A page of the activity feed, newest first."
);

/// The organization's activity feed, newest first.
#[utoipa::path(
    get, path = "/orgs/{org_id}/activity", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id"), PageQuery),
    responses(
        (status = 200, description = "A page of events, newest first", body = EventPage),
        NoSession, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn activity(
    State(state): State<AppState>,
    access: OrgAccess,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let page = query.map_err(|e| page::query_rejection(&e))?.0.page()?;
    let org = access.org;
    let rows = state
        .db
        .read(&access.user.caller(), |db| async move {
            events::feed(&db, org, page.after, page.fetch()).await
        })
        .await?;
    let (rows, next) = page.finish(rows, |e| e.id);
    let items = rows
        .into_iter()
        .map(|e| EventView {
            actor: UserRef::of(e.actor_id, e.actor_name),
            id: e.id,
            kind: e.kind,
            subject_id: e.subject_id,
            payload: e.payload,
            created_at: e.created_at,
        })
        .collect();
    Ok(axum::Json(EventPage::new(items, next)))
}

/// The organization's dashboard: tasks per status per project, open tasks per assignee (by
/// id), the member count and the last 7 days of activity. Served from a shared cache; any
/// change to the organization's projects, tasks, members or activity, through any instance,
/// is in the next answer (`computed_at` tells when the answer was computed). While another
/// request recomputes it for longer than `STATS_CACHE_WAIT_MS`, 503 with `Retry-After`.
#[utoipa::path(
    get, path = "/orgs/{org_id}/stats", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id")),
    responses(
        (status = 200, description = "The dashboard", body = OrgStats),
        NoSession, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn stats(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<axum::Json<OrgStats>, ApiError> {
    let stats = state.stats.read(&access.user.caller(), access.org).await?;
    Ok(axum::Json(stats))
}

//! Invitations: an admin invites an email address with a role; a job emails a single-use
//! token; whoever holds the token and is logged in accepts it and becomes a member.

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::orgs::MemberView;
use super::{OrgAccess, TAG, now};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::responses::{
    CrossSite, InvalidFields, JsonBody, NoSession, NotInOrg, RoleTooLow, Unavailable,
};
use crate::error::{ApiError, Problem};
use crate::http::json::{AppJson, Check, Validate};
use crate::http::page::{self, PageQuery};
use crate::http::rate_limit::limited;
use crate::jobs::{self, Job, invitation_email::InvitationEmail};
use crate::page_of;
use crate::rate_limit::Policy;
use crate::workspace::{Role, events, invitations, members, validate};

pub fn router() -> OpenApiRouter<AppState> {
    limited(
        OpenApiRouter::new().routes(routes!(create_invitation, list_invitations)),
        Policy::Invitations,
        Method::POST,
    )
    .routes(routes!(revoke_invitation))
    .routes(routes!(accept_invitation))
}

/// The roles an invitation can give: ownership is handed over by an owner, never invited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvitedRole {
    Admin,
    Member,
    Viewer,
}

impl From<InvitedRole> for Role {
    fn from(r: InvitedRole) -> Self {
        match r {
            InvitedRole::Admin => Role::Admin,
            InvitedRole::Member => Role::Member,
            InvitedRole::Viewer => Role::Viewer,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// `pending`, `accepted`, `revoked` or `expired`.
    #[schema(example = "pending")]
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<invitations::Invitation> for InvitationView {
    fn from(i: invitations::Invitation) -> Self {
        Self {
            status: i.status(now()).to_owned(),
            role: i.role(),
            id: i.id,
            email: i.email,
            expires_at: i.expires_at,
            created_at: i.created_at,
        }
    }
}

page_of!(InvitationPage, InvitationView, "A page of invitations.");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "grace@example.com", "role": "member"}))]
pub struct CreateInvitationRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    pub role: InvitedRole,
}

impl<S> Validate<S> for CreateInvitationRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("email", validate::email(&mut self.email));
    }
}

/// Invite someone by email (admins). The email carries a single-use token, valid 7 days.
#[utoipa::path(
    post, path = "/orgs/{org_id}/invitations", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id")),
    request_body = CreateInvitationRequest,
    responses(
        (status = 201, description = "Created; the email is on its way", body = InvitationView),
        JsonBody, NoSession, RoleTooLow, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn create_invitation(
    State(state): State<AppState>,
    access: OrgAccess,
    AppJson(body): AppJson<CreateInvitationRequest>,
) -> Result<Response, ApiError> {
    let mut write = access.begin(&state, Role::Admin).await?;
    let invitation = invitations::insert(
        &mut write,
        access.org,
        &body.email,
        body.role.into(),
        access.user.id,
    )
    .await?;
    let job = Job::InvitationEmail(InvitationEmail {
        invitation_id: invitation.id,
    });
    jobs::enqueue(&mut write, job, Some(access.user.id)).await?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "invitation.created",
        invitation.id,
        json!({"role": invitation.role}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(InvitationView::from(invitation)),
    )
        .into_response())
}

/// The organization's invitations (admins).
#[utoipa::path(
    get, path = "/orgs/{org_id}/invitations", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id"), PageQuery),
    responses(
        (status = 200, description = "A page of invitations", body = InvitationPage),
        NoSession, RoleTooLow, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn list_invitations(
    State(state): State<AppState>,
    access: OrgAccess,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<InvitationPage>, ApiError> {
    access.require(Role::Admin)?;
    let page = query.map_err(|e| page::query_rejection(&e))?.0.page()?;
    let org = access.org;
    let rows = state
        .db
        .read(&access.user.caller(), |db| async move {
            invitations::list(&db, org, page.after, page.fetch()).await
        })
        .await?;
    let (rows, next) = page.finish(rows, |i| i.id);
    Ok(axum::Json(InvitationPage::new(
        rows.into_iter().map(Into::into).collect(),
        next,
    )))
}

/// Revoke a pending invitation (admins): its token stops working.
#[utoipa::path(
    delete, path = "/orgs/{org_id}/invitations/{id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("id" = Uuid, Path, description = "The invitation's id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        NoSession, RoleTooLow, NotInOrg,
        (status = 409, description = "Accepted or revoked already", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn revoke_invitation(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<StatusCode, ApiError> {
    let id = access.id("id")?;
    let mut write = access.begin(&state, Role::Admin).await?;
    match invitations::revoke(&mut write, access.org, id).await? {
        None => return Err(ApiError::NotFound),
        Some(false) => {
            return Err(ApiError::Conflict(
                "the invitation was accepted or revoked already".into(),
            ));
        }
        Some(true) => {}
    }
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "invitation.revoked",
        id,
        json!({}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}))]
pub struct AcceptInvitationRequest {
    /// The token of the invitation email.
    #[schema(max_length = 128)]
    pub token: String,
}

impl<S> Validate<S> for AcceptInvitationRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        let t = self.token.trim();
        if t.is_empty() || t.len() > 128 {
            check.fail("token", "is not an invitation token");
        }
    }
}

/// The membership an accepted invitation gave.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedInvitation {
    pub org_id: Uuid,
    pub member: MemberView,
}

/// Accept an invitation: the caller becomes a member with the invited role. A token works
/// once; an expired, revoked or used one is 410.
#[utoipa::path(
    post, path = "/invitations/accept", tag = TAG,
    security(("session" = [])),
    request_body = AcceptInvitationRequest,
    responses(
        (status = 200, description = "The caller's new membership", body = AcceptedInvitation),
        JsonBody, NoSession, CrossSite,
        (status = 404, description = "No invitation has this token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller is a member already", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The invitation expired, was revoked, or was used", body = Problem, content_type = "application/problem+json"),
        InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
async fn accept_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<AcceptInvitationRequest>,
) -> Result<axum::Json<AcceptedInvitation>, ApiError> {
    let mut write = state.db.begin(user.writer()).await?;
    let invitation = invitations::claim_by_token(&mut write, body.token.trim())
        .await?
        .ok_or(ApiError::NotFound)?;
    match invitation.status(now()) {
        "pending" => {}
        status => {
            return Err(ApiError::Gone(format!("the invitation is {status}")));
        }
    }
    if crate::workspace::orgs::find(&mut *write, invitation.org_id)
        .await?
        .is_none()
    {
        return Err(ApiError::Gone("the organization is being deleted".into()));
    }
    let member = members::insert(&mut write, invitation.org_id, user.id, invitation.role())
        .await?
        .ok_or_else(|| {
            ApiError::Conflict("you are a member of this organization already".into())
        })?;
    invitations::mark_accepted(&mut write, invitation.id, user.id).await?;
    events::append(
        &mut write,
        invitation.org_id,
        user.id,
        "member.joined",
        user.id,
        json!({"role": invitation.role, "invitation_id": invitation.id}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(invitation.org_id).await;
    Ok(axum::Json(AcceptedInvitation {
        org_id: invitation.org_id,
        member: member.into(),
    }))
}

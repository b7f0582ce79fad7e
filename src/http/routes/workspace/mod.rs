//! The workspace endpoints under `/api/v1`: organizations, members, invitations, projects,
//! tasks, comments and the activity feed.
//!
//! Everything under `/orgs/{org_id}` goes through [`OrgAccess`]: the caller's membership is
//! read first, and a caller who is not a member gets the 404 of an organization that does not
//! exist (its existence is not revealed); a member whose role is too low gets 403. Writes
//! check the role again inside their unit of work, with the membership row locked, so a role
//! changed or removed concurrently cannot slip a write through.

mod invitations;
mod orgs;
mod projects;

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::db::Write;
use crate::error::ApiError;
use crate::workspace::{Role, members};

pub const TAG: &str = "workspace";

pub fn router() -> OpenApiRouter<AppState> {
    orgs::router()
        .merge(invitations::router())
        .merge(projects::router())
}

/// A member of the organization in the path, and their role in it.
#[derive(Debug, Clone)]
pub struct OrgAccess {
    pub user: AuthUser,
    pub org: Uuid,
    pub role: Role,
    ids: HashMap<String, String>,
}

impl FromRequestParts<AppState> for OrgAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let Path(ids) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let org = parse_id(&ids, "org_id")?;
        let role = state
            .db
            .read(&user.caller(), |db| async move {
                members::role_of(&db, org, user.id).await
            })
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(Self {
            user,
            org,
            role,
            ids,
        })
    }
}

fn parse_id(ids: &HashMap<String, String>, name: &str) -> Result<Uuid, ApiError> {
    // A malformed id names nothing: the 404 of an unknown one.
    ids.get(name)
        .and_then(|s| s.parse().ok())
        .ok_or(ApiError::NotFound)
}

impl OrgAccess {
    /// Another id of the path (`project_id`, ...).
    pub fn id(&self, name: &str) -> Result<Uuid, ApiError> {
        parse_id(&self.ids, name)
    }

    /// 403 unless the caller's role is at least `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.at_least(needed) {
            Ok(())
        } else {
            Err(forbidden(needed))
        }
    }

    /// A unit of work for the caller, after checking again, with the membership locked, that
    /// they still hold at least `needed` in the organization.
    /// (The organization's row is share-locked too: its deletion waits for writes in flight,
    /// and writes that come after it see it marked.)
    pub async fn begin(&self, state: &AppState, needed: Role) -> Result<Write, ApiError> {
        self.require(needed)?;
        let mut write = state.db.begin(self.user.writer()).await?;
        self.recheck(&mut write, needed).await?;
        Ok(write)
    }

    /// Like [`begin`](Self::begin), for changes to memberships that may touch owners: the
    /// owners' rows are locked first, in one order (two owners changing members at once queue
    /// instead of deadlocking), and the answer carries the caller's role as locked now (not
    /// as read before, which a concurrent demotion may have made stale) and the owner count.
    pub async fn begin_member_change(
        &self,
        state: &AppState,
        needed: Role,
    ) -> Result<(Write, Role, i64), ApiError> {
        self.require(needed)?;
        let mut write = state.db.begin(self.user.writer()).await?;
        let owners = members::lock_owners(&mut write, self.org).await?;
        let role = self.recheck(&mut write, needed).await?;
        Ok((write, role, owners))
    }

    async fn recheck(&self, write: &mut Write, needed: Role) -> Result<Role, ApiError> {
        match members::role_of_locked(write, self.org, self.user.id).await? {
            None => Err(ApiError::NotFound),
            Some(role) if !role.at_least(needed) => Err(forbidden(needed)),
            Some(role) => Ok(role),
        }
    }
}

pub fn forbidden(needed: Role) -> ApiError {
    ApiError::Forbidden {
        kind: "insufficient-role",
        detail: format!("this needs the role {} or higher", needed.as_str()),
    }
}

/// A user as lists show them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRef {
    pub id: Uuid,
    pub name: String,
}

impl UserRef {
    fn of(id: Option<Uuid>, name: Option<String>) -> Option<Self> {
        Some(Self {
            id: id?,
            name: name?,
        })
    }
}

/// For `#[serde(default, deserialize_with = "nullable")]` on an `Option<Option<T>>` field of a
/// change: absent leaves the value alone (`None`), `null` clears it (`Some(None)`).
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

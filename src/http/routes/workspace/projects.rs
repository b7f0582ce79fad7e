//! Projects, their tasks, and the tasks' comments.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{OrgAccess, TAG, UserRef, nullable};
use crate::app::AppState;
use crate::error::ApiError;
use crate::error::responses::{
    InvalidFields, JsonBody, NoSession, NotInOrg, PreconditionFailed, RoleTooLow, Unavailable,
};
use crate::http::cache::{self, IfMatch};
use crate::http::json::{self, AppJson, Check, Validate};
use crate::http::page::{self, Page, PageQuery};
use crate::page_of;
use crate::workspace::{Role, comments, events, projects, tasks, validate};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(get_task, update_task, delete_task))
        .routes(routes!(create_comment, list_comments))
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

// ---- projects ----

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: String,
    pub created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<projects::Project> for ProjectView {
    fn from(p: projects::Project) -> Self {
        Self {
            id: p.id,
            org_id: p.org_id,
            name: p.name,
            description: p.description,
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

page_of!(ProjectPage, ProjectView, "A page of projects.");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Launch", "description": "Everything for the launch"}))]
pub struct CreateProjectRequest {
    /// Trimmed; not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
}

impl<S> Validate<S> for CreateProjectRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("name", validate::name(&mut self.name));
        if let Some(d) = &self.description {
            check.rule(
                "description",
                validate::text(d, validate::PROJECT_DESCRIPTION_MAX),
            );
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Launch v2"}), min_properties = 1)]
pub struct UpdateProjectRequest {
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
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
}

impl<S> Validate<S> for UpdateProjectRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        if let Some(name) = &mut self.name {
            check.rule("name", validate::name(name));
        }
        if let Some(d) = &self.description {
            check.rule(
                "description",
                validate::text(d, validate::PROJECT_DESCRIPTION_MAX),
            );
        }
        if self.name.is_none() && self.description.is_none() {
            check.fail("body", "give at least one of: name, description");
        }
    }
}

/// Create a project (admins).
#[utoipa::path(
    post, path = "/orgs/{org_id}/projects", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id")),
    request_body = CreateProjectRequest,
    responses(
        (status = 201, description = "Created", body = ProjectView),
        JsonBody, NoSession, RoleTooLow, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn create_project(
    State(state): State<AppState>,
    access: OrgAccess,
    AppJson(body): AppJson<CreateProjectRequest>,
) -> Result<Response, ApiError> {
    let mut write = access.begin(&state, Role::Admin).await?;
    let id = Uuid::now_v7();
    let project = projects::insert(
        &mut write,
        access.org,
        id,
        &body.name,
        body.description.as_deref().unwrap_or(""),
        access.user.id,
    )
    .await?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "project.created",
        id,
        json!({"name": project.name}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok((StatusCode::CREATED, axum::Json(ProjectView::from(project))).into_response())
}

/// The organization's projects, oldest first.
#[utoipa::path(
    get, path = "/orgs/{org_id}/projects", tag = TAG,
    security(("session" = [])),
    params(("org_id" = Uuid, Path, description = "The organization's id"), PageQuery),
    responses(
        (status = 200, description = "A page of projects", body = ProjectPage),
        NoSession, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn list_projects(
    State(state): State<AppState>,
    access: OrgAccess,
    query: QueryResult<PageQuery>,
) -> Result<axum::Json<ProjectPage>, ApiError> {
    let page = query.map_err(|e| page::query_rejection(&e))?.0.page()?;
    let org = access.org;
    let rows = state
        .db
        .read(&access.user.caller(), |db| async move {
            projects::list(&db, org, page.after, page.fetch()).await
        })
        .await?;
    let (rows, next) = page.finish(rows, |p| p.id);
    Ok(axum::Json(ProjectPage::new(
        rows.into_iter().map(Into::into).collect(),
        next,
    )))
}

async fn find_project(
    state: &AppState,
    access: &OrgAccess,
    id: Uuid,
) -> Result<projects::Project, ApiError> {
    let org = access.org;
    state
        .db
        .read(&access.user.caller(), |db| async move {
            projects::find(&db, org, id).await
        })
        .await?
        .ok_or(ApiError::NotFound)
}

/// A project.
#[utoipa::path(
    get, path = "/orgs/{org_id}/projects/{project_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
    ),
    responses(
        (status = 200, description = "The project; its `ETag` is what `If-Match` of a change compares", body = ProjectView,
            headers(("ETag" = String, description = "The project's current version"))),
        NoSession, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn get_project(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<Response, ApiError> {
    let id = access.id("project_id")?;
    cache::tagged_json(&ProjectView::from(find_project(&state, &access, id).await?))
}

/// Rename a project or change its description (admins). With `If-Match` (the `ETag` of the
/// project as read), only if nobody changed it since: otherwise 412 and nothing changes.
#[utoipa::path(
    patch, path = "/orgs/{org_id}/projects/{project_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("If-Match" = Option<String>, Header, description = "The project's `ETag` as read: the change is made only if it is still current (else 412)"),
    ),
    request_body = UpdateProjectRequest,
    responses(
        (status = 200, description = "The updated project", body = ProjectView,
            headers(("ETag" = String, description = "The project's new version"))),
        JsonBody, NoSession, RoleTooLow, NotInOrg, PreconditionFailed, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn update_project(
    State(state): State<AppState>,
    access: OrgAccess,
    if_match: IfMatch,
    AppJson(body): AppJson<UpdateProjectRequest>,
) -> Result<Response, ApiError> {
    let id = access.id("project_id")?;
    let mut write = access.begin(&state, Role::Admin).await?;
    if if_match.is_present() {
        let current = projects::find_locked(&mut write, access.org, id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if_match.check(&cache::tag_of_json(&ProjectView::from(current))?)?;
    }
    let project = projects::update(
        &mut write,
        access.org,
        id,
        body.name.as_deref(),
        body.description.as_deref(),
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "project.updated",
        id,
        json!({"name": project.name}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    cache::tagged_json(&ProjectView::from(project))
}

/// Delete a project with its tasks and their comments (admins).
#[utoipa::path(
    delete, path = "/orgs/{org_id}/projects/{project_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        NoSession, RoleTooLow, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn delete_project(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<StatusCode, ApiError> {
    let id = access.id("project_id")?;
    let mut write = access.begin(&state, Role::Admin).await?;
    if !projects::delete(&mut write, access.org, id).await? {
        return Err(ApiError::NotFound);
    }
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "project.deleted",
        id,
        json!({}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- tasks ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Todo,
    Doing,
    Done,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Todo => "todo",
            Self::Doing => "doing",
            Self::Done => "done",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "doing" => Self::Doing,
            "done" => Self::Done,
            _ => Self::Todo,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    /// A member of the organization; null when unassigned.
    pub assignee: Option<UserRef>,
    /// `YYYY-MM-DD`.
    #[schema(value_type = Option<String>, format = Date)]
    pub due_date: Option<String>,
    pub created_by: Option<Uuid>,
    pub comment_count: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<tasks::Task> for TaskView {
    fn from(t: tasks::Task) -> Self {
        Self {
            id: t.id,
            project_id: t.project_id,
            title: t.title,
            description: t.description,
            status: TaskStatus::parse(&t.status),
            assignee: UserRef::of(t.assignee_id, t.assignee_name),
            due_date: t.due_date.map(validate::format_date),
            created_by: t.created_by,
            comment_count: t.comment_count,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

page_of!(TaskPage, TaskView, "A page of tasks.");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Write the announcement", "status": "todo", "due_date": "2026-12-01"}))]
pub struct CreateTaskRequest {
    /// Trimmed; not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub title: String,
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        max_length = 4000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
    /// `todo` when left out.
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(nullable = false)]
    pub status: Option<TaskStatus>,
    /// A member of the organization.
    pub assignee_id: Option<Uuid>,
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub due_date: Option<String>,
}

impl<S> Validate<S> for CreateTaskRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule(
            "title",
            validate::title(&mut self.title, validate::TITLE_MAX),
        );
        if let Some(d) = &self.description {
            check.rule("description", validate::text(d, validate::TEXT_MAX));
        }
        if let Some(d) = &self.due_date {
            check.rule("due_date", validate::date(d).map(|_| ()));
        }
    }
}

/// Fields to change; at least one. `assignee_id` and `due_date` may be `null` (unassign,
/// no due date).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "doing"}), min_properties = 1)]
pub struct UpdateTaskRequest {
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(
        nullable = false,
        max_length = 4000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "json::non_null")]
    #[schema(nullable = false)]
    pub status: Option<TaskStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub assignee_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = Date)]
    pub due_date: Option<Option<String>>,
}

impl<S> Validate<S> for UpdateTaskRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        if let Some(t) = &mut self.title {
            check.rule("title", validate::title(t, validate::TITLE_MAX));
        }
        if let Some(d) = &self.description {
            check.rule("description", validate::text(d, validate::TEXT_MAX));
        }
        if let Some(Some(d)) = &self.due_date {
            check.rule("due_date", validate::date(d).map(|_| ()));
        }
        if self.title.is_none()
            && self.description.is_none()
            && self.status.is_none()
            && self.assignee_id.is_none()
            && self.due_date.is_none()
        {
            check.fail("body", "give at least one field to change");
        }
    }
}

/// `?status=&assignee=` and the page of a task list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only tasks with this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Only tasks assigned to this user.
    #[param(value_type = Option<Uuid>)]
    assignee: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[param(pattern = "^[0-9a-f]{48}$")]
    cursor: Option<String>,
}

/// Create a task (members).
#[utoipa::path(
    post, path = "/orgs/{org_id}/projects/{project_id}/tasks", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
    ),
    request_body = CreateTaskRequest,
    responses(
        (status = 201, description = "Created", body = TaskView),
        JsonBody, NoSession, RoleTooLow, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn create_task(
    State(state): State<AppState>,
    access: OrgAccess,
    AppJson(body): AppJson<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let project = access.id("project_id")?;
    let due_date = body
        .due_date
        .as_deref()
        .map(validate::date)
        .transpose()
        .map_err(|m| ApiError::invalid("due_date", m))?;
    let mut write = access.begin(&state, Role::Member).await?;
    if projects::find(&mut *write, access.org, project)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound);
    }
    let id = Uuid::now_v7();
    let task = tasks::insert(
        &mut write,
        &tasks::NewTask {
            id,
            org_id: access.org,
            project_id: project,
            title: &body.title,
            description: body.description.as_deref().unwrap_or(""),
            status: body.status.unwrap_or(TaskStatus::Todo).as_str(),
            assignee_id: body.assignee_id,
            due_date,
            created_by: access.user.id,
        },
    )
    .await?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "task.created",
        id,
        json!({"project_id": project, "title": task.title}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok((StatusCode::CREATED, axum::Json(TaskView::from(task))).into_response())
}

/// A project's tasks, oldest first, filtered by status and assignee.
#[utoipa::path(
    get, path = "/orgs/{org_id}/projects/{project_id}/tasks", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        TaskQuery,
    ),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        NoSession, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn list_tasks(
    State(state): State<AppState>,
    access: OrgAccess,
    query: QueryResult<TaskQuery>,
) -> Result<axum::Json<TaskPage>, ApiError> {
    let project = access.id("project_id")?;
    let Query(query) = query.map_err(|e| page::query_rejection(&e))?;
    let page = Page::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let status = query
        .status
        .as_deref()
        .map(|s| {
            tasks::STATUSES
                .iter()
                .find(|known| **known == s)
                .map(|known| TaskStatus::parse(known))
                .ok_or_else(|| ApiError::invalid("status", "must be one of: todo, doing, done"))
        })
        .transpose()?;
    let assignee = query
        .assignee
        .as_deref()
        .map(|a| {
            a.parse::<Uuid>()
                .map_err(|_| ApiError::invalid("assignee", "must be a user id"))
        })
        .transpose()?;
    let org = access.org;
    let rows = state
        .db
        .read(&access.user.caller(), |db| async move {
            // A project of another organization is as unknown as a missing one.
            if projects::find(&db, org, project).await?.is_none() {
                return Ok(None);
            }
            let filter = tasks::Filter {
                status: status.map(TaskStatus::as_str),
                assignee,
            };
            tasks::list(&db, org, project, filter, page.after, page.fetch())
                .await
                .map(Some)
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    let (rows, next) = page.finish(rows, |t| t.id);
    Ok(axum::Json(TaskPage::new(
        rows.into_iter().map(Into::into).collect(),
        next,
    )))
}

/// A task.
#[utoipa::path(
    get, path = "/orgs/{org_id}/projects/{project_id}/tasks/{task_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("task_id" = Uuid, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "The task; its `ETag` is what `If-Match` of a change compares", body = TaskView,
            headers(("ETag" = String, description = "The task's current version"))),
        NoSession, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn get_task(State(state): State<AppState>, access: OrgAccess) -> Result<Response, ApiError> {
    let (project, id) = (access.id("project_id")?, access.id("task_id")?);
    let org = access.org;
    let task = state
        .db
        .read(&access.user.caller(), |db| async move {
            tasks::find(&db, org, project, id).await
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    cache::tagged_json(&TaskView::from(task))
}

/// Change a task (members). With `If-Match` (the `ETag` of the task as read), only if nobody
/// changed it since: otherwise 412 and nothing changes, so two editors cannot silently
/// overwrite each other.
#[utoipa::path(
    patch, path = "/orgs/{org_id}/projects/{project_id}/tasks/{task_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("task_id" = Uuid, Path, description = "The task's id"),
        ("If-Match" = Option<String>, Header, description = "The task's `ETag` as read: the change is made only if it is still current (else 412)"),
    ),
    request_body = UpdateTaskRequest,
    responses(
        (status = 200, description = "The updated task", body = TaskView,
            headers(("ETag" = String, description = "The task's new version"))),
        JsonBody, NoSession, RoleTooLow, NotInOrg, PreconditionFailed, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn update_task(
    State(state): State<AppState>,
    access: OrgAccess,
    if_match: IfMatch,
    AppJson(body): AppJson<UpdateTaskRequest>,
) -> Result<Response, ApiError> {
    let (project, id) = (access.id("project_id")?, access.id("task_id")?);
    let due_date = match &body.due_date {
        None => None,
        Some(None) => Some(None),
        Some(Some(d)) => Some(Some(
            validate::date(d).map_err(|m| ApiError::invalid("due_date", m))?,
        )),
    };
    let change = tasks::Change {
        title: body.title.as_deref(),
        description: body.description.as_deref(),
        status: body.status.map(TaskStatus::as_str),
        assignee_id: body.assignee_id,
        due_date,
    };
    let mut write = access.begin(&state, Role::Member).await?;
    if if_match.is_present() {
        let current = tasks::find_locked(&mut write, access.org, project, id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if_match.check(&cache::tag_of_json(&TaskView::from(current))?)?;
    }
    let task = tasks::update(&mut write, access.org, project, id, &change)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut changed = serde_json::Map::new();
    for (field, given) in [
        ("title", change.title.is_some()),
        ("description", change.description.is_some()),
        ("status", change.status.is_some()),
        ("assignee_id", change.assignee_id.is_some()),
        ("due_date", change.due_date.is_some()),
    ] {
        if given {
            changed.insert(field.into(), json!(true));
        }
    }
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "task.updated",
        id,
        json!({"project_id": project, "status": task.status, "changed": changed}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    cache::tagged_json(&TaskView::from(task))
}

/// Delete a task and its comments (members).
#[utoipa::path(
    delete, path = "/orgs/{org_id}/projects/{project_id}/tasks/{task_id}", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("task_id" = Uuid, Path, description = "The task's id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        NoSession, RoleTooLow, NotInOrg, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn delete_task(
    State(state): State<AppState>,
    access: OrgAccess,
) -> Result<StatusCode, ApiError> {
    let (project, id) = (access.id("project_id")?, access.id("task_id")?);
    let mut write = access.begin(&state, Role::Member).await?;
    if !tasks::delete(&mut write, access.org, project, id).await? {
        return Err(ApiError::NotFound);
    }
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "task.deleted",
        id,
        json!({"project_id": project}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- comments ----

#[derive(Debug, Serialize, ToSchema)]
pub struct CommentView {
    pub id: Uuid,
    pub task_id: Uuid,
    /// Null once the author's account is gone.
    pub author: Option<UserRef>,
    pub body: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<comments::Comment> for CommentView {
    fn from(c: comments::Comment) -> Self {
        Self {
            id: c.id,
            task_id: c.task_id,
            author: UserRef::of(c.author_id, c.author_name),
            body: c.body,
            created_at: c.created_at,
        }
    }
}

page_of!(
    CommentPage,
    CommentView,
    "A page of comments, oldest first."
);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"body": "Draft is in the shared folder."}))]
pub struct CreateCommentRequest {
    /// Not blank; line breaks allowed.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub body: String,
}

impl<S> Validate<S> for CreateCommentRequest {
    fn validate(&mut self, _: &S, check: &mut Check) {
        check.rule("body", validate::body(&self.body));
    }
}

/// Comment on a task (members).
#[utoipa::path(
    post, path = "/orgs/{org_id}/projects/{project_id}/tasks/{task_id}/comments", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("task_id" = Uuid, Path, description = "The task's id"),
    ),
    request_body = CreateCommentRequest,
    responses(
        (status = 201, description = "Created", body = CommentView),
        JsonBody, NoSession, RoleTooLow, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn create_comment(
    State(state): State<AppState>,
    access: OrgAccess,
    AppJson(body): AppJson<CreateCommentRequest>,
) -> Result<Response, ApiError> {
    let (project, task) = (access.id("project_id")?, access.id("task_id")?);
    let mut write = access.begin(&state, Role::Member).await?;
    let comment = comments::insert(
        &mut write,
        access.org,
        project,
        task,
        access.user.id,
        &body.body,
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    events::append(
        &mut write,
        access.org,
        access.user.id,
        "comment.created",
        comment.id,
        json!({"task_id": task}),
    )
    .await?;
    write.commit().await?;
    state.stats.invalidate(access.org).await;
    Ok((StatusCode::CREATED, axum::Json(CommentView::from(comment))).into_response())
}

/// A task's comments, oldest first.
#[utoipa::path(
    get, path = "/orgs/{org_id}/projects/{project_id}/tasks/{task_id}/comments", tag = TAG,
    security(("session" = [])),
    params(
        ("org_id" = Uuid, Path, description = "The organization's id"),
        ("project_id" = Uuid, Path, description = "The project's id"),
        ("task_id" = Uuid, Path, description = "The task's id"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of comments", body = CommentPage),
        NoSession, NotInOrg, InvalidFields, Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(org = %access.org))]
async fn list_comments(
    State(state): State<AppState>,
    access: OrgAccess,
    query: QueryResult<PageQuery>,
) -> Result<axum::Json<CommentPage>, ApiError> {
    let (project, task) = (access.id("project_id")?, access.id("task_id")?);
    let page = query.map_err(|e| page::query_rejection(&e))?.0.page()?;
    let org = access.org;
    let rows = state
        .db
        .read(&access.user.caller(), |db| async move {
            if tasks::find(&db, org, project, task).await?.is_none() {
                return Ok(None);
            }
            comments::list(&db, org, task, page.after, page.fetch())
                .await
                .map(Some)
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    let (rows, next) = page.finish(rows, |c| c.id);
    Ok(axum::Json(CommentPage::new(
        rows.into_iter().map(Into::into).collect(),
        next,
    )))
}

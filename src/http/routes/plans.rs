//! `GET /plans`: the public plan catalog, the anonymous and cacheable read of the product.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::db::Caller;
use crate::error::ApiError;
use crate::error::responses::Unavailable;
use crate::http::cache;
use crate::plans;

pub const TAG: &str = "plans";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_plans))
}

/// A pricing tier.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "team", "name": "Team", "description": "For teams that plan their work together every day.",
    "monthly_price_cents": 1200, "currency": "USD", "max_members": 25, "max_projects": 50,
    "storage_bytes": 107374182400_i64, "features": ["Everything in Free", "Email support"]
}))]
pub struct PlanView {
    /// Stable key of the plan.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Per month, in the currency's minor unit (cents). 0 for Enterprise means "ask us".
    pub monthly_price_cents: i32,
    /// ISO 4217.
    pub currency: String,
    /// Null: no limit.
    pub max_members: Option<i32>,
    /// Null: no limit.
    pub max_projects: Option<i32>,
    /// Null: no limit.
    pub storage_bytes: Option<i64>,
    pub features: Vec<String>,
}

impl From<plans::Plan> for PlanView {
    fn from(p: plans::Plan) -> Self {
        Self {
            id: p.id,
            name: p.name,
            description: p.description,
            monthly_price_cents: p.monthly_price_cents,
            currency: p.currency,
            max_members: p.max_members,
            max_projects: p.max_projects,
            storage_bytes: p.storage_bytes,
            features: p.features,
        }
    }
}

/// The plan catalog, cheapest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanCatalog {
    pub plans: Vec<PlanView>,
}

/// The plan catalog: every pricing tier with its price and limits. Anonymous; the same for
/// everyone, so shared caches (the edge) keep it for `HTTP_CACHE_PLANS_MAX_AGE_SECS`.
#[utoipa::path(
    get, path = "/plans", tag = TAG,
    responses(
        (status = 200, description = "The plans", body = PlanCatalog,
            headers(
                ("ETag" = String, description = "The catalog's version"),
                ("Cache-Control" = String, description = "public, max-age=…, stale-while-revalidate=…"),
            )),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_plans(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Anonymous: from a replica (a replica too far behind is skipped, see `db`).
    let rows = state
        .db
        .read(
            &Caller::Anonymous,
            |db| async move { plans::list(&db).await },
        )
        .await?;
    let catalog = PlanCatalog {
        plans: rows.into_iter().map(Into::into).collect(),
    };
    let http = &state.config.http;
    let mut response = cache::tagged_json(&catalog)?;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        cache::public(http.plans_max_age, http.stale_while_revalidate),
    );
    Ok(response.into_response())
}

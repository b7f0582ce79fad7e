//! The plan catalog: the pricing tiers of the product. All SQL on `plans`.

use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    pub monthly_price_cents: i32,
    pub currency: String,
    pub max_members: Option<i32>,
    pub max_projects: Option<i32>,
    pub storage_bytes: Option<i64>,
    pub features: Vec<String>,
}

/// Every plan, in the catalog's order. A handful of rows: no paging.
#[tracing::instrument(skip_all)]
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Plan>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, description, monthly_price_cents, currency, max_members,
                max_projects, storage_bytes, features
           from plans order by position",
    )
    .fetch_all(db)
    .await
}

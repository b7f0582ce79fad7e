//! `scaleout migrate`: applies `migrations/` and the job queue's schema to the primary, once
//! per deploy. `serve` and `worker` never migrate, so a rolling deploy cannot race two
//! migrators.

use crate::config::DatabaseConfig;
use crate::db;

/// The subcommand, and the `process` label of this process' logs and metrics.
pub const NAME: &str = "migrate";

pub async fn run(config: DatabaseConfig) -> anyhow::Result<()> {
    // One connection: migrations run in sequence, and a deploy step should not hold more.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy(config.primary_url.expose())
        .map_err(|e| anyhow::anyhow!("cannot connect to the primary: {e}"))?;
    db::answers(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the primary: {e}"))?;
    db::migrate(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
    // The job queue's own schema (`apalis`), from apalis-postgres' migrations.
    apalis_postgres::PostgresStorage::setup(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("job queue migration failed: {e}"))?;
    tracing::info!("migrations applied");
    pool.close().await;
    Ok(())
}

//! Postgres access: a read-write pool on the primary and a read-only pool on the replica.
//!
//! Call sites choose explicitly: `db.write()` for anything that changes data, `db.read_primary()`
//! for the rare read that must be fresh. Read routing by replica health and by the caller's last
//! write position builds on these two pools.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

/// Which server a pool talks to; a label for logs, metrics and `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Both pools. Cheap to clone (pools are reference-counted).
#[derive(Debug, Clone)]
pub struct Db {
    primary: PgPool,
    replica: PgPool,
}

impl Db {
    /// Builds both pools without connecting: the process starts (and `/health` answers) while a
    /// database is still coming up; `/ready` tells the load balancer when it can take traffic.
    pub fn connect_lazy(config: &DatabaseConfig, instance_id: &str) -> Result<Self, sqlx::Error> {
        let primary =
            pool_options(config, config.primary_pool_max).connect_lazy_with(connect_options(
                config,
                config.primary_url.expose(),
                instance_id,
                Role::Primary,
            )?);
        let replica =
            pool_options(config, config.replica_pool_max).connect_lazy_with(connect_options(
                config,
                config.replica_url.expose(),
                instance_id,
                Role::Replica,
            )?);
        Ok(Self { primary, replica })
    }

    /// The primary: every write, and reads inside a write's transaction.
    pub fn write(&self) -> &PgPool {
        &self.primary
    }

    /// The primary, for a read that must see every committed write.
    pub fn read_primary(&self) -> &PgPool {
        &self.primary
    }

    /// The replica pool itself, whatever its health: for readiness checks and tests.
    pub fn replica(&self) -> &PgPool {
        &self.replica
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        tokio::join!(self.primary.close(), self.replica.close());
    }
}

fn pool_options(config: &DatabaseConfig, max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        // Zero idle minimum: instances × pool size is sized against the server's limit, and an
        // idle instance should not hold connections another could use.
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .test_before_acquire(true)
}

fn connect_options(
    config: &DatabaseConfig,
    url: &str,
    instance_id: &str,
    role: Role,
) -> Result<PgConnectOptions, sqlx::Error> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let mut options: PgConnectOptions = url.parse()?;
    options = options
        .application_name(&format!("{instance_id}/{}", role.as_str()))
        .options([("statement_timeout", statement_timeout.as_str())]);
    if role == Role::Replica {
        // Enforced by the server for every transaction on these connections: a write that
        // reaches the replica pool by mistake fails loudly instead of being silently lost.
        options = options.options([("default_transaction_read_only", "on")]);
    }
    Ok(options)
}

/// Applies `migrations/` to the primary. Only `scaleout migrate` calls this, once per deploy:
/// instances never migrate implicitly, so a rolling deploy cannot race two migrators.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

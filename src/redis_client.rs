//! The shared Redis connection: rate-limit counters, read-your-writes positions and cache
//! entries live here so that every instance sees the same values.

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::RedisConfig;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A multiplexed connection, opened on first use and re-opened by the manager after failures.
#[derive(Clone)]
pub struct RedisClient {
    client: redis::Client,
    config: RedisConfig,
    conn: Arc<OnceCell<ConnectionManager>>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient").finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Parses the URL only: like the database pools, Redis may come up after the process.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        // Error series exist from the start at zero, so dashboards and alerts see "no errors"
        // rather than "no data".
        for kind in ["error", "timeout", "connect"] {
            metrics::counter!("redis_errors_total", "kind" => kind).absolute(0);
        }
        Ok(Self {
            client: redis::Client::open(config.url.expose())?,
            config: config.clone(),
            conn: Arc::new(OnceCell::new()),
        })
    }

    /// The shared connection, connecting first if needed, within the configured timeout.
    pub async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let timeout = self.config.timeout;
        let init = async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // Fail fast and let the next call reconnect: a request must not wait out a
                // retry loop while Redis is away.
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), config).await
        };
        let conn = tokio::time::timeout(timeout, self.conn.get_or_try_init(|| init))
            .await
            .map_err(|_| {
                metrics::counter!("redis_errors_total", "kind" => "connect").increment(1);
                RedisError::Timeout(timeout)
            })??;
        Ok(conn.clone())
    }

    /// Runs one command (or pipeline) within the configured timeout. Every command passes
    /// here, so this is where Redis latency and errors are measured, and where the `redis`
    /// client span of a trace is made.
    pub async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let timeout = self.config.timeout;
        let start = std::time::Instant::now();
        let span = tracing::info_span!("redis", otel.kind = "client");
        let result =
            tracing::Instrument::instrument(tokio::time::timeout(timeout, command), span).await;
        metrics::histogram!("redis_command_duration_seconds").record(start.elapsed().as_secs_f64());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                metrics::counter!("redis_errors_total", "kind" => "error").increment(1);
                Err(e.into())
            }
            Err(_) => {
                metrics::counter!("redis_errors_total", "kind" => "timeout").increment(1);
                Err(RedisError::Timeout(timeout))
            }
        }
    }

    /// `PING`, bounded by the configured timeout: the readiness check.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await?;
        Ok(())
    }
}

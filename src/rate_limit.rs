//! Fixed-window counters in Redis, shared by every instance: a limit holds for the whole
//! deployment, not per process (three instances do not triple the allowance).

use std::time::Duration;

use crate::redis_client::{RedisClient, RedisError};

/// A counter key and its limit within a window.
#[derive(Debug, Clone)]
pub struct Limit {
    pub key: String,
    pub max: u64,
    pub window: Duration,
}

impl Limit {
    /// Counts one attempt and says whether it is over the limit (with the seconds until the
    /// window resets). Counting before the work, not after, means concurrent attempts cannot
    /// all slip under the limit while the first ones are still being checked.
    pub async fn hit(&self, redis: &RedisClient) -> Result<Option<u64>, RedisError> {
        let mut conn = redis.conn().await?;
        let secs = self.window.as_secs().max(1);
        let (count, ttl): (u64, i64) = redis
            .bounded(
                redis::pipe()
                    .atomic()
                    .incr(&self.key, 1)
                    .cmd("EXPIRE")
                    .arg(&self.key)
                    .arg(secs)
                    .arg("NX")
                    .ignore()
                    .ttl(&self.key)
                    .query_async(&mut conn),
            )
            .await?;
        Ok((count > self.max).then(|| ttl.max(1) as u64))
    }

    /// Gives back one attempt (a successful one, that should not count against an address).
    pub async fn release(&self, redis: &RedisClient) -> Result<(), RedisError> {
        let mut conn = redis.conn().await?;
        redis
            .bounded(
                redis::cmd("DECR")
                    .arg(&self.key)
                    .query_async::<()>(&mut conn),
            )
            .await
    }

    pub async fn reset(&self, redis: &RedisClient) -> Result<(), RedisError> {
        let mut conn = redis.conn().await?;
        redis
            .bounded(
                redis::cmd("DEL")
                    .arg(&self.key)
                    .query_async::<()>(&mut conn),
            )
            .await
    }
}

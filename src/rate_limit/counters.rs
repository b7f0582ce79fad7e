//! Counters in Redis for the account routes' own limits (failed password checks, email
//! changes, password resets): a fixed-window count ([`Limit`]) and a doubling wait past a
//! ceiling ([`Backoff`]). Shared by every instance: a limit holds for the whole deployment,
//! not per process (three instances do not triple the allowance).

use std::time::Duration;

use crate::redis_client::{RedisClient, RedisError};

/// A counter key and its limit within a window.
#[derive(Debug, Clone)]
pub struct Limit {
    pub key: String,
    pub max: u64,
    pub window: Duration,
}

/// KEYS: the counter. ARGV: the window in seconds. Returns the count and the seconds left.
/// The window starts at the first hit: the expiry is set only on a counter without one (what
/// `EXPIRE ... NX` does, which needs Redis 7; a script works on 6 too, atomically).
const HIT_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

impl Limit {
    /// Counts one attempt and says whether it is over the limit (with the seconds until the
    /// window resets). Counting before the work, not after, means concurrent attempts cannot
    /// all slip under the limit while the first ones are still being checked.
    pub async fn hit(&self, redis: &RedisClient) -> Result<Option<u64>, RedisError> {
        let mut conn = redis.conn().await?;
        let secs = self.window.as_secs().max(1);
        let (count, ttl): (u64, i64) = redis
            .bounded(
                redis::Script::new(HIT_SCRIPT)
                    .key(&self.key)
                    .arg(secs)
                    .invoke_async(&mut conn),
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

/// A ceiling that slows attempts down instead of refusing them until a window ends: up to
/// `after` attempts within `window` pass freely; past it, one attempt may pass per wait, and
/// each attempt that passes doubles the next wait (from `base`, at most `max`). Attempts
/// refused while waiting do not count, so hammering does not lengthen the wait: the owner of
/// an account under a distributed attack still gets in once a wait is over, while the attacker
/// gets one guess per wait.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub key: String,
    pub after: u64,
    pub window: Duration,
    pub base: Duration,
    pub max: Duration,
}

/// KEYS: the attempt counter, the wait's gate. ARGV: window ms, after, base ms, max ms.
/// Returns 0 when the attempt may go ahead, else the milliseconds until the gate opens.
const BACKOFF_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local over = n - tonumber(ARGV[2])
if over <= 0 then return 0 end
local wait = math.min(tonumber(ARGV[3]) * 2 ^ math.min(over - 1, 40), tonumber(ARGV[4]))
if redis.call('SET', KEYS[2], '1', 'PX', math.max(1, math.floor(wait)), 'NX') then
  return 0
end
redis.call('DECR', KEYS[1])
return math.max(1, redis.call('PTTL', KEYS[2]))
";

impl Backoff {
    fn gate(&self) -> String {
        format!("{}:gate", self.key)
    }

    /// Counts one attempt; `Some(seconds)` when it must wait that long first. Atomic (one
    /// script), so concurrent attempts past the ceiling get one pass per wait between them.
    pub async fn hit(&self, redis: &RedisClient) -> Result<Option<u64>, RedisError> {
        let mut conn = redis.conn().await?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let wait_ms: u64 = redis
            .bounded(
                redis::Script::new(BACKOFF_SCRIPT)
                    .key(&self.key)
                    .key(self.gate())
                    .arg(ms(self.window))
                    .arg(self.after)
                    .arg(ms(self.base))
                    .arg(ms(self.max))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok((wait_ms > 0).then(|| wait_ms.div_ceil(1000)))
    }

    /// Gives back one attempt that passed but was never checked (the check itself failed:
    /// no hashing slot, a dependency down), so an outage does not push the account into
    /// its backoff.
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

    /// Forgets the attempts and any wait (the right password was given).
    pub async fn reset(&self, redis: &RedisClient) -> Result<(), RedisError> {
        let mut conn = redis.conn().await?;
        redis
            .bounded(
                redis::cmd("DEL")
                    .arg(&self.key)
                    .arg(self.gate())
                    .query_async::<()>(&mut conn),
            )
            .await
    }
}

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

// ---------------------------------------------------------------------------------------------
// Request rate limits: GCRA in Redis, one decision per script call, shared by every instance.
//
// Written here rather than taken from a crate: the Redis GCRA crates (redis-rate,
// tower-rate-limit-redis, throttle-kit) each open their own connection or bring their own
// tower layer, so none goes through `RedisClient::bounded` (the deadline every Redis call here
// has), none reports what the draft headers need (remaining and reset) together with the
// decision, and none has a fallback for an outage. The algorithm itself is a dozen lines of Lua.
// The in-memory limiter used while Redis is away is `governor`'s.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::rate_limits::{PolicyLimit, RateLimitsConfig};

/// KEYS: the key's theoretical arrival time (TAT, Unix microseconds). ARGV: the emission
/// interval (µs: the window over the quota), the quota (the burst: how many may pass at once).
/// Returns {allowed (1|0), remaining, µs until the quota is whole again, µs until the next
/// request may pass (0 when allowed)}.
///
/// The clock is Redis' own (`TIME`), not the instances': instances whose clocks disagree still
/// share one timeline, which is what makes the limit hold for the fleet. Microseconds keep
/// large quotas exact (a 60 s window over 100 000 requests is 600 µs each); Lua's numbers are
/// doubles, exact to 2^53, and the TAT is written with `%.0f` because Lua's default number
/// format keeps only 14 digits.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > span then
  return {0, 0, tat - now, new_tat - span - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((span - (new_tat - now)) / interval), new_tat - now, 0}
";

/// Hashed once: `invoke_async` sends `EVALSHA` (and the script itself only when Redis does not
/// know it yet, after a restart), so a decision is one round trip carrying a 40-byte hash.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));

/// The limits of the API, each a quota per window (see `config::rate_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Every API request of a client without a session, by address.
    Anonymous,
    /// Every API request of a signed-in user, by account.
    User,
    Signup,
    Login,
    /// Password checks: reset (request and confirm), change, account deletion.
    Password,
    Uploads,
    Invitations,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Self::Anonymous,
        Self::User,
        Self::Signup,
        Self::Login,
        Self::Password,
        Self::Uploads,
        Self::Invitations,
    ];

    /// The name in headers, keys and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User => "user",
            Self::Signup => "signup",
            Self::Login => "login",
            Self::Password => "password",
            Self::Uploads => "uploads",
            Self::Invitations => "invitations",
        }
    }

    /// Whether a route under this policy counts its callers by client address even when they
    /// are signed in. Signup and login are for callers without an account to speak for them:
    /// counted by the session's account, each signup's new session would bring a fresh
    /// allowance for the next. (The password policy counts by account, except on the reset
    /// routes, which ask for it by address: `http::rate_limit::RoutePolicy::by_address`.)
    pub fn by_address(self) -> bool {
        matches!(self, Self::Signup | Self::Login)
    }

    /// What the policy does while Redis is away. Signup and login fail closed: they are what
    /// credential stuffing and account farming hammer, and a per-instance allowance would
    /// multiply by the instances an attacker spreads over. Everything else keeps being served
    /// under a per-instance limiter: an outage of the limiter's store must not take the
    /// product down with it.
    pub fn on_outage(self) -> Outage {
        match self {
            Self::Signup | Self::Login => Outage::FailClosed,
            _ => Outage::Local,
        }
    }

    fn limit(self, config: &RateLimitsConfig) -> PolicyLimit {
        let p = &config.policies;
        match self {
            Self::Anonymous => p.anonymous,
            Self::User => p.user,
            Self::Signup => p.signup,
            Self::Login => p.login,
            Self::Password => p.password,
            Self::Uploads => p.uploads,
            Self::Invitations => p.invitations,
        }
    }
}

/// A policy's choice while Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// 503 with `Retry-After`: nothing passes unchecked.
    FailClosed,
    /// A limiter in this instance's memory at the policy's quota over the instance count.
    Local,
}

/// One decision, with what the `RateLimit` header reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that may still pass at once after this one.
    pub remaining: u64,
    /// Seconds until the whole quota is available again.
    pub reset_secs: u64,
    /// When refused: seconds until a request may pass (at least 1).
    pub retry_after_secs: u64,
}

/// What one check came to.
#[derive(Debug, Clone, Copy)]
pub enum Verdict {
    /// Decided, by Redis or (during an outage) by the local limiter; `quota` and `window_secs`
    /// are what was applied (the local quota is a share of the policy's).
    Decided {
        decision: Decision,
        quota: u64,
        window_secs: u64,
    },
    /// Redis is away and the policy fails closed.
    Unavailable { retry_after_secs: u64 },
}

type LocalLimiter = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

/// How long after a failed Redis call decisions are made locally without asking Redis again:
/// while Redis hangs, each request would otherwise wait out the Redis timeout first.
const OUTAGE_HOLD_MS: u64 = 1_000;

/// Past this many keys, the local limiters forget the keys whose allowance is whole again.
const LOCAL_KEYS_SWEEP_AT: usize = 10_000;

/// The API's rate limiter: policies from configuration, decisions in Redis, a local limiter
/// per policy for outages. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisClient,
    config: RateLimitsConfig,
    local: Vec<(Policy, LocalLimiter, u64)>,
    /// Milliseconds since `epoch` until which Redis is considered away.
    redis_away_until: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The local share of a limit: the quota over the instances (at least 1), in the same window.
fn local_quota(limit: PolicyLimit, instances: u32) -> (Quota, u64) {
    let share = (limit.quota / instances.max(1)).max(1);
    let period = limit.window / share;
    let burst = NonZeroU32::new(share).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst);
    (quota, u64::from(share))
}

impl RateLimiter {
    pub fn new(config: &RateLimitsConfig, redis: RedisClient) -> Self {
        for policy in Policy::ALL {
            for result in RESULTS {
                metrics::counter!("rate_limit_decisions_total", "policy" => policy.name(), "result" => result)
                    .absolute(0);
            }
        }
        let local = Policy::ALL
            .iter()
            .map(|&policy| {
                let (quota, share) = local_quota(policy.limit(config), config.instances);
                (
                    policy,
                    DefaultKeyedRateLimiter::keyed(quota).with_middleware(),
                    share,
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                redis,
                config: config.clone(),
                local,
                redis_away_until: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// The policy's configured quota and window.
    pub fn limit(&self, policy: Policy) -> PolicyLimit {
        policy.limit(&self.inner.config)
    }

    /// Counts one request of `subject` (an address or account key) under `policy`.
    pub async fn check(&self, policy: Policy, subject: &str) -> Verdict {
        let limit = self.limit(policy);
        let window_secs = limit.window.as_secs().max(1);
        let result = if self.redis_away() {
            None
        } else {
            match gcra(&self.inner.redis, policy, subject, limit).await {
                Ok(decision) => Some(decision),
                Err(e) => {
                    tracing::warn!(error = %e, policy = policy.name(), "rate limit: redis unavailable, deciding locally");
                    self.mark_redis_away();
                    None
                }
            }
        };
        if let Some(decision) = result {
            count(
                policy,
                if decision.allowed {
                    "allowed"
                } else {
                    "limited"
                },
            );
            return Verdict::Decided {
                decision,
                quota: u64::from(limit.quota),
                window_secs,
            };
        }
        match policy.on_outage() {
            Outage::FailClosed => {
                count(policy, "unavailable");
                Verdict::Unavailable {
                    retry_after_secs: OUTAGE_HOLD_MS.div_ceil(1000),
                }
            }
            Outage::Local => {
                let decision = self.local(policy, subject);
                count(
                    policy,
                    if decision.allowed {
                        "fallback_allowed"
                    } else {
                        "fallback_limited"
                    },
                );
                let share = self
                    .inner
                    .local
                    .iter()
                    .find(|(p, ..)| *p == policy)
                    .map_or(1, |(.., share)| *share);
                Verdict::Decided {
                    decision,
                    quota: share,
                    window_secs,
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn redis_away(&self) -> bool {
        self.now_ms() < self.inner.redis_away_until.load(Ordering::Relaxed)
    }

    fn mark_redis_away(&self) {
        self.inner
            .redis_away_until
            .store(self.now_ms() + OUTAGE_HOLD_MS, Ordering::Relaxed);
    }

    fn local(&self, policy: Policy, subject: &str) -> Decision {
        let Some((_, limiter, _)) = self.inner.local.iter().find(|(p, ..)| *p == policy) else {
            return Decision {
                allowed: true,
                remaining: 0,
                reset_secs: 0,
                retry_after_secs: 0,
            };
        };
        if limiter.len() > LOCAL_KEYS_SWEEP_AT {
            limiter.retain_recent();
        }
        match limiter.check_key(&subject.to_owned()) {
            Ok(state) => Decision {
                allowed: true,
                remaining: u64::from(state.remaining_burst_capacity()),
                // A local decision is a stopgap: its reset is not worth a second computation.
                reset_secs: 0,
                retry_after_secs: 0,
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: wait.as_secs().max(1),
                    retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
                }
            }
        }
    }
}

const RESULTS: [&str; 5] = [
    "allowed",
    "limited",
    "fallback_allowed",
    "fallback_limited",
    "unavailable",
];

fn count(policy: Policy, result: &'static str) {
    metrics::counter!("rate_limit_decisions_total", "policy" => policy.name(), "result" => result)
        .increment(1);
}

/// One GCRA decision in Redis: one `EVALSHA`, atomic, so concurrent requests through any
/// instance are ordered by Redis and none slips past the quota.
async fn gcra(
    redis: &RedisClient,
    policy: Policy,
    subject: &str,
    limit: PolicyLimit,
) -> Result<Decision, RedisError> {
    let mut conn = redis.conn().await?;
    let window_us = u64::try_from(limit.window.as_micros()).unwrap_or(u64::MAX);
    // Whole microseconds, rounded up: the quota may come out a hair under over a window,
    // never over.
    let interval_us = window_us.div_ceil(u64::from(limit.quota)).max(1);
    let (allowed, remaining, reset_us, retry_us): (u8, u64, u64, u64) = redis
        .bounded(
            GCRA.key(format!("rl:{}:{subject}", policy.name()))
                .arg(interval_us)
                .arg(limit.quota)
                .invoke_async(&mut conn),
        )
        .await?;
    Ok(Decision {
        allowed: allowed == 1,
        remaining,
        reset_secs: reset_us.div_ceil(1_000_000),
        retry_after_secs: retry_us.div_ceil(1_000_000).max(u64::from(allowed == 0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(quota: u32, secs: u64) -> PolicyLimit {
        PolicyLimit {
            quota,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_local_share_is_the_quota_over_the_instances_at_least_one() {
        assert_eq!(local_quota(limit(300, 60), 3).1, 100);
        assert_eq!(local_quota(limit(10, 600), 1).1, 10);
        assert_eq!(local_quota(limit(2, 60), 3).1, 1);
        let (quota, _) = local_quota(limit(6, 60), 3);
        assert_eq!(quota.burst_size().get(), 2);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(30));
    }

    #[test]
    fn signup_and_login_fail_closed_and_the_rest_fall_back_locally() {
        let closed: Vec<_> = Policy::ALL
            .into_iter()
            .filter(|p| p.on_outage() == Outage::FailClosed)
            .collect();
        assert_eq!(closed, [Policy::Signup, Policy::Login]);
    }
}

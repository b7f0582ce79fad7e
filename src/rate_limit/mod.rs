//! Rate limits, decided in Redis and shared by every instance: a limit holds for the whole
//! deployment, not per process (three instances do not triple the allowance).
//!
//! The API's request policies ([`RateLimiter`], [`Policy`]) are GCRA: one decision per script
//! call, here; while Redis is away, a limiter in each instance's memory decides instead
//! (`local`). The account routes' older counters (failed password checks, email changes) are
//! in `counters`.
//!
//! Written here rather than taken from a crate: the Redis GCRA crates (redis-rate,
//! tower-rate-limit-redis, throttle-kit) each open their own connection or bring their own
//! tower layer, so none goes through `RedisClient::bounded` (the deadline every Redis call here
//! has), none reports what the draft headers need (remaining and reset) together with the
//! decision, and none has a fallback for an outage. The algorithm itself is a dozen lines of Lua.
//! The in-memory limiter used while Redis is away is `governor`'s.

mod counters;
mod local;

pub use counters::{Backoff, Limit};

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::rate_limits::{PolicyLimit, RateLimitsConfig};
use crate::redis_client::{RedisClient, RedisError};

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

/// How long after a failed Redis call decisions are made locally without asking Redis again:
/// while Redis hangs, each request would otherwise wait out the Redis timeout first.
const OUTAGE_HOLD_MS: u64 = 1_000;

/// The API's rate limiter: policies from configuration, decisions in Redis, a local limiter
/// per policy for outages. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisClient,
    config: RateLimitsConfig,
    local: Vec<(Policy, local::Local)>,
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
                (
                    policy,
                    local::Local::new(policy.limit(config), config.instances),
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
        // The hold spares the policies that have a local fallback the Redis timeout; the ones
        // that fail closed ask Redis every time, so one slow answer refuses that request only,
        // not a whole second of signups and logins.
        let result = if self.redis_away() && policy.on_outage() == Outage::Local {
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
                let Some((_, local)) = self.inner.local.iter().find(|(p, _)| *p == policy) else {
                    unreachable!("every policy has a local limiter");
                };
                let decision = local.check(subject);
                count(
                    policy,
                    if decision.allowed {
                        "fallback_allowed"
                    } else {
                        "fallback_limited"
                    },
                );
                Verdict::Decided {
                    decision,
                    quota: local.share,
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

    #[test]
    fn signup_and_login_fail_closed_and_the_rest_fall_back_locally() {
        let closed: Vec<_> = Policy::ALL
            .into_iter()
            .filter(|p| p.on_outage() == Outage::FailClosed)
            .collect();
        assert_eq!(closed, [Policy::Signup, Policy::Login]);
    }
}

//! The application cache (`scaleout serve`; `scaleout worker` invalidates): aggregates kept in Redis, cache-aside, shared by
//! every instance (see `src/cache.rs`).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CACHE_REDIS_URL` | `REDIS_URL` | The Redis of cache entries: may be another server than the sessions' (one that evicts, `allkeys-lru`) |
//! | `STATS_CACHE_ENABLED` | `true` | Serve `GET /orgs/{id}/stats` through the Redis cache; `false` computes every read from the database (for comparisons) |
//! | `STATS_CACHE_TTL_SECS` | `60` | How long a computed entry is fresh, before jitter |
//! | `STATS_CACHE_JITTER_PERCENT` | `20` | Each entry's freshness is lengthened by a random 0..this percent, so entries filled together do not expire together |
//! | `STATS_CACHE_STALE_SECS` | `30` | After its freshness, an entry is still served while one request recomputes it (stale-while-revalidate); an invalidated entry never is |
//! | `STATS_CACHE_LOCK_MS` | `5000` | Lifetime of the recompute lock: at most one recompute per entry runs within it |
//! | `STATS_CACHE_WAIT_MS` | `2000` | How long a read waits for another's recompute; past it the read gets the stale value, else 503 with Retry-After (it never runs the aggregate itself) |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, RedisConfig, Secret, Source, Var, check_scheme};

pub const VARS: &[Var] = &[
    Var {
        name: "CACHE_REDIS_URL",
        default: Fallback::Derived("REDIS_URL"),
        about: "The Redis of cache entries: may be another server than the sessions' (one that evicts, `allkeys-lru`)",
    },
    Var {
        name: "STATS_CACHE_ENABLED",
        default: Fallback::Value("true"),
        about: "Serve `GET /orgs/{id}/stats` through the Redis cache; `false` computes every read from the database (for comparisons)",
    },
    Var {
        name: "STATS_CACHE_TTL_SECS",
        default: Fallback::Value("60"),
        about: "How long a computed entry is fresh, before jitter",
    },
    Var {
        name: "STATS_CACHE_JITTER_PERCENT",
        default: Fallback::Value("20"),
        about: "Each entry's freshness is lengthened by a random 0..this percent, so entries filled together do not expire together",
    },
    Var {
        name: "STATS_CACHE_STALE_SECS",
        default: Fallback::Value("30"),
        about: "After its freshness, an entry is still served while one request recomputes it (stale-while-revalidate); an invalidated entry never is",
    },
    Var {
        name: "STATS_CACHE_LOCK_MS",
        default: Fallback::Value("5000"),
        about: "Lifetime of the recompute lock: at most one recompute per entry runs within it",
    },
    Var {
        name: "STATS_CACHE_WAIT_MS",
        default: Fallback::Value("2000"),
        about: "How long a read waits for another's recompute; past it the read gets the stale value, else 503 with Retry-After (it never runs the aggregate itself)",
    },
];

/// One cache's behaviour: freshness, jitter, the stale window and the recompute lock.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Where the entries live; `REDIS_URL`'s server unless set, with its timeout.
    pub redis: RedisConfig,
    pub enabled: bool,
    pub ttl: Duration,
    /// 0..=100: the most an entry's freshness is lengthened, in percent of `ttl`.
    pub jitter_percent: u32,
    pub stale: Duration,
    pub lock: Duration,
    pub wait: Duration,
}

impl CacheConfig {
    /// `redis` is the shared Redis' configuration: the default server, and the timeout.
    pub fn from_source(source: &dyn Source, redis: &RedisConfig) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        let url = match r.raw("CACHE_REDIS_URL") {
            Some(url) => {
                check_scheme("CACHE_REDIS_URL", &url, &["redis", "rediss"])?;
                Secret::new(url)
            }
            None => redis.url.clone(),
        };
        let jitter_percent: u32 = r.parse("STATS_CACHE_JITTER_PERCENT")?;
        if jitter_percent > 100 {
            return Err(ConfigError {
                var: "STATS_CACHE_JITTER_PERCENT",
                problem: "must be between 0 and 100".into(),
            });
        }
        let config = Self {
            // The same CA bundle (REDIS_CA_FILE): one private CA signs both servers, if any.
            redis: RedisConfig {
                url,
                timeout: redis.timeout,
                ca_file: redis.ca_file.clone(),
            },
            enabled: r.parse("STATS_CACHE_ENABLED")?,
            ttl: r.duration("STATS_CACHE_TTL_SECS", Duration::from_secs)?,
            jitter_percent,
            stale: r.duration("STATS_CACHE_STALE_SECS", Duration::from_secs)?,
            lock: r.duration("STATS_CACHE_LOCK_MS", Duration::from_millis)?,
            wait: r.duration("STATS_CACHE_WAIT_MS", Duration::from_millis)?,
        };
        if config.wait > config.lock {
            // A waiter outliving the lock would wait for a recompute nobody is known to run.
            return Err(ConfigError {
                var: "STATS_CACHE_WAIT_MS",
                problem: "must not exceed STATS_CACHE_LOCK_MS".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::source;

    fn redis() -> RedisConfig {
        RedisConfig {
            url: Secret::new("redis://shared"),
            timeout: Duration::from_millis(100),
            ca_file: None,
        }
    }

    #[test]
    fn the_cache_uses_the_shared_redis_unless_told_otherwise() {
        let shared = CacheConfig::from_source(&source(&[]), &redis()).expect("valid");
        assert_eq!(shared.redis.url.expose(), "redis://shared");
        let own =
            CacheConfig::from_source(&source(&[("CACHE_REDIS_URL", "redis://cache")]), &redis())
                .expect("valid");
        assert_eq!(own.redis.url.expose(), "redis://cache");
        let err =
            CacheConfig::from_source(&source(&[("CACHE_REDIS_URL", "http://cache")]), &redis())
                .expect_err("refused");
        assert_eq!(err.var, "CACHE_REDIS_URL");
    }

    #[test]
    fn defaults_parse() {
        let config = CacheConfig::from_source(&source(&[]), &redis()).expect("defaults");
        assert!(config.enabled);
        assert_eq!(config.ttl, Duration::from_secs(60));
    }

    #[test]
    fn a_wait_longer_than_the_lock_is_refused() {
        let err = CacheConfig::from_source(
            &source(&[
                ("STATS_CACHE_LOCK_MS", "100"),
                ("STATS_CACHE_WAIT_MS", "200"),
            ]),
            &redis(),
        )
        .expect_err("refused");
        assert_eq!(err.var, "STATS_CACHE_WAIT_MS");
    }

    #[test]
    fn jitter_is_a_percentage() {
        let err =
            CacheConfig::from_source(&source(&[("STATS_CACHE_JITTER_PERCENT", "101")]), &redis())
                .expect_err("refused");
        assert_eq!(err.var, "STATS_CACHE_JITTER_PERCENT");
    }
}

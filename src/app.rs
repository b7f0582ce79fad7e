//! The state every handler can reach: backing services and configuration, nothing else.
//! No field holds data that another instance would need: that is what makes instances
//! interchangeable behind the load balancer.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::accounts::password::Passwords;
use crate::accounts::session::Sessions;
use crate::config::ServeConfig;
use crate::db::Db;
use crate::rate_limit::RateLimiter;
use crate::redis_client::RedisClient;
use crate::shutdown::Lifecycle;
use crate::storage::Storage;
use crate::workspace::stats::StatsCache;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    pub db: Db,
    pub redis: RedisClient,
    pub storage: Storage,
    pub sessions: Sessions,
    /// Password hashing, bounded per instance (`PASSWORD_HASHES_IN_FLIGHT`).
    pub passwords: Passwords,
    /// One permit per streamed upload being received (`UPLOADS_IN_FLIGHT`).
    pub uploads: Arc<Semaphore>,
    /// The API's request limits: decided in Redis; the limiter's own memory is only its
    /// fallback while Redis is away (see `rate_limit`).
    pub rate_limiter: RateLimiter,
    /// The organization dashboard's Redis cache (`GET /orgs/{id}/stats`).
    pub stats: StatsCache,
    pub lifecycle: Lifecycle,
}

impl AppState {
    /// Builds clients for every backing service without waiting for any of them.
    pub fn new(config: ServeConfig) -> anyhow::Result<Self> {
        let redis = RedisClient::new(&config.redis)?;
        let db = Db::connect_lazy(&config.database, &config.instance.id, Some(redis.clone()))?;
        db.spawn_probe();
        let storage = Storage::new(&config.storage);
        let sessions = Sessions::new(&config.redis, redis.clone())?;
        let passwords = Passwords::new(&config.capacity);
        let uploads = Arc::new(Semaphore::new(config.capacity.uploads));
        let rate_limiter = RateLimiter::new(&config.rate_limits, redis.clone());
        // The cache's own client: it may be another server than the sessions' (CACHE_REDIS_URL).
        let cache_redis = RedisClient::new(&config.cache.redis)?;
        let stats = StatsCache::new(db.clone(), cache_redis, config.cache.clone());
        Ok(Self {
            config: Arc::new(config),
            db,
            redis,
            storage,
            sessions,
            passwords,
            uploads,
            rate_limiter,
            stats,
            lifecycle: Lifecycle::default(),
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.config.instance.id
    }
}

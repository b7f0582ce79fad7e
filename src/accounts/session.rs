//! Sessions in Redis, shared by every instance, and the per-user index that lets one request
//! end all of a user's sessions on every device.
//!
//! The session id is rotated at login and at password change (no fixation): tower-sessions'
//! `cycle_id` deletes the old record, so a cookie from before login is worthless after it.
//! Logout deletes the record. The index (`sessions:user:{id}`, a Redis set of session ids)
//! is what logout-all and "a password change ends the other sessions" walk.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_redis_store::fred::prelude::{Builder, Config, Pool, ReconnectPolicy};
use uuid::Uuid;

use crate::config::{AuthConfig, RedisConfig};
use crate::db::{Caller, Writer};
use crate::error::ApiError;
use crate::redis_client::RedisClient;

pub const COOKIE_NAME: &str = "scaleout_session";
const USER_ID: &str = "user_id";

fn index_key(user: Uuid) -> String {
    format!("sessions:user:{user}")
}

/// The session store and the index beside it.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    redis: RedisClient,
}

/// The Redis store, with one fix: a session ended (logout, logout-all, password change) while
/// another of its requests is in flight must not turn that request into a 500. Every request
/// saves its session (inactivity expiry), and the store saves with `SET ... XX`, which fails
/// when the record is gone. A record that is gone stays gone: the save is skipped.
#[derive(Debug, Clone)]
pub struct Store(RedisStore<Pool>);

#[async_trait::async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.0.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self.0.save(record).await {
            Ok(()) => Ok(()),
            Err(e) => match self.0.load(&record.id).await {
                Ok(None) => {
                    tracing::debug!("the session ended during the request; not saved");
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.0.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0.delete(id).await
    }
}

impl Sessions {
    /// Connects in the background: like every backing service, Redis may come up after us.
    pub fn new(config: &RedisConfig, redis: RedisClient) -> anyhow::Result<Self> {
        let timeout = config.timeout;
        let pool = Builder::from_config(Config::from_url(config.url.expose())?)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
            })
            // A command waits at most this long, also while reconnecting: Redis being away
            // turns into a fast 503, never a hung request.
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .set_policy(ReconnectPolicy::new_constant(0, 250))
            .build_pool(2)?;
        let _ = pool.connect_pool();
        Ok(Self {
            store: Store(RedisStore::new(pool)),
            redis,
        })
    }

    pub fn layer(&self, config: &AuthConfig) -> SessionManagerLayer<Store> {
        let inactivity = time::Duration::try_from(config.session_inactivity)
            .unwrap_or(time::Duration::minutes(30));
        SessionManagerLayer::new(self.store.clone())
            .with_name(COOKIE_NAME)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(config.cookie_secure)
            .with_path("/")
            .with_expiry(Expiry::OnInactivity(inactivity))
            // Inactivity expiry needs every request to push the expiry forward.
            .with_always_save(true)
    }

    /// Logs `user` in on `session`: a fresh id, the user stored, the id indexed.
    pub async fn start(&self, session: &Session, user: Uuid) -> Result<(), ApiError> {
        session.cycle_id().await?;
        session.insert(USER_ID, user).await?;
        // Saved now rather than after the response, so the new id is known and indexed.
        session.save().await?;
        let id = session
            .id()
            .ok_or_else(|| anyhow::anyhow!("a saved session has an id"))?;
        self.prune_index(user).await?;
        let mut conn = self.redis.conn().await?;
        self.redis
            .bounded(
                redis::cmd("SADD")
                    .arg(index_key(user))
                    .arg(id.to_string())
                    .query_async::<()>(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Logs out this session only: its record is deleted and the cookie removed.
    pub async fn end(&self, session: &Session, user: Uuid) -> Result<(), ApiError> {
        let id = session.id();
        session.flush().await?;
        if let Some(id) = id {
            self.unindex(user, id).await?;
        }
        Ok(())
    }

    /// Ends every session of `user` except `keep`, on every device and instance.
    pub async fn end_all_except(&self, user: Uuid, keep: Option<Id>) -> Result<(), ApiError> {
        for id in self.indexed(user).await? {
            if Some(id) == keep {
                continue;
            }
            self.store
                .delete(&id)
                .await
                .map_err(|e| ApiError::unavailable("sessions", e))?;
            self.unindex(user, id).await?;
        }
        Ok(())
    }

    async fn unindex(&self, user: Uuid, id: Id) -> Result<(), ApiError> {
        let mut conn = self.redis.conn().await?;
        self.redis
            .bounded(
                redis::cmd("SREM")
                    .arg(index_key(user))
                    .arg(id.to_string())
                    .query_async::<()>(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn indexed(&self, user: Uuid) -> Result<Vec<Id>, ApiError> {
        let mut conn = self.redis.conn().await?;
        let ids: Vec<String> = self
            .redis
            .bounded(
                redis::cmd("SMEMBERS")
                    .arg(index_key(user))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(ids.iter().filter_map(|s| Id::from_str(s).ok()).collect())
    }

    /// Drops index entries whose session expired on its own, so the set stays small.
    async fn prune_index(&self, user: Uuid) -> Result<(), ApiError> {
        for id in self.indexed(user).await? {
            let live = self
                .store
                .load(&id)
                .await
                .map_err(|e| ApiError::unavailable("sessions", e))?;
            if live.is_none() {
                self.unindex(user, id).await?;
            }
        }
        Ok(())
    }
}

/// The authenticated caller. Extracting it from a request without a valid session is a 401.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
}

impl AuthUser {
    /// The caller as the database's read routing knows it.
    pub fn caller(self) -> Caller {
        Caller::User(self.id)
    }

    /// Writes made for this user: their next reads see them (see `db::write`).
    pub fn writer(self) -> Writer {
        Writer::User(self.id)
    }
}

/// The caller of an endpoint that does not require a session: a logged-in user still reads
/// their own writes there.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(session) = Session::from_request_parts(parts, state).await else {
            return Ok(Caller::Anonymous);
        };
        let id: Option<Uuid> = session.get(USER_ID).await?;
        Ok(id.map_or(Caller::Anonymous, Caller::User))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, msg)| anyhow::anyhow!("session layer missing: {msg}"))?;
        let id: Option<Uuid> = session.get(USER_ID).await?;
        id.map(|id| AuthUser { id })
            .ok_or(ApiError::Unauthenticated)
    }
}

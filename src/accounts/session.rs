//! Sessions in Redis, shared by every instance, and the per-user index that lets one request
//! end all of a user's sessions on every device.
//!
//! The session id is rotated at login and at password change (no fixation): tower-sessions'
//! `cycle_id` deletes the old record, so a cookie from before login is worthless after it.
//! Logout deletes the record. The index (`sessions:user:{id}`, a Redis set of session ids)
//! is what logout-all and "a password change ends the other sessions" walk.
//!
//! A session ends, whatever the index says, when
//! - its password version is not the account's: every password change bumps the version
//!   (`repo::set_password`), and a session remembers the version of the hash its login
//!   checked. A login that was still checking the old password when the change committed makes
//!   a session under the old version, which is refused on its first use: no race.
//! - it is older than the absolute lifetime (`SESSION_MAX_LIFETIME_SECS`), however active;
//! - it was unused for the inactivity period (`SESSION_INACTIVITY_SECS`).
//!
//! The account's current version is cached in Redis (`sessions:user:{id}:password-version`,
//! ten minutes): checking it costs one Redis GET per authenticated request, beside the session
//! load itself, and one primary-key read of Postgres per user per ten minutes. The cache only
//! ever rises (a Lua max), so a reader that fetched an old version from Postgres cannot
//! overwrite the version a change just wrote.
//!
//! Saves: a session is written where it changes, explicitly and before the answer (login,
//! signup, password change), never after a handler's write has committed and been answered.
//! An untouched session is not written on every request: its expiry is pushed forward once
//! more than half the inactivity period has passed since the last push, by the extractor,
//! before the handler runs (a Redis failure there is a 503 before any work). The trade-off: a
//! session unused for between half and all of the period expires, rather than exactly all.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tower_sessions::cookie::SameSite;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_redis_store::fred::prelude::{Builder, Config, Pool, ReconnectPolicy};
use uuid::Uuid;

use crate::accounts::repo;
use crate::config::{AuthConfig, RedisConfig};
use crate::db::{Caller, Db, Writer};
use crate::error::ApiError;
use crate::redis_client::RedisClient;

pub const COOKIE_NAME: &str = "scaleout_session";
const USER_ID: &str = "user_id";
/// The password version the session was made under (absent: version 1).
const PASSWORD_VERSION: &str = "password_version";
/// When the login happened, in Unix seconds: the absolute lifetime counts from here.
const STARTED_AT: &str = "started_at";
/// When the expiry was last pushed forward, in Unix seconds.
const EXTENDED_AT: &str = "extended_at";
/// How long the cached password version of an account is kept.
const VERSION_CACHE_SECS: u64 = 600;

fn index_key(user: Uuid) -> String {
    format!("sessions:user:{user}")
}

fn version_key(user: Uuid) -> String {
    format!("sessions:user:{user}:password-version")
}

/// Sets the cached version to the larger of the cached one and ARGV[1]; returns the result.
const RAISE_VERSION: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return new
end
return cur
";

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The session store and the index beside it.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    redis: RedisClient,
}

/// The Redis store, with two fixes.
///
/// A session ended (logout, logout-all, password change) while another of its requests is in
/// flight must not turn that request into a 500: the store saves with `SET ... XX`, which
/// fails when the record is gone. A record that is gone stays gone: the save is skipped.
///
/// A session saved explicitly during a request (`Sessions::save_now`) is not written again
/// when the session layer saves it after the handler: that second write would be the same
/// record, and its failure would turn an answered, committed change into a 500. tower-sessions
/// cannot be told that a modified session is already saved, so the store remembers the ids it
/// saved explicitly (on this instance, for a minute at most) and skips the next save of each.
/// Hence the rule: an explicit save is the last change to a session in a request.
#[derive(Debug, Clone)]
pub struct Store {
    inner: RedisStore<Pool>,
    saved: Arc<Mutex<HashMap<Id, Instant>>>,
}

/// How long an explicitly saved record is remembered: far longer than any request.
const SAVED_MEMORY: Duration = Duration::from_secs(60);

impl Store {
    fn remember(&self, id: Id) {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        saved.retain(|_, at| now.duration_since(*at) < SAVED_MEMORY);
        saved.insert(id, now);
    }

    /// Whether the record was just saved explicitly (then forgotten: one skip per save).
    fn already_saved(&self, record: &Record) -> bool {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        saved.remove(&record.id).is_some()
    }
}

#[async_trait::async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.inner.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        if self.already_saved(record) {
            return Ok(());
        }
        match self.inner.save(record).await {
            Ok(()) => Ok(()),
            Err(e) => match self.inner.load(&record.id).await {
                Ok(None) => {
                    tracing::debug!("the session ended during the request; not saved");
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.inner.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.inner.delete(id).await
    }
}

impl Sessions {
    /// Connects in the background: like every backing service, Redis may come up after us.
    pub fn new(config: &RedisConfig, redis: RedisClient) -> anyhow::Result<Self> {
        let timeout = config.timeout;
        let mut fred_config = Config::from_url(config.url.expose())?;
        // `rediss://` is TLS already (the system's roots); REDIS_CA_FILE replaces those.
        if fred_config.tls.is_some()
            && let Some(tls) = redis.tls_config()?
        {
            fred_config.tls = Some(tls.into());
        }
        let pool = Builder::from_config(fred_config)
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
            store: Store {
                inner: RedisStore::new(pool),
                saved: Arc::default(),
            },
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
            // Not saved on every request: the extractor pushes the expiry forward when due.
            .with_always_save(false)
    }

    /// Saves `session` now, before the answer; the session layer does not write it again.
    pub async fn save_now(&self, session: &Session) -> Result<(), ApiError> {
        session.save().await?;
        let id = session
            .id()
            .ok_or_else(|| anyhow::anyhow!("a saved session has an id"))?;
        self.store.remember(id);
        Ok(())
    }

    /// Logs `user` in on `session` under password version `password_version` (read with the
    /// hash that was checked): a fresh id, saved and indexed before the answer.
    pub async fn start(
        &self,
        session: &Session,
        user: Uuid,
        password_version: i64,
    ) -> Result<(), ApiError> {
        session.cycle_id().await?;
        session.insert(USER_ID, user).await?;
        session.insert(PASSWORD_VERSION, password_version).await?;
        let now = unix_now();
        session.insert(STARTED_AT, now).await?;
        session.insert(EXTENDED_AT, now).await?;
        // Saved now rather than after the response, so the new id is known and indexed.
        self.save_now(session).await?;
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

    /// The account's current password version: the cache, else Postgres' primary (a replica
    /// might not have the change yet). `None` once the account is gone.
    pub async fn password_version(&self, db: &Db, user: Uuid) -> Result<Option<i64>, ApiError> {
        let mut conn = self.redis.conn().await?;
        let cached: Option<i64> = self
            .redis
            .bounded(
                redis::cmd("GET")
                    .arg(version_key(user))
                    .query_async(&mut conn),
            )
            .await?;
        if let Some(version) = cached {
            return Ok(Some(version));
        }
        self.refresh_version(db, user).await
    }

    /// The version Postgres' primary holds, raised into the cache.
    async fn refresh_version(&self, db: &Db, user: Uuid) -> Result<Option<i64>, ApiError> {
        let Some(stored) = repo::password_version(db.read_primary(), user).await? else {
            return Ok(None);
        };
        Ok(Some(self.raise_version(user, stored).await?))
    }

    /// Records a committed password change: sessions under older versions stop working.
    pub async fn password_changed(&self, user: Uuid, version: i64) -> Result<(), ApiError> {
        self.raise_version(user, version).await?;
        Ok(())
    }

    async fn raise_version(&self, user: Uuid, version: i64) -> Result<i64, ApiError> {
        let mut conn = self.redis.conn().await?;
        Ok(self
            .redis
            .bounded(
                redis::Script::new(RAISE_VERSION)
                    .key(version_key(user))
                    .arg(version)
                    .arg(VERSION_CACHE_SECS)
                    .invoke_async(&mut conn),
            )
            .await?)
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

impl Sessions {
    /// The user of `session`, if it is a live session: logged in, within its absolute
    /// lifetime, under the account's current password version. Pushes the inactivity expiry
    /// forward when more than half of it has passed (saved now, before any handler work).
    /// The `AuthUser` extractor (`http::auth`) calls this.
    pub async fn authenticate(
        &self,
        session: &Session,
        db: &Db,
        auth: &AuthConfig,
    ) -> Result<AuthUser, ApiError> {
        let id: Option<Uuid> = session.get(USER_ID).await?;
        let id = id.ok_or(ApiError::Unauthenticated)?;
        let now = unix_now();
        let started: Option<i64> = session.get(STARTED_AT).await?;
        let max_lifetime = i64::try_from(auth.session_max_lifetime.as_secs()).unwrap_or(i64::MAX);
        let too_old = started.is_some_and(|t| now.saturating_sub(t) > max_lifetime);
        let version = session.get::<i64>(PASSWORD_VERSION).await?.unwrap_or(1);
        let mut current = self.password_version(db, id).await?;
        if current.is_some_and(|cached| cached < version) {
            // Newer than the cache: a change whose cache update failed after its commit.
            // Postgres says which is current (and the cache catches up).
            current = self.refresh_version(db, id).await?;
        }
        if too_old || current != Some(version) {
            // Ended for good; if Redis fails to delete it now, it stays refused anyway.
            if let Err(e) = self.end(session, id).await {
                tracing::debug!(error = %e, "could not delete an ended session");
            }
            return Err(ApiError::Unauthenticated);
        }
        let extended: Option<i64> = session.get(EXTENDED_AT).await?;
        let half = i64::try_from(auth.session_inactivity.as_secs() / 2).unwrap_or(i64::MAX);
        if extended.is_none_or(|t| now.saturating_sub(t) >= half) {
            if started.is_none() {
                // A session from before lifetimes were recorded: its lifetime starts now.
                session.insert(STARTED_AT, now).await?;
            }
            session.insert(EXTENDED_AT, now).await?;
            self.save_now(session).await?;
        }
        Ok(AuthUser { id })
    }
}

//! Cache-aside in Redis, shared by every instance: a computed value per id, invalidated by the
//! writes that change it, recomputed by one request at a time.
//!
//! Three keys per entry (`{id}` is a hash tag, so they stay together on a cluster):
//! - `cache:{name}:{id}`: the value, with the generation it was computed under; its Redis TTL is
//!   the freshness (with jitter) plus the stale window, and the remaining TTL tells which of
//!   the two a read is in (no clock of any instance is compared).
//! - `cache:{name}:{id}:v`: the version, a hash of `gen` (a random token replaced by every
//!   invalidation), `pos` (the highest WAL position any invalidation recorded) and, after an
//!   invalidation whose position could not be read, `primary` (the generation whose recompute
//!   must read the primary).
//! - `cache:{name}:{id}:lock`: the recompute lock (`SET NX PX`).
//!
//! A value is served only while its generation is the current one: an invalidated value is
//! never served, not even as stale, so a writer reads their change at once, on any instance.
//! A recompute reads from a server that has replayed `pos` (the replica only if it has, else
//! the primary: [`Source::After`]) and stores only if the generation it started under is still
//! current, atomically. A write that commits after the read began replaces the generation, so
//! a value read before it is dropped instead of outliving the change by a whole TTL.
//!
//! A missing version (evicted by `allkeys-lru`, or lost with a Redis restart) means the
//! positions of past invalidations are lost: that recompute reads the primary
//! ([`Source::Primary`]) and creates the version with its store. So does the recompute after an
//! invalidation whose position was unknown; its store clears the mark. A value read from the
//! primary covers every write before it, and the next recompute comes at least a TTL later,
//! past the replica lag bound (`REPLICA_MAX_LAG_MS`, below the TTL).
//!
//! Invalidations run in a task of their own ([`Cache::invalidate_after`]): the request that
//! committed awaits it (so its next read sees the change), but a request dropped after its
//! commit (the client left, a timeout) does not drop its invalidation.
//!
//! Stampedes: one recompute per entry fleet-wide (the Redis lock), and per instance one request
//! per entry polls Redis for it (a local single flight); the others queue behind it and find
//! the stored value. A read that waited `STATS_CACHE_WAIT_MS` in vain is answered stale if a
//! stale value exists, else [`CacheError::Busy`] (503 with `Retry-After`): it never runs the
//! aggregate itself, unless the lock vanished (its holder died), in which case it takes it.
//!
//! Redis being away is never an error of the read: it is computed from the database, as if
//! there were no cache, and counted (`cache_fallbacks_total`). Every Redis call is bounded by
//! `REDIS_TIMEOUT_MS` ([`RedisClient::bounded`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::CacheConfig;
use crate::db::lsn::Lsn;
use crate::redis_client::{RedisClient, RedisError};

/// How long an invalidation's version outlives it: much longer than any entry (so entries are
/// checked against it), short enough that idle tenants leave nothing behind.
const VERSION_TTL_SECS: u64 = 24 * 3600;

/// How often a read waiting for another's recompute looks again.
const POLL: Duration = Duration::from_millis(20);

/// Replaces the generation (every value computed before is void), raises the position, and
/// drops the value. Positions are decimal byte offsets, compared as numbers by Lua (exact below
/// 2^53, far beyond any real WAL) and stored as the caller's text. An unknown position (empty)
/// marks the new generation's recompute as one that reads the primary; a known one is later
/// than any earlier write, so it clears such a mark.
const INVALIDATE: &str = r"
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'primary', ARGV[1])
else
  local pos = redis.call('HGET', KEYS[1], 'pos')
  if (not pos) or tonumber(pos) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'pos', ARGV[2])
  end
  redis.call('HDEL', KEYS[1], 'primary')
end
redis.call('HSET', KEYS[1], 'gen', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1";

/// Stores a recomputed value only if no invalidation came since the recompute looked (the
/// generation is unchanged), then releases the lock if it is still ours. A recompute that found
/// no version (`ARGV[1]` empty; it read the primary) creates it with the generation `ARGV[5]`
/// its value carries; one that read the primary for a marked generation (`ARGV[7]`) clears
/// the mark.
const STORE: &str = r"
local stored = 0
local gen = redis.call('HGET', KEYS[2], 'gen')
if (gen or '') == ARGV[1] then
  if not gen then
    redis.call('HSET', KEYS[2], 'gen', ARGV[5])
    redis.call('EXPIRE', KEYS[2], ARGV[6])
  elseif ARGV[7] == '1' then
    redis.call('HDEL', KEYS[2], 'primary')
  end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  stored = 1
end
if redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return stored";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Where a computation must read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A server that has replayed this position (any healthy one when `None`): what a value
    /// that will be stored must see.
    After(Option<Lsn>),
    /// The primary: the positions of past invalidations are lost (no version in Redis) or one
    /// was never known, and the value will be stored.
    Primary,
    /// Wherever the caller's own reads go (read-your-writes included): the cache is off or
    /// Redis is away, and nothing will be stored.
    Caller,
}

#[derive(Serialize)]
struct EntryRef<'a, T> {
    generation: &'a str,
    value: &'a T,
}

#[derive(Deserialize)]
struct Entry<T> {
    generation: String,
    value: T,
}

struct Keys {
    entry: String,
    version: String,
    lock: String,
}

impl Keys {
    fn of(name: &str, id: &str) -> Self {
        let entry = format!("cache:{name}:{{{id}}}");
        Self {
            version: format!("{entry}:v"),
            lock: format!("{entry}:lock"),
            entry,
        }
    }
}

/// What one look at Redis found.
struct Look<T> {
    /// The value, if it was computed under the current generation.
    value: Option<T>,
    fresh: bool,
    /// Empty when there is no version.
    generation: String,
    /// Where a recompute under this generation must read.
    source: Source,
}

/// Why [`Cache::get`] has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError<E> {
    /// Another request is recomputing the value and did not finish within
    /// `STATS_CACHE_WAIT_MS`, and there is no stale value: retry shortly.
    #[error("the value is being recomputed")]
    Busy,
    #[error(transparent)]
    Compute(#[from] E),
}

/// Per instance, one request per id at a time looks for (and waits on) another's recompute.
/// Weak entries: the map holds only ids with a request in flight (dead ones are swept).
#[derive(Debug, Default)]
struct Flights(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl Flights {
    fn of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(id).and_then(Weak::upgrade) {
            return flight;
        }
        if flights.len() >= 1024 {
            flights.retain(|_, f| f.strong_count() > 0);
        }
        let flight = Arc::new(tokio::sync::Mutex::new(()));
        flights.insert(id.to_owned(), Arc::downgrade(&flight));
        flight
    }
}

/// One named cache (`stats`, ...). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cache {
    name: &'static str,
    redis: RedisClient,
    config: CacheConfig,
    flights: Arc<Flights>,
}

impl Cache {
    pub fn new(name: &'static str, redis: RedisClient, config: CacheConfig) -> Self {
        // Every series exists from the start at zero: "no fallbacks" rather than "no data".
        for result in ["hit", "miss", "stale"] {
            metrics::counter!("cache_requests_total", "cache" => name, "result" => result)
                .absolute(0);
        }
        for counter in [
            "cache_recomputes_total",
            "cache_fallbacks_total",
            "cache_busy_total",
            "cache_invalidation_failures_total",
        ] {
            metrics::counter!(counter, "cache" => name).absolute(0);
        }
        Self {
            name,
            redis,
            config,
            flights: Arc::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value of `id`: from Redis when a current one is there, else computed by `compute`
    /// (by one request fleet-wide at a time; the others wait up to `STATS_CACHE_WAIT_MS` for
    /// it, or are served the stale value while it runs, else [`CacheError::Busy`]). `compute`
    /// is told where to read.
    pub async fn get<T, E, F, Fut>(&self, id: &str, compute: F) -> Result<T, CacheError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Source) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if !self.config.enabled {
            return Ok(compute(Source::Caller).await?);
        }
        let keys = Keys::of(self.name, id);
        let deadline = tokio::time::Instant::now() + self.config.wait;
        let first = match retrying(|| self.look::<T>(&keys)).await {
            Ok(look) => look,
            Err(e) => return Ok(self.fallback(e, &compute).await?),
        };
        if first.fresh
            && let Some(value) = first.value
        {
            self.count("hit");
            return Ok(value);
        }
        // Missing: one request of this instance at a time goes on (the others would only
        // poll Redis for the same recompute); the next finds what it stored. A stale value
        // needs no wait: it is served while one request recomputes.
        let mut first = Some(first);
        let _flight = if first.as_ref().is_some_and(|f| f.value.is_none()) {
            let flight = self.flights.of(id);
            match tokio::time::timeout_at(deadline, flight.lock_owned()).await {
                Ok(guard) => {
                    // A request ahead of this one may have stored the value while this one
                    // waited (or since its look): what it saw before is out of date, and
                    // acting on it would run the aggregate once per queued request.
                    first = None;
                    Some(guard)
                }
                Err(_) => return self.busy(None),
            }
        } else {
            None
        };
        loop {
            let look = match first.take() {
                Some(look) => look,
                None => match retrying(|| self.look::<T>(&keys)).await {
                    Ok(look) => look,
                    Err(e) => return Ok(self.fallback(e, &compute).await?),
                },
            };
            if look.fresh
                && let Some(value) = look.value
            {
                self.count("hit");
                return Ok(value);
            }
            let locked = match retrying(|| self.lock(&keys)).await {
                Ok(token) => token,
                Err(e) => match look.value {
                    // Redis answered a moment ago: what it gave is still the best answer.
                    Some(value) => {
                        self.count("stale");
                        return Ok(value);
                    }
                    None => return Ok(self.fallback(e, &compute).await?),
                },
            };
            match (look.value, locked) {
                (stale, Some(token)) => {
                    self.count("miss");
                    let computed = self
                        .recompute(&keys, &look.generation, look.source, token, &compute)
                        .await;
                    return match (computed, stale) {
                        (Ok(value), _) => Ok(value),
                        // A stale value beats an error when the database fails the recompute.
                        (Err(_), Some(stale)) => Ok(stale),
                        (Err(e), None) => Err(CacheError::Compute(e)),
                    };
                }
                (Some(value), None) => {
                    // Expired but not invalidated, and another request is recomputing it.
                    self.count("stale");
                    return Ok(value);
                }
                (None, None) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                // The recompute we waited for is slow: computing it here too would multiply
                // the slow query by the readers. Its holder dying frees the lock, and the
                // loop above takes it then.
                return self.busy(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Voids the value of `id` (on every instance at once) and records `position`, the WAL
    /// position of the write that changed it (`None`: unknown, the next recompute reads the
    /// primary): no later recompute reads a server that has not replayed it. Call after the
    /// write commits. See [`Cache::invalidate_after`].
    pub async fn invalidate(&self, id: &str, position: Option<Lsn>) {
        self.invalidate_after(id, std::future::ready(position))
            .await;
    }

    /// [`Cache::invalidate`] with the position still to be read (after the commit). It runs
    /// in a task of its own: awaiting this waits for it (read-your-writes), but dropping this
    /// future (the request was cancelled after its commit) does not cancel it. Bounded: every
    /// Redis call by `REDIS_TIMEOUT_MS`, tried twice at most. A failure is logged and counted,
    /// never returned: the write has happened, and the value expires within its TTL.
    pub async fn invalidate_after<P>(&self, id: &str, position: P)
    where
        P: Future<Output = Option<Lsn>> + Send + 'static,
    {
        let (redis, name, keys) = (self.redis.clone(), self.name, Keys::of(self.name, id));
        let task = tokio::spawn(async move {
            let position = position.await;
            invalidate(&redis, name, &keys, position).await;
        });
        if let Err(e) = task.await {
            tracing::error!(cache = self.name, error = %e, "the invalidation task failed");
        }
    }

    fn count(&self, result: &'static str) {
        metrics::counter!("cache_requests_total", "cache" => self.name, "result" => result)
            .increment(1);
    }

    /// The deadline passed while another request recomputes: its stale value, else busy.
    fn busy<T, E>(&self, stale: Option<T>) -> Result<T, CacheError<E>> {
        match stale {
            Some(value) => {
                self.count("stale");
                Ok(value)
            }
            None => {
                metrics::counter!("cache_busy_total", "cache" => self.name).increment(1);
                Err(CacheError::Busy)
            }
        }
    }

    async fn fallback<T, E, F, Fut>(&self, error: RedisError, compute: &F) -> Result<T, E>
    where
        F: Fn(Source) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        metrics::counter!("cache_fallbacks_total", "cache" => self.name).increment(1);
        tracing::warn!(cache = self.name, error = %error, "cache unavailable; computing from the database");
        compute(Source::Caller).await
    }

    async fn look<T: DeserializeOwned>(&self, keys: &Keys) -> Result<Look<T>, RedisError> {
        let mut conn = self.redis.conn().await?;
        let (entry, pttl, version): (Option<String>, i64, Vec<Option<String>>) = self
            .redis
            .bounded(
                redis::pipe()
                    .cmd("GET")
                    .arg(&keys.entry)
                    .cmd("PTTL")
                    .arg(&keys.entry)
                    .cmd("HMGET")
                    .arg(&keys.version)
                    .arg("gen")
                    .arg("pos")
                    .arg("primary")
                    .query_async(&mut conn),
            )
            .await?;
        let mut version = version.into_iter();
        let generation = version.next().flatten().unwrap_or_default();
        let position = version
            .next()
            .flatten()
            .and_then(|p| p.parse().ok())
            .map(Lsn);
        let primary = version.next().flatten();
        // No version: what past invalidations recorded is lost (evicted, or a restart without
        // persistence), and a replica may not have replayed their writes. A generation whose
        // invalidation could not read its position: the same for that write.
        let source = if generation.is_empty() || primary.as_deref() == Some(generation.as_str()) {
            Source::Primary
        } else {
            Source::After(position)
        };
        // An entry of another shape (written by a previous version) is a miss, not an error.
        let value = entry
            .and_then(|e| serde_json::from_str::<Entry<T>>(&e).ok())
            .filter(|e| e.generation == generation)
            .map(|e| e.value);
        let stale_ms = i64::try_from(self.config.stale.as_millis()).unwrap_or(i64::MAX);
        Ok(Look {
            value,
            fresh: pttl > stale_ms,
            generation,
            source,
        })
    }

    /// Takes the recompute lock: `Some(token)` if this request holds it now.
    async fn lock(&self, keys: &Keys) -> Result<Option<String>, RedisError> {
        let token = Uuid::new_v4().simple().to_string();
        let mut conn = self.redis.conn().await?;
        let set: Option<String> = self
            .redis
            .bounded(
                redis::cmd("SET")
                    .arg(&keys.lock)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(self.config.lock.as_millis()).unwrap_or(u64::MAX))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(set.map(|_| token))
    }

    async fn recompute<T, E, F, Fut>(
        &self,
        keys: &Keys,
        generation: &str,
        source: Source,
        token: String,
        compute: &F,
    ) -> Result<T, E>
    where
        T: Serialize,
        F: Fn(Source) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        metrics::counter!("cache_recomputes_total", "cache" => self.name).increment(1);
        let value = match compute(source).await {
            Ok(value) => value,
            Err(e) => {
                self.release(keys, &token).await;
                return Err(e);
            }
        };
        // No version yet: the store creates it, with the generation the value carries.
        let created = Uuid::new_v4().simple().to_string();
        let carried = if generation.is_empty() {
            created.as_str()
        } else {
            generation
        };
        let stored = async {
            let entry = serde_json::to_string(&EntryRef {
                generation: carried,
                value: &value,
            })
            .map_err(|e| e.to_string())?;
            let mut conn = self.redis.conn().await.map_err(|e| e.to_string())?;
            self.redis
                .bounded(
                    redis::Script::new(STORE)
                        .key(&keys.entry)
                        .key(&keys.version)
                        .key(&keys.lock)
                        .arg(generation)
                        .arg(entry)
                        .arg(self.lifetime_ms())
                        .arg(&token)
                        .arg(&created)
                        .arg(VERSION_TTL_SECS)
                        .arg(if source == Source::Primary { "1" } else { "0" })
                        .invoke_async::<i64>(&mut conn),
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match stored {
            Ok(1) => {}
            Ok(_) => tracing::debug!(
                cache = self.name,
                "invalidated while recomputing; not stored"
            ),
            Err(e) => {
                tracing::warn!(cache = self.name, error = %e, "could not store a recomputed value")
            }
        }
        Ok(value)
    }

    async fn release(&self, keys: &Keys, token: &str) {
        let released = async {
            let mut conn = self.redis.conn().await?;
            self.redis
                .bounded(
                    redis::Script::new(RELEASE)
                        .key(&keys.lock)
                        .arg(token)
                        .invoke_async::<i64>(&mut conn),
                )
                .await
        }
        .await;
        if let Err(e) = released {
            // The lock expires by itself within STATS_CACHE_LOCK_MS.
            tracing::warn!(cache = self.name, error = %e, "could not release a recompute lock");
        }
    }

    /// Freshness with jitter, plus the stale window: the entry's Redis TTL.
    fn lifetime_ms(&self) -> u64 {
        let ttl = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX / 4);
        let spread = ttl * u64::from(self.config.jitter_percent) / 100;
        let jitter = if spread == 0 {
            0
        } else {
            // Uniform enough for spreading expiries; not a secret.
            (Uuid::new_v4().as_u128() as u64) % (spread + 1)
        };
        let stale = u64::try_from(self.config.stale.as_millis()).unwrap_or(u64::MAX / 4);
        ttl + jitter + stale
    }
}

/// The invalidation script, tried twice: once more on any failure (a dropped connection, a
/// timeout), since an invalidation lost leaves a value the write changed for a whole TTL.
async fn invalidate(redis: &RedisClient, name: &'static str, keys: &Keys, position: Option<Lsn>) {
    let generation = Uuid::new_v4().simple().to_string();
    let position = position.map(|p| p.0.to_string()).unwrap_or_default();
    let call = || async {
        let mut conn = redis.conn().await?;
        redis
            .bounded(
                redis::Script::new(INVALIDATE)
                    .key(&keys.version)
                    .key(&keys.entry)
                    .arg(&generation)
                    .arg(&position)
                    .arg(VERSION_TTL_SECS)
                    .invoke_async::<i64>(&mut conn),
            )
            .await
    };
    let result = match call().await {
        Ok(done) => Ok(done),
        Err(e) => {
            tracing::debug!(cache = name, error = %e, "invalidation failed; trying once more");
            call().await
        }
    };
    if let Err(e) = result {
        metrics::counter!("cache_invalidation_failures_total", "cache" => name).increment(1);
        tracing::warn!(cache = name, error = %e, "could not invalidate a cache entry");
    }
}

/// Runs `call`, and once more if Redis had dropped the connection (a restart, an idle
/// timeout): the first command on such a connection fails, and the connection manager opens a
/// new one for the next. Without this, the first read on each instance after a Redis restart
/// would fall back to the database, and the first invalidation would be lost. A timeout is
/// not retried: a hung Redis costs a read one `REDIS_TIMEOUT_MS`, not two.
async fn retrying<T, F, Fut>(call: F) -> Result<T, RedisError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    match call().await {
        Err(RedisError::Redis(e)) if e.is_connection_dropped() || e.is_io_error() => {
            tracing::debug!(error = %e, "redis connection dropped; trying once more");
            call().await
        }
        result => result,
    }
}

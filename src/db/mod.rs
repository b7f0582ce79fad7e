//! Postgres access: writes on the primary, reads on streaming replicas, and every user reads
//! their own writes.
//!
//! Call sites say where each query goes:
//! - `db.begin(Writer::User(id))`: a unit of work on the primary, for every change (see
//!   [`write`]). Its `commit()` also stores the primary's WAL position for that user in Redis
//!   (with a TTL), so their reads see the change: no call site can forget it.
//! - `db.read(&caller, |pool| query)`: a healthy replica that has replayed the caller's last
//!   write, else the primary (see [`routing`] for the whole table). A replica that fails
//!   mid-query is marked down and the query runs again on the primary: a replica outage
//!   never fails a read.
//! - `db.read_primary()`: the rare read that must see every committed write (login).
//!
//! Several replicas (`DATABASE_REPLICA_URLS`) each get their own pool, probe and lag bound;
//! plain reads spread over the healthy ones, and a user who just wrote reads from one that
//! has replayed their write. A probe per instance measures each replica's lag in time and
//! bytes; over a threshold, or unreachable, a replica gets no reads until it recovers.

pub mod lsn;
pub mod routing;
pub mod timing;
pub mod write;

pub use write::{Write, Writer};

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::config::DatabaseConfig;
use crate::redis_client::RedisClient;
use lsn::Lsn;
use routing::{Decision, ReplicaView, Sticky, Target};

/// Which server a pool talks to; a label for logs, metrics and `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Who is reading: their recent writes decide whether a replica is fresh enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(Uuid),
}

fn sticky_key(user: Uuid) -> String {
    format!("ryw:lsn:{user}")
}

/// Stores a write position only if it is newer than the stored one: two writes of one user
/// committed through different instances must leave the later position, whatever order their
/// SETs reach Redis in. Positions are kept as decimal byte offsets so Lua can compare them.
const RECORD_POSITION: &str = r"
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1";

/// Deletes the position only if it is still the one every replica has replayed: a newer
/// write recorded in between must survive.
const FORGET_POSITION: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

#[derive(Debug)]
struct Replica {
    /// `host:port`, the `replica` label of its metrics and logs.
    name: String,
    pool: PgPool,
    /// Set by the probe; cleared at once when a query finds the replica unreachable.
    healthy: AtomicBool,
    /// The replayed position, reused for a few milliseconds: a cache of the replica's state
    /// (never a source of truth) so sticky reads cost almost nothing.
    replayed: Mutex<Option<(Instant, Lsn)>>,
}

#[derive(Debug)]
struct Inner {
    primary: PgPool,
    replicas: Vec<Replica>,
    redis: Option<RedisClient>,
    config: DatabaseConfig,
    reads: AtomicUsize,
}

/// The pools and the routing state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db(Arc<Inner>);

impl Db {
    /// Builds the pools without connecting: the process starts (and `/health` answers) while
    /// a database is still coming up; `/ready` tells the load balancer when it can take
    /// traffic. Without `redis`, reads never go to a replica for a user who wrote (workers
    /// pass positions explicitly with [`Db::read_after`]).
    pub fn connect_lazy(
        config: &DatabaseConfig,
        instance_id: &str,
        redis: Option<RedisClient>,
    ) -> Result<Self, sqlx::Error> {
        let primary =
            pool_options(config, config.primary_pool_max).connect_lazy_with(connect_options(
                config,
                config.primary_url.expose(),
                instance_id,
                Role::Primary,
            )?);
        let mut replicas = Vec::with_capacity(config.replica_urls.len());
        for url in &config.replica_urls {
            let options = connect_options(config, url.expose(), instance_id, Role::Replica)?;
            let name = format!("{}:{}", options.get_host(), options.get_port());
            replicas.push(Replica {
                name,
                pool: pool_options(config, config.replica_pool_max).connect_lazy_with(options),
                // Unknown until the first probe: no reads on a replica of unknown lag.
                healthy: AtomicBool::new(false),
                replayed: Mutex::new(None),
            });
        }
        Ok(Self(Arc::new(Inner {
            primary,
            replicas,
            redis,
            config: config.clone(),
            reads: AtomicUsize::new(0),
        })))
    }

    /// Opens a unit of work on the primary for `writer`: every application write goes
    /// through one (see [`write`]).
    pub async fn begin(&self, writer: Writer) -> Result<Write, sqlx::Error> {
        Write::begin(self, writer).await
    }

    /// The primary pool itself, for infrastructure that runs its own statements: the job
    /// queue's storage (apalis lives in the primary), readiness checks. Application writes go
    /// through [`Db::begin`], which also keeps read-your-writes.
    pub fn primary_pool(&self) -> &PgPool {
        &self.0.primary
    }

    /// The primary, for a read that must see every committed write.
    pub fn read_primary(&self) -> &PgPool {
        &self.0.primary
    }

    /// The (first) replica pool itself, whatever its health: for tests.
    pub fn replica(&self) -> &PgPool {
        &self.0.replicas[0].pool
    }

    /// Every replica's `host:port` name and pool, in configuration order, whatever their health.
    pub fn replicas(&self) -> impl Iterator<Item = (&str, &PgPool)> {
        self.0.replicas.iter().map(|r| (r.name.as_str(), &r.pool))
    }

    /// Whether every replica runs a statement (`/ready`'s replica check): one that does not
    /// gets no reads, which degrades the instance without taking it out of rotation.
    pub async fn replicas_answer(&self) -> Result<(), sqlx::Error> {
        let checks = self.0.replicas.iter().map(|r| answers(&r.pool));
        for result in futures_util::future::join_all(checks).await {
            result?;
        }
        Ok(())
    }

    /// Runs `query` where `caller` should read (see the module doc).
    pub async fn read<T, F, Fut>(&self, caller: &Caller, query: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let sticky = self.sticky(caller).await;
        let decision = self.decide(sticky).await;
        if decision.unstick
            && let (Caller::User(user), Some(redis), Sticky::At(lsn)) =
                (caller, &self.0.redis, sticky)
        {
            // Every replica has replayed the write: plain reads again for this user.
            if let Err(e) = forget(redis, *user, lsn).await {
                tracing::warn!(error = %e, "could not clear a read-your-writes position");
            }
        }
        self.run(decision, query).await
    }

    /// Runs `query` on a replica that has replayed `after` (a position a request recorded
    /// before enqueueing a job), else on the primary: the hook that lets a worker see what
    /// the enqueuing request wrote.
    pub async fn read_after<T, F, Fut>(
        &self,
        after: Option<Lsn>,
        query: F,
    ) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let sticky = after.map_or(Sticky::None, Sticky::At);
        let decision = self.decide(sticky).await;
        self.run(decision, query).await
    }

    /// Records that `caller` has just committed a write: until every replica has replayed the
    /// primary's current WAL position, their reads go to the primary. [`Write::commit`] calls
    /// it; nothing else should.
    async fn wrote(&self, caller: &Caller) {
        let (Caller::User(user), Some(redis)) = (caller, &self.0.redis) else {
            return;
        };
        let result = async {
            let lsn = sqlx::query_scalar!(r#"select pg_current_wal_insert_lsn()::text as "lsn!""#)
                .fetch_one(&self.0.primary)
                .await
                .map_err(|e| e.to_string())?;
            let lsn: Lsn = lsn.parse()?;
            let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
            let ttl = self.0.config.read_your_writes_ttl.as_secs().max(1);
            redis
                .bounded(
                    redis::Script::new(RECORD_POSITION)
                        .key(sticky_key(*user))
                        .arg(lsn.0)
                        .arg(ttl)
                        .invoke_async::<()>(&mut conn),
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            // The write itself succeeded; the caller may briefly read a replica that has not
            // replayed it. Counted so an operator sees it.
            metrics::counter!("db_read_your_writes_record_failures_total").increment(1);
            tracing::warn!(error = %e, "could not record a read-your-writes position");
        }
    }

    /// The primary's WAL insert position now: after a commit, at least the commit's. What a
    /// cache invalidation records, so that no refill reads a server that has not replayed it:
    /// the same position read-your-writes records (`Db::wrote`), so both rules agree on
    /// when a replica has a write.
    pub async fn primary_position(&self) -> Result<Lsn, sqlx::Error> {
        let lsn = sqlx::query_scalar!(r#"select pg_current_wal_insert_lsn()::text as "lsn!""#)
            .fetch_one(&self.0.primary)
            .await?;
        parse_lsn(&lsn)
    }

    /// The caller's last recorded write position: what a job enqueued now should carry.
    pub async fn write_position(&self, caller: &Caller) -> Option<Lsn> {
        match self.sticky(caller).await {
            Sticky::At(lsn) => Some(lsn),
            Sticky::None | Sticky::Unknown => None,
        }
    }

    async fn sticky(&self, caller: &Caller) -> Sticky {
        let Caller::User(user) = caller else {
            return Sticky::None;
        };
        let Some(redis) = &self.0.redis else {
            return Sticky::Unknown;
        };
        let result = async {
            let mut conn = redis.conn().await?;
            redis
                .bounded(
                    redis::cmd("GET")
                        .arg(sticky_key(*user))
                        .query_async::<Option<String>>(&mut conn),
                )
                .await
        }
        .await;
        match result {
            Ok(None) => Sticky::None,
            Ok(Some(s)) => s.parse().map_or(Sticky::Unknown, |n| Sticky::At(Lsn(n))),
            Err(e) => {
                tracing::warn!(error = %e, "read-your-writes position unknown; reading the primary");
                Sticky::Unknown
            }
        }
    }

    async fn decide(&self, sticky: Sticky) -> Decision {
        let mut views = Vec::with_capacity(self.0.replicas.len());
        for replica in &self.0.replicas {
            let healthy = replica.healthy.load(Ordering::Relaxed);
            let replayed = match sticky {
                Sticky::At(_) if healthy => self.replayed(replica).await,
                _ => None,
            };
            views.push(ReplicaView { healthy, replayed });
        }
        let pick = self.0.reads.fetch_add(1, Ordering::Relaxed);
        routing::decide(&views, sticky, pick)
    }

    async fn replayed(&self, replica: &Replica) -> Option<Lsn> {
        let fresh_for = self.0.config.replay_cache;
        if let Ok(cached) = replica.replayed.lock()
            && let Some((at, lsn)) = *cached
            && at.elapsed() < fresh_for
        {
            return Some(lsn);
        }
        let lsn = replay_position(&replica.pool)
            .instrument(timing::routing_span())
            .await
            .ok()?;
        if let Ok(mut cached) = replica.replayed.lock() {
            *cached = Some((Instant::now(), lsn));
        }
        Some(lsn)
    }

    async fn run<T, F, Fut>(&self, decision: Decision, query: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let Target::Replica(i) = decision.target else {
            count_read("primary", decision.reason.as_str());
            return query(self.0.primary.clone())
                .instrument(timing::role_span("primary"))
                .await;
        };
        let replica = &self.0.replicas[i];
        match query(replica.pool.clone())
            .instrument(timing::role_span("replica"))
            .await
        {
            Err(e) if is_unreachable(&e) => {
                replica.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(replica = %replica.name, error = %e, "replica unreachable; reading the primary");
                count_read("primary", "failover");
                query(self.0.primary.clone())
                    .instrument(timing::role_span("primary"))
                    .await
            }
            result => {
                count_read("replica", decision.reason.as_str());
                metrics::counter!("db_replica_reads_total", "replica" => replica.name.clone())
                    .increment(1);
                result
            }
        }
    }

    /// Starts the replica probe of this process; it runs until the process exits.
    pub fn spawn_probe(&self) {
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                db.probe().await;
                tokio::time::sleep(db.0.config.replica_probe_interval).await;
            }
        });
    }

    /// Measures every replica once and updates its health.
    pub async fn probe(&self) {
        let config = &self.0.config;
        let primary_lsn = current_position(&self.0.primary).await.ok();
        for replica in &self.0.replicas {
            let measured = lag(&replica.pool)
                .instrument(timing::role_span("replica"))
                .await;
            let healthy = match &measured {
                Ok((replayed, since_last_replay)) => {
                    let lag_bytes = primary_lsn.map_or(0, |p| p.0.saturating_sub(replayed.0));
                    // Behind only if the primary has WAL the replica has not replayed: then the
                    // time since the last replayed transaction is how stale it is. This also
                    // catches a replica whose stream stopped (it has replayed all it received).
                    let lag_secs = if lag_bytes == 0 {
                        0.0
                    } else {
                        *since_last_replay
                    };
                    let name = replica.name.clone();
                    metrics::gauge!("db_replica_lag_seconds", "replica" => name.clone())
                        .set(lag_secs);
                    metrics::gauge!("db_replica_lag_bytes", "replica" => name)
                        .set(lag_bytes as f64);
                    if let Ok(mut cached) = replica.replayed.lock() {
                        *cached = Some((Instant::now(), *replayed));
                    }
                    lag_secs <= config.replica_max_lag.as_secs_f64()
                        && lag_bytes <= config.replica_max_lag_bytes
                }
                Err(_) => false,
            };
            let was = replica.healthy.swap(healthy, Ordering::Relaxed);
            metrics::gauge!("db_replica_healthy", "replica" => replica.name.clone())
                .set(if healthy { 1.0 } else { 0.0 });
            if was != healthy {
                let replica = replica.name.as_str();
                match &measured {
                    Ok((_, lag_secs)) => {
                        tracing::warn!(replica, healthy, lag_secs, "replica health changed")
                    }
                    Err(e) => {
                        tracing::warn!(replica, healthy, error = %e, "replica health changed")
                    }
                }
            }
        }
        // The primary's series carry no `replica` label; each replica's pool has its own.
        for (role, labels, pool) in [("primary", vec![], &self.0.primary)].into_iter().chain(
            self.0
                .replicas
                .iter()
                .map(|r| ("replica", vec![("replica", r.name.clone())], &r.pool)),
        ) {
            let with = |extra: &[(&'static str, &'static str)]| {
                let mut all: Vec<metrics::Label> = vec![metrics::Label::new("role", role)];
                all.extend(
                    labels
                        .iter()
                        .map(|(k, v)| metrics::Label::new(*k, v.clone())),
                );
                all.extend(extra.iter().map(|(k, v)| metrics::Label::new(*k, *v)));
                all
            };
            metrics::gauge!("db_pool_connections", with(&[("state", "idle")]))
                .set(pool.num_idle() as f64);
            metrics::gauge!("db_pool_connections", with(&[("state", "in_use")]))
                .set((pool.size() as usize).saturating_sub(pool.num_idle()) as f64);
            metrics::gauge!("db_pool_max_connections", with(&[]))
                .set(f64::from(pool.options().get_max_connections()));
            // A sampled wait: how long this probe waited for a connection of each pool.
            let start = Instant::now();
            if pool.acquire().await.is_ok() {
                metrics::histogram!("db_pool_acquire_seconds", with(&[]))
                    .record(start.elapsed().as_secs_f64());
            }
        }
    }

    /// Closes every pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.0.primary.close().await;
        for replica in &self.0.replicas {
            replica.pool.close().await;
        }
    }
}

fn count_read(target: &'static str, reason: &'static str) {
    metrics::counter!("db_read_routing_total", "target" => target, "reason" => reason).increment(1);
}

async fn forget(
    redis: &RedisClient,
    user: Uuid,
    replayed: Lsn,
) -> Result<(), crate::redis_client::RedisError> {
    let mut conn = redis.conn().await?;
    redis
        .bounded(
            redis::Script::new(FORGET_POSITION)
                .key(sticky_key(user))
                .arg(replayed.0)
                .invoke_async::<()>(&mut conn),
        )
        .await
}

/// Connection-level failures (the server is down or unreachable), as opposed to a query that
/// failed on a working server: only these justify trying the primary.
fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

fn parse_lsn(s: &str) -> Result<Lsn, sqlx::Error> {
    s.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))
}

async fn current_position(pool: &PgPool) -> Result<Lsn, sqlx::Error> {
    let s = sqlx::query_scalar!(r#"select pg_current_wal_lsn()::text as "lsn!""#)
        .fetch_one(pool)
        .await?;
    parse_lsn(&s)
}

/// What a server has applied: a standby's replay position, or a primary's own position (a
/// "replica" pool that points at the primary is always caught up).
async fn replay_position(pool: &PgPool) -> Result<Lsn, sqlx::Error> {
    let s = sqlx::query_scalar!(
        r#"select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
                        else pg_current_wal_lsn() end)::text as "lsn!""#
    )
    .fetch_one(pool)
    .await?;
    parse_lsn(&s)
}

/// The replay position and the seconds since the last replayed transaction (0 on a primary).
async fn lag(pool: &PgPool) -> Result<(Lsn, f64), sqlx::Error> {
    let row = sqlx::query!(
        r#"select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
                        else pg_current_wal_lsn() end)::text as "replayed!",
                  (case when not pg_is_in_recovery() then 0::float8
                        else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0)::float8
                   end) as "lag_secs!""#
    )
    .fetch_one(pool)
    .await?;
    Ok((parse_lsn(&row.replayed)?, row.lag_secs))
}

fn pool_options(config: &DatabaseConfig, max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        // Zero idle minimum: instances × pool size is sized against the server's limit, and an
        // idle instance should not hold connections another could use.
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .test_before_acquire(true)
}

fn connect_options(
    config: &DatabaseConfig,
    url: &str,
    instance_id: &str,
    role: Role,
) -> Result<PgConnectOptions, sqlx::Error> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let mut options: PgConnectOptions = url.parse()?;
    options = options
        .application_name(&format!("{instance_id}/{}", role.as_str()))
        .options([("statement_timeout", statement_timeout.as_str())]);
    if role == Role::Replica {
        // Enforced by the server for every transaction on these connections: a write that
        // reaches the replica pool by mistake fails loudly instead of being silently lost.
        options = options.options([("default_transaction_read_only", "on")]);
    }
    Ok(options)
}

/// Whether a server runs a statement: the one question `/ready` (of `serve` and `worker`) and
/// `migrate` ask of Postgres. Asking with a query, not only a connection, catches a server that
/// accepts connections but cannot serve them (recovery, a full disk).
pub async fn answers(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("select 1")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// Applies `migrations/` to the primary. Only `scaleout migrate` calls this, once per deploy:
/// instances never migrate implicitly, so a rolling deploy cannot race two migrators.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

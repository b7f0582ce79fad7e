//! Typed configuration, read from environment variables only (12-factor).
//!
//! Every process type reads the concerns it needs; each concern is a struct parsed once at
//! start. A missing or malformed variable stops the process with one line naming it.
//! `.env.example` at the repository root documents every variable below.
//!
//! | variable | concern | default |
//! |---|---|---|
//! | `SCALEOUT_INSTANCE_ID` | instance | the host name |
//! | `SCALEOUT_HTTP_ADDR` | http | `127.0.0.1:8080` |
//! | `SCALEOUT_METRICS_ADDR` | internal listener | `127.0.0.1:9180` |
//! | `HTTP_REQUEST_TIMEOUT_MS` | http | `15000` |
//! | `HTTP_BODY_LIMIT_BYTES` | http | `1048576` |
//! | `SHUTDOWN_DRAIN_SECS` | shutdown | `5` |
//! | `SHUTDOWN_GRACE_SECS` | shutdown | `10` |
//! | `DATABASE_URL` | database | required |
//! | `DATABASE_REPLICA_URL` | database | `DATABASE_URL` |
//! | `DATABASE_POOL_MAX` | database | `10` |
//! | `DATABASE_REPLICA_POOL_MAX` | database | `DATABASE_POOL_MAX` |
//! | `DATABASE_ACQUIRE_TIMEOUT_MS` | database | `2000` |
//! | `DATABASE_STATEMENT_TIMEOUT_MS` | database | `5000` |
//! | `REPLICA_PROBE_INTERVAL_MS` | database | `1000` |
//! | `REPLICA_MAX_LAG_MS` | database | `10000` |
//! | `REPLICA_MAX_LAG_BYTES` | database | `16777216` |
//! | `READ_YOUR_WRITES_TTL_SECS` | database | `30` |
//! | `REPLICA_REPLAY_CACHE_MS` | database | `5` |
//! | `REDIS_URL` | redis | required |
//! | `REDIS_TIMEOUT_MS` | redis | `1000` |
//! | `S3_ENDPOINT` | storage | the AWS endpoint for the region |
//! | `S3_REGION` | storage | `us-east-1` |
//! | `S3_BUCKET` | storage | required |
//! | `S3_ACCESS_KEY_ID` | storage | required |
//! | `S3_SECRET_ACCESS_KEY` | storage | required |
//! | `S3_FORCE_PATH_STYLE` | storage | `true` |
//! | `S3_TIMEOUT_MS` | storage | `5000` |
//! | `S3_PUBLIC_ENDPOINT` | storage | `S3_ENDPOINT`: where clients reach presigned URLs |
//! | `UPLOAD_MAX_BYTES` | files | `262144000` (250 MiB) |
//! | `UPLOAD_PART_BYTES` | files | `8388608` (8 MiB; S3's minimum is 5 MiB) |
//! | `UPLOAD_ALLOWED_TYPES` | files | `image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain` |
//! | `UPLOAD_TIMEOUT_SECS` | files | `600`: the whole request of a streamed upload |
//! | `UPLOAD_URL_TTL_SECS` | files | `900`: presigned PUT for direct uploads |
//! | `DOWNLOAD_URL_TTL_SECS` | files | `300`: presigned GET behind `/content` |
//! | `AVATAR_MAX_BYTES` | files | `5242880` (5 MiB) |
//! | `READY_CHECK_TIMEOUT_MS` | readiness | `1000` |
//! | `JOBS_CONCURRENCY` | jobs (worker) | `4`: jobs one worker process runs at once |
//! | `JOBS_POLL_INTERVAL_MS` | jobs | `1000`: poll for due retries (new jobs arrive by NOTIFY) |
//! | `JOBS_HEARTBEAT_SECS` | jobs | `10` |
//! | `JOBS_MISSED_HEARTBEATS` | jobs | `3`: a silent worker's jobs are re-queued after 30 s |
//! | `JOBS_TIMEOUT_SECS` | jobs | `300`: one attempt of one job |
//! | `JOBS_BACKOFF_BASE_MS` | jobs | `2000`: delay before the 2nd attempt, doubling after |
//! | `JOBS_BACKOFF_MAX_MS` | jobs | `300000` |
//! | `JOBS_PURGE_INTERVAL_SECS` | jobs | `3600`: abandoned direct uploads are purged this often |
//! | `JOBS_PURGE_GRACE_SECS` | jobs | `3600`: how long past its expiry a pending upload is kept |
//! | `JOBS_RETENTION_DAYS` | jobs | `14`: succeeded jobs are deleted after this (failed ones are kept) |
//! | `SMTP_URL` | email (worker) | required: `smtp://host:port` (plain) or `smtps://` |
//! | `EMAIL_FROM` | email | `scaleout <no-reply@scaleout.local>` |
//! | `SMTP_TIMEOUT_MS` | email | `10000` |
//! | `SESSION_COOKIE_SECURE` | auth | `true` (`false` only for plain-http local use) |
//! | `SESSION_INACTIVITY_SECS` | auth | `1800` |
//! | `ALLOWED_ORIGINS` | auth | empty: no browser origin may change state |
//! | `TRUST_PROXY_HEADERS` | auth | `false` (`true` behind nginx, which sets `X-Real-IP`) |
//! | `LOGIN_MAX_FAILURES_PER_ACCOUNT` | auth | `5` |
//! | `LOGIN_MAX_FAILURES_PER_ADDRESS` | auth | `50` |
//! | `LOGIN_FAILURE_WINDOW_SECS` | auth | `900` |
//! | `LOG_FORMAT` | logs | `json` (`pretty` for humans) |
//! | `RUST_LOG` | logs | `info` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | traces | unset: no trace export |

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, reported as one line: the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// A value that must never reach a log line or an error message (passwords, keys, URLs that
/// embed credentials). `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The only way to read the value: greppable, so every use is deliberate.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where variables come from. Production reads the process environment; tests pass a map so
/// they never mutate global state shared by parallel tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Source for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Reads typed variables from a [`Source`], treating an empty value as unset.
struct Reader<'a>(&'a dyn Source);

impl Reader<'_> {
    fn raw(&self, var: &str) -> Option<String> {
        self.0.get(var).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.raw(var).ok_or_else(|| ConfigError {
            var,
            problem: "is not set".into(),
        })
    }

    fn parse<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e| ConfigError {
                var,
                problem: format!("cannot parse {value:?}: {e}"),
            }),
        }
    }

    /// A positive number of milliseconds (or seconds, with `unit`).
    fn duration(
        &self,
        var: &'static str,
        default: u64,
        unit: fn(u64) -> Duration,
    ) -> Result<Duration, ConfigError> {
        let n: u64 = self.parse(var, default)?;
        if n == 0 {
            return Err(ConfigError {
                var,
                problem: "must be greater than zero".into(),
            });
        }
        Ok(unit(n))
    }

    fn positive(&self, var: &'static str, default: u32) -> Result<u32, ConfigError> {
        let n = self.parse(var, default)?;
        if n == 0 {
            return Err(ConfigError {
                var,
                problem: "must be greater than zero".into(),
            });
        }
        Ok(n)
    }

    fn url(&self, var: &'static str, schemes: &[&str]) -> Result<Secret, ConfigError> {
        let value = self.required(var)?;
        check_scheme(var, &value, schemes)?;
        Ok(Secret::new(value))
    }
}

fn check_scheme(var: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = value.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if schemes.contains(&s) => Ok(()),
        // The value may hold a password: name the expected schemes, never echo it.
        _ => Err(ConfigError {
            var,
            problem: format!("must be a URL starting with {}://", schemes.join(":// or ")),
        }),
    }
}

/// Identity of this process in logs, metrics, `X-Instance-Id` and Postgres' `application_name`.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub id: String,
}

impl InstanceConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let id = match r.raw("SCALEOUT_INSTANCE_ID") {
            Some(id) => id,
            // In containers the host name is unique per replica, which is what we want.
            None => std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "scaleout".into()),
        };
        let valid = id.len() <= 63
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid {
            return Err(ConfigError {
                var: "SCALEOUT_INSTANCE_ID",
                problem: "must be at most 63 characters of letters, digits, '-', '_' or '.'".into(),
            });
        }
        Ok(Self { id })
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
}

impl HttpConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        Ok(Self {
            addr: r.parse("SCALEOUT_HTTP_ADDR", ([127, 0, 0, 1], 8080).into())?,
            request_timeout: r.duration(
                "HTTP_REQUEST_TIMEOUT_MS",
                15_000,
                Duration::from_millis,
            )?,
            body_limit_bytes: r.positive("HTTP_BODY_LIMIT_BYTES", 1024 * 1024)? as usize,
        })
    }
}

/// The internal listener: Prometheus metrics and the process' own health, never proxied.
#[derive(Debug, Clone)]
pub struct InternalConfig {
    pub addr: SocketAddr,
}

impl InternalConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        Ok(Self {
            addr: r.parse("SCALEOUT_METRICS_ADDR", ([127, 0, 0, 1], 9180).into())?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// How long `/health` reports 503 while still serving, so load balancers move away first.
    pub drain: Duration,
    /// How long in-flight work may take once the listener has closed.
    pub grace: Duration,
}

impl ShutdownConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let drain_secs: u64 = r.parse("SHUTDOWN_DRAIN_SECS", 5)?;
        Ok(Self {
            // Zero is allowed: a process with no load balancer in front need not wait.
            drain: Duration::from_secs(drain_secs),
            grace: r.duration("SHUTDOWN_GRACE_SECS", 10, Duration::from_secs)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub primary_url: Secret,
    pub replica_url: Secret,
    pub primary_pool_max: u32,
    pub replica_pool_max: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// How often each instance measures replica lag.
    pub replica_probe_interval: Duration,
    /// A replica further behind than this (in time or in WAL bytes) gets no reads.
    pub replica_max_lag: Duration,
    pub replica_max_lag_bytes: u64,
    /// How long a user's write position is kept: the bound on how long they may be sticky.
    pub read_your_writes_ttl: Duration,
    /// How long a replica's replayed position is reused before asking again.
    pub replay_cache: Duration,
}

impl DatabaseConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        const SCHEMES: &[&str] = &["postgres", "postgresql"];
        let primary_url = r.url("DATABASE_URL", SCHEMES)?;
        // Without a replica the read pool points at the primary: still read-only, so code
        // that wrongly writes through `read` fails in development exactly as in production.
        let replica_url = match r.raw("DATABASE_REPLICA_URL") {
            Some(_) => r.url("DATABASE_REPLICA_URL", SCHEMES)?,
            None => primary_url.clone(),
        };
        let primary_pool_max = r.positive("DATABASE_POOL_MAX", 10)?;
        Ok(Self {
            primary_url,
            replica_url,
            primary_pool_max,
            replica_pool_max: r.positive("DATABASE_REPLICA_POOL_MAX", primary_pool_max)?,
            acquire_timeout: r.duration(
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                2_000,
                Duration::from_millis,
            )?,
            statement_timeout: r.duration(
                "DATABASE_STATEMENT_TIMEOUT_MS",
                5_000,
                Duration::from_millis,
            )?,
            replica_probe_interval: r.duration(
                "REPLICA_PROBE_INTERVAL_MS",
                1_000,
                Duration::from_millis,
            )?,
            replica_max_lag: r.duration("REPLICA_MAX_LAG_MS", 10_000, Duration::from_millis)?,
            replica_max_lag_bytes: r.parse("REPLICA_MAX_LAG_BYTES", 16 * 1024 * 1024)?,
            read_your_writes_ttl: r.duration(
                "READ_YOUR_WRITES_TTL_SECS",
                30,
                Duration::from_secs,
            )?,
            replay_cache: r.duration("REPLICA_REPLAY_CACHE_MS", 5, Duration::from_millis)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    /// Bound on connecting and on every command: Redis being away must never hang a request.
    pub timeout: Duration,
}

impl RedisConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        Ok(Self {
            url: r.url("REDIS_URL", &["redis", "rediss"])?,
            timeout: r.duration("REDIS_TIMEOUT_MS", 1_000, Duration::from_millis)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Path-style addressing (`endpoint/bucket/key`): what Garage and MinIO expect.
    pub force_path_style: bool,
    pub timeout: Duration,
    /// The endpoint written into presigned URLs: clients may not reach the internal one
    /// (a compose service name, a private address).
    pub public_endpoint: Option<String>,
}

impl StorageConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let endpoint = match r.raw("S3_ENDPOINT") {
            Some(e) => {
                check_scheme("S3_ENDPOINT", &e, &["http", "https"])?;
                Some(e)
            }
            None => None,
        };
        Ok(Self {
            endpoint,
            region: r.raw("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            bucket: r.required("S3_BUCKET")?,
            access_key_id: r.required("S3_ACCESS_KEY_ID")?,
            secret_access_key: Secret::new(r.required("S3_SECRET_ACCESS_KEY")?),
            force_path_style: r.parse("S3_FORCE_PATH_STYLE", true)?,
            timeout: r.duration("S3_TIMEOUT_MS", 5_000, Duration::from_millis)?,
            public_endpoint: match r.raw("S3_PUBLIC_ENDPOINT") {
                Some(e) => {
                    check_scheme("S3_PUBLIC_ENDPOINT", &e, &["http", "https"])?;
                    Some(e)
                }
                None => None,
            },
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReadyConfig {
    /// Each dependency check in `/ready` gives up after this long and reports the dependency down.
    pub check_timeout: Duration,
}

impl ReadyConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        Ok(Self {
            check_timeout: r.duration("READY_CHECK_TIMEOUT_MS", 1_000, Duration::from_millis)?,
        })
    }
}

/// Uploads: how large, which types, how long a presigned URL lives.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub max_bytes: u64,
    /// Bytes buffered per multipart part: the memory one streamed upload holds at once.
    pub part_bytes: usize,
    /// Content types accepted, as recognised from a file's leading bytes.
    pub allowed_types: Vec<String>,
    pub upload_timeout: Duration,
    pub upload_url_ttl: Duration,
    pub download_url_ttl: Duration,
    pub avatar_max_bytes: u64,
}

/// S3 refuses parts under 5 MiB, except the last.
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

impl FilesConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let part_bytes: usize = r.parse("UPLOAD_PART_BYTES", 8 * 1024 * 1024)?;
        if part_bytes < MIN_PART_BYTES {
            return Err(ConfigError {
                var: "UPLOAD_PART_BYTES",
                problem: format!("must be at least {MIN_PART_BYTES} (S3's minimum part size)"),
            });
        }
        let allowed_types = r
            .raw("UPLOAD_ALLOWED_TYPES")
            .unwrap_or_else(|| {
                "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain".into()
            })
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>();
        if let Some(unknown) = allowed_types
            .iter()
            .find(|t| !crate::files::sniff::RECOGNISED.contains(&t.as_str()))
        {
            return Err(ConfigError {
                var: "UPLOAD_ALLOWED_TYPES",
                problem: format!(
                    "{unknown:?} cannot be recognised from a file's bytes; choose from {}",
                    crate::files::sniff::RECOGNISED.join(", ")
                ),
            });
        }
        let max_bytes = r.parse::<u64>("UPLOAD_MAX_BYTES", 250 * 1024 * 1024)?;
        let avatar_max_bytes = r.parse::<u64>("AVATAR_MAX_BYTES", 5 * 1024 * 1024)?;
        for (var, value) in [
            ("UPLOAD_MAX_BYTES", max_bytes),
            ("AVATAR_MAX_BYTES", avatar_max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    var,
                    problem: "must be greater than zero".into(),
                });
            }
        }
        Ok(Self {
            max_bytes,
            part_bytes,
            allowed_types,
            upload_timeout: r.duration("UPLOAD_TIMEOUT_SECS", 600, Duration::from_secs)?,
            upload_url_ttl: r.duration("UPLOAD_URL_TTL_SECS", 900, Duration::from_secs)?,
            download_url_ttl: r.duration("DOWNLOAD_URL_TTL_SECS", 300, Duration::from_secs)?,
            avatar_max_bytes,
        })
    }
}

/// The job worker: how many jobs at once, how fast it notices others' deaths, how it retries.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub purge_interval: Duration,
    pub purge_grace: Duration,
    /// Succeeded jobs are deleted this many days after they finished.
    pub retention_days: u32,
}

impl JobsConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        Ok(Self {
            concurrency: r.positive("JOBS_CONCURRENCY", 4)? as usize,
            poll_interval: r.duration("JOBS_POLL_INTERVAL_MS", 1000, Duration::from_millis)?,
            heartbeat: r.duration("JOBS_HEARTBEAT_SECS", 10, Duration::from_secs)?,
            missed_heartbeats: r.positive("JOBS_MISSED_HEARTBEATS", 3)? as usize,
            timeout: r.duration("JOBS_TIMEOUT_SECS", 300, Duration::from_secs)?,
            backoff_base: r.duration("JOBS_BACKOFF_BASE_MS", 2000, Duration::from_millis)?,
            backoff_max: r.duration("JOBS_BACKOFF_MAX_MS", 300_000, Duration::from_millis)?,
            purge_interval: r.duration("JOBS_PURGE_INTERVAL_SECS", 3600, Duration::from_secs)?,
            purge_grace: Duration::from_secs(r.parse("JOBS_PURGE_GRACE_SECS", 3600)?),
            retention_days: r.positive("JOBS_RETENTION_DAYS", 14)?,
        })
    }
}

/// Where emails go: an SMTP relay (a provider, a local MTA, or the topology's sink).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `smtps://`: TLS from the first byte. `smtp://` is plain, for loopback and private relays.
    pub tls: bool,
    pub from: String,
    pub timeout: Duration,
}

impl SmtpConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let url = r.required("SMTP_URL")?;
        let invalid = || ConfigError {
            var: "SMTP_URL",
            problem: "must look like smtp://host:port or smtps://host:port".into(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let tls = match scheme {
            "smtp" => false,
            "smtps" => true,
            _ => return Err(invalid()),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| invalid())?),
            None => (rest, if tls { 465 } else { 25 }),
        };
        if host.is_empty() {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            from: r
                .raw("EMAIL_FROM")
                .unwrap_or_else(|| "scaleout <no-reply@scaleout.local>".into()),
            timeout: r.duration("SMTP_TIMEOUT_MS", 10_000, Duration::from_millis)?,
        })
    }
}

/// Sessions, cross-site protection and login throttling.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Sends the session cookie over HTTPS only. Off only for plain-http local use.
    pub cookie_secure: bool,
    /// A session unused for this long expires (each request extends it).
    pub session_inactivity: Duration,
    /// Browser origins allowed to make state-changing requests (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Take the client address from `X-Real-IP`; only behind a proxy that always sets it.
    pub trust_proxy_headers: bool,
    pub login_max_failures_per_account: u64,
    pub login_max_failures_per_address: u64,
    pub login_failure_window: Duration,
}

impl AuthConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let allowed_origins = r
            .raw("ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>();
        for origin in &allowed_origins {
            check_scheme("ALLOWED_ORIGINS", origin, &["http", "https"])?;
        }
        Ok(Self {
            cookie_secure: r.parse("SESSION_COOKIE_SECURE", true)?,
            session_inactivity: r.duration("SESSION_INACTIVITY_SECS", 1800, Duration::from_secs)?,
            allowed_origins,
            trust_proxy_headers: r.parse("TRUST_PROXY_HEADERS", false)?,
            login_max_failures_per_account: u64::from(
                r.positive("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5)?,
            ),
            login_max_failures_per_address: u64::from(
                r.positive("LOGIN_MAX_FAILURES_PER_ADDRESS", 50)?,
            ),
            login_failure_window: r.duration(
                "LOGIN_FAILURE_WINDOW_SECS",
                900,
                Duration::from_secs,
            )?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    /// OTLP/HTTP collector base URL (`http://collector:4318`); spans go to `/v1/traces`.
    pub otlp_endpoint: Option<String>,
}

impl LogConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader(source);
        let format = match r.raw("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError {
                    var: "LOG_FORMAT",
                    problem: format!("must be json or pretty, not {other:?}"),
                });
            }
        };
        let otlp_endpoint = match r.raw("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(e) => {
                check_scheme("OTEL_EXPORTER_OTLP_ENDPOINT", &e, &["http", "https"])?;
                Some(e)
            }
            None => None,
        };
        Ok(Self {
            format,
            filter: r.raw("RUST_LOG").unwrap_or_else(|| "info".into()),
            otlp_endpoint,
        })
    }
}

/// Everything `scaleout serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub instance: InstanceConfig,
    pub http: HttpConfig,
    pub internal: InternalConfig,
    pub shutdown: ShutdownConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub storage: StorageConfig,
    pub files: FilesConfig,
    pub ready: ReadyConfig,
    pub auth: AuthConfig,
}

impl ServeConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            instance: InstanceConfig::from_source(source)?,
            http: HttpConfig::from_source(source)?,
            internal: InternalConfig::from_source(source)?,
            shutdown: ShutdownConfig::from_source(source)?,
            database: DatabaseConfig::from_source(source)?,
            redis: RedisConfig::from_source(source)?,
            storage: StorageConfig::from_source(source)?,
            files: FilesConfig::from_source(source)?,
            ready: ReadyConfig::from_source(source)?,
            auth: AuthConfig::from_source(source)?,
        })
    }
}

/// Everything `scaleout worker` needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub instance: InstanceConfig,
    pub internal: InternalConfig,
    pub shutdown: ShutdownConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub storage: StorageConfig,
    pub files: FilesConfig,
    pub ready: ReadyConfig,
    pub jobs: JobsConfig,
    pub smtp: SmtpConfig,
}

impl WorkerConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            instance: InstanceConfig::from_source(source)?,
            internal: InternalConfig::from_source(source)?,
            shutdown: ShutdownConfig::from_source(source)?,
            database: DatabaseConfig::from_source(source)?,
            redis: RedisConfig::from_source(source)?,
            storage: StorageConfig::from_source(source)?,
            files: FilesConfig::from_source(source)?,
            ready: ReadyConfig::from_source(source)?,
            jobs: JobsConfig::from_source(source)?,
            smtp: SmtpConfig::from_source(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = DatabaseConfig::from_source(&source(&[])).expect_err("refused");
        assert_eq!(err.to_string(), "DATABASE_URL: is not set");
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_its_credentials() {
        let err =
            DatabaseConfig::from_source(&source(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]))
                .expect_err("refused");
        assert_eq!(err.var, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_replica_defaults_to_the_primary() {
        let cfg = DatabaseConfig::from_source(&source(&[("DATABASE_URL", "postgres://h/db")]))
            .expect("valid");
        assert_eq!(cfg.replica_url, cfg.primary_url);
        assert_eq!(cfg.replica_pool_max, 10);
    }

    #[test]
    fn a_malformed_number_is_named_with_its_value() {
        let err = HttpConfig::from_source(&source(&[("HTTP_REQUEST_TIMEOUT_MS", "soon")]))
            .expect_err("refused");
        assert_eq!(err.var, "HTTP_REQUEST_TIMEOUT_MS");
        assert!(err.problem.contains("\"soon\""), "{err}");
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let err = RedisConfig::from_source(&source(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_TIMEOUT_MS", "0"),
        ]))
        .expect_err("refused");
        assert_eq!(err.var, "REDIS_TIMEOUT_MS");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn unknown_log_formats_are_refused() {
        let err = LogConfig::from_source(&source(&[("LOG_FORMAT", "xml")])).expect_err("refused");
        assert_eq!(err.var, "LOG_FORMAT");
    }
}

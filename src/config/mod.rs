//! Typed configuration, read from environment variables only (12-factor).
//!
//! Every process type reads the concerns it needs; each concern is a struct parsed once at
//! start. A missing or malformed variable stops the process with one line naming it.
//!
//! Each concern's module declares its variables once, in its `VARS`: name, default, meaning.
//! The reader takes defaults from that declaration, and tests check the module's doc table and
//! `.env.example` against it, so neither can drift from the code. To add a variable: declare it
//! in `VARS`, read it through the reader, then let the tests name what else to write.
//!
//! | module | concern | read by |
//! |---|---|---|
//! | [`instance`] | the process' name in logs, metrics and Postgres | serve, worker, migrate |
//! | [`http`] | the public listener, request timeout and body size | serve |
//! | [`internal`] | the `/metrics` and `/health` listener | serve, worker |
//! | [`shutdown`] | draining and grace after SIGTERM | serve, worker |
//! | [`database`] | primary, replica, pools, replica lag, read-your-writes | serve, worker, migrate |
//! | [`redis`] | sessions, rate limits, write positions | serve, worker |
//! | [`cache`] | the application cache in Redis: freshness, jitter, stampede lock | serve, worker (invalidations) |
//! | [`storage`] | the S3-compatible bucket | serve, worker |
//! | [`files`] | upload sizes, types and URL lifetimes | serve, worker |
//! | [`capacity`] | password hashes and uploads in flight per instance | serve |
//! | [`ready`] | `/ready`'s dependency checks | serve, worker |
//! | [`jobs`] | the job worker: concurrency, heartbeats, retries, purges | worker |
//! | [`email`] | the SMTP relay and sender | worker |
//! | [`auth`] | sessions, allowed origins, login throttling | serve |
//! | [`rate_limits`] | the API's request limits per address, account and route | serve |
//! | [`logs`] | log format and filter, trace export | serve, worker, migrate |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub mod auth;
pub mod cache;
pub mod capacity;
pub mod database;
pub mod email;
pub mod files;
pub mod http;
pub mod instance;
pub mod internal;
pub mod jobs;
pub mod logs;
pub mod rate_limits;
pub mod ready;
pub mod redis;
pub mod shutdown;
pub mod storage;

#[cfg(test)]
mod tests;

pub use auth::AuthConfig;
pub use cache::CacheConfig;
pub use capacity::CapacityConfig;
pub use database::DatabaseConfig;
pub use email::SmtpConfig;
pub use files::FilesConfig;
pub use http::HttpConfig;
pub use instance::InstanceConfig;
pub use internal::InternalConfig;
pub use jobs::JobsConfig;
pub use logs::{LogConfig, LogFormat};
pub use rate_limits::RateLimitsConfig;
pub use ready::ReadyConfig;
pub use redis::RedisConfig;
pub use shutdown::ShutdownConfig;
pub use storage::StorageConfig;

/// Every concern's variables, in the order `.env.example` presents them.
pub const ALL_VARS: &[&[Var]] = &[
    instance::VARS,
    http::VARS,
    internal::VARS,
    shutdown::VARS,
    database::VARS,
    redis::VARS,
    cache::VARS,
    storage::VARS,
    files::VARS,
    capacity::VARS,
    jobs::VARS,
    email::VARS,
    ready::VARS,
    auth::VARS,
    rate_limits::VARS,
    logs::VARS,
];

/// One environment variable, declared once beside the code that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    pub default: Fallback,
    /// One line for the module's doc table.
    pub about: &'static str,
}

/// What a variable is when it is unset (or empty).
///
/// Not called `Default`, so that the standard trait stays in scope in every config module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// This text, parsed exactly as a value from the environment would be.
    Value(&'static str),
    /// No default: the process refuses to start without it.
    Required,
    /// The value of the named variable (a replica that is the primary, say).
    Derived(&'static str),
    /// Absent, with this effect (`"no trace export"`, `"the host name"`).
    Unset(&'static str),
}

impl Fallback {
    /// How the default reads in docs and after `Default:` in `.env.example`; `None` when required.
    pub fn describe(&self) -> Option<&'static str> {
        match *self {
            Self::Value(text) | Self::Derived(text) | Self::Unset(text) => Some(text),
            Self::Required => None,
        }
    }
}

/// A configuration problem, reported as one line: the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// A value that must never reach a log line or an error message (passwords, keys, URLs that
/// embed credentials). `Debug` prints a placeholder, and there is no `Display`.
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

/// Reads one concern's typed variables from a [`Source`], treating an empty value as unset.
///
/// Every read names a variable of the concern's `VARS` and takes its default from there. Reading
/// an undeclared variable, or one declared with another kind of default than the read expects,
/// panics: that is a mistake in the code, which the config tests reach on every path.
struct Reader<'a> {
    source: &'a dyn Source,
    vars: &'static [Var],
}

impl<'a> Reader<'a> {
    fn new(source: &'a dyn Source, vars: &'static [Var]) -> Self {
        Self { source, vars }
    }

    fn declared(&self, var: &str) -> Fallback {
        match self.vars.iter().find(|v| v.name == var) {
            Some(declared) => declared.default,
            None => panic!("{var} is read but not declared in its concern's VARS"),
        }
    }

    fn set(&self, var: &str) -> Option<String> {
        self.source.get(var).filter(|v| !v.trim().is_empty())
    }

    /// The value if set, for a variable whose default the code works out itself
    /// ([`Fallback::Derived`] or [`Fallback::Unset`]).
    fn raw(&self, var: &'static str) -> Option<String> {
        match self.declared(var) {
            Fallback::Derived(_) | Fallback::Unset(_) => self.set(var),
            other => panic!("{var} is declared {other:?}: read it with its default or as required"),
        }
    }

    /// The value if set, else the declared [`Fallback::Value`].
    fn text(&self, var: &'static str) -> String {
        match self.declared(var) {
            Fallback::Value(default) => self.set(var).unwrap_or_else(|| default.to_owned()),
            other => panic!("{var} is declared {other:?}, not with a default value"),
        }
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        let declared = self.declared(var);
        assert!(
            declared == Fallback::Required,
            "{var} is read as required but declared {declared:?}"
        );
        self.set(var).ok_or_else(|| ConfigError {
            var,
            problem: "is not set".into(),
        })
    }

    fn parse<T>(&self, var: &'static str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        parse_value(var, self.text(var))
    }

    /// A [`Fallback::Derived`] variable: `derived` is the value of the one it follows.
    fn parse_or<T>(&self, var: &'static str, derived: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(derived),
            Some(value) => parse_value(var, value),
        }
    }

    /// A positive number of milliseconds (or seconds, with `unit`).
    fn duration(
        &self,
        var: &'static str,
        unit: fn(u64) -> Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(unit(positive(var, self.parse(var)?)?))
    }

    /// A [`duration`](Self::duration) of at most [`MAX_WINDOW`]: for the windows and waits
    /// Redis keeps keys for, where a larger value would overflow a millisecond count or reach
    /// Redis as a number in exponent notation, which it refuses at every request.
    fn window(
        &self,
        var: &'static str,
        unit: fn(u64) -> Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.duration(var, unit)?;
        if value > MAX_WINDOW {
            return Err(ConfigError {
                var,
                problem: format!("must be at most {} seconds (a year)", MAX_WINDOW.as_secs()),
            });
        }
        Ok(value)
    }

    fn positive(&self, var: &'static str) -> Result<u32, ConfigError> {
        positive(var, self.parse(var)?)
    }

    /// A positive [`Fallback::Derived`] number: `derived` is the value of the one it follows.
    fn positive_or(&self, var: &'static str, derived: u32) -> Result<u32, ConfigError> {
        positive(var, self.parse_or(var, derived)?)
    }

    fn url(&self, var: &'static str, schemes: &[&str]) -> Result<Secret, ConfigError> {
        let value = self.required(var)?;
        check_scheme(var, &value, schemes)?;
        Ok(Secret::new(value))
    }
}

fn parse_value<T>(var: &'static str, value: String) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e| ConfigError {
        var,
        problem: format!("cannot parse {value:?}: {e}"),
    })
}

/// The longest window or wait a limit may have (see `Reader::window`).
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

fn positive<T: PartialEq + From<u8>>(var: &'static str, n: T) -> Result<T, ConfigError> {
    if n == T::from(0) {
        return Err(ConfigError {
            var,
            problem: "must be greater than zero".into(),
        });
    }
    Ok(n)
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

/// Everything `scaleout serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub instance: InstanceConfig,
    pub http: HttpConfig,
    pub internal: InternalConfig,
    pub shutdown: ShutdownConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub storage: StorageConfig,
    pub files: FilesConfig,
    pub capacity: CapacityConfig,
    pub ready: ReadyConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitsConfig,
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
            cache: CacheConfig::from_source(source, &RedisConfig::from_source(source)?)?,
            storage: StorageConfig::from_source(source)?,
            files: FilesConfig::from_source(source)?,
            capacity: CapacityConfig::from_source(source)?,
            ready: ReadyConfig::from_source(source)?,
            auth: AuthConfig::from_source(source)?,
            rate_limits: RateLimitsConfig::from_source(source)?,
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
    /// The cache's Redis, which the jobs' invalidations must reach.
    pub cache: CacheConfig,
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
            cache: CacheConfig::from_source(source, &RedisConfig::from_source(source)?)?,
            storage: StorageConfig::from_source(source)?,
            files: FilesConfig::from_source(source)?,
            ready: ReadyConfig::from_source(source)?,
            jobs: JobsConfig::from_source(source)?,
            smtp: SmtpConfig::from_source(source)?,
        })
    }
}

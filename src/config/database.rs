//! Postgres: the primary, its streaming replicas, their pools, and when a replica may serve reads.
//!
//! Every URL takes libpq's TLS parameters: `?sslmode=verify-full&sslrootcert=/path/ca.pem`
//! checks the server's certificate against that CA bundle and its host name (`require`
//! encrypts without checking who answers).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | required | The primary: every write, and what `scaleout migrate` migrates |
//! | `DATABASE_REPLICA_URL` | `DATABASE_URL` | The streaming replica: reads, on read-only connections |
//! | `DATABASE_REPLICA_URLS` | `DATABASE_REPLICA_URL` | Several streaming replicas, comma-separated: reads spread over the healthy ones (not with `DATABASE_REPLICA_URL`) |
//! | `DATABASE_POOL_MAX` | `10` | Connections in the primary pool of each process |
//! | `DATABASE_REPLICA_POOL_MAX` | `DATABASE_POOL_MAX` | Connections in each replica's pool of each process |
//! | `DATABASE_ACQUIRE_TIMEOUT_MS` | `2000` | How long a request waits for a free connection before failing with 503 |
//! | `DATABASE_STATEMENT_TIMEOUT_MS` | `5000` | Server-side `statement_timeout` on every connection |
//! | `REPLICA_PROBE_INTERVAL_MS` | `1000` | How often each instance measures each replica's lag |
//! | `REPLICA_MAX_LAG_MS` | `10000` | A replica further behind than this gets no reads until it recovers |
//! | `REPLICA_MAX_LAG_BYTES` | `16777216` | The same bound in bytes of WAL not yet replayed |
//! | `READ_YOUR_WRITES_TTL_SECS` | `30` | The longest a user's reads stay on the primary after their write |
//! | `REPLICA_REPLAY_CACHE_MS` | `5` | How long a replica's replayed position is reused before asking again |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Secret, Source, Var, check_scheme};

pub const VARS: &[Var] = &[
    Var {
        name: "DATABASE_URL",
        default: Fallback::Required,
        about: "The primary: every write, and what `scaleout migrate` migrates",
    },
    Var {
        name: "DATABASE_REPLICA_URL",
        default: Fallback::Derived("DATABASE_URL"),
        about: "The streaming replica: reads, on read-only connections",
    },
    Var {
        name: "DATABASE_REPLICA_URLS",
        default: Fallback::Derived("DATABASE_REPLICA_URL"),
        about: "Several streaming replicas, comma-separated: reads spread over the healthy ones (not with `DATABASE_REPLICA_URL`)",
    },
    Var {
        name: "DATABASE_POOL_MAX",
        default: Fallback::Value("10"),
        about: "Connections in the primary pool of each process",
    },
    Var {
        name: "DATABASE_REPLICA_POOL_MAX",
        default: Fallback::Derived("DATABASE_POOL_MAX"),
        about: "Connections in each replica's pool of each process",
    },
    Var {
        name: "DATABASE_ACQUIRE_TIMEOUT_MS",
        default: Fallback::Value("2000"),
        about: "How long a request waits for a free connection before failing with 503",
    },
    Var {
        name: "DATABASE_STATEMENT_TIMEOUT_MS",
        default: Fallback::Value("5000"),
        about: "Server-side `statement_timeout` on every connection",
    },
    Var {
        name: "REPLICA_PROBE_INTERVAL_MS",
        default: Fallback::Value("1000"),
        about: "How often each instance measures each replica's lag",
    },
    Var {
        name: "REPLICA_MAX_LAG_MS",
        default: Fallback::Value("10000"),
        about: "A replica further behind than this gets no reads until it recovers",
    },
    Var {
        name: "REPLICA_MAX_LAG_BYTES",
        default: Fallback::Value("16777216"),
        about: "The same bound in bytes of WAL not yet replayed",
    },
    Var {
        name: "READ_YOUR_WRITES_TTL_SECS",
        default: Fallback::Value("30"),
        about: "The longest a user's reads stay on the primary after their write",
    },
    Var {
        name: "REPLICA_REPLAY_CACHE_MS",
        default: Fallback::Value("5"),
        about: "How long a replica's replayed position is reused before asking again",
    },
];

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub primary_url: Secret,
    /// At least one: the primary itself when no replica is configured.
    pub replica_urls: Vec<Secret>,
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
        let r = Reader::new(source, VARS);
        const SCHEMES: &[&str] = &["postgres", "postgresql"];
        let primary_url = r.url("DATABASE_URL", SCHEMES)?;
        // Without a replica the read pool points at the primary: still read-only, so code
        // that wrongly writes through `read` fails in development exactly as in production.
        let replica_urls = match (
            r.raw("DATABASE_REPLICA_URL"),
            r.raw("DATABASE_REPLICA_URLS"),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError {
                    var: "DATABASE_REPLICA_URLS",
                    problem: "set together with DATABASE_REPLICA_URL: set one of the two".into(),
                });
            }
            (Some(url), None) => {
                check_scheme("DATABASE_REPLICA_URL", &url, SCHEMES)?;
                vec![Secret::new(url)]
            }
            (None, Some(list)) => {
                let mut urls = Vec::new();
                for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                    check_scheme("DATABASE_REPLICA_URLS", url, SCHEMES)?;
                    urls.push(Secret::new(url));
                }
                if urls.is_empty() {
                    return Err(ConfigError {
                        var: "DATABASE_REPLICA_URLS",
                        problem: "lists no URL".into(),
                    });
                }
                urls
            }
            (None, None) => vec![primary_url.clone()],
        };
        let primary_pool_max = r.positive("DATABASE_POOL_MAX")?;
        Ok(Self {
            primary_url,
            replica_urls,
            primary_pool_max,
            replica_pool_max: r.positive_or("DATABASE_REPLICA_POOL_MAX", primary_pool_max)?,
            acquire_timeout: r.duration("DATABASE_ACQUIRE_TIMEOUT_MS", Duration::from_millis)?,
            statement_timeout: r
                .duration("DATABASE_STATEMENT_TIMEOUT_MS", Duration::from_millis)?,
            replica_probe_interval: r
                .duration("REPLICA_PROBE_INTERVAL_MS", Duration::from_millis)?,
            replica_max_lag: r.duration("REPLICA_MAX_LAG_MS", Duration::from_millis)?,
            replica_max_lag_bytes: r.parse("REPLICA_MAX_LAG_BYTES")?,
            read_your_writes_ttl: r.duration("READ_YOUR_WRITES_TTL_SECS", Duration::from_secs)?,
            replay_cache: r.duration("REPLICA_REPLAY_CACHE_MS", Duration::from_millis)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::source;

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
        assert_eq!(cfg.replica_urls.len(), 1);
        assert_eq!(cfg.replica_urls[0], cfg.primary_url);
        assert_eq!(cfg.replica_pool_max, 10);
    }

    #[test]
    fn several_replicas_are_a_comma_separated_list() {
        let cfg = DatabaseConfig::from_source(&source(&[
            ("DATABASE_URL", "postgres://p/db"),
            (
                "DATABASE_REPLICA_URLS",
                "postgres://r1/db, postgresql://r2/db?sslmode=verify-full,",
            ),
        ]))
        .expect("valid");
        let urls: Vec<&str> = cfg.replica_urls.iter().map(Secret::expose).collect();
        assert_eq!(
            urls,
            ["postgres://r1/db", "postgresql://r2/db?sslmode=verify-full"]
        );
    }

    #[test]
    fn one_replica_and_a_list_together_are_refused() {
        let err = DatabaseConfig::from_source(&source(&[
            ("DATABASE_URL", "postgres://p/db"),
            ("DATABASE_REPLICA_URL", "postgres://r1/db"),
            ("DATABASE_REPLICA_URLS", "postgres://r2/db"),
        ]))
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "DATABASE_REPLICA_URLS: set together with DATABASE_REPLICA_URL: set one of the two"
        );
    }

    #[test]
    fn a_bad_url_in_the_list_is_refused_without_echoing_it() {
        let err = DatabaseConfig::from_source(&source(&[
            ("DATABASE_URL", "postgres://p/db"),
            (
                "DATABASE_REPLICA_URLS",
                "postgres://r1/db,mysql://u:hunter2@r2/db",
            ),
        ]))
        .expect_err("refused");
        assert_eq!(err.var, "DATABASE_REPLICA_URLS");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

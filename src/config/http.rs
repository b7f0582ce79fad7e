//! The public API listener (`scaleout serve`).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SCALEOUT_HTTP_ADDR` | `127.0.0.1:8080` | Address of the public API listener (containers use `0.0.0.0:8080`) |
//! | `HTTP_REQUEST_TIMEOUT_MS` | `15000` | A request still running after this long is answered 503 |
//! | `HTTP_BODY_LIMIT_BYTES` | `65536` | Largest request body (uploads excepted) accepted; larger ones get 413 |
//! | `HTTP_QUERY_COUNT_HEADER` | `false` | Test-only: every response tells how many SQL statements it ran (`X-Db-Queries`) |
//! | `HTTP_COMPRESSION_MIN_BYTES` | `1024` | Responses at least this large are compressed (gzip, br, zstd) when the client accepts it |
//! | `HTTP_CACHE_PUBLIC_MAX_AGE_SECS` | `5` | `max-age` of public profiles and avatar redirects: how stale a shared cache (the edge) may serve them |
//! | `HTTP_CACHE_PLANS_MAX_AGE_SECS` | `60` | `max-age` of the plan catalog |
//! | `HTTP_CACHE_STALE_WHILE_REVALIDATE_SECS` | `30` | `stale-while-revalidate` of public responses: a cache may serve them this much longer while it refreshes them |

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "SCALEOUT_HTTP_ADDR",
        default: Fallback::Value("127.0.0.1:8080"),
        about: "Address of the public API listener (containers use `0.0.0.0:8080`)",
    },
    Var {
        name: "HTTP_REQUEST_TIMEOUT_MS",
        default: Fallback::Value("15000"),
        about: "A request still running after this long is answered 503",
    },
    Var {
        name: "HTTP_BODY_LIMIT_BYTES",
        default: Fallback::Value("65536"),
        about: "Largest request body (uploads excepted) accepted; larger ones get 413",
    },
    Var {
        name: "HTTP_QUERY_COUNT_HEADER",
        default: Fallback::Value("false"),
        about: "Test-only: every response tells how many SQL statements it ran (`X-Db-Queries`)",
    },
    Var {
        name: "HTTP_COMPRESSION_MIN_BYTES",
        default: Fallback::Value("1024"),
        about: "Responses at least this large are compressed (gzip, br, zstd) when the client accepts it",
    },
    Var {
        name: "HTTP_CACHE_PUBLIC_MAX_AGE_SECS",
        default: Fallback::Value("5"),
        about: "`max-age` of public profiles and avatar redirects: how stale a shared cache (the edge) may serve them",
    },
    Var {
        name: "HTTP_CACHE_PLANS_MAX_AGE_SECS",
        default: Fallback::Value("60"),
        about: "`max-age` of the plan catalog",
    },
    Var {
        name: "HTTP_CACHE_STALE_WHILE_REVALIDATE_SECS",
        default: Fallback::Value("30"),
        about: "`stale-while-revalidate` of public responses: a cache may serve them this much longer while it refreshes them",
    },
];

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Whether responses carry `X-Db-Queries` (for tests; it tells a client about internals).
    pub query_count_header: bool,
    /// Smallest response body that is compressed.
    pub compression_min_bytes: u16,
    /// The `Cache-Control` of public responses (see `http::cache`).
    pub public_max_age: Duration,
    pub plans_max_age: Duration,
    pub stale_while_revalidate: Duration,
}

impl HttpConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            addr: r.parse("SCALEOUT_HTTP_ADDR")?,
            request_timeout: r.duration("HTTP_REQUEST_TIMEOUT_MS", Duration::from_millis)?,
            body_limit_bytes: r.positive("HTTP_BODY_LIMIT_BYTES")? as usize,
            query_count_header: r.parse("HTTP_QUERY_COUNT_HEADER")?,
            compression_min_bytes: r.parse("HTTP_COMPRESSION_MIN_BYTES")?,
            public_max_age: r.duration("HTTP_CACHE_PUBLIC_MAX_AGE_SECS", Duration::from_secs)?,
            plans_max_age: r.duration("HTTP_CACHE_PLANS_MAX_AGE_SECS", Duration::from_secs)?,
            stale_while_revalidate: r.duration(
                "HTTP_CACHE_STALE_WHILE_REVALIDATE_SECS",
                Duration::from_secs,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::source;

    #[test]
    fn a_malformed_number_is_named_with_its_value() {
        let err = HttpConfig::from_source(&source(&[("HTTP_REQUEST_TIMEOUT_MS", "soon")]))
            .expect_err("refused");
        assert_eq!(err.var, "HTTP_REQUEST_TIMEOUT_MS");
        assert!(err.problem.contains("\"soon\""), "{err}");
    }
}

//! The public API listener (`scaleout serve`).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SCALEOUT_HTTP_ADDR` | `127.0.0.1:8080` | Address of the public API listener (containers use `0.0.0.0:8080`) |
//! | `HTTP_REQUEST_TIMEOUT_MS` | `15000` | A request still running after this long is answered 503 |
//! | `HTTP_BODY_LIMIT_BYTES` | `65536` | Largest request body (uploads excepted) accepted; larger ones get 413 |
//! | `HTTP_QUERY_COUNT_HEADER` | `false` | Test-only: every response tells how many SQL statements it ran (`X-Db-Queries`) |

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
];

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Whether responses carry `X-Db-Queries` (for tests; it tells a client about internals).
    pub query_count_header: bool,
}

impl HttpConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            addr: r.parse("SCALEOUT_HTTP_ADDR")?,
            request_timeout: r.duration("HTTP_REQUEST_TIMEOUT_MS", Duration::from_millis)?,
            body_limit_bytes: r.positive("HTTP_BODY_LIMIT_BYTES")? as usize,
            query_count_header: r.parse("HTTP_QUERY_COUNT_HEADER")?,
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

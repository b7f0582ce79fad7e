//! Redis: sessions, rate-limit counters and read-your-writes positions.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `REDIS_URL` | required | `redis://` or `rediss://`: state shared by every instance |
//! | `REDIS_TIMEOUT_MS` | `1000` | Bound on connecting and on each command |
//! | `REDIS_CA_FILE` | the system's trusted roots | PEM bundle of the CA that signed the server's certificate (`rediss://`), trusted instead of the system's roots |
//!
//! Redis 6.2 or later: the session store sets expiries with `SET ... EXAT`. The first
//! connection checks the server's version and refuses an older one, naming what is missing.

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Secret, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "REDIS_URL",
        default: Fallback::Required,
        about: "`redis://` or `rediss://`: state shared by every instance",
    },
    Var {
        name: "REDIS_TIMEOUT_MS",
        default: Fallback::Value("1000"),
        about: "Bound on connecting and on each command",
    },
    Var {
        name: "REDIS_CA_FILE",
        default: Fallback::Unset("the system's trusted roots"),
        about: "PEM bundle of the CA that signed the server's certificate (`rediss://`), trusted instead of the system's roots",
    },
];

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    /// Bound on connecting and on every command: Redis being away must never hang a request.
    pub timeout: Duration,
    /// A private CA bundle for `rediss://`; read when the clients are made.
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            url: r.url("REDIS_URL", &["redis", "rediss"])?,
            timeout: r.duration("REDIS_TIMEOUT_MS", Duration::from_millis)?,
            ca_file: r.raw("REDIS_CA_FILE").map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::source;

    #[test]
    fn zero_timeouts_are_refused() {
        let err = RedisConfig::from_source(&source(&[
            ("REDIS_URL", "redis://h"),
            ("REDIS_TIMEOUT_MS", "0"),
        ]))
        .expect_err("refused");
        assert_eq!(err.var, "REDIS_TIMEOUT_MS");
    }
}

//! Accounts (`scaleout serve`): sessions, cross-site protection and login throttling.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SESSION_COOKIE_SECURE` | `true` | Session cookie sent over HTTPS only; `false` only for plain-http local use |
//! | `SESSION_INACTIVITY_SECS` | `1800` | A session unused this long expires; each request pushes the expiry forward |
//! | `ALLOWED_ORIGINS` | no browser origin may change state | Comma-separated browser origins allowed to make state-changing requests |
//! | `TRUST_PROXY_HEADERS` | `false` | Take the client address from `X-Real-IP`; `true` only behind a proxy that always sets it |
//! | `LOGIN_MAX_FAILURES_PER_ACCOUNT` | `5` | Failed logins allowed per account within the window; then 429 |
//! | `LOGIN_MAX_FAILURES_PER_ADDRESS` | `50` | Failed logins allowed per client address within the window; then 429 |
//! | `LOGIN_FAILURE_WINDOW_SECS` | `900` | The window failed logins are counted in |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var, check_scheme};

pub const VARS: &[Var] = &[
    Var {
        name: "SESSION_COOKIE_SECURE",
        default: Fallback::Value("true"),
        about: "Session cookie sent over HTTPS only; `false` only for plain-http local use",
    },
    Var {
        name: "SESSION_INACTIVITY_SECS",
        default: Fallback::Value("1800"),
        about: "A session unused this long expires; each request pushes the expiry forward",
    },
    Var {
        name: "ALLOWED_ORIGINS",
        default: Fallback::Unset("no browser origin may change state"),
        about: "Comma-separated browser origins allowed to make state-changing requests",
    },
    Var {
        name: "TRUST_PROXY_HEADERS",
        default: Fallback::Value("false"),
        about: "Take the client address from `X-Real-IP`; `true` only behind a proxy that always sets it",
    },
    Var {
        name: "LOGIN_MAX_FAILURES_PER_ACCOUNT",
        default: Fallback::Value("5"),
        about: "Failed logins allowed per account within the window; then 429",
    },
    Var {
        name: "LOGIN_MAX_FAILURES_PER_ADDRESS",
        default: Fallback::Value("50"),
        about: "Failed logins allowed per client address within the window; then 429",
    },
    Var {
        name: "LOGIN_FAILURE_WINDOW_SECS",
        default: Fallback::Value("900"),
        about: "The window failed logins are counted in",
    },
];

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
        let r = Reader::new(source, VARS);
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
            cookie_secure: r.parse("SESSION_COOKIE_SECURE")?,
            session_inactivity: r.duration("SESSION_INACTIVITY_SECS", Duration::from_secs)?,
            allowed_origins,
            trust_proxy_headers: r.parse("TRUST_PROXY_HEADERS")?,
            login_max_failures_per_account: u64::from(
                r.positive("LOGIN_MAX_FAILURES_PER_ACCOUNT")?,
            ),
            login_max_failures_per_address: u64::from(
                r.positive("LOGIN_MAX_FAILURES_PER_ADDRESS")?,
            ),
            login_failure_window: r.duration("LOGIN_FAILURE_WINDOW_SECS", Duration::from_secs)?,
        })
    }
}

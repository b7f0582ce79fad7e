//! Accounts (`scaleout serve`): sessions, cross-site protection, the client address and the
//! limits on logins, password checks, signups and email changes.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SESSION_COOKIE_SECURE` | `true` | Session cookie sent over HTTPS only; `false` only for plain-http local use |
//! | `SESSION_INACTIVITY_SECS` | `1800` | A session unused this long expires (it is extended once past half of this) |
//! | `SESSION_MAX_LIFETIME_SECS` | `2592000` | A session ends this long after its login, however active |
//! | `ALLOWED_ORIGINS` | no browser origin may change state | Comma-separated browser origins allowed to make state-changing requests |
//! | `TRUSTED_PROXIES` | none: the peer address is the client | Comma-separated proxy networks (CIDRs or addresses) whose `X-Forwarded-For` is believed |
//! | `LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS` | `5` | Failed password checks allowed per account from one client address within the window; then 429 for that address only |
//! | `LOGIN_MAX_FAILURES_PER_ADDRESS` | `50` | Failed password checks allowed per client address within the window; then 429 |
//! | `LOGIN_BACKOFF_AFTER_FAILURES_PER_ACCOUNT` | `20` | Failed password checks per account (from any address) within the window after which every attempt waits, doubling |
//! | `LOGIN_BACKOFF_BASE_MS` | `1000` | The first wait past the per-account ceiling |
//! | `LOGIN_BACKOFF_MAX_SECS` | `300` | The longest wait past the per-account ceiling |
//! | `LOGIN_FAILURE_WINDOW_SECS` | `900` | The window failed password checks are counted in |
//! | `EMAIL_CHANGE_MAX_PER_USER` | `10` | Email changes (taken email or not) allowed per account within the window; then 429 |
//! | `EMAIL_CHANGE_MAX_PER_ADDRESS` | `20` | Email changes allowed per client address within the window; then 429 |
//! | `EMAIL_CHANGE_WINDOW_SECS` | `3600` | The window email changes are counted in |

use std::time::Duration;

use ipnet::IpNet;

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
        about: "A session unused this long expires (it is extended once past half of this)",
    },
    Var {
        name: "SESSION_MAX_LIFETIME_SECS",
        default: Fallback::Value("2592000"),
        about: "A session ends this long after its login, however active",
    },
    Var {
        name: "ALLOWED_ORIGINS",
        default: Fallback::Unset("no browser origin may change state"),
        about: "Comma-separated browser origins allowed to make state-changing requests",
    },
    Var {
        name: "TRUSTED_PROXIES",
        default: Fallback::Unset("none: the peer address is the client"),
        about: "Comma-separated proxy networks (CIDRs or addresses) whose `X-Forwarded-For` is believed",
    },
    Var {
        name: "LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS",
        default: Fallback::Value("5"),
        about: "Failed password checks allowed per account from one client address within the window; then 429 for that address only",
    },
    Var {
        name: "LOGIN_MAX_FAILURES_PER_ADDRESS",
        default: Fallback::Value("50"),
        about: "Failed password checks allowed per client address within the window; then 429",
    },
    Var {
        name: "LOGIN_BACKOFF_AFTER_FAILURES_PER_ACCOUNT",
        default: Fallback::Value("20"),
        about: "Failed password checks per account (from any address) within the window after which every attempt waits, doubling",
    },
    Var {
        name: "LOGIN_BACKOFF_BASE_MS",
        default: Fallback::Value("1000"),
        about: "The first wait past the per-account ceiling",
    },
    Var {
        name: "LOGIN_BACKOFF_MAX_SECS",
        default: Fallback::Value("300"),
        about: "The longest wait past the per-account ceiling",
    },
    Var {
        name: "LOGIN_FAILURE_WINDOW_SECS",
        default: Fallback::Value("900"),
        about: "The window failed password checks are counted in",
    },
    Var {
        name: "EMAIL_CHANGE_MAX_PER_USER",
        default: Fallback::Value("10"),
        about: "Email changes (taken email or not) allowed per account within the window; then 429",
    },
    Var {
        name: "EMAIL_CHANGE_MAX_PER_ADDRESS",
        default: Fallback::Value("20"),
        about: "Email changes allowed per client address within the window; then 429",
    },
    Var {
        name: "EMAIL_CHANGE_WINDOW_SECS",
        default: Fallback::Value("3600"),
        about: "The window email changes are counted in",
    },
];

/// Sessions, cross-site protection, the client address and the account limits.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Sends the session cookie over HTTPS only. Off only for plain-http local use.
    pub cookie_secure: bool,
    /// A session unused for this long expires.
    pub session_inactivity: Duration,
    /// A session ends this long after the login that made it, however active.
    pub session_max_lifetime: Duration,
    /// Browser origins allowed to make state-changing requests (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` entries are believed (see `http::client_ip`).
    pub trusted_proxies: Vec<IpNet>,
    pub login_max_failures_per_account_and_address: u64,
    pub login_max_failures_per_address: u64,
    pub login_backoff_after_failures_per_account: u64,
    pub login_backoff_base: Duration,
    pub login_backoff_max: Duration,
    pub login_failure_window: Duration,
    pub email_change_max_per_user: u64,
    pub email_change_max_per_address: u64,
    pub email_change_window: Duration,
}

/// `10.0.0.0/8, 192.0.2.7` → networks; a plain address is a network of one.
fn parse_networks(var: &'static str, value: &str) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| ConfigError {
                    var,
                    problem: format!("{s:?} is neither a CIDR network nor an address"),
                })
        })
        .collect()
}

/// Variables this version no longer reads, and what replaced them. Ignoring them silently would
/// be dangerous: with `TRUST_PROXY_HEADERS` kept and `TRUSTED_PROXIES` unset, every client would
/// share nginx's address, and one address's limits would apply to everyone.
pub(super) const REMOVED: [(&str, &str); 4] = [
    (
        "TRUST_PROXY_HEADERS",
        "no longer read: list the proxies' networks in TRUSTED_PROXIES instead",
    ),
    (
        "LOGIN_MAX_FAILURES_PER_ACCOUNT",
        "no longer read: see LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS and LOGIN_BACKOFF_AFTER_FAILURES_PER_ACCOUNT",
    ),
    (
        "SIGNUP_MAX_PER_ADDRESS",
        "no longer read: signups per client address are RATE_LIMIT_SIGNUP (QUOTA/WINDOW_SECS)",
    ),
    (
        "SIGNUP_WINDOW_SECS",
        "no longer read: signups per client address are RATE_LIMIT_SIGNUP (QUOTA/WINDOW_SECS)",
    ),
];

impl AuthConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        if let Some((var, problem)) = REMOVED
            .iter()
            .find(|(var, _)| source.get(var).is_some_and(|v| !v.is_empty()))
        {
            return Err(ConfigError {
                var,
                problem: (*problem).to_owned(),
            });
        }
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
        let trusted_proxies = parse_networks(
            "TRUSTED_PROXIES",
            &r.raw("TRUSTED_PROXIES").unwrap_or_default(),
        )?;
        let count = |var| r.positive(var).map(u64::from);
        Ok(Self {
            cookie_secure: r.parse("SESSION_COOKIE_SECURE")?,
            session_inactivity: r.duration("SESSION_INACTIVITY_SECS", Duration::from_secs)?,
            session_max_lifetime: r.duration("SESSION_MAX_LIFETIME_SECS", Duration::from_secs)?,
            allowed_origins,
            trusted_proxies,
            login_max_failures_per_account_and_address: count(
                "LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_ADDRESS",
            )?,
            login_max_failures_per_address: count("LOGIN_MAX_FAILURES_PER_ADDRESS")?,
            login_backoff_after_failures_per_account: count(
                "LOGIN_BACKOFF_AFTER_FAILURES_PER_ACCOUNT",
            )?,
            login_backoff_base: r.window("LOGIN_BACKOFF_BASE_MS", Duration::from_millis)?,
            login_backoff_max: r.window("LOGIN_BACKOFF_MAX_SECS", Duration::from_secs)?,
            login_failure_window: r.window("LOGIN_FAILURE_WINDOW_SECS", Duration::from_secs)?,
            email_change_max_per_user: count("EMAIL_CHANGE_MAX_PER_USER")?,
            email_change_max_per_address: count("EMAIL_CHANGE_MAX_PER_ADDRESS")?,
            email_change_window: r.window("EMAIL_CHANGE_WINDOW_SECS", Duration::from_secs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_removed_variable_stops_the_start_naming_its_replacement() {
        let env: std::collections::HashMap<String, String> =
            [("TRUST_PROXY_HEADERS".to_owned(), "true".to_owned())].into();
        let error = super::AuthConfig::from_source(&env).expect_err("refused");
        assert_eq!(error.var, "TRUST_PROXY_HEADERS");
        assert!(error.problem.contains("TRUSTED_PROXIES"));
    }

    use super::*;

    #[test]
    fn a_wait_longer_than_a_year_is_refused_at_start() {
        let env: std::collections::HashMap<String, String> = [(
            "LOGIN_BACKOFF_MAX_SECS".to_owned(),
            "100000000000".to_owned(),
        )]
        .into();
        let error = AuthConfig::from_source(&env).expect_err("refused");
        assert_eq!(error.var, "LOGIN_BACKOFF_MAX_SECS");
        assert!(error.problem.contains("at most"), "{}", error.problem);
    }

    #[test]
    fn trusted_proxies_take_networks_and_plain_addresses() {
        let nets = parse_networks("TRUSTED_PROXIES", "10.1.2.3/8, 192.0.2.7 ,2001:db8::/32,")
            .expect("valid");
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert!(parse_networks("TRUSTED_PROXIES", "10.0.0.0/33").is_err());
        assert!(parse_networks("TRUSTED_PROXIES", "nginx").is_err());
    }
}

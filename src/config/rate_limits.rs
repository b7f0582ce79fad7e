//! Rate limits (`scaleout serve`): the API's request policies, each a quota of requests per
//! window, decided in Redis for the whole fleet (GCRA: up to the quota at once, then one more
//! each window/quota). Written `QUOTA/WINDOW_SECS`: `300/60` is 300 requests a minute; the
//! window is at most a year, the quota at most one request per microsecond of it.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RATE_LIMITS` | `on` | `off` turns the API's request limits off (the benchmark's baseline); the login, signup and email-change counters stay |
//! | `RATE_LIMIT_INSTANCES` | `1` | How many instances serve the API: while Redis is away each decides alone, at each policy's quota over this |
//! | `RATE_LIMIT_ANONYMOUS` | `300/60` | Every API request without a session, per client address |
//! | `RATE_LIMIT_USER` | `600/60` | Every API request with a session, per account |
//! | `RATE_LIMIT_SIGNUP` | `20/3600` | Signups per client address, taken email or not (fails closed while Redis is away) |
//! | `RATE_LIMIT_LOGIN` | `20/60` | Logins per client address (fails closed while Redis is away) |
//! | `RATE_LIMIT_PASSWORD` | `10/600` | Password checks (reset request and confirmation, change, account deletion) per account, or per address without a session |
//! | `RATE_LIMIT_UPLOADS` | `60/60` | Uploads started (streamed, direct, avatar) per account |
//! | `RATE_LIMIT_INVITATIONS` | `30/600` | Invitations sent per account |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "RATE_LIMITS",
        default: Fallback::Value("on"),
        about: "`off` turns the API's request limits off (the benchmark's baseline); the login, signup and email-change counters stay",
    },
    Var {
        name: "RATE_LIMIT_INSTANCES",
        default: Fallback::Value("1"),
        about: "How many instances serve the API: while Redis is away each decides alone, at each policy's quota over this",
    },
    Var {
        name: "RATE_LIMIT_ANONYMOUS",
        default: Fallback::Value("300/60"),
        about: "Every API request without a session, per client address",
    },
    Var {
        name: "RATE_LIMIT_USER",
        default: Fallback::Value("600/60"),
        about: "Every API request with a session, per account",
    },
    Var {
        name: "RATE_LIMIT_SIGNUP",
        default: Fallback::Value("20/3600"),
        about: "Signups per client address, taken email or not (fails closed while Redis is away)",
    },
    Var {
        name: "RATE_LIMIT_LOGIN",
        default: Fallback::Value("20/60"),
        about: "Logins per client address (fails closed while Redis is away)",
    },
    Var {
        name: "RATE_LIMIT_PASSWORD",
        default: Fallback::Value("10/600"),
        about: "Password checks (reset request and confirmation, change, account deletion) per account, or per address without a session",
    },
    Var {
        name: "RATE_LIMIT_UPLOADS",
        default: Fallback::Value("60/60"),
        about: "Uploads started (streamed, direct, avatar) per account",
    },
    Var {
        name: "RATE_LIMIT_INVITATIONS",
        default: Fallback::Value("30/600"),
        about: "Invitations sent per account",
    },
];

/// A quota of requests per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimit {
    pub quota: u32,
    pub window: Duration,
}

impl std::str::FromStr for PolicyLimit {
    type Err = String;

    /// `QUOTA/WINDOW_SECS`, both positive.
    fn from_str(s: &str) -> Result<Self, String> {
        let form = "expected QUOTA/WINDOW_SECS, like 300/60";
        let (quota, window) = s.split_once('/').ok_or(form)?;
        let quota: u32 = quota.trim().parse().map_err(|_| form)?;
        let window: u64 = window.trim().parse().map_err(|_| form)?;
        if quota == 0 || window == 0 {
            return Err("the quota and the window must be greater than zero".into());
        }
        // Bounds that keep the arithmetic exact: the window in microseconds (and its sum with
        // the clock) well inside a double's 2^53 in the Redis script, and whole keys' expiries
        // written as plain integers; at most one request per microsecond, the script's unit.
        let max_window = super::MAX_WINDOW.as_secs();
        if window > max_window {
            return Err(format!(
                "the window must be at most {max_window} seconds (a year)"
            ));
        }
        if u64::from(quota) > window * 1_000_000 {
            return Err(
                "the quota must be at most one request per microsecond of the window".into(),
            );
        }
        Ok(Self {
            quota,
            window: Duration::from_secs(window),
        })
    }
}

/// Each policy's limit.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    pub anonymous: PolicyLimit,
    pub user: PolicyLimit,
    pub signup: PolicyLimit,
    pub login: PolicyLimit,
    pub password: PolicyLimit,
    pub uploads: PolicyLimit,
    pub invitations: PolicyLimit,
}

#[derive(Debug, Clone)]
pub struct RateLimitsConfig {
    /// Off only to measure what the limiter costs.
    pub enabled: bool,
    /// The instances sharing the limits, for the per-instance share during an outage.
    pub instances: u32,
    pub policies: Policies,
}

impl RateLimitsConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        let enabled = match r.text("RATE_LIMITS").trim() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError {
                    var: "RATE_LIMITS",
                    problem: format!("{other:?} is neither on nor off"),
                });
            }
        };
        Ok(Self {
            enabled,
            instances: r.positive("RATE_LIMIT_INSTANCES")?,
            policies: Policies {
                anonymous: r.parse("RATE_LIMIT_ANONYMOUS")?,
                user: r.parse("RATE_LIMIT_USER")?,
                signup: r.parse("RATE_LIMIT_SIGNUP")?,
                login: r.parse("RATE_LIMIT_LOGIN")?,
                password: r.parse("RATE_LIMIT_PASSWORD")?,
                uploads: r.parse("RATE_LIMIT_UPLOADS")?,
                invitations: r.parse("RATE_LIMIT_INVITATIONS")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_a_quota_per_window_in_seconds() {
        let limit: PolicyLimit = "300/60".parse().expect("valid");
        assert_eq!(limit.quota, 300);
        assert_eq!(limit.window, Duration::from_secs(60));
        let year = super::super::MAX_WINDOW.as_secs();
        assert!(format!("1/{year}").parse::<PolicyLimit>().is_ok());
        for bad in [
            "300",
            "0/60",
            "10/0",
            "ten/60",
            "10/60s",
            "",
            &format!("1/{}", year + 1),
            "1/18446744073709551615",
            "4000000000/1",
        ] {
            assert!(bad.parse::<PolicyLimit>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_limiter_is_on_unless_turned_off() {
        let env = crate::config::tests::source(&[]);
        assert!(
            RateLimitsConfig::from_source(&env)
                .expect("defaults")
                .enabled
        );
        let env = crate::config::tests::source(&[("RATE_LIMITS", "off")]);
        assert!(!RateLimitsConfig::from_source(&env).expect("off").enabled);
        let env = crate::config::tests::source(&[("RATE_LIMITS", "maybe")]);
        assert!(RateLimitsConfig::from_source(&env).is_err());
    }
}

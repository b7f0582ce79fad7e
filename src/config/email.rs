//! Email (`scaleout worker`): the SMTP relay every message goes through, and its sender.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SMTP_URL` | required | `smtp://host:port` (plain, for loopback and private relays) or `smtps://host:port` (TLS) |
//! | `EMAIL_FROM` | `scaleout <no-reply@scaleout.local>` | The sender of every email |
//! | `SMTP_TIMEOUT_MS` | `10000` | Bound on connecting and on each SMTP command |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "SMTP_URL",
        default: Fallback::Required,
        about: "`smtp://host:port` (plain, for loopback and private relays) or `smtps://host:port` (TLS)",
    },
    Var {
        name: "EMAIL_FROM",
        default: Fallback::Value("scaleout <no-reply@scaleout.local>"),
        about: "The sender of every email",
    },
    Var {
        name: "SMTP_TIMEOUT_MS",
        default: Fallback::Value("10000"),
        about: "Bound on connecting and on each SMTP command",
    },
];

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
        let r = Reader::new(source, VARS);
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
            from: r.text("EMAIL_FROM"),
            timeout: r.duration("SMTP_TIMEOUT_MS", Duration::from_millis)?,
        })
    }
}

//! The name of this process.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SCALEOUT_INSTANCE_ID` | the host name | Names this process in logs, metrics, `X-Instance-Id` and Postgres' `application_name` |

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[Var {
    name: "SCALEOUT_INSTANCE_ID",
    default: Fallback::Unset("the host name"),
    about: "Names this process in logs, metrics, `X-Instance-Id` and Postgres' `application_name`",
}];

/// Identity of this process in logs, metrics, `X-Instance-Id` and Postgres' `application_name`.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub id: String,
}

impl InstanceConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
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

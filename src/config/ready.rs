//! `/ready`: how long each dependency check may take.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `READY_CHECK_TIMEOUT_MS` | `1000` | Each dependency check of `/ready` gives up after this long and reports it down |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[Var {
    name: "READY_CHECK_TIMEOUT_MS",
    default: Fallback::Value("1000"),
    about: "Each dependency check of `/ready` gives up after this long and reports it down",
}];

#[derive(Debug, Clone)]
pub struct ReadyConfig {
    /// Each dependency check in `/ready` gives up after this long and reports the dependency down.
    pub check_timeout: Duration,
}

impl ReadyConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            check_timeout: r.duration("READY_CHECK_TIMEOUT_MS", Duration::from_millis)?,
        })
    }
}

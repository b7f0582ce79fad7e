//! Graceful shutdown after SIGTERM: drain first, then give in-flight work its grace.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SHUTDOWN_DRAIN_SECS` | `5` | How long `/health` answers 503 while requests are still served (0: no wait) |
//! | `SHUTDOWN_GRACE_SECS` | `10` | How long in-flight work may take once the listener has closed |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "SHUTDOWN_DRAIN_SECS",
        default: Fallback::Value("5"),
        about: "How long `/health` answers 503 while requests are still served (0: no wait)",
    },
    Var {
        name: "SHUTDOWN_GRACE_SECS",
        default: Fallback::Value("10"),
        about: "How long in-flight work may take once the listener has closed",
    },
];

#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// How long `/health` reports 503 while still serving, so load balancers move away first.
    pub drain: Duration,
    /// How long in-flight work may take once the listener has closed.
    pub grace: Duration,
}

impl ShutdownConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            // Zero is allowed: a process with no load balancer in front need not wait.
            drain: Duration::from_secs(r.parse("SHUTDOWN_DRAIN_SECS")?),
            grace: r.duration("SHUTDOWN_GRACE_SECS", Duration::from_secs)?,
        })
    }
}

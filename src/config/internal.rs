//! The internal listener: Prometheus `/metrics` and the process' own `/health`, never proxied.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SCALEOUT_METRICS_ADDR` | `127.0.0.1:9180` | Address of `/metrics` and `/health`; never exposed through the load balancer |

use std::net::SocketAddr;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[Var {
    name: "SCALEOUT_METRICS_ADDR",
    default: Fallback::Value("127.0.0.1:9180"),
    about: "Address of `/metrics` and `/health`; never exposed through the load balancer",
}];

/// The internal listener: Prometheus metrics and the process' own health, never proxied.
#[derive(Debug, Clone)]
pub struct InternalConfig {
    pub addr: SocketAddr,
}

impl InternalConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            addr: r.parse("SCALEOUT_METRICS_ADDR")?,
        })
    }
}

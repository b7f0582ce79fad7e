//! The process types of the one binary (12-factor): `serve`, `worker` and `migrate`, the
//! internal listener that `serve` and `worker` both run, and the container's `healthcheck`.
//!
//! They sit at the top of the dependency order (config, errors, db, storage, redis → domain
//! modules → http → processes): nothing below imports from here. The start-up steps they share
//! are written once, in this module and in [`internal`]:
//! - [`bind`]: every listener is bound with an error naming what it is for and its address;
//! - [`internal::Internal`]: the metrics and health listener, with the metrics recorder and the
//!   build info installed before any other metric can be recorded;
//! - `db::answers`: the one question asked of Postgres, by both `/ready`s and by `migrate`
//!   before it migrates.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub mod healthcheck;
pub mod internal;
pub mod migrate;
pub mod seed;
pub mod serve;
pub mod worker;

/// Binds `addr`; `what` names the listener in the error ("the HTTP listener"), so a port
/// already in use says which setting to change.
pub async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {what} on {addr}"))
}

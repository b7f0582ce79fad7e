//! The internal listener of every long-running process: Prometheus metrics and the process'
//! own health. It binds its own port, which nginx never proxies, so metrics are not public.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::InternalConfig;
use crate::telemetry;

/// The bound, not yet serving, internal listener of one process.
#[derive(Debug)]
pub struct Internal {
    listener: TcpListener,
}

impl Internal {
    /// Binds the listener and installs the metrics recorder with the build info, so every
    /// metric recorded afterwards (including during start-up) reaches `/metrics`.
    pub async fn bind(
        config: &InternalConfig,
        instance_id: &str,
        process: &'static str,
    ) -> anyhow::Result<Self> {
        let listener = super::bind("the metrics listener", config.addr).await?;
        telemetry::metrics_handle();
        telemetry::record_build_info(instance_id, process);
        Ok(Self { listener })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves `/metrics` plus the process type's `health` routes until `stop` resolves.
    /// `stop` is the process' last step, so the final metrics can still be scraped while it
    /// drains.
    pub fn spawn(
        self,
        health: Router,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<std::io::Result<()>> {
        let router = Router::new().route("/metrics", get(metrics)).merge(health);
        tokio::spawn(async move {
            axum::serve(self.listener, router)
                .with_graceful_shutdown(stop)
                .await
        })
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::metrics_handle().render(),
    )
}

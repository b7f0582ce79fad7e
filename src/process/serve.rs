//! `scaleout serve`: building, running and stopping the HTTP API process.
//!
//! Shutdown follows the order load balancers need: on the signal `/health` turns 503 at once
//! while the instance keeps serving for the drain period; then the listener closes, in-flight
//! requests finish within the grace period, the pools close and the process exits 0.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::internal::Internal;
use crate::app::AppState;
use crate::config::ServeConfig;
use crate::http;
use crate::shutdown::shutdown_signal;

/// The subcommand, and the `process` label of this process' logs and metrics.
pub const NAME: &str = "serve";

/// A bound, not yet running instance. Binding happens in [`Application::build`], so the ports
/// are known (tests bind port 0) before anything is served.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    internal: Internal,
    state: AppState,
}

/// Serves until SIGTERM or Ctrl-C: the `scaleout serve` subcommand.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    Application::build(config)
        .await?
        .run_until(shutdown_signal())
        .await
}

impl Application {
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        let listener = super::bind("the HTTP listener", config.http.addr).await?;
        let internal = Internal::bind(&config.internal, &config.instance.id, NAME).await?;
        let state = AppState::new(config)?;
        Ok(Self {
            listener,
            internal,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn internal_addr(&self) -> SocketAddr {
        self.internal.addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains and stops (see the module doc).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            internal,
            state,
        } = self;
        let shutdown_config = state.config.shutdown.clone();
        let lifecycle = state.lifecycle.clone();
        let (stopped_accepting_tx, mut stopped_accepting) = watch::channel(false);

        let health = Router::new()
            .route("/health", get(http::health::health))
            .with_state(state.clone());
        let mut internal_stop = stopped_accepting.clone();
        let internal_task = internal.spawn(health, async move {
            // Metrics stay scrapeable through the drain, until the main listener closes.
            let _ = internal_stop.wait_for(|stopped| *stopped).await;
        });

        let drain = shutdown_config.drain;
        let graceful = async move {
            shutdown.await;
            lifecycle.start_draining();
            tracing::info!(
                drain_secs = drain.as_secs_f64(),
                "draining: /health now answers 503"
            );
            // Deliberate: the load balancer needs this long to notice and move traffic away.
            tokio::time::sleep(drain).await;
            tracing::info!("drain over: no longer accepting connections");
            let _ = stopped_accepting_tx.send(true);
        };

        tracing::info!(
            addr = %listener.local_addr()?,
            instance = %state.instance_id(),
            "serving"
        );
        let app = http::router(state.clone());
        let mut server = tokio::spawn(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(graceful)
            .into_future(),
        );

        let grace = shutdown_config.grace;
        let grace_expired = async {
            let _ = stopped_accepting.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = &mut server => result.context("the HTTP server task failed")??,
            () = grace_expired => {
                tracing::warn!(grace_secs = grace.as_secs_f64(), "in-flight requests outlived the grace period; stopping anyway");
                server.abort();
            }
        }
        let _ = internal_task.await;
        // Bounded: a pool waiting on a connection that never comes back must not block exit.
        if tokio::time::timeout(grace, state.db.close()).await.is_err() {
            tracing::warn!("database pools did not close within the grace period");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

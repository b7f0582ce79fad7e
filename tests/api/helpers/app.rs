//! `scaleout serve` and `scaleout worker` running inside the test process, on port 0, against
//! the topology's real Postgres, Redis and S3: each test gets processes of its own.

use std::collections::HashMap;
use std::net::SocketAddr;

use scaleout::app::AppState;
use scaleout::config::{LogConfig, ServeConfig};
use scaleout::startup::Application;
use tokio::sync::oneshot;

use super::client::client;

/// An instance of `scaleout serve` running inside the test process, on port 0, against the
/// topology's real Postgres, Redis and S3.
pub struct TestApp {
    pub addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the in-process app answers")
    }

    /// The OpenAPI document this app serves.
    pub async fn openapi(&self) -> serde_json::Value {
        self.get("/api-docs/openapi.json")
            .await
            .json()
            .await
            .expect("the OpenAPI document is JSON")
    }

    /// Sends the shutdown signal, as SIGTERM would.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Configuration for an in-process app: the topology's services, ports chosen by the OS.
pub fn test_config(overrides: &[(&str, &str)]) -> ServeConfig {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let instance = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    vars.insert("SCALEOUT_INSTANCE_ID".into(), instance);
    vars.insert("SCALEOUT_HTTP_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("SCALEOUT_METRICS_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("SHUTDOWN_DRAIN_SECS".into(), "0".into());
    for (k, v) in overrides {
        vars.insert((*k).into(), (*v).into());
    }
    ServeConfig::from_source(&vars).expect("the test configuration is valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    // Silent unless asked: `TEST_LOG=1 scripts/test` shows every log line.
    if std::env::var_os("TEST_LOG").is_some() {
        let vars: HashMap<String, String> = std::env::vars().collect();
        scaleout::telemetry::init_logs(&LogConfig::from_source(&vars).expect("log config"));
    }
    let app = Application::build(test_config(overrides))
        .await
        .expect("the app builds");
    let addr = app.addr();
    let internal_addr = app.internal_addr();
    let state = app.state().clone();
    let (stop, stopped_rx) = oneshot::channel::<()>();
    let stopped = tokio::spawn(app.run_until(async move {
        let _ = stopped_rx.await;
    }));
    TestApp {
        addr,
        internal_addr,
        state,
        client: client(),
        stop: Some(stop),
        stopped,
    }
}

/// A `scaleout worker` running inside the test process against the topology's services,
/// beside the topology's own worker.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    /// Stops taking jobs and waits for the running ones, as SIGTERM would.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.stopped)
            .await
            .expect("the worker task does not panic")
            .expect("the worker stops cleanly");
    }
}

pub fn spawn_worker() -> TestWorker {
    spawn_worker_with(&[])
}

/// A worker configured like the topology's, except for `overrides`.
pub fn spawn_worker_with(overrides: &[(&str, &str)]) -> TestWorker {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    let id = format!(
        "test-worker-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    vars.insert("SCALEOUT_INSTANCE_ID".into(), id);
    vars.insert("SCALEOUT_METRICS_ADDR".into(), "127.0.0.1:0".into());
    for (k, v) in overrides {
        vars.insert((*k).into(), (*v).into());
    }
    let config = scaleout::config::WorkerConfig::from_source(&vars).expect("a valid worker config");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let stopped = tokio::spawn(scaleout::worker::run_until(config, async move {
        let _ = stop_rx.await;
    }));
    TestWorker {
        stop: Some(stop),
        stopped,
    }
}

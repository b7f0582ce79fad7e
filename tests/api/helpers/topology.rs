//! The topology the tests run against: its addresses, control of its services (stop, kill,
//! start again), its logs and metrics, steady traffic through it, and polling with a deadline
//! (never a bare sleep standing in for readiness).

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::client::client;

/// Reads a variable the test script exports from `stack env`.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts the topology")
    })
}

/// The topology's public entry point (nginx).
pub fn edge_url() -> String {
    env("SCALEOUT_URL")
}

/// The instances behind nginx, in order app1, app2, app3.
pub fn instance_urls() -> Vec<String> {
    env("SCALEOUT_INSTANCES")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The summed value of the series of metric `name` whose labels include every pair in
/// `labels`, in a Prometheus text scrape (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The lines a topology service has logged since this mark was made: log checks look at what
/// happened during the test, not at everything the service ever logged.
pub struct LogMark {
    path: std::path::PathBuf,
    from: u64,
}

impl LogMark {
    pub fn new(service: &str) -> Self {
        let path = std::path::Path::new(&env("SCALEOUT_STACK_STATE"))
            .join("logs")
            .join(format!("{service}.log"));
        let from = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Self { path, from }
    }

    pub fn since(&self) -> String {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        // A shorter file has been rotated by supervisord: all of it is new.
        let from = usize::try_from(self.from)
            .ok()
            .filter(|&f| f <= bytes.len())
            .unwrap_or(0);
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics naming `what` at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of a Prometheus metrics endpoint.
pub async fn scrape(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("the metrics endpoint answers")
        .text()
        .await
        .expect("text")
}

/// Runs a `deploy/local/stack` command against the test topology and returns its stdout.
pub fn stack(args: &[&str]) -> String {
    let output = Command::new(env("SCALEOUT_STACK"))
        .args(args)
        .output()
        .expect("deploy/local/stack runs");
    assert!(
        output.status.success(),
        "stack {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A steady stream of GETs from a few concurrent clients, counting every response that is not
/// a 200. Bounded: it stops on request, and on its own after `limit`.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(url: String, clients: usize, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failures, url) =
                    (stop.clone(), ok.clone(), failures.clone(), url.clone());
                tokio::spawn(async move {
                    let client = client();
                    let end = tokio::time::Instant::now() + limit;
                    // Paced, so the stream is steady rather than a benchmark of the machine.
                    let mut tick = tokio::time::interval(Duration::from_millis(10));
                    while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < end {
                        tick.tick().await;
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => failures
                                .lock()
                                .expect("not poisoned")
                                .push(format!("status {}", r.status())),
                            Err(e) => failures
                                .lock()
                                .expect("not poisoned")
                                .push(format!("error {e}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    pub fn ok_count(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the clients and returns (successful responses, failures).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a traffic client does not panic");
        }
        let failures = self.failures.lock().expect("not poisoned").clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

/// A topology service stopped (or killed) for a test, started again when this is dropped:
/// also when an assertion fails, so one failing test does not leave the service down for the
/// tests after it.
pub struct Down(&'static str);

impl Down {
    pub fn stop(service: &'static str) -> Self {
        stack(&["stop", service]);
        Self(service)
    }

    pub fn kill(service: &'static str) -> Self {
        stack(&["kill", service]);
        Self(service)
    }

    /// Starts the service again now.
    pub fn start(self) {}
}

impl Drop for Down {
    fn drop(&mut self) {
        // A second panic while the test is already failing would abort the whole test binary
        // (and the topology tests after this one): then report, do not assert.
        if std::thread::panicking() {
            let started = Command::new(env("SCALEOUT_STACK"))
                .args(["start", self.0])
                .status();
            if !started.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("could not start {} again: {started:?}", self.0);
            }
        } else {
            stack(&["start", self.0]);
        }
    }
}

/// A topology service frozen with SIGSTOP for a test: it holds its connections open and
/// answers nothing, like a hung dependency. Thawed (SIGCONT) when this is dropped, also when
/// an assertion fails.
pub struct Frozen(&'static str);

impl Frozen {
    pub fn pause(service: &'static str) -> Self {
        stack(&["pause", service]);
        Self(service)
    }

    /// Thaws the service now.
    pub fn resume(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let resumed = Command::new(env("SCALEOUT_STACK"))
            .args(["resume", self.0])
            .status();
        if !resumed.as_ref().is_ok_and(|s| s.success()) {
            // Never a second panic while a test is failing (see `Down`).
            if std::thread::panicking() {
                eprintln!("could not resume {}: {resumed:?}", self.0);
            } else {
                panic!("could not resume {}: {resumed:?}", self.0);
            }
        }
    }
}

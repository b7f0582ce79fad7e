//! Test plumbing: the topology's addresses, an in-process app on port 0, stack control,
//! and polling with a deadline (never a bare sleep standing in for readiness).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use scaleout::app::AppState;
use scaleout::config::{LogConfig, ServeConfig};
use scaleout::startup::Application;
use tokio::sync::oneshot;

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

/// An HTTP client that connects from an address of its own in 127.0.0.0/8. Per-address rate
/// limits count by the client's address (nginx's `X-Real-IP`, or the peer address), so each
/// client is a separate "user agent" and tests never share a counter with each other or with
/// the API contract run (which comes from 127.0.0.1).
pub fn client() -> reqwest::Client {
    client_from(loopback_address())
}

/// A client that connects from `address` (a loopback address: nothing else is routable here).
pub fn client_from(address: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address(address)
        .build()
        .expect("a reqwest client builds")
}

/// A random address in 127.0.0.0/8 other than 127.0.0.1 (every one of them reaches the
/// loopback interface on Linux).
pub fn loopback_address() -> std::net::IpAddr {
    let b = *uuid::Uuid::new_v4().as_bytes();
    std::net::IpAddr::from([127, b[0] | 1, b[1], b[2].max(2)])
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

/// A user that does not exist yet: unique email, a valid password.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub email: String,
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            email: format!("user-{}@example.com", &id[..12]),
            name: format!("User {}", &id[..6]),
            password: format!("passphrase-{}", &id[..16]),
        }
    }

    pub fn signup_body(&self) -> serde_json::Value {
        serde_json::json!({"email": self.email, "name": self.name, "password": self.password})
    }

    pub fn login_body(&self) -> serde_json::Value {
        serde_json::json!({"email": self.email, "password": self.password})
    }
}

/// The whole `Set-Cookie` header of the session cookie, attributes included, if one is set.
pub fn session_set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("scaleout_session="))
        .map(str::to_owned)
}

/// The `name=value` of the session cookie a response sets, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    session_set_cookie(response)
        .as_deref()
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .filter(|c| c != "scaleout_session=")
}

/// A thin API client for one base URL (an instance, nginx, or an in-process app), carrying a
/// session cookie the way a browser would.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub cookie: Option<String>,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: client(),
            cookie: None,
        }
    }

    /// The same session, through another base URL (another instance).
    pub fn via(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(cookie) = &self.cookie {
            builder = builder.header("cookie", cookie);
        }
        builder
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder) -> reqwest::Response {
        builder.send().await.expect("the API answers")
    }

    /// Sends and keeps any session cookie the response sets.
    pub async fn send_keeping_cookie(
        &mut self,
        builder: reqwest::RequestBuilder,
    ) -> reqwest::Response {
        let response = self.send(builder).await;
        if let Some(cookie) = session_cookie(&response) {
            self.cookie = Some(cookie);
        }
        response
    }

    pub async fn signup(&mut self, user: &TestUser) -> reqwest::Response {
        let request = self
            .request(reqwest::Method::POST, "/auth/signup")
            .json(&user.signup_body());
        self.send_keeping_cookie(request).await
    }

    pub async fn login(&mut self, user: &TestUser) -> reqwest::Response {
        let request = self
            .request(reqwest::Method::POST, "/auth/login")
            .json(&user.login_body());
        self.send_keeping_cookie(request).await
    }

    pub async fn me(&self) -> reqwest::Response {
        self.send(self.request(reqwest::Method::GET, "/me")).await
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.send(self.request(reqwest::Method::POST, path)).await
    }
}

impl Api {
    /// Renames the caller with `PATCH /me`: the write most tests use.
    pub async fn rename(&self, name: &str) {
        let response = self
            .send(
                self.request(reqwest::Method::PATCH, "/me")
                    .json(&serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::OK, "rename");
    }

    /// Deletes the account with `DELETE /me` and returns the deletion job's id.
    pub async fn delete_account(&self, user: &TestUser) -> String {
        let accepted = self
            .send(
                self.request(reqwest::Method::DELETE, "/me")
                    .json(&serde_json::json!({"password": user.password})),
            )
            .await;
        assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED, "deletion");
        let body: serde_json::Value = accepted.json().await.expect("a JSON body");
        body["job_id"].as_str().expect("a job id").to_owned()
    }

    /// Polls `GET /jobs/{id}` until `wanted` holds for the view, and returns that view.
    pub async fn poll_job(
        &self,
        id: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let wanted = &wanted;
        eventually(
            &format!("job {id}"),
            Duration::from_secs(60),
            || async move {
                let response = self
                    .send(self.request(reqwest::Method::GET, &format!("/jobs/{id}")))
                    .await;
                assert_eq!(response.status(), reqwest::StatusCode::OK);
                let view: serde_json::Value = response.json().await.expect("a JSON body");
                wanted(&view).then_some(view)
            },
        )
        .await
    }

    /// Starts a direct upload of `size` bytes of text; returns the file id and the presigned
    /// upload target.
    pub async fn start_upload(&self, size: usize) -> (uuid::Uuid, serde_json::Value) {
        let created = self
            .send(
                self.request(reqwest::Method::POST, "/files/uploads")
                    .json(&serde_json::json!({"content_type": "text/plain", "size": size})),
            )
            .await;
        assert_eq!(
            created.status(),
            reqwest::StatusCode::CREATED,
            "upload start"
        );
        let created: serde_json::Value = created.json().await.expect("a JSON body");
        let id = created["file"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        (id, created["upload"].clone())
    }
}

/// PUTs `body` to a presigned upload target with the headers it names (less the length, which
/// the transport sets from the body itself: tests send other lengths on purpose).
pub async fn presigned_put(
    target: &serde_json::Value,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut put = client().put(target["url"].as_str().expect("a URL"));
    for (name, value) in target["headers"].as_object().expect("headers") {
        if name != "content-length" {
            put = put.header(name, value.as_str().expect("a string"));
        }
    }
    put.body(body).send().await.expect("storage answers")
}

/// Signs `user` up through `base` and returns a logged-in client.
pub async fn signed_up(base: &str, user: &TestUser) -> Api {
    let mut api = Api::new(base);
    let response = api.signup(user).await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED, "signup");
    assert!(api.cookie.is_some(), "signup sets the session cookie");
    api
}

/// Whether a read routed by `db` for `caller` ran on a standby (else on the primary).
pub async fn read_on_standby(db: &scaleout::db::Db, caller: scaleout::db::Caller) -> bool {
    db.read(&caller, |pool| async move {
        sqlx::query_scalar::<_, bool>("select pg_is_in_recovery()")
            .fetch_one(&pool)
            .await
    })
    .await
    .expect("the read succeeds")
}

/// Every operation of an OpenAPI document: method, path template, and the operation object.
pub fn documented_operations(
    doc: &serde_json::Value,
) -> Vec<(reqwest::Method, String, serde_json::Value)> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            operations.push((method, path.clone(), operation.clone()));
        }
    }
    operations
}

/// `template` with every `{param}` replaced by a fresh UUID.
pub fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                uuid::Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Users with this email, counted on the primary.
pub async fn users_with_email(state: &AppState, email: &str) -> i64 {
    sqlx::query_scalar("select count(*) from users where lower(email) = lower($1)")
        .bind(email)
        .fetch_one(state.db.primary_pool())
        .await
        .expect("counts")
}

/// The topology's object storage, as the app sees it: for tests that list the bucket.
pub fn storage() -> scaleout::storage::Storage {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let config =
        scaleout::config::StorageConfig::from_source(&vars).expect("the S3 variables are set");
    scaleout::storage::Storage::new(&config)
}

/// `len` bytes that start with `head` and continue with a cheap deterministic noise (distinct
/// per `seed`), so every upload is different and nothing compresses.
pub fn file_bytes(head: &[u8], len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&head[..head.len().min(len)]);
    let mut x = seed | 1;
    while bytes.len() < len {
        // xorshift64: fast, and good enough to defeat compression.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - bytes.len()).min(8);
        bytes.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    bytes
}

pub const PNG_HEAD: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A client that does not follow redirects, to see the 302 itself.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client builds")
}

impl Api {
    /// Sends `bytes` as the multipart part `file` to `path` with `method`.
    pub async fn upload_to(
        &self,
        method: reqwest::Method,
        path: &str,
        bytes: Vec<u8>,
        file_name: &str,
        content_type: &str,
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file_name.to_owned())
            .mime_str(content_type)
            .expect("a valid content type");
        let form = reqwest::multipart::Form::new().part("file", part);
        self.send(
            self.request(method, path)
                .multipart(form)
                .timeout(Duration::from_secs(120)),
        )
        .await
    }

    /// Uploads a file through `POST /files`.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        file_name: &str,
        content_type: &str,
    ) -> reqwest::Response {
        self.upload_to(
            reqwest::Method::POST,
            "/files",
            bytes,
            file_name,
            content_type,
        )
        .await
    }

    /// The content of file `id`: follows the 302 to storage with a plain client.
    pub async fn download(&self, id: &str) -> Vec<u8> {
        let mut request =
            no_redirect_client().get(format!("{}/api/v1/files/{id}/content", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let redirect = request.send().await.expect("the API answers");
        assert_eq!(
            redirect.status(),
            reqwest::StatusCode::FOUND,
            "content redirects"
        );
        let location = redirect
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a Location header")
            .to_owned();
        let content = client()
            .get(&location)
            .send()
            .await
            .expect("storage answers");
        assert_eq!(content.status(), reqwest::StatusCode::OK, "presigned GET");
        content.bytes().await.expect("the body").to_vec()
    }
}

/// The `id` of the user a `GET /me` (or signup) body describes.
pub async fn my_id(api: &Api) -> uuid::Uuid {
    let me: serde_json::Value = api.me().await.json().await.expect("JSON");
    me["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id")
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

/// Commits `jobs` acting for `owner` in one unit of work, as a request would, and returns
/// their ids.
pub async fn enqueue(
    db: &scaleout::db::Db,
    jobs: Vec<scaleout::jobs::Job>,
    owner: Option<uuid::Uuid>,
) -> Vec<String> {
    let writer = owner.map_or(scaleout::db::Writer::System, scaleout::db::Writer::User);
    let mut write = db.begin(writer).await.expect("begins");
    let mut ids = Vec::new();
    for job in jobs {
        ids.push(
            scaleout::jobs::enqueue(&mut write, job, owner)
                .await
                .expect("enqueues"),
        );
    }
    write.commit().await.expect("commits");
    ids
}

/// A canary job: fails its first `fail_attempts` attempts, holds a worker `hold_ms` each time.
pub fn canary(fail_attempts: u32, hold_ms: u64, max_attempts: u32) -> scaleout::jobs::Job {
    scaleout::jobs::Job::Canary(scaleout::jobs::canary::Canary {
        fail_attempts,
        hold_ms,
        max_attempts,
        backoff_ms: None,
    })
}

/// A canary whose first retry waits `backoff` (instead of the worker's configured base).
pub fn canary_backing_off(
    fail_attempts: u32,
    max_attempts: u32,
    backoff: Duration,
) -> scaleout::jobs::Job {
    scaleout::jobs::Job::Canary(scaleout::jobs::canary::Canary {
        fail_attempts,
        hold_ms: 0,
        max_attempts,
        backoff_ms: Some(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// When each attempt of canary job `id` started, in attempt order.
pub async fn canary_attempt_starts(db: &sqlx::PgPool, id: &str) -> Vec<time::OffsetDateTime> {
    sqlx::query_scalar("select started_at from canary_attempts where job_id = $1 order by attempt")
        .bind(id)
        .fetch_all(db)
        .await
        .expect("reads canary_attempts")
}

/// apalis' row for job `id`: (status, attempts, lock_by).
pub async fn job_row(db: &sqlx::PgPool, id: &str) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as("select status, attempts, lock_by from apalis.jobs where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .expect("reads apalis.jobs")
}

/// How many times canary job `id` reached its effect (0: never).
pub async fn canary_runs(db: &sqlx::PgPool, id: &str) -> i32 {
    sqlx::query_scalar("select runs from canary_effects where job_id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .expect("reads canary_effects")
        .unwrap_or(0)
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
        stack(&["start", self.0]);
    }
}

//! Test data and direct looks at the backing services: fresh users, file contents, canary
//! jobs and their rows, the documented operations, and what a test checks behind the API's
//! back (rows in the primary, objects in the bucket).

use std::collections::HashMap;
use std::time::Duration;

use scaleout::app::AppState;

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

/// `owner`'s rows in `files`, counted on the primary.
pub async fn files_of(state: &AppState, owner: uuid::Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from files where owner_id = $1")
        .bind(owner)
        .fetch_one(state.db.primary_pool())
        .await
        .expect("counts")
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

/// The unfinished multipart uploads under `owner`'s prefix, as (key, upload id).
pub async fn unfinished_uploads(owner: uuid::Uuid) -> Vec<(String, String)> {
    let storage = storage();
    let uploads = storage
        .client()
        .list_multipart_uploads()
        .bucket(storage.bucket())
        .prefix(scaleout::files::object_key::owner_prefix(owner))
        .send()
        .await
        .expect("lists multipart uploads");
    uploads
        .uploads()
        .iter()
        .map(|u| {
            let key = u.key().expect("a key").to_owned();
            (key, u.upload_id().expect("an upload id").to_owned())
        })
        .collect()
}

//! `Idempotency-Key`: safe retries of unsafe requests (POST, PUT, PATCH, DELETE).
//!
//! A client that sends a key gets, for the same key and the same request (method, path and
//! body) within [`KEPT_FOR`] (24 hours), the first answer again (status, the headers in
//! [`KEPT_HEADERS`], body, plus `Idempotent-Replayed: true`) without the handler running
//! again. The same key with another request answers 422 (`idempotency-key-reused`); the same
//! key while its first request is still running answers 409 (`idempotency-key-in-use`).
//!
//! Keys belong to the caller: the logged-in user, else the client address. Records live in
//! Redis, shared by every instance: `SET NX` of a "running" marker that expires after the
//! longest a request may take, then the answer for 24 hours. Redis away means a fast 503 for
//! a request with a key (never a run without the guarantee); requests without one do not
//! touch it.
//!
//! What is not kept, so that a retry with the key runs the handler again:
//! - 5xx answers and 429: they say "try again", and the request may well succeed next time;
//! - answers with a body over [`MAX_KEPT_BODY`] (64 KiB; none of this API's unsafe
//!   operations answers with that much);
//! - answers to a request whose body the handler did not read to the end (it was refused
//!   before its body mattered, and its fingerprint is unknown);
//! - requests that never finished (the client went away, the instance was stopped).
//!   A request on an instance that died keeps its marker until it expires: a retry meanwhile
//!   gets 409, the safe answer when nobody knows whether the first one took effect.
//!
//! The body is hashed as the handler reads it, not buffered: an upload with a key costs no
//! more memory than one without.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_sessions::Session;

use crate::app::AppState;
use crate::db::Caller;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;
use crate::redis_client::RedisClient;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer that is a replay of a kept one.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long an answer is kept for its key.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);
/// Answers with a larger body are not kept.
pub const MAX_KEPT_BODY: usize = 64 * 1024;
/// Keys are 1 to this many visible ASCII characters (a UUID or a ULID fits easily).
pub const KEY_MAX_LEN: usize = 255;
/// The headers kept with an answer and replayed; the others (`Set-Cookie`, the request id,
/// the instance) belong to the answer's own moment.
pub const KEPT_HEADERS: [&str; 5] = [
    "content-type",
    "location",
    "etag",
    "last-modified",
    "cache-control",
];

/// A "running" marker is this prefix and the claim's own random token: only the request that
/// set the marker may replace or remove it (a marker that expired and was claimed again by a
/// retry is not the first request's to touch).
const RUNNING: &[u8] = b"running:";

/// KEYS: the key. ARGV: the claim's marker, then (to keep an answer) the value and its
/// lifetime in ms. Deletes the key, or sets the value, only while the marker is still there.
const IF_STILL_CLAIMED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else redis.call('DEL', KEYS[1]) end
return 1
";

/// The Redis key of `key` for `scope` (`user:{id}` or `address:{ip}`). The client's key is
/// hashed: any length and any character it may hold make one short, safe Redis key.
pub fn redis_key(scope: &str, key: &str) -> String {
    format!("idempotency:{scope}:{}", hex::encode(Sha256::digest(key)))
}

/// The layer's state: the app (for the caller, and Redis) and how long a marker holds.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub state: AppState,
    /// The longest a request may run (the ceiling's timeout), plus a margin.
    pub running_for: Duration,
}

/// The middleware: `router.layer(from_fn_with_state(Idempotency { .. }, idempotency::guard))`,
/// inside the session layer (the caller is part of the key).
pub async fn guard(State(idem): State<Idempotency>, request: Request, next: Next) -> Response {
    let Some(key) = request.headers().get(&HEADER).cloned() else {
        return next.run(request).await;
    };
    if !unsafe_method(request.method()) {
        return next.run(request).await;
    }
    match keyed(&idem, key, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

fn unsafe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn valid_key(key: &HeaderValue) -> Option<&str> {
    let key = key.to_str().ok()?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    (visible && (1..=KEY_MAX_LEN).contains(&key.len())).then_some(key)
}

async fn keyed(
    idem: &Idempotency,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let Some(key) = valid_key(&key) else {
        return Err(ApiError::BadRequest {
            kind: "invalid-idempotency-key",
            detail: format!("Idempotency-Key must be 1 to {KEY_MAX_LEN} visible ASCII characters"),
        }
        .into_response());
    };
    let (mut parts, body) = request.into_parts();
    let scope = match Caller::from_request_parts(&mut parts, &idem.state).await {
        Ok(Caller::User(id)) => format!("user:{id}"),
        Ok(Caller::Anonymous) => {
            let ClientIp(ip) = ClientIp::from_request_parts(&mut parts, &idem.state)
                .await
                .map_err(IntoResponse::into_response)?;
            format!("address:{ip}")
        }
        Err(e) => return Err(e.into_response()),
    };
    let redis_key = redis_key(&scope, key);
    let redis = &idem.state.redis;
    let fingerprint = Fingerprint::start(&parts.method, parts.uri.path_and_query());

    // The marker is set, or the key is taken: by a request still running, or by a kept
    // answer. (A key expiring between the two steps is tried again.)
    let marker = [
        RUNNING,
        uuid::Uuid::new_v4().simple().to_string().as_bytes(),
    ]
    .concat();
    let mut claimed = false;
    for _ in 0..3 {
        if claim(redis, &redis_key, &marker, idem.running_for).await? {
            claimed = true;
            break;
        }
        match fetch(redis, &redis_key).await? {
            Some(record) if record.starts_with(RUNNING) => break,
            Some(record) => {
                let request = Request::from_parts(parts, body);
                return replay(&record, fingerprint, request).await;
            }
            None => continue,
        }
    }
    if !claimed {
        return Err(ApiError::IdempotencyKeyInUse.into_response());
    }

    // The session layer (outside this one) sets the cookie of a session the handler started,
    // renewed or ended (signup, login, password change, logout) after this layer has answered,
    // so a kept answer could not give it back: a replay would leave the client believing it is
    // logged in. Such answers are not kept and a retry runs again (a retried signup with the
    // same credentials logs in; a retried login logs in again).
    let session = parts.extensions.get::<Session>().cloned();
    let session_before = session.as_ref().and_then(Session::id);
    let mut claimed = Claimed {
        redis: redis.clone(),
        key: redis_key,
        marker,
        armed: true,
    };
    let hashing = HashingBody::new(body, fingerprint);
    let digest = hashing.digest.clone();
    let response = next
        .run(Request::from_parts(parts, Body::new(hashing)))
        .await;

    let fingerprint = digest
        .lock()
        .ok()
        .and_then(|d| d.finished.then(|| d.hasher.clone().finalize()));
    let status = response.status();
    let keepable = !status.is_server_error() && status != StatusCode::TOO_MANY_REQUESTS;
    let small = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_KEPT_BODY as u64);
    let same_session = session.as_ref().is_none_or(|s| s.id() == session_before);
    let (Some(fingerprint), true, true, true) = (fingerprint, keepable, small, same_session) else {
        claimed.release().await;
        return Ok(response);
    };
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            claimed.release().await;
            return Err(ApiError::Internal(anyhow::anyhow!("response body: {e}")).into_response());
        }
    };
    let record = Record {
        fingerprint: hex::encode(fingerprint),
        status: parts.status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect(),
    };
    claimed.keep(&record, &bytes).await;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Answers a request whose key has a kept answer: the answer again if the request is the
/// same, 422 if it is not. The body is hashed as it streams in, not kept.
async fn replay(
    stored: &[u8],
    mut fingerprint: Fingerprint,
    request: Request,
) -> Result<Response, Response> {
    let (record, kept_body) = Record::decode(stored).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("an unreadable idempotency record")).into_response()
    })?;
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if crate::error::is_body_cut_off(&e) {
                ApiError::PayloadTooLarge.into_response()
            } else {
                ApiError::BadRequest {
                    kind: "unreadable-body",
                    detail: "the body could not be read".into(),
                }
                .into_response()
            }
        })?;
        if let Some(data) = frame.data_ref() {
            fingerprint.hasher.update(data);
        }
    }
    if hex::encode(fingerprint.hasher.finalize()) != record.fingerprint {
        return Err(ApiError::IdempotencyKeyReused.into_response());
    }
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Bytes::copy_from_slice(kept_body)).into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in &record.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

async fn claim(
    redis: &RedisClient,
    key: &str,
    marker: &[u8],
    running_for: Duration,
) -> Result<bool, Response> {
    let mut conn = redis.conn().await.map_err(unavailable)?;
    let set: Option<String> = redis
        .bounded(
            redis::cmd("SET")
                .arg(key)
                .arg(marker)
                .arg("NX")
                .arg("PX")
                .arg(running_for.as_millis() as u64)
                .query_async(&mut conn),
        )
        .await
        .map_err(unavailable)?;
    Ok(set.is_some())
}

async fn fetch(redis: &RedisClient, key: &str) -> Result<Option<Vec<u8>>, Response> {
    let mut conn = redis.conn().await.map_err(unavailable)?;
    redis
        .bounded(redis::cmd("GET").arg(key).query_async(&mut conn))
        .await
        .map_err(unavailable)
}

fn unavailable(e: crate::redis_client::RedisError) -> Response {
    ApiError::from(e).into_response()
}

/// A claimed key: kept with the answer, or released so that a retry runs again. Dropped
/// while armed (the request was cancelled: the client went away, a timeout), it is released
/// in the background.
struct Claimed {
    redis: RedisClient,
    key: String,
    marker: Vec<u8>,
    armed: bool,
}

impl Claimed {
    async fn release(&mut self) {
        self.armed = false;
        if let Err(e) = release(&self.redis, &self.key, &self.marker).await {
            tracing::warn!(error = %e, "could not release an idempotency key; it expires");
        }
    }

    async fn keep(&mut self, record: &Record, body: &[u8]) {
        self.armed = false;
        let value = record.encode(body);
        let stored = async {
            let mut conn = self.redis.conn().await?;
            self.redis
                .bounded(
                    redis::Script::new(IF_STILL_CLAIMED)
                        .key(&self.key)
                        .arg(&self.marker)
                        .arg(value)
                        .arg(KEPT_FOR.as_millis() as u64)
                        .invoke_async::<i64>(&mut conn),
                )
                .await
        };
        // The handler's work is done and committed: its answer goes out either way. Unkept,
        // the marker expires and a retry runs again.
        if let Err(e) = stored.await {
            tracing::warn!(error = %e, "could not keep the answer for its idempotency key");
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.armed {
            let (redis, key) = (self.redis.clone(), std::mem::take(&mut self.key));
            let marker = std::mem::take(&mut self.marker);
            tokio::spawn(async move {
                let _ = release(&redis, &key, &marker).await;
            });
        }
    }
}

/// Removes the marker, if it is still this claim's.
async fn release(
    redis: &RedisClient,
    key: &str,
    marker: &[u8],
) -> Result<(), crate::redis_client::RedisError> {
    let mut conn = redis.conn().await?;
    redis
        .bounded(
            redis::Script::new(IF_STILL_CLAIMED)
                .key(key)
                .arg(marker)
                .invoke_async::<i64>(&mut conn),
        )
        .await?;
    Ok(())
}

/// A kept answer: its request's fingerprint, status and kept headers. Stored as a 4-byte
/// length, this as JSON, then the body's bytes as they are.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    status: u16,
    headers: Vec<(String, String)>,
}

impl Record {
    fn encode(&self, body: &[u8]) -> Vec<u8> {
        let meta = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + meta.len() + body.len());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(body);
        out
    }

    fn decode(stored: &[u8]) -> Option<(Self, &[u8])> {
        let len = u32::from_be_bytes(stored.get(..4)?.try_into().ok()?) as usize;
        let meta = stored.get(4..4 + len)?;
        Some((serde_json::from_slice(meta).ok()?, stored.get(4 + len..)?))
    }
}

/// SHA-256 over the method, the path and query, and the body.
struct Fingerprint {
    hasher: Sha256,
    finished: bool,
}

impl Fingerprint {
    fn start(method: &Method, path: Option<&axum::http::uri::PathAndQuery>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.as_str());
        hasher.update(b" ");
        hasher.update(path.map_or("", |p| p.as_str()));
        hasher.update(b"\n");
        Self {
            hasher,
            finished: false,
        }
    }
}

/// The request body, hashed as the handler reads it; `finished` once it was read to its end.
struct HashingBody {
    inner: Body,
    digest: Arc<Mutex<Fingerprint>>,
}

impl HashingBody {
    fn new(inner: Body, mut fingerprint: Fingerprint) -> Self {
        // An empty body (most DELETEs, logout) is read to its end already.
        fingerprint.finished = http_body::Body::is_end_stream(&inner);
        Self {
            inner,
            digest: Arc::new(Mutex::new(fingerprint)),
        }
    }
}

impl http_body::Body for HashingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Ok(mut digest) = self.digest.lock() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        digest.hasher.update(data);
                    }
                }
                Poll::Ready(None) => digest.finished = true,
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_it_was_kept() {
        let record = Record {
            fingerprint: "ab".into(),
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
        };
        let stored = record.encode(b"{\"id\":1}\n\0binary");
        let (back, body) = Record::decode(&stored).expect("decodes");
        assert_eq!(back.status, 201);
        assert_eq!(back.fingerprint, "ab");
        assert_eq!(back.headers, record.headers);
        assert_eq!(body, b"{\"id\":1}\n\0binary");
        assert!(Record::decode(b"\0\0\0\x09{}").is_none());
        assert!(Record::decode(b"running:0123456789abcdef0123456789abcdef").is_none());
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let ok = |s: &str| valid_key(&HeaderValue::from_str(s).expect("a header value")).is_some();
        assert!(ok("0b9b8e0e-0f4e-4a63-9a43-4f1c2a8b7d6e"));
        assert!(ok(&"k".repeat(KEY_MAX_LEN)));
        assert!(!ok(&"k".repeat(KEY_MAX_LEN + 1)));
        assert!(!ok("two words"));
        assert!(!ok(""));
    }

    #[test]
    fn keys_of_different_callers_never_meet() {
        assert_ne!(redis_key("user:a", "k"), redis_key("user:b", "k"));
        assert_ne!(redis_key("user:a", "k"), redis_key("address:a", "k"));
        assert!(redis_key("user:a", &"x".repeat(255)).len() < 100);
    }
}

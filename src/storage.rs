//! Object storage through the S3 API: any S3-compatible server (Garage locally, AWS S3 or
//! another provider in the cloud). Uploads live here, never on an instance's disk.
//!
//! Every call is bounded by the configured timeout, timed into
//! `storage_request_duration_seconds{operation}`, counted into `storage_errors_total` when it
//! fails, counted in `storage_requests_in_flight` while it lasts, and traced as a span: a slow
//! object store shows up in all four places.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, SharedCredentialsProvider, retry::RetryConfig,
    timeout::TimeoutConfig,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tracing::Instrument;

use crate::config::StorageConfig;

/// The operations we time and count; the error counters start at zero for each, so dashboards
/// and alerts see a series before the first failure.
const OPERATIONS: &[&str] = &[
    "put_object",
    "copy_object",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "head_object",
    "get_object",
    "delete_object",
    "list_objects",
];

/// A failed object-storage call: unreachable, too slow, or refused.
#[derive(Debug, thiserror::Error)]
#[error("object storage {operation} failed: {message}")]
pub struct StorageError {
    pub operation: &'static str,
    pub message: String,
}

/// What `HEAD` says about an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub content_type: Option<String>,
    /// Names these exact bytes: a conditional request on it fails once the object changes.
    pub etag: Option<String>,
}

/// The outcome of a request made on the condition that the object is still the one an ETag
/// names (`If-Match`, `x-amz-copy-source-if-match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch<T> {
    Matched(T),
    /// The object was replaced or deleted since the ETag was read.
    Changed,
}

/// A presigned request: the client sends exactly this, with these headers, before `expires_in`.
#[derive(Debug, Clone)]
pub struct Presigned {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

/// The S3 client and the bucket every object of this deployment lives in.
#[derive(Debug, Clone)]
pub struct Storage {
    client: aws_sdk_s3::Client,
    /// Same credentials, the public endpoint: signs URLs that clients use directly.
    presigner: aws_sdk_s3::Client,
    bucket: String,
    /// Also bounds reading a response body, which the SDK's operation timeout does not cover.
    timeout: Duration,
}

impl Storage {
    pub fn new(config: &StorageConfig) -> Self {
        for operation in OPERATIONS {
            metrics::counter!("storage_errors_total", "operation" => *operation).absolute(0);
            metrics::gauge!("storage_requests_in_flight", "operation" => *operation).increment(0.0);
        }
        // One provider for both clients: the default chain is looked up once.
        let credentials = credentials(config);
        let client = build_client(config, config.endpoint.as_deref(), credentials.clone());
        let presigner = match &config.public_endpoint {
            Some(public) => build_client(config, Some(public), credentials),
            None => client.clone(),
        };
        Self {
            client,
            presigner,
            bucket: config.bucket.clone(),
            timeout: config.timeout,
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `HeadBucket`: the bucket exists and our credentials may use it. The readiness check.
    pub async fn check(&self) -> Result<(), aws_sdk_s3::Error> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(aws_sdk_s3::Error::from)?;
        Ok(())
    }

    /// One object in one request: for bodies smaller than a multipart part.
    pub async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let len = body.len() as i64;
        call(
            "put_object",
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .content_length(len)
                .body(ByteStream::from(body))
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Starts a multipart upload and returns its id.
    pub async fn create_multipart_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String, StorageError> {
        let out = call(
            "create_multipart_upload",
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .send(),
        )
        .await?;
        out.upload_id.ok_or_else(|| StorageError {
            operation: "create_multipart_upload",
            message: "the response carries no upload id".into(),
        })
    }

    /// Uploads part `number` (from 1) and returns what completion needs to name it.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, StorageError> {
        let len = body.len() as i64;
        let out = call(
            "upload_part",
            self.client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len)
                .body(ByteStream::from(body))
                .send(),
        )
        .await?;
        Ok(CompletedPart::builder()
            .set_e_tag(out.e_tag)
            .part_number(number)
            .build())
    }

    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), StorageError> {
        call(
            "complete_multipart_upload",
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Drops the parts of an unfinished upload, so storage holds nothing for it.
    pub async fn abort_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        call(
            "abort_multipart_upload",
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Size and type of an object, or `None` when there is no such object.
    pub async fn head_object(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let result = timed(
            "head_object",
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        )
        .await;
        match result {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length.unwrap_or(0).max(0) as u64,
                content_type: out.content_type,
                etag: out.e_tag,
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(counted("head_object", &e)),
        }
    }

    /// The first `len` bytes of an object (fewer if it is shorter), provided it is still the
    /// object `etag` names: what is read is what was measured.
    pub async fn read_prefix_if_match(
        &self,
        key: &str,
        len: usize,
        etag: &str,
    ) -> Result<IfMatch<Bytes>, StorageError> {
        let result = timed(
            "get_object",
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .if_match(etag)
                .range(format!("bytes=0-{}", len.saturating_sub(1)))
                .send(),
        )
        .await;
        match result {
            Ok(out) => Ok(IfMatch::Matched(self.read_body(out.body).await?)),
            Err(e) if changed(&e) => Ok(IfMatch::Changed),
            Err(e) => Err(counted("get_object", &e)),
        }
    }

    /// The whole object, for workers that transform it (thumbnails): callers bound the size.
    pub async fn get_object(&self, key: &str) -> Result<Bytes, StorageError> {
        let out = call(
            "get_object",
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        )
        .await?;
        self.read_body(out.body).await
    }

    async fn read_body(&self, body: ByteStream) -> Result<Bytes, StorageError> {
        let failed = |message: String| StorageError {
            operation: "get_object",
            message,
        };
        match tokio::time::timeout(self.timeout, body.collect()).await {
            Ok(Ok(body)) => Ok(body.into_bytes()),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!("no body within {:?}", self.timeout))),
        }
    }

    /// Copies `from` to `to` inside the bucket, on the storage side (no bytes pass through
    /// us), provided `from` is still the object `etag` names: the copy is of the bytes that
    /// were checked, never of bytes written to `from` since.
    pub async fn copy_object_if_match(
        &self,
        from: &str,
        to: &str,
        etag: &str,
    ) -> Result<IfMatch<()>, StorageError> {
        let result = timed(
            "copy_object",
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .copy_source(format!("{}/{from}", self.bucket))
                .copy_source_if_match(etag)
                .key(to)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(IfMatch::Matched(())),
            Err(e) if changed(&e) => Ok(IfMatch::Changed),
            Err(e) => Err(counted("copy_object", &e)),
        }
    }

    /// Keys under `prefix` last modified before `cutoff`, walking every page (at most `limit`).
    pub async fn list_keys_older_than(
        &self,
        prefix: &str,
        cutoff: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = call(
                "list_objects",
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token)
                    .send(),
            )
            .await?;
            for object in out.contents.unwrap_or_default() {
                let old = object
                    .last_modified
                    .and_then(|t| std::time::SystemTime::try_from(t).ok())
                    .is_some_and(|t| t < cutoff);
                if let (true, Some(key)) = (old, object.key) {
                    keys.push(key);
                }
            }
            token = out.next_continuation_token;
            if token.is_none() || keys.len() >= limit {
                return Ok(keys);
            }
        }
    }

    /// Deletes an object; deleting one that does not exist succeeds (S3 semantics), which is
    /// what makes retried deletions harmless.
    pub async fn delete_object(&self, key: &str) -> Result<(), StorageError> {
        call(
            "delete_object",
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Keys under `prefix` (at most 1000: one page).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let out = call(
            "list_objects",
            self.client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .send(),
        )
        .await?;
        Ok(out
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.key)
            .collect())
    }

    /// Aborts every unfinished multipart upload under `prefix` (one page of up to 1000).
    pub async fn abort_multipart_uploads(&self, prefix: &str) -> Result<usize, StorageError> {
        let out = call(
            "list_objects",
            self.client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .send(),
        )
        .await?;
        let mut aborted = 0;
        for upload in out.uploads.unwrap_or_default() {
            if let (Some(key), Some(id)) = (upload.key, upload.upload_id) {
                self.abort_multipart_upload(&key, &id).await?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// A URL that lets its holder PUT exactly `len` bytes of `content_type` to `key` until it
    /// expires. Length and type are signed headers: a different body is refused by storage.
    pub async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        len: u64,
        expires_in: Duration,
    ) -> Result<Presigned, StorageError> {
        let config = presigning(expires_in)?;
        let request = self
            .presigner
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(len as i64)
            .presigned(config)
            .await
            .map_err(|e| failed("presign", &e))?;
        Ok(Presigned {
            method: request.method().to_owned(),
            url: request.uri().to_owned(),
            headers: request
                .headers()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                .collect(),
        })
    }

    /// A short-lived URL to download `key`, answered with the file's type and name.
    pub async fn presign_get(
        &self,
        key: &str,
        content_type: &str,
        disposition: &str,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        let config = presigning(expires_in)?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(content_type)
            .response_content_disposition(disposition)
            .presigned(config)
            .await
            .map_err(|e| failed("presign", &e))?;
        Ok(request.uri().to_owned())
    }
}

/// The AWS default credential chain (environment, profile files, web identity, container and
/// instance roles), built on first use: building it is async and reads files, and the client
/// is made synchronously at start, before any runtime work. The SDK caches what it returns and
/// refreshes it before it expires.
#[derive(Debug)]
struct DefaultChain {
    region: Region,
    chain:
        tokio::sync::OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

fn credentials(config: &StorageConfig) -> SharedCredentialsProvider {
    match &config.static_key {
        Some((id, secret)) => SharedCredentialsProvider::new(Credentials::new(
            id,
            secret.expose(),
            None,
            None,
            "scaleout-environment",
        )),
        None => SharedCredentialsProvider::new(DefaultChain {
            region: Region::new(config.region.clone()),
            chain: tokio::sync::OnceCell::new(),
        }),
    }
}

fn build_client(
    config: &StorageConfig,
    endpoint: Option<&str>,
    credentials: SharedCredentialsProvider,
) -> aws_sdk_s3::Client {
    // Every call is bounded: a slow or absent object store must turn into a fast error,
    // not a request that hangs until the client gives up.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.timeout)
        .operation_attempt_timeout(config.timeout)
        .operation_timeout(config.timeout * 2)
        .build();
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(config.force_path_style)
        .timeout_config(timeouts)
        // Retries back off from 100 ms rather than the SDK's 1 s: a refused connection should
        // become a 503 in a fraction of a second, not after seconds of waiting.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        // Checksums only where S3 requires them: a presigned PUT must not carry a checksum of
        // an empty body, and S3-compatible servers differ in which algorithms they accept.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

fn presigning(expires_in: Duration) -> Result<PresigningConfig, StorageError> {
    PresigningConfig::expires_in(expires_in).map_err(|e| StorageError {
        operation: "presign",
        message: e.to_string(),
    })
}

fn failed(operation: &'static str, error: &dyn std::error::Error) -> StorageError {
    // The SDK's Display is terse ("service error"); the source chain says what happened.
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    StorageError { operation, message }
}

/// The object is not the one the request named: a refused precondition (412), or no object
/// at all any more (404). Not a failure of storage, so not counted as one.
fn changed<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    let code = e.as_service_error().and_then(|s| s.code());
    // The status decides when the body names no code (a GET's 412 may come without one).
    let status = e.raw_response().map(|r| r.status().as_u16());
    matches!(code, Some("PreconditionFailed" | "NoSuchKey")) || matches!(status, Some(412 | 404))
}

/// A failed call, counted into `storage_errors_total`.
fn counted(operation: &'static str, error: &dyn std::error::Error) -> StorageError {
    metrics::counter!("storage_errors_total", "operation" => operation).increment(1);
    failed(operation, error)
}

/// Counts a call in `storage_requests_in_flight{operation}` while it lasts, also when the
/// request is dropped halfway (its caller timed out or went away): calls piling up there are
/// a slow or frozen object store.
struct InFlight(&'static str);

impl InFlight {
    fn start(operation: &'static str) -> Self {
        metrics::gauge!("storage_requests_in_flight", "operation" => operation).increment(1.0);
        Self(operation)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("storage_requests_in_flight", "operation" => self.0).decrement(1.0);
    }
}

/// Times and traces one call, without judging its result.
async fn timed<T, E>(
    operation: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::info_span!("storage", operation, otel.kind = "client");
    let start = Instant::now();
    let _in_flight = InFlight::start(operation);
    let result = request.instrument(span).await;
    metrics::histogram!("storage_request_duration_seconds", "operation" => operation)
        .record(start.elapsed().as_secs_f64());
    result
}

/// Times and traces one call; a failure becomes a [`StorageError`] and is counted.
async fn call<T, E: std::error::Error>(
    operation: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, StorageError> {
    timed(operation, request)
        .await
        .map_err(|e| counted(operation, &e))
}

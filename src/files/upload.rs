//! A multipart request body streamed into object storage, never held whole and never written
//! to local disk.
//!
//! At most one part's worth of bytes (`UPLOAD_PART_BYTES`) is in memory per upload: bytes
//! accumulate until a part is full, the part goes to S3, and the buffer is used again. A file
//! smaller than one part goes up in a single `PutObject` once it has been read entirely, so a
//! rejected or abandoned small upload never reaches storage at all. A large one is an S3
//! multipart upload, which storage keeps invisible until it is completed; a guard aborts it
//! when the request fails or the client goes away, so no parts linger.

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::sniff;
use crate::error::ApiError;
use crate::storage::Storage;

/// What an upload may be.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub max_bytes: u64,
    pub part_bytes: usize,
    pub allowed_types: &'a [String],
}

/// An object now in storage, described by what was actually received.
#[derive(Debug, Clone)]
pub struct Stored {
    pub name: Option<String>,
    pub size: u64,
    pub content_type: &'static str,
    pub sha256: String,
}

impl Stored {
    /// The `files` row that records this object at `object_key`, available at once.
    pub fn as_new_file<'a>(
        &'a self,
        id: uuid::Uuid,
        owner_id: uuid::Uuid,
        purpose: &'a str,
        object_key: &'a str,
    ) -> super::repo::NewFile<'a> {
        super::repo::NewFile {
            id,
            owner_id,
            purpose,
            object_key,
            name: self.name.as_deref(),
            size_bytes: self.size as i64,
            content_type: self.content_type,
            sha256: Some(&self.sha256),
            status: "available",
            upload_expires_at: None,
        }
    }
}

/// Streams the part named `file` of `multipart` to `key`. The body has no other part: one is
/// refused with 422, like an unknown field of a JSON body, and a file stored by then deleted.
#[tracing::instrument(skip_all, fields(key))]
pub async fn receive(
    storage: &Storage,
    mut multipart: Multipart,
    key: &str,
    rules: Rules<'_>,
    size_hint: Option<u64>,
) -> Result<Stored, ApiError> {
    let stored = match multipart.next_field().await.map_err(broken_body)? {
        Some(field) if field.name() == Some("file") => {
            stream_field(storage, field, key, rules, size_hint).await?
        }
        Some(field) => return Err(extra_part(field.name())),
        None => {
            return Err(ApiError::invalid(
                "file",
                "is required: send the file as the multipart part named \"file\"",
            ));
        }
    };
    let rest = match multipart.next_field().await {
        Ok(None) => return Ok(stored),
        Ok(Some(field)) => extra_part(field.name()),
        Err(e) => broken_body(e),
    };
    if let Err(e) = storage.delete_object(key).await {
        tracing::warn!(%key, error = %e, "could not delete the object of a refused upload");
    }
    Err(rest)
}

fn extra_part(name: Option<&str>) -> ApiError {
    match name {
        Some("file") => ApiError::invalid("file", "appears more than once"),
        Some(name) => ApiError::invalid(name, "is not a known part"),
        None => ApiError::invalid("body", "has a part without a name"),
    }
}

async fn stream_field(
    storage: &Storage,
    mut field: Field<'_>,
    key: &str,
    rules: Rules<'_>,
    size_hint: Option<u64>,
) -> Result<Stored, ApiError> {
    let declared = sniff::declared(field.content_type());
    let name = field.file_name().and_then(display_name);
    // The request's length bounds the file's: small files get a small buffer. The buffer
    // never grows past one part (chunks are split at the part boundary), so it is never
    // reallocated at double the size.
    let capacity = size_hint.map_or(rules.part_bytes, |n| (n as usize).min(rules.part_bytes));
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut content_type = None;
    let mut multipart: Option<MultipartUpload> = None;

    while let Some(mut chunk) = field.chunk().await.map_err(broken_body)? {
        size += chunk.len() as u64;
        if size > rules.max_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        hasher.update(&chunk);
        while !chunk.is_empty() {
            let room = rules.part_bytes - buffer.len();
            buffer.extend_from_slice(&chunk.split_to(room.min(chunk.len())));
            if content_type.is_none() && buffer.len() >= sniff::SNIFF_LEN {
                content_type = Some(check_type(&buffer, declared.as_deref(), rules)?);
            }
            if buffer.len() == rules.part_bytes {
                let content_type = content_type.unwrap_or("application/octet-stream");
                let upload = match &mut multipart {
                    Some(upload) => upload,
                    None => {
                        multipart.insert(MultipartUpload::start(storage, key, content_type).await?)
                    }
                };
                buffer = upload.send_part(buffer).await?;
            }
        }
    }
    if size == 0 {
        return Err(ApiError::invalid("file", "is empty"));
    }
    let content_type = match content_type {
        Some(t) => t,
        None => check_type(&buffer, declared.as_deref(), rules)?,
    };
    match multipart {
        Some(mut upload) => {
            if !buffer.is_empty() {
                upload.send_part(buffer).await?;
            }
            upload.complete().await?;
        }
        None => {
            storage
                .put_object(key, buffer.freeze(), content_type)
                .await?
        }
    }
    Ok(Stored {
        name,
        size,
        content_type,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The type the leading bytes show, if it is allowed and does not contradict the declared one.
pub fn check_type(
    head: &[u8],
    declared: Option<&str>,
    rules: Rules<'_>,
) -> Result<&'static str, ApiError> {
    let head = &head[..head.len().min(sniff::SNIFF_LEN)];
    let Some(actual) = sniff::sniff(head) else {
        return Err(ApiError::UnsupportedFileType(
            "the file's content is not of a recognised type".into(),
        ));
    };
    if !rules.allowed_types.iter().any(|t| t == actual) {
        return Err(ApiError::UnsupportedFileType(format!(
            "{actual} files are not accepted here; accepted: {}",
            rules.allowed_types.join(", ")
        )));
    }
    if let Some(declared) = declared
        && declared != actual
    {
        return Err(ApiError::UnsupportedFileType(format!(
            "declared as {declared} but the content is {actual}"
        )));
    }
    Ok(actual)
}

/// The client's file name, for display only: no path, no control characters, bounded.
fn display_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

/// A broken or cut-off request body. The body limit shows up here too, as a 413.
fn broken_body(e: MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE || crate::error::is_body_cut_off(&e)
    {
        return ApiError::PayloadTooLarge;
    }
    ApiError::BadRequest {
        kind: "malformed-multipart",
        detail: e.body_text(),
    }
}

/// An S3 multipart upload in progress; aborted when dropped before completion.
struct MultipartUpload {
    storage: Storage,
    key: String,
    upload_id: String,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
    completed: bool,
}

impl MultipartUpload {
    async fn start(storage: &Storage, key: &str, content_type: &str) -> Result<Self, ApiError> {
        let upload_id = storage.create_multipart_upload(key, content_type).await?;
        Ok(Self {
            storage: storage.clone(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
            completed: false,
        })
    }

    /// Sends `buffer` as the next part and hands back an empty buffer for the next one:
    /// the same allocation when storage has let go of it, so memory stays at one part.
    async fn send_part(&mut self, buffer: BytesMut) -> Result<BytesMut, ApiError> {
        let capacity = buffer.capacity();
        let bytes: Bytes = buffer.freeze();
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let part = self
            .storage
            .upload_part(&self.key, &self.upload_id, number, bytes.clone())
            .await?;
        self.parts.push(part);
        Ok(match bytes.try_into_mut() {
            Ok(mut reused) => {
                reused.clear();
                reused
            }
            Err(_) => BytesMut::with_capacity(capacity),
        })
    }

    async fn complete(&mut self) -> Result<(), ApiError> {
        let parts = std::mem::take(&mut self.parts);
        self.storage
            .complete_multipart_upload(&self.key, &self.upload_id, parts)
            .await?;
        self.completed = true;
        Ok(())
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        // The request is over (failed, or its client left): the abort cannot be awaited here,
        // so it runs on its own.
        let (storage, key, upload_id) = (
            self.storage.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match storage.abort_multipart_upload(&key, &upload_id).await {
                    Ok(()) => tracing::info!(%key, "aborted an unfinished multipart upload"),
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "could not abort a multipart upload")
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_lose_paths_and_control_characters() {
        assert_eq!(display_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            display_name("C:\\Users\\ada\\report.pdf").as_deref(),
            Some("report.pdf")
        );
        assert_eq!(display_name("a\u{0}b\nc.txt").as_deref(), Some("abc.txt"));
        assert_eq!(display_name("  ").as_deref(), None);
        assert_eq!(display_name(&"x".repeat(400)).map(|n| n.len()), Some(255));
    }

    #[test]
    fn the_content_decides_the_type() {
        let allowed = vec!["image/png".to_owned(), "text/plain".to_owned()];
        let rules = Rules {
            max_bytes: 1,
            part_bytes: 1,
            allowed_types: &allowed,
        };
        let png = b"\x89PNG\r\n\x1a\n....";
        assert_eq!(check_type(png, None, rules).ok(), Some("image/png"));
        assert_eq!(
            check_type(png, Some("image/png"), rules).ok(),
            Some("image/png")
        );
        // A lie about the type is refused even when both types are allowed.
        assert!(check_type(b"plain text", Some("image/png"), rules).is_err());
        // Recognised but not allowed.
        assert!(check_type(b"%PDF-1.7", None, rules).is_err());
        // Not recognised at all.
        assert!(check_type(b"\x7fELF\x02", None, rules).is_err());
    }
}

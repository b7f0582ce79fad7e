//! HTTP caching: entity tags and conditional requests, `Cache-Control`, and how they compose
//! with compression.
//!
//! - Every successful GET of JSON under `/api/v1` carries a strong `ETag`: the first 128 bits
//!   of the SHA-256 of the body, hex. Handlers whose resources take `If-Match` (tasks,
//!   projects) tag their own responses with [`tagged_json`], from the same bytes, so the tag a
//!   GET shows is the tag a `PATCH` compares against the locked row's representation
//!   ([`IfMatch`]). Other responses are tagged by [`conditional`] from their buffered body
//!   (JSON of at most [`MAX_TAGGED_BYTES`]; redirects, streams and errors are not tagged).
//! - `If-None-Match` naming the current tag (or `*`) → 304 with no body, and the headers a 200
//!   would have carried but the representation's own (`Content-Type`, `Content-Length`).
//! - `Cache-Control`: user data is `private, no-cache` (a browser may keep it, and must ask
//!   with the tag each time; no shared cache stores it). Public reads set
//!   [`public`] themselves: `public, max-age=…, stale-while-revalidate=…` from configuration.
//! - Compression runs outside [`conditional`], so tags are computed over the identity body.
//!   [`tag_encoding`], outside compression, appends the coding to the tag of a compressed
//!   response (`"…-gzip"`): two byte-different variants never share a strong tag, and a
//!   shared cache keeps them apart. Comparisons ignore that suffix, so a tag a client got in
//!   any encoding revalidates (and, in `If-Match`, names the same version of the resource).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::error::ApiError;

/// Largest response body [`conditional`] buffers to tag; larger or unsized ones go untagged.
pub const MAX_TAGGED_BYTES: u64 = 1 << 20;

/// The codings [`tag_encoding`] may append, and comparisons strip.
const CODINGS: [&str; 3] = ["gzip", "br", "zstd"];

/// The `Cache-Control` of user data: anyone's browser may keep it but must revalidate it, and
/// no shared cache may store it.
pub const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-cache");

/// Compression of responses of at least `min_bytes` in gzip, brotli or zstd, as the client's
/// `Accept-Encoding` prefers (a compressed response says `Vary: Accept-Encoding`). Never for
/// types that are compressed already (images but SVG, archives, audio, video, fonts), nor for
/// server-sent events (each event must leave at once).
pub fn compression(min_bytes: u16) -> CompressionLayer<impl Predicate> {
    let predicate = SizeAbove::new(min_bytes)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::const_new("application/zip"))
        .and(NotForContentType::const_new("application/gzip"))
        .and(NotForContentType::const_new("application/zstd"))
        .and(NotForContentType::const_new("application/x-7z"))
        .and(NotForContentType::const_new("audio/"))
        .and(NotForContentType::const_new("video/"))
        .and(NotForContentType::const_new("font/woff"));
    CompressionLayer::new()
        .no_deflate()
        // Each codec's default level is its densest but slowest for brotli (11): a level of 4
        // keeps the CPU a response costs small, for most of the saving.
        .quality(CompressionLevel::Precise(4))
        .compress_when(predicate)
}

/// The strong tag of a representation's bytes, quoted as the header shows it.
pub fn tag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// `value` as a JSON 200 that carries its tag; the tag [`IfMatch::check`] compares against is
/// computed from the same serialisation.
pub fn tagged_json<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let (bytes, tag) = json_and_tag(value)?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    response.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(&tag).expect("hex is header-safe"),
    );
    Ok(response)
}

/// The tag of `value`'s JSON representation.
pub fn tag_of_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    Ok(json_and_tag(value)?.1)
}

fn json_and_tag<T: Serialize>(value: &T) -> Result<(Vec<u8>, String), ApiError> {
    // The bytes `axum::Json` would write (serde_json::to_writer), so a handler that answers
    // with `axum::Json` gets the same tag from `conditional`.
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.into()))?;
    let tag = tag_of(&bytes);
    Ok((bytes, tag))
}

/// `public, max-age=…, stale-while-revalidate=…`: data that is the same for everyone, which a
/// shared cache (the edge) may keep for `max_age` and serve stale for `swr` more while it
/// refreshes it.
pub fn public(max_age: Duration, swr: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "public, max-age={}, stale-while-revalidate={}",
        max_age.as_secs(),
        swr.as_secs()
    ))
    .expect("digits are header-safe")
}

/// The opaque part of a tag as compared: without `W/`, and without a coding suffix added by
/// [`tag_encoding`].
fn core(tag: &str) -> &str {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.trim_matches('"');
    for coding in CODINGS {
        if let Some(base) = inner.strip_suffix(coding).and_then(|b| b.strip_suffix('-')) {
            return base;
        }
    }
    inner
}

/// The tags a conditional header lists (`*` included as itself).
fn listed(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    let mut present = false;
    for value in headers.get_all(name) {
        present = true;
        let Ok(text) = value.to_str() else { continue };
        tags.extend(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    present.then_some(tags)
}

/// The `If-Match` of a request, for handlers whose writes compare it with the current version
/// of the resource (tasks, projects). Absent: the write goes ahead unconditionally.
#[derive(Debug, Clone)]
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
    pub fn is_present(&self) -> bool {
        self.0.is_some()
    }

    /// Ok when the header is absent, is `*`, or lists `current` (strong comparison: a weak
    /// tag never matches). Otherwise 412, before anything is changed.
    pub fn check(&self, current: &str) -> Result<(), ApiError> {
        let Some(tags) = &self.0 else { return Ok(()) };
        let current = core(current);
        let matches = tags
            .iter()
            .any(|t| t == "*" || (!t.starts_with("W/") && core(t) == current));
        if matches {
            Ok(())
        } else {
            Err(ApiError::PreconditionFailed)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(listed(&parts.headers, header::IF_MATCH)))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Tags successful GETs, answers `If-None-Match` with 304, and gives API responses that say
/// nothing of caching `private, no-cache`.
pub async fn conditional(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return next.run(request).await;
    }
    let api = request.uri().path().starts_with("/api/");
    let if_none_match = listed(request.headers(), header::IF_NONE_MATCH);
    let mut response = next.run(request).await;
    // A HEAD says what a GET would of caching (a cache may store what it learns from one).
    if api && !response.headers().contains_key(header::CACHE_CONTROL) {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, PRIVATE);
    }
    // But its body is already gone (axum answers HEAD with the GET handler's headers and no
    // body), so there is nothing to tag: a tag of the empty body would be a lie.
    if response.status() != StatusCode::OK || method == Method::HEAD {
        return response;
    }
    if !response.headers().contains_key(header::ETAG) && is_json(response.headers()) {
        response = tag_buffered(response).await;
    }
    let Some(tag) = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return response;
    };
    // Whether the body may differ by coding: a cache must key it by Accept-Encoding too.
    if !response.headers().contains_key(header::VARY) {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let Some(tags) = if_none_match else {
        return response;
    };
    // Weak comparison, as RFC 9110 has it for If-None-Match.
    let current = core(&tag);
    let Some(matched) = tags.iter().find(|t| *t == "*" || core(t) == current) else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    // The tag of the variant the client holds (it may carry a coding suffix that this 304,
    // uncompressed, would not get from `tag_encoding`).
    if matched != "*"
        && let Ok(value) = HeaderValue::from_str(matched)
    {
        parts.headers.insert(header::ETAG, value);
    }
    Response::from_parts(parts, Body::empty())
}

/// Buffers a sized JSON body of at most [`MAX_TAGGED_BYTES`] and tags it.
async fn tag_buffered(response: Response) -> Response {
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_TAGGED_BYTES);
    if !small {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_TAGGED_BYTES as usize).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // The body failed while it was read: a 500, like any other failure.
            tracing::warn!(error = %e, "response body failed while it was tagged");
            return crate::error::Problem::internal().into_response();
        }
    };
    if let Ok(value) = HeaderValue::from_str(&tag_of(&bytes)) {
        parts.headers.insert(header::ETAG, value);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Appends the coding to the strong tag of a compressed response (`"abc"` → `"abc-gzip"`).
pub async fn tag_encoding(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let Some(coding) = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return response;
    };
    let tagged = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.starts_with('"') && t.ends_with('"') && t.len() >= 2)
        .map(|t| format!("\"{}-{coding}\"", &t[1..t.len() - 1]));
    if let Some(value) = tagged.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// States in the document what [`conditional`] does for every API GET that answers 200: it
/// takes `If-None-Match` and may answer 304. (Written once here rather than on every handler.)
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{Object, Type};
    use utoipa::openapi::{Required, ResponseBuilder};

    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/") {
            continue;
        }
        let Some(get) = &mut item.get else { continue };
        if !get.responses.responses.contains_key("200") {
            continue;
        }
        get.responses
            .responses
            .entry("304".into())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description("Not modified: `If-None-Match` names the current `ETag`; no body")
                    .build()
                    .into()
            });
        let parameters = get.parameters.get_or_insert_with(Vec::new);
        parameters.push(
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "`ETag`s the client holds: if one is current, 304 with no body",
                ))
                .schema(Some(Object::with_type(Type::String)))
                .build()
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_ignore_weakness_and_the_coding_suffix() {
        assert_eq!(core("\"abc\""), "abc");
        assert_eq!(core("W/\"abc\""), "abc");
        assert_eq!(core("\"abc-gzip\""), "abc");
        assert_eq!(core("\"abc-zstd\""), "abc");
        assert_eq!(core("\"abc-br\""), "abc");
        assert_eq!(core("\"abc-other\""), "abc-other");
    }

    /// The compression and tagging layers as the router stacks them, around one answer of
    /// `content_type` and `len` bytes; the answer's `Content-Encoding` and `ETag`.
    async fn served(content_type: &'static str, len: usize) -> (Option<String>, Option<String>) {
        use tower::ServiceExt;

        let app = axum::Router::new()
            .route(
                "/api/x",
                axum::routing::get(move || async move {
                    ([(header::CONTENT_TYPE, content_type)], vec![b'a'; len])
                }),
            )
            // Router layers wrap outward: the last one added is the outermost.
            .layer(axum::middleware::from_fn(conditional))
            .layer(compression(1024))
            .layer(axum::middleware::from_fn(tag_encoding));
        let request = Request::builder()
            .uri("/api/x")
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .expect("a request");
        let response = app.oneshot(request).await.expect("answers");
        let get = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (get(header::CONTENT_ENCODING), get(header::ETAG))
    }

    #[tokio::test]
    async fn only_large_answers_of_compressible_types_are_compressed() {
        let (coding, tag) = served("application/json", 2048).await;
        assert_eq!(coding.as_deref(), Some("gzip"));
        let tag = tag.expect("a tag");
        assert!(tag.ends_with("-gzip\""), "{tag}");
        assert_eq!(core(&tag), core(&tag_of(&[b'a'; 2048])));

        assert_eq!(
            served("application/json", 1000).await.0,
            None,
            "under 1 KiB"
        );
        for already in [
            "image/png",
            "application/zip",
            "application/gzip",
            "video/mp4",
        ] {
            assert_eq!(served(already, 4096).await.0, None, "{already}");
        }
    }

    #[test]
    fn if_match_is_strong_and_takes_a_star() {
        let current = tag_of(b"{}");
        let of = |tags: &[&str]| IfMatch(Some(tags.iter().map(|t| (*t).to_owned()).collect()));
        assert!(IfMatch(None).check(&current).is_ok());
        assert!(of(&["*"]).check(&current).is_ok());
        assert!(of(&["\"nope\"", &current]).check(&current).is_ok());
        assert!(of(&[&format!("W/{current}")]).check(&current).is_err());
        assert!(of(&["\"nope\""]).check(&current).is_err());
    }
}

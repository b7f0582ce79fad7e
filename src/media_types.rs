//! The media types the service knows, in a leaf module that anything may import: the
//! configuration validates `UPLOAD_ALLOWED_TYPES` against them, the files module recognises
//! them in a file's bytes, and the HTTP layer knows which request bodies are JSON.

/// Every type `files::sniff` can recognise from a file's leading bytes: the menu
/// `UPLOAD_ALLOWED_TYPES` chooses from.
pub const RECOGNISED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "application/zip",
    "text/plain",
];

/// Avatars must be images the thumbnail job can decode.
pub const AVATAR: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Error bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Whether a `Content-Type` header value names JSON: `application/json` or any
/// `application/*+json`, whatever its parameters.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_recognised_with_parameters_and_suffixes() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonp"));
    }
}

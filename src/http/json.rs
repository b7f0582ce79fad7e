//! `AppJson`: axum's `Json`, with rejections in the app's problem+json format and
//! field-level messages for bodies that parse but do not fit the request type.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldErrors};

#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&request) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedJson(rejection.body_text())
                }
            })?;
        parse(&bytes).map(AppJson)
    }
}

fn is_json(request: &Request) -> bool {
    let Some(content_type) = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Syntax errors are 400; a body of the wrong shape is 422 naming the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Request bodies are objects. serde would also fill a struct from an array of its field
    // values in order, an accident of the format that no client should come to rely on.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(e) => Err(ApiError::MalformedJson(without_position(&e.to_string()))),
            Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        };
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::Validation(field_errors(&path, &inner)),
            _ => ApiError::MalformedJson(without_position(&inner.to_string())),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(without_position(&e.to_string())))?;
    Ok(value)
}

/// Turns serde's messages into `field → message`, the shape clients display next to inputs.
fn field_errors(path: &str, error: &serde_json::Error) -> FieldErrors {
    let message = without_position(&error.to_string());
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let (field, text) = if let Some(field) = quoted("unknown field `") {
        (field, "is not a known field".to_owned())
    } else if let Some(field) = quoted("missing field `") {
        (field, "is required".to_owned())
    } else if path == "." {
        ("body".to_owned(), message)
    } else {
        (path.to_owned(), message)
    };
    let mut errors = FieldErrors::new();
    errors.entry(field).or_default().push(text);
    errors
}

fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Body {
        email: String,
        age: u8,
    }

    fn errors(json: &str) -> FieldErrors {
        match parse::<Body>(json.as_bytes()) {
            Err(ApiError::Validation(errors)) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_missing_fields_name_the_field() {
        assert_eq!(
            errors(r#"{"email":"a","age":1,"admin":true}"#)["admin"],
            ["is not a known field"]
        );
        assert_eq!(errors(r#"{"age":1}"#)["email"], ["is required"]);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = errors(r#"{"email":"a","age":"old"}"#);
        assert!(e["age"][0].starts_with("invalid type"), "{e:?}");
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(errors(r#"["a", 1]"#)["body"], ["must be a JSON object"]);
        assert!(matches!(
            parse::<Body>(b"[1,"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn broken_json_is_malformed_not_invalid() {
        assert!(matches!(
            parse::<Body>(b"{\"email\":"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse::<Body>(br#"{"email":"a","age":1} trailing"#),
            Err(ApiError::MalformedJson(_))
        ));
    }
}

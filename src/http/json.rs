//! `AppJson`: axum's `Json`, with rejections in the app's problem+json format, and one 422
//! that names every bad field of a body at once: missing, of the wrong type, unknown, or
//! breaking a rule of the request type's [`Validate`].
//!
//! serde stops at the first field it cannot fill. To name them all, the body is read as a
//! JSON object first, then deserialised again and again: each refusal is recorded and the
//! object repaired (an unknown field dropped, a missing or mistyped one given a stand-in) until
//! the type fills. Its own rules then run on the result, and their findings count only for
//! fields that parsed, since the others hold stand-ins.

use std::collections::BTreeMap;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldErrors};

#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

/// The rules a request body follows beyond its shape (a valid email, a size within the
/// limit). [`AppJson`] runs them after parsing, so handlers receive only valid requests.
/// `S` is the router's state, for rules that depend on configuration.
pub trait Validate<S> {
    /// Records every broken rule in `check`; may normalise fields (trim them) on the way.
    fn validate(&mut self, state: &S, check: &mut Check);
}

/// The rule failures of one request, field by field.
#[derive(Debug, Default)]
pub struct Check(FieldErrors);

impl Check {
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// Records the outcome of one rule on `field`.
    pub fn rule(&mut self, field: &str, outcome: Result<(), impl Into<String>>) {
        if let Err(message) = outcome {
            self.fail(field, message);
        }
    }
}

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned + Validate<S>,
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
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE
                    || crate::error::is_body_cut_off(&rejection)
                {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedJson(rejection.body_text())
                }
            })?;
        parse(&bytes, state).map(AppJson)
    }
}

/// For `#[serde(default, deserialize_with = "json::non_null")]` on an `Option` field that a
/// client may leave out but not unset: absent is `None`, and `null` is refused like any other
/// value of the wrong type.
pub fn non_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// For `#[serde(deserialize_with = "json::integer")]`: an integer as JSON Schema has it, any
/// number without a fractional part, `3.0` as well as `3` (serde's `i64` takes only the second).
pub fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_i64()
        .or_else(|| {
            // Exactly representable, so the conversion below loses nothing.
            let range = -(2f64.powi(63))..2f64.powi(63);
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && range.contains(f))
                .map(|f| f as i64)
        })
        .ok_or_else(|| {
            serde::de::Error::custom(format!("invalid value: {number}, expected an integer"))
        })
}

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::media_types::is_json)
}

/// Syntax errors are 400; a body of the wrong shape or breaking the type's rules is one 422
/// naming every field at fault.
pub fn parse<T, S>(bytes: &[u8], state: &S) -> Result<T, ApiError>
where
    T: DeserializeOwned + Validate<S>,
{
    // Request bodies are objects. serde would also fill a struct from an array of its field
    // values in order, an accident of the format that no client should come to rely on.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(e) => Err(ApiError::MalformedJson(without_position(&e.to_string()))),
            Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        };
    }
    let Object { fields, repeated } = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(without_position(&e.to_string())))?;

    let mut problems = FieldErrors::new();
    for field in repeated {
        add(&mut problems, field, "appears more than once".into());
    }
    let Some(mut value) = shape::<T>(fields, &mut problems) else {
        return Err(ApiError::Validation(problems));
    };
    let mut check = Check::default();
    value.validate(state, &mut check);
    for (field, messages) in check.0 {
        // A field that did not parse holds a stand-in: what the rules say of it means nothing.
        problems.entry(field).or_insert(messages);
    }
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::Validation(problems))
    }
}

/// At most this many problems are listed: more than any form has fields, and a bound on the
/// work a body of many unknown keys can cause (one more deserialisation per problem).
const MAX_PROBLEMS: usize = 32;

/// Values tried in turn in place of a field that is missing or of the wrong type, until one
/// fits its type, so that parsing goes on to the fields after it.
fn stand_in(attempt: usize) -> Option<Value> {
    Some(match attempt {
        0 => Value::String(String::new()),
        1 => Value::from(0),
        2 => Value::Bool(false),
        3 => Value::Array(Vec::new()),
        4 => Value::Object(Map::new()),
        5 => Value::Null,
        _ => return None,
    })
}

/// Deserialises `T` from `fields`, recording every field serde refuses on the way; `None` when
/// the body cannot be repaired into a `T` (its problems are recorded by then).
fn shape<T: DeserializeOwned>(fields: Map<String, Value>, problems: &mut FieldErrors) -> Option<T> {
    let mut body = Value::Object(fields);
    // The fields given stand-ins, and which stand-in each holds now.
    let mut standing_in: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&body) {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        if problems.len() >= MAX_PROBLEMS {
            return None;
        }
        let path = error.path().to_string();
        let top = error.path().iter().find_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let message = error.into_inner().to_string();
        let quoted = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned)
        };
        let (unknown, missing) = (quoted("unknown field `"), quoted("missing field `"));
        let object = body.as_object_mut()?;
        // What to name, what to say, and which top-level field to repair.
        let (field, text, key): (String, String, Option<String>) = match (unknown, missing) {
            (Some(field), _) if top.is_none() || top.as_ref() == Some(&field) => {
                add(problems, field.clone(), "is not a known field".into());
                object.remove(&field);
                continue;
            }
            (Some(field), _) => (
                format!("{path}.{field}"),
                "is not a known field".into(),
                top,
            ),
            (None, Some(field)) if top.is_none() => {
                (field.clone(), "is required".into(), Some(field))
            }
            (None, Some(field)) => (format!("{path}.{field}"), "is required".into(), top),
            (None, None) => (path, message, top),
        };
        let Some(key) = key else {
            // Not about any one field: nothing to repair.
            add(problems, "body".into(), text);
            return None;
        };
        let attempt = match standing_in.get(&key) {
            // The stand-in did not fit either; the field's problem is recorded already.
            Some(previous) => previous + 1,
            None => {
                add(problems, field, text);
                0
            }
        };
        standing_in.insert(key.clone(), attempt);
        object.insert(key, stand_in(attempt)?);
    }
}

fn add(problems: &mut FieldErrors, field: String, message: String) {
    problems.entry(field).or_default().push(message);
}

/// A body's top-level object, with the keys it gives more than once: serde_json would keep
/// the last silently, and a body that says two things about a field is refused instead.
struct Object {
    fields: Map<String, Value>,
    repeated: Vec<String>,
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut object = Object {
                    fields: Map::new(),
                    repeated: Vec::new(),
                };
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if object.fields.insert(key.clone(), value).is_some() {
                        object.repeated.push(key);
                    }
                }
                Ok(object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
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
    #[expect(dead_code, reason = "`tags` is only deserialised")]
    struct Body {
        email: String,
        age: u8,
        nickname: Option<String>,
        tags: Option<Vec<String>>,
    }

    /// Rules on fields that parsed, and a normalisation.
    impl Validate<()> for Body {
        fn validate(&mut self, (): &(), check: &mut Check) {
            if !self.email.contains('@') {
                check.fail("email", "is not a valid email address");
            }
            if self.age < 18 {
                check.fail("age", "must be at least 18");
            }
            if let Some(nickname) = &mut self.nickname {
                *nickname = nickname.trim().to_owned();
            }
        }
    }

    fn errors(json: &str) -> FieldErrors {
        match parse::<Body, ()>(json.as_bytes(), &()) {
            Err(ApiError::Validation(errors)) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_body_passes_its_rules_and_is_normalised() {
        let body: Body =
            parse(br#"{"email":"a@b","age":20,"nickname":" Al "}"#, &()).expect("valid");
        assert_eq!(body.nickname.as_deref(), Some("Al"));
        assert_eq!((body.email.as_str(), body.age), ("a@b", 20));
    }

    #[test]
    fn unknown_and_missing_fields_name_the_field() {
        assert_eq!(
            errors(r#"{"email":"a@b","age":20,"admin":true}"#)["admin"],
            ["is not a known field"]
        );
        assert_eq!(errors(r#"{"age":20}"#)["email"], ["is required"]);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = errors(r#"{"email":"a@b","age":"old"}"#);
        assert!(e["age"][0].starts_with("invalid type"), "{e:?}");
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        // Wrong type, missing, two unknown, a mistyped optional field and a rule broken by a
        // field that parsed: one answer names all six.
        let e = errors(r#"{"age":"old","x":1,"y":2,"nickname":7,"tags":"a"}"#);
        assert_eq!(
            e.keys().map(String::as_str).collect::<Vec<_>>(),
            ["age", "email", "nickname", "tags", "x", "y"],
            "{e:?}"
        );
        assert_eq!(e["email"], ["is required"]);
        assert_eq!(e["x"], ["is not a known field"]);
        assert!(e["tags"][0].starts_with("invalid type"), "{e:?}");

        let e = errors(r#"{"email":"nope","age":3,"admin":true}"#);
        assert_eq!(e["email"], ["is not a valid email address"]);
        assert_eq!(e["age"], ["must be at least 18"]);
        assert_eq!(e["admin"], ["is not a known field"]);
    }

    #[test]
    fn rules_say_nothing_of_fields_that_did_not_parse() {
        // `email` holds a stand-in (""), which its rule would refuse; only the missing field
        // is reported for it.
        let e = errors(r#"{"age":3}"#);
        assert_eq!(e["email"], ["is required"]);
        assert_eq!(e["age"], ["must be at least 18"]);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn repeated_keys_are_refused() {
        let e = errors(r#"{"email":"a@b","age":20,"email":"c@d"}"#);
        assert_eq!(e["email"], ["appears more than once"]);
    }

    #[test]
    fn a_body_of_many_unknown_keys_lists_a_bounded_number() {
        let keys: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":1")).collect();
        let e = errors(&format!(
            "{{\"email\":\"a@b\",\"age\":20,{}}}",
            keys.join(",")
        ));
        assert_eq!(e.len(), MAX_PROBLEMS);
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        #[derive(Debug, serde::Deserialize)]
        struct Size {
            #[serde(deserialize_with = "integer")]
            size: i64,
        }
        impl Validate<()> for Size {
            fn validate(&mut self, (): &(), _: &mut Check) {}
        }
        let size = |json: &str| parse::<Size, ()>(json.as_bytes(), &()).map(|s| s.size);
        assert_eq!(size(r#"{"size":136}"#).ok(), Some(136));
        assert_eq!(size(r#"{"size":136.0}"#).ok(), Some(136));
        assert_eq!(size(r#"{"size":-2.0}"#).ok(), Some(-2));
        for bad in [r#"{"size":1.5}"#, r#"{"size":1e300}"#, r#"{"size":"1"}"#] {
            assert!(matches!(size(bad), Err(ApiError::Validation(_))), "{bad}");
        }
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(errors(r#"["a", 1]"#)["body"], ["must be a JSON object"]);
        assert!(matches!(
            parse::<Body, ()>(b"[1,", &()),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn broken_json_is_malformed_not_invalid() {
        for body in [
            &b"{\"email\":"[..],
            br#"{"email":"a@b","age":20} trailing"#,
            br#"{"email":"a@b","age":20,}"#,
        ] {
            assert!(
                matches!(
                    parse::<Body, ()>(body, &()),
                    Err(ApiError::MalformedJson(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

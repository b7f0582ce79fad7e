//! Cross-site request forgery protection the modern way: browsers say where a request comes
//! from (`Sec-Fetch-Site`, `Origin`), so no token is needed. State-changing requests that a
//! browser marks as cross-site, or whose `Origin` is not an allowed one, are refused with 403.
//! Clients that send neither header (curl, other servers) are not browsers and pass.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;

/// The decision alone, so it is testable without HTTP.
pub fn allowed(
    method: &Method,
    sec_fetch_site: Option<&str>,
    origin: Option<&str>,
    allowed_origins: &[String],
) -> Result<(), &'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if sec_fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return Err("cross-site requests may not change state");
    }
    if let Some(origin) = origin
        && !allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return Err("this origin may not change state");
    }
    Ok(())
}

pub async fn protect(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Decided in its own scope: the borrows of the request end before it is passed on.
    let decision = {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        allowed(
            request.method(),
            header("sec-fetch-site"),
            header("origin"),
            &state.config.auth.allowed_origins,
        )
        .map_err(str::to_owned)
    };
    match decision {
        Ok(()) => next.run(request).await,
        Err(detail) => ApiError::Forbidden {
            kind: "cross-site",
            detail,
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, site: Option<&str>, origin: Option<&str>) -> bool {
        allowed(&method, site, origin, &["https://app.example".to_owned()]).is_ok()
    }

    #[test]
    fn decision_table() {
        // Safe methods always pass.
        assert!(check(
            Method::GET,
            Some("cross-site"),
            Some("https://evil.example")
        ));
        // No browser headers: curl, servers.
        assert!(check(Method::POST, None, None));
        // Browser, same origin, allowed.
        assert!(check(
            Method::POST,
            Some("same-origin"),
            Some("https://app.example")
        ));
        // Cross-site, whatever the origin claims.
        assert!(!check(
            Method::POST,
            Some("cross-site"),
            Some("https://app.example")
        ));
        assert!(!check(Method::DELETE, Some("cross-site"), None));
        // A foreign or opaque origin.
        assert!(!check(Method::PATCH, None, Some("https://evil.example")));
        assert!(!check(Method::POST, Some("same-site"), Some("null")));
    }
}

//! The OpenAPI 3.1 document, generated from the router that serves (utoipa-axum's
//! `OpenApiRouter`): a route cannot be served without being documented.

use std::sync::Arc;

use axum::Extension;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::accounts::session::COOKIE_NAME;
use crate::error::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scaleout",
        description = "A reference SaaS backend that scales horizontally. Errors are RFC 9457 \
                       application/problem+json documents.\n\n\
                       **Safe retries.** Every POST, PUT, PATCH and DELETE under /api/v1 accepts \
                       an `Idempotency-Key` header (1 to 255 visible ASCII characters, e.g. a \
                       UUID). The same key with the same request (method, path and body) within \
                       24 hours answers the first answer again (status, body, `Content-Type`, \
                       `Location`), marked `Idempotent-Replayed: true`, without doing the work \
                       twice; the same key with another request answers 422 \
                       (`idempotency-key-reused`); while the first request is still running, 409 \
                       (`idempotency-key-in-use`). Keys belong to the logged-in user, or to the \
                       client address without a session. Answers that say \"try again\" (5xx, \
                       429), bodies over 64 KiB, and requests refused before their body was read \
                       are not kept: a retry with the key runs again. A malformed key is a 400; \
                       with Redis away, a keyed request gets 503 at once.",
    ),
    modifiers(&SessionCookie),
    tags(
        (name = "operations", description = "Health, readiness and service information"),
        (name = "accounts", description = "Sign-up, login, sessions and profiles"),
        (name = "plans", description = "The public plan catalog"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The session cookie as the security scheme of protected operations.
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                COOKIE_NAME,
                "Set by signup and login; HttpOnly, SameSite=Lax",
            ))),
        );
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get, path = "/api-docs/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn openapi_json(Extension(doc): Extension<Arc<OpenApiDoc>>) -> impl IntoResponse {
    axum::Json(doc.as_ref().clone())
}

/// The Content-Security-Policy of the docs page and its assets: nothing but this origin (no
/// inline script or style, no other host); `data:` images for the viewer's icons.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                            img-src 'self' data:; connect-src 'self'; font-src 'self'; \
                            base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The viewer's assets (Swagger UI, vendored and pinned in `assets/swagger-ui/`), embedded in
/// the binary: `/docs` needs no other host, at build time or in the browser.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    ),
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/docs.js"),
    ),
];

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>scaleout API</title>
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <link rel="stylesheet" href="/docs/assets/swagger-ui.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/assets/swagger-ui-bundle.js"></script>
    <script src="/docs/assets/docs.js"></script>
  </body>
</html>
"#;

fn with_csp(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Interactive documentation (Swagger UI), served with its assets by this instance under a
/// strict Content-Security-Policy.
#[utoipa::path(
    get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Interactive API documentation", content_type = "text/html",
        headers(("Content-Security-Policy" = String, description = "Only this origin; no inline script or style"))))
)]
pub async fn docs() -> Response {
    with_csp(Html(DOCS_PAGE).into_response())
}

/// A file of the documentation viewer (`swagger-ui-bundle.js`, `swagger-ui.css`, `docs.js`).
#[utoipa::path(
    get, path = "/docs/assets/{file}", tag = "operations",
    params(("file" = String, Path, description = "The asset's file name")),
    responses(
        (status = 200, description = "The asset", content_type = "text/javascript"),
        (status = 404, description = "No such asset", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn docs_asset(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return Problem::not_found().into_response();
    };
    let mut response = with_csp(([(header::CONTENT_TYPE, *content_type)], *bytes).into_response());
    // The files change only with the binary; a day of caching spares the instance.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

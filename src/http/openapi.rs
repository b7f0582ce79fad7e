//! The OpenAPI 3.1 document, generated from the router that serves (utoipa-axum's
//! `OpenApiRouter`): a route cannot be served without being documented.

use std::sync::Arc;

use axum::Extension;
use axum::response::{Html, IntoResponse};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::accounts::session::COOKIE_NAME;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scaleout",
        description = "A reference SaaS backend that scales horizontally. Errors are RFC 9457 \
                       application/problem+json documents.",
    ),
    modifiers(&SessionCookie),
    tags(
        (name = "operations", description = "Health, readiness and service information"),
        (name = "accounts", description = "Sign-up, login, sessions and profiles"),
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

/// Interactive documentation. The page is a static string in the binary (nothing is fetched
/// at build time); the browser loads the viewer's script when the page is opened.
#[utoipa::path(
    get, path = "/docs", tag = "operations",
    responses((status = 200, description = "Interactive API documentation", content_type = "text/html"))
)]
pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html>
  <head>
    <title>scaleout API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <script id="api-reference" data-url="/api-docs/openapi.json"></script>
    <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
  </body>
</html>"#,
    )
}

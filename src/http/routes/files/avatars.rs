//! Avatars: `PUT /me/avatar` (an upload with its own small limit) and the public
//! `GET /users/{id}/avatar`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::super::accounts::Avatar;
use super::streamed::{UploadBody, UploadForm};
use super::{TAG, discard_object, redirect_to};
use crate::accounts::AuthUser;
use crate::app::AppState;
use crate::error::responses::{CrossSite, NoSession, Unavailable};
use crate::error::{ApiError, Problem};
use crate::files::object_key;
use crate::http::cache;
use crate::http::path::PathId;

/// Upload a new avatar image; the profile shows it as pending until its thumbnail is ready.
#[utoipa::path(
    put, path = "/me/avatar", tag = TAG,
    security(("session" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored; the thumbnail is being made", body = Avatar),
        (status = 400, description = "Broken multipart body", body = Problem, content_type = "application/problem+json"),
        NoSession,
        CrossSite,
        (status = 413, description = "Larger than AVATAR_MAX_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a PNG, JPEG, GIF or WebP image", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No part named file, or an empty file", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub(super) async fn upload_avatar(
    State(state): State<AppState>,
    user: AuthUser,
    body: UploadBody,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let key = object_key::avatar(user.id, id);
    let images = crate::media_types::AVATAR.map(str::to_owned);
    let stored = body
        .store(&state, &key, state.config.files.avatar_max_bytes, &images)
        .await?;
    let recorded = super::avatar_change::replace(&state, user.id, id, &key, &stored).await;
    let previous = match recorded {
        Ok(previous) => previous,
        Err(e) => {
            discard_object(&state, &key).await;
            return Err(e);
        }
    };
    if let Some(previous) = previous {
        super::avatar_change::discard(&state, &previous).await;
    }
    let avatar = Avatar {
        status: "pending".into(),
        url: None,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(avatar)).into_response())
}

/// A user's avatar thumbnail: a redirect to a short-lived URL. Public, like the profile.
#[utoipa::path(
    get, path = "/users/{id}/avatar", tag = TAG,
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 302, description = "Redirect to the thumbnail (PNG)",
            headers(
                ("Location" = String, description = "A presigned GET URL"),
                ("Cache-Control" = String, description = "public: kept at most half the URL's lifetime"),
            )),
        (status = 404, description = "No such user, or no avatar ready", body = Problem, content_type = "application/problem+json"),
        Unavailable,
    )
)]
#[tracing::instrument(skip_all)]
pub(super) async fn avatar_image(
    State(state): State<AppState>,
    caller: crate::db::Caller,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let key = state
        .db
        .read(&caller, |db| async move {
            crate::accounts::repo::thumbnail_key(&db, id).await
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    let url = state
        .storage
        .presign_get(
            &key,
            "image/png",
            "inline",
            state.config.files.download_url_ttl,
        )
        .await?;
    let mut response = redirect_to(url);
    // Public like the profile, so the edge may answer it; but a cached redirect must still
    // lead to a valid URL: it is kept (fresh and stale together) at most half the URL's life.
    let http = &state.config.http;
    let half = state.config.files.download_url_ttl / 2;
    let max_age = http.public_max_age.min(half);
    let swr = http.stale_while_revalidate.min(half - max_age);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, cache::public(max_age, swr));
    Ok(response)
}

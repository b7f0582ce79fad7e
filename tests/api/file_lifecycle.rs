//! How long objects and their URLs live: a download URL stops working when it expires, and a
//! replaced avatar leaves nothing behind in storage.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    Api, TestUser, client, eventually, my_id, no_redirect_client, signed_up, spawn_app,
    spawn_app_with, storage,
};

/// The presigned URL `GET /files/{id}/content` redirects to.
async fn content_url(api: &Api, id: &str) -> String {
    let redirect = no_redirect_client()
        .get(format!("{}/api/v1/files/{id}/content", api.base))
        .header("cookie", api.cookie.as_deref().expect("a session"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(redirect.status(), StatusCode::FOUND);
    redirect.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_owned()
}

#[tokio::test]
async fn a_download_url_answers_at_first_and_is_refused_once_it_expires() {
    // Ten seconds is the time the test needs between receiving the URL and its first GET:
    // milliseconds normally, with room for a loaded machine.
    let app = spawn_app_with(&[("DOWNLOAD_URL_TTL_SECS", "10")]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let bytes = b"expiring soon\n".to_vec();
    let created = api.upload(bytes.clone(), "soon.txt", "text/plain").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let file: Value = created.json().await.expect("a JSON body");
    let id = file["id"].as_str().expect("an id").to_owned();

    let url = content_url(&api, &id).await;
    let fresh = client().get(&url).send().await.expect("storage answers");
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(fresh.bytes().await.expect("the body").to_vec(), bytes);

    let (status, reason) = eventually("the URL expires", Duration::from_secs(60), || async {
        let response = client().get(&url).send().await.expect("storage answers");
        let status = response.status();
        (status != StatusCode::OK).then_some((status, response.text().await.unwrap_or_default()))
    })
    .await;
    // S3 answers 403 "Request has expired"; Garage 400 "Date is too old". Either names time.
    assert!(status.is_client_error(), "{status}: {reason}");
    assert!(
        reason.contains("expired") || reason.contains("too old"),
        "refused for its age: {reason}"
    );
    // The object is still there: only the URL expired, and a new redirect serves it again.
    let again = client()
        .get(content_url(&api, &id).await)
        .send()
        .await
        .expect("storage answers");
    assert_eq!(again.status(), StatusCode::OK);
}

/// A real PNG of the given size.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encodes");
    out.into_inner()
}

/// Uploads an avatar and waits for its thumbnail; returns the avatar's file id.
async fn avatar_ready(app: &crate::helpers::TestApp, api: &Api, image: Vec<u8>) -> Uuid {
    let uploaded = api
        .upload_to(Method::PUT, "/me/avatar", image, "me.png", "image/png")
        .await;
    assert_eq!(uploaded.status(), StatusCode::ACCEPTED);
    // The upload turned the avatar `pending`; `ready` now means this one's thumbnail exists.
    eventually("the avatar is ready", Duration::from_secs(60), || async {
        let me: Value = api.me().await.json().await.expect("a JSON body");
        (me["avatar"]["status"] == "ready").then_some(())
    })
    .await;
    let owner = my_id(api).await;
    sqlx::query_scalar::<_, Option<Uuid>>("select avatar_file_id from users where id = $1")
        .bind(owner)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("reads the user")
        .expect("an avatar")
}

/// The keys under `owner`'s prefix.
async fn keys_of(owner: Uuid) -> BTreeSet<String> {
    storage()
        .list_keys(&scaleout::files::object_key::owner_prefix(owner))
        .await
        .expect("lists the bucket")
        .into_iter()
        .collect()
}

fn avatar_keys(owner: Uuid, file: Uuid) -> BTreeSet<String> {
    use scaleout::files::object_key;
    BTreeSet::from([
        object_key::avatar(owner, file),
        object_key::thumbnail(owner, file),
    ])
}

#[tokio::test]
async fn replacing_an_avatar_removes_the_old_ones_original_and_thumbnail_from_storage() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let old = avatar_ready(&app, &api, png(300, 200)).await;
    assert_eq!(keys_of(owner).await, avatar_keys(owner, old));

    let new = avatar_ready(&app, &api, png(200, 300)).await;

    assert_ne!(new, old);
    assert_eq!(
        keys_of(owner).await,
        avatar_keys(owner, new),
        "only the new avatar and its thumbnail are left"
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from files where owner_id = $1")
        .bind(owner)
        .fetch_one(app.state.db.primary_pool())
        .await
        .expect("counts");
    assert_eq!(rows, 1, "the old avatar's row is gone too");
}

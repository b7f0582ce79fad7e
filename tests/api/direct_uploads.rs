//! Completing a direct upload against the real object store: the bytes stored are the bytes
//! checked (conditional requests on the ETag), and completions racing each other leave one
//! available file with one object.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{
    TestUser, eventually, file_bytes, my_id, presigned_put, signed_up, spawn_app, storage,
};
use scaleout::storage::IfMatch;

#[tokio::test]
async fn storage_refuses_to_copy_or_read_an_object_replaced_since_its_etag_was_read() {
    let storage = storage();
    let key = format!("uploads/{}/{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let copy = format!("{key}-copy");
    storage
        .put_object(&key, file_bytes(b"checked ", 64, 1).into(), "text/plain")
        .await
        .expect("stores");
    let checked = storage
        .head_object(&key)
        .await
        .expect("answers")
        .and_then(|o| o.etag)
        .expect("an ETag");
    // Replaced between the check and the copy, as a second PUT through the URL would.
    storage
        .put_object(&key, file_bytes(b"swapped ", 64, 2).into(), "text/plain")
        .await
        .expect("stores");

    let read = storage
        .read_prefix_if_match(&key, 16, &checked)
        .await
        .expect("answers");
    let copied = storage
        .copy_object_if_match(&key, &copy, &checked)
        .await
        .expect("answers");
    let current = storage
        .head_object(&key)
        .await
        .expect("answers")
        .and_then(|o| o.etag)
        .expect("an ETag");
    let copied_current = storage
        .copy_object_if_match(&key, &copy, &current)
        .await
        .expect("answers");
    let gone = format!("{key}-never-written");
    let from_nothing = storage
        .copy_object_if_match(&gone, &copy, &current)
        .await
        .expect("answers");
    let head_of_copy = storage.read_prefix_if_match(&copy, 8, &current).await;
    for k in [&key, &copy] {
        storage.delete_object(k).await.expect("deletes");
    }

    assert_eq!(read, IfMatch::Changed, "a ranged GET of the old ETag");
    assert_eq!(copied, IfMatch::Changed, "a copy from the old ETag");
    assert_eq!(
        copied_current,
        IfMatch::Matched(()),
        "a copy from the current ETag"
    );
    assert_eq!(
        from_nothing,
        IfMatch::Changed,
        "a copy from a missing object"
    );
    assert_eq!(
        head_of_copy.expect("answers"),
        IfMatch::Matched(bytes::Bytes::from_static(b"swapped ")),
        "the copy holds the bytes its ETag named"
    );
}

#[tokio::test]
async fn completions_racing_for_one_file_make_it_available_once_with_one_object() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let (id, target) = api.start_upload(4096).await;
    let put = presigned_put(&target, text(4096, 7)).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());

    let racing: Vec<_> = (0..5)
        .map(|_| {
            let (api, path) = (api.clone(), format!("/files/{id}/complete"));
            tokio::spawn(async move {
                let response = api.post(&path).await;
                let status = response.status();
                let body: serde_json::Value = response.json().await.expect("a JSON body");
                (status, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in racing {
        answers.push(r.await.expect("no panic"));
    }

    // Every one of them gets the available file, whichever won.
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "available", "{body}");
    }
    // The losers removed their copies, the winner the staging object: one object is left.
    let files_prefix = format!("users/{owner}/files/");
    let objects = eventually(
        "one object for the file, nothing staged",
        Duration::from_secs(20),
        || async {
            let objects = storage().list_keys(&files_prefix).await.expect("lists");
            let staged = storage()
                .list_keys(&scaleout::files::object_key::owner_staging_prefix(owner))
                .await
                .expect("lists");
            (objects.len() == 1 && staged.is_empty()).then_some(objects)
        },
    )
    .await;
    assert!(objects[0].contains(&id.to_string()), "{objects:?}");
    assert_eq!(api.download(&id.to_string()).await, text(4096, 7));
}

/// `len` bytes of plain text, distinct per `seed`.
fn text(len: usize, seed: u64) -> Vec<u8> {
    format!("file {seed}: all work and no play\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

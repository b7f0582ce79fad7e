//! Uploads: streamed through any instance into object storage, direct-to-storage with a
//! presigned URL, visible to their owner only, and refused without leaving anything behind.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::{
    PNG_HEAD, TestUser, eventually, file_bytes, files_of, instance_urls, my_id, presigned_put,
    sha256_hex, signed_up, spawn_app, spawn_app_with, storage, unfinished_uploads,
};

const MIB: usize = 1024 * 1024;

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// Objects and unfinished multipart uploads under `owner`'s prefix.
async fn leftovers(owner: uuid::Uuid) -> (Vec<String>, usize) {
    let storage = storage();
    let prefix = scaleout::files::object_key::owner_prefix(owner);
    let mut objects = storage.list_keys(&prefix).await.expect("lists the bucket");
    objects.extend(
        storage
            .list_keys(&scaleout::files::object_key::owner_staging_prefix(owner))
            .await
            .expect("lists the staging area"),
    );
    (objects, unfinished_uploads(owner).await.len())
}

/// Parts already in storage for the unfinished multipart uploads under `owner`'s prefix.
async fn uploaded_parts(owner: uuid::Uuid) -> usize {
    let storage = storage();
    let mut parts = 0;
    for (key, upload_id) in unfinished_uploads(owner).await {
        let listed = storage
            .client()
            .list_parts()
            .bucket(storage.bucket())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .expect("lists parts");
        parts += listed.parts().len();
    }
    parts
}

#[tokio::test]
async fn a_file_uploaded_through_one_instance_downloads_identically_through_the_others() {
    let instances = instance_urls();
    let api = signed_up(&instances[0], &TestUser::new()).await;

    // One file under a part (a single PUT), one over two parts (a multipart upload).
    for (len, seed) in [(70_000, 1), (12 * MIB + 12_345, 2)] {
        let bytes = file_bytes(PNG_HEAD, len, seed);
        let expected = sha256_hex(&bytes);

        let created = api.upload(bytes, "holiday.png", "image/png").await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let file = json_of(created).await;
        let id = file["id"].as_str().expect("an id").to_owned();
        assert_eq!(file["size"], json!(len));
        assert_eq!(file["sha256"], json!(expected));
        assert_eq!(file["content_type"], "image/png");
        assert_eq!(file["name"], "holiday.png");
        assert_eq!(file["status"], "available");

        for other in &instances[1..] {
            let via = api.via(other);
            let meta = json_of(
                via.send(via.request(Method::GET, &format!("/files/{id}")))
                    .await,
            )
            .await;
            assert_eq!(meta["sha256"], json!(expected), "metadata through {other}");
            let content = via.download(&id).await;
            assert_eq!(content.len(), len, "length through {other}");
            assert_eq!(sha256_hex(&content), expected, "content through {other}");
        }
    }
}

#[tokio::test]
async fn a_direct_upload_through_a_presigned_url_completes_and_downloads() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let bytes = file_bytes(b"%PDF-1.7\n", 300_000, 3);

    let created = api
        .send(api.request(Method::POST, "/files/uploads").json(&json!({
            "name": "report.pdf", "content_type": "application/pdf", "size": bytes.len()
        })))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = json_of(created).await;
    let id = created["file"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["file"]["status"], "pending");
    assert_eq!(created["upload"]["method"], "PUT");

    // Completing before anything was uploaded is refused, and changes nothing.
    let early = api.post(&format!("/files/{id}/complete")).await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    let still = json_of(
        api.send(api.request(Method::GET, &format!("/files/{id}")))
            .await,
    )
    .await;
    assert_eq!(still["status"], "pending");
    // Pending files have no content yet.
    let content = api
        .send(api.request(Method::GET, &format!("/files/{id}/content")))
        .await;
    assert_eq!(content.status(), StatusCode::CONFLICT);

    // The bytes go straight to storage, with a plain HTTP client and no session.
    let put = presigned_put(&created["upload"], bytes.clone()).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());

    let completed = api.post(&format!("/files/{id}/complete")).await;
    assert_eq!(completed.status(), StatusCode::OK);
    let file = json_of(completed).await;
    assert_eq!(file["status"], "available");
    assert_eq!(file["size"], json!(bytes.len()));
    // Completing again is harmless.
    assert_eq!(
        api.post(&format!("/files/{id}/complete")).await.status(),
        StatusCode::OK
    );
    // The URL still works until it expires, but only on the staging area: other bytes of the
    // same length and type do not replace the file.
    let again = presigned_put(
        &created["upload"],
        file_bytes(b"%PDF-1.7\n", bytes.len(), 33),
    )
    .await;
    assert!(again.status().is_success());

    assert_eq!(sha256_hex(&api.download(&id).await), sha256_hex(&bytes));
}

#[tokio::test]
async fn completion_discards_a_staged_object_of_the_wrong_size_or_type() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    // Objects placed at the staging key directly, as a client that got around the signed
    // length and type would: completion itself must check them.
    let stage = |id: uuid::Uuid, bytes: Vec<u8>| async move {
        storage()
            .put_object(
                &scaleout::files::object_key::staging(owner, id),
                bytes.into(),
                "text/plain",
            )
            .await
            .expect("stages an object");
    };
    let staged = || async {
        storage()
            .list_keys(&scaleout::files::object_key::owner_staging_prefix(owner))
            .await
            .expect("lists the staging area")
    };

    // Declared 100 bytes, 150 staged.
    let (wrong_size, _) = api.start_upload(100).await;
    stage(wrong_size, b"x".repeat(150)).await;
    assert_eq!(staged().await.len(), 1);
    let refused = api.post(&format!("/files/{wrong_size}/complete")).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem = json_of(refused).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("150 bytes") && d.contains("100 were declared")),
        "{problem}"
    );

    // Declared text, a PNG staged with the declared length.
    let (wrong_type, _) = api.start_upload(4096).await;
    stage(wrong_type, file_bytes(PNG_HEAD, 4096, 41)).await;
    let refused = api.post(&format!("/files/{wrong_type}/complete")).await;
    assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Both objects are discarded and both files are still waiting for a good upload.
    assert_eq!(staged().await, Vec::<String>::new());
    for id in [wrong_size, wrong_type] {
        let file = json_of(
            api.send(api.request(Method::GET, &format!("/files/{id}")))
                .await,
        )
        .await;
        assert_eq!(file["status"], "pending", "{file}");
    }
    assert_eq!(
        storage()
            .list_keys(&scaleout::files::object_key::owner_prefix(owner))
            .await
            .expect("lists"),
        Vec::<String>::new(),
        "nothing reached a file's own key"
    );
}

#[tokio::test]
async fn a_presigned_url_refuses_another_length_and_stops_working_when_it_expires() {
    // The default lifetime (minutes) for the length check, so that only the length can be
    // the reason; a one-second one, through a second instance, for the expiry.
    let app = spawn_app().await;
    let short_lived = spawn_app_with(&[("UPLOAD_URL_TTL_SECS", "1")]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let declared = 10_000;
    // A body longer than declared: storage refuses it (the length is signed), and even if
    // it had not, completion would check the size.
    let (id, upload) = api.start_upload(declared).await;
    let put = presigned_put(&upload, vec![b'a'; declared + 1]).await;
    let status = put.status();
    let refusal = put.text().await.unwrap_or_default().to_lowercase();
    assert!(
        status.is_client_error(),
        "a wrong length is refused: {status}"
    );
    assert!(
        !refusal.contains("expired") && !refusal.contains("too old"),
        "refused for its length, not its age: {refusal}"
    );
    assert_eq!(
        api.post(&format!("/files/{id}/complete")).await.status(),
        StatusCode::CONFLICT
    );

    // Once the URL has expired, storage refuses it. Waiting for the clock is the point here.
    let (id, late) = api.via(&short_lived.url("")).start_upload(declared).await;
    let expires_at = time::OffsetDateTime::parse(
        late["expires_at"].as_str().expect("a time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let wait = expires_at - time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let put = presigned_put(&late, vec![b'a'; declared]).await;
    let status = put.status();
    let body = put.text().await.unwrap_or_default();
    assert!(
        status.is_client_error(),
        "an expired URL is refused: {status}"
    );
    // Storage explains itself ("expired", or Garage's "Date is too old").
    let body = body.to_lowercase();
    assert!(
        body.contains("expired") || body.contains("too old"),
        "{body}"
    );
    assert_eq!(
        api.post(&format!("/files/{id}/complete")).await.status(),
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn another_user_gets_404_for_a_file_its_content_and_its_deletion() {
    let app = spawn_app().await;
    let owner = signed_up(&app.url(""), &TestUser::new()).await;
    let stranger = signed_up(&app.url(""), &TestUser::new()).await;
    let file = json_of(
        owner
            .upload(b"private notes\n".to_vec(), "notes.txt", "text/plain")
            .await,
    )
    .await;
    let id = file["id"].as_str().expect("an id");

    for (method, path) in [
        (Method::GET, format!("/files/{id}")),
        (Method::GET, format!("/files/{id}/content")),
        (Method::DELETE, format!("/files/{id}")),
        (Method::POST, format!("/files/{id}/complete")),
    ] {
        let r = stranger.send(stranger.request(method.clone(), &path)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    let listing = json_of(stranger.send(stranger.request(Method::GET, "/files")).await).await;
    assert_eq!(listing["items"], json!([]));
    // Still there for the owner.
    assert_eq!(owner.download(id).await, b"private notes\n");
}

#[tokio::test]
async fn deleting_a_file_removes_its_object() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;
    let file = json_of(
        api.upload(b"short-lived\n".to_vec(), "a.txt", "text/plain")
            .await,
    )
    .await;
    let id = file["id"].as_str().expect("an id");
    assert_eq!(leftovers(owner).await.0.len(), 1);

    let deleted = api
        .send(api.request(Method::DELETE, &format!("/files/{id}")))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    assert_eq!(leftovers(owner).await, (vec![], 0));
    assert_eq!(files_of(&app.state, owner).await, 0);
    let gone = api
        .send(api.request(Method::GET, &format!("/files/{id}")))
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_listing_pages_through_the_callers_files_newest_first() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let file = json_of(
            api.upload(format!("file {n}\n").into_bytes(), "f.txt", "text/plain")
                .await,
        )
        .await;
        ids.push(file["id"].as_str().expect("an id").to_owned());
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut path = "/files?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = json_of(api.send(api.request(Method::GET, &path)).await).await;
        pages += 1;
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("an id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/files?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn malformed_file_requests_get_a_problem_and_change_nothing() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;

    let no_file_part = reqwest::multipart::Form::new().text("note", "no file here");
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "JSON instead of multipart",
            api.request(Method::POST, "/files")
                .json(&json!({"file": "x"})),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no part named file",
            api.request(Method::POST, "/files").multipart(no_file_part),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a broken multipart body",
            api.request(Method::POST, "/files")
                .header("content-type", "multipart/form-data; boundary=xyz")
                .body("--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "size zero",
            api.request(Method::POST, "/files/uploads")
                .json(&json!({"content_type": "text/plain", "size": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "size over the limit",
            api.request(Method::POST, "/files/uploads")
                .json(&json!({"content_type": "text/plain", "size": 1u64 << 40})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a type not allowed",
            api.request(Method::POST, "/files/uploads")
                .json(&json!({"content_type": "application/x-msdownload", "size": 10})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "an empty name",
            api.request(Method::POST, "/files/uploads")
                .json(&json!({"name": " ", "content_type": "text/plain", "size": 10})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "an unknown field",
            api.request(Method::POST, "/files/uploads")
                .json(&json!({"content_type": "text/plain", "size": 10, "acl": "public"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "limit zero",
            api.request(Method::GET, "/files?limit=0"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a cursor that is not one",
            api.request(Method::GET, "/files?cursor=yesterday"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a limit that is not a number",
            api.request(Method::GET, "/files?limit=ten"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a malformed id",
            api.request(Method::GET, "/files/not-a-uuid"),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (what, request, expected) in cases {
        let response = api.send(request).await;
        assert_eq!(response.status(), expected, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
    }
    let empty = api.upload(Vec::new(), "empty.txt", "text/plain").await;
    assert_eq!(
        empty.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "an empty file"
    );

    assert_eq!(files_of(&app.state, owner).await, 0);
    assert_eq!(leftovers(owner).await, (vec![], 0));
}

#[tokio::test]
async fn refused_uploads_leave_nothing_in_the_bucket() {
    // Small limits, so that "too large" happens after a multipart upload has begun.
    let app = spawn_app_with(&[
        ("UPLOAD_MAX_BYTES", &(6 * MIB).to_string()),
        ("UPLOAD_PART_BYTES", &(5 * MIB).to_string()),
    ])
    .await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;

    // Over the limit, declared up front: refused before a byte is read.
    let declared = api
        .upload(file_bytes(PNG_HEAD, 7 * MIB, 4), "big.png", "image/png")
        .await;
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Over the limit without a declared length (chunked): cut off mid-stream, after the
    // first part has gone to storage. The body is fed by hand: 5.5 MiB first, then, once the
    // first part is seen in storage, the rest.
    let bytes = file_bytes(PNG_HEAD, 7 * MIB, 5);
    let (feed, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
        .file_name("big.png")
        .mime_str("image/png")
        .expect("a type");
    let request = api
        .request(Method::POST, "/files")
        .multipart(reqwest::multipart::Form::new().part("file", part));
    let response = tokio::spawn(async move { request.send().await });
    let (head, tail) = bytes.split_at(5 * MIB + MIB / 2);
    for chunk in head.chunks(256 * 1024) {
        feed.send(Ok(chunk.to_vec()))
            .await
            .expect("the request reads");
    }
    eventually(
        "the first part is in storage",
        Duration::from_secs(20),
        || async { (uploaded_parts(owner).await >= 1).then_some(()) },
    )
    .await;
    for chunk in tail.chunks(256 * 1024) {
        // The instance may stop reading once it is over the limit: that ends the feed.
        if feed.send(Ok(chunk.to_vec())).await.is_err() {
            break;
        }
    }
    drop(feed);
    let chunked = response
        .await
        .expect("the request task does not panic")
        .expect("the instance answers");
    assert_eq!(chunked.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Types judged by content: a disallowed one, and an allowed one that lies.
    let elf = api
        .upload(
            file_bytes(b"\x7fELF\x02\x01\x01", 4096, 6),
            "tool",
            "application/octet-stream",
        )
        .await;
    assert_eq!(elf.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let liar = api
        .upload(b"just some text\n".repeat(100), "cat.png", "image/png")
        .await;
    assert_eq!(liar.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = json_of(liar).await;
    assert_eq!(
        body["type"],
        "https://scaleout.dev/problems/unsupported-file-type"
    );

    assert_eq!(files_of(&app.state, owner).await, 0);
    // The multipart upload is aborted in the background, just after the response.
    eventually(
        "no objects and no unfinished uploads",
        Duration::from_secs(10),
        || async { (leftovers(owner).await == (vec![], 0)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_upload_abandoned_by_its_client_leaves_nothing_in_the_bucket() {
    let app = spawn_app_with(&[("UPLOAD_PART_BYTES", &(5 * MIB).to_string())]).await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let owner = my_id(&api).await;

    // A raw connection: headers promising 20 MiB, 12 MiB sent (two parts reach storage), gone.
    let boundary = "scaleout-test-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connects");
    let request = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{head}",
        app.addr,
        api.cookie.as_deref().expect("a session"),
        20 * MIB
    );
    stream.write_all(request.as_bytes()).await.expect("writes");
    stream
        .write_all(&file_bytes(PNG_HEAD, 12 * MIB, 7))
        .await
        .expect("writes");
    stream.flush().await.expect("flushes");
    // Two parts are in storage once the instance has read past 10 MiB.
    eventually("two parts uploaded", Duration::from_secs(20), || async {
        (leftovers(owner).await.1 == 1 && uploaded_parts(owner).await >= 2).then_some(())
    })
    .await;
    drop(stream);

    eventually(
        "the abandoned upload is aborted",
        Duration::from_secs(15),
        || async { (leftovers(owner).await == (vec![], 0)).then_some(()) },
    )
    .await;
    assert_eq!(files_of(&app.state, owner).await, 0);
}

#[tokio::test]
async fn an_avatar_must_be_an_image_and_one_that_cannot_be_decoded_ends_failed() {
    let app = spawn_app().await;
    let api = signed_up(&app.url(""), &TestUser::new()).await;
    let me = json_of(api.me().await).await;
    assert_eq!(me["avatar"], Value::Null);

    let pdf = api
        .upload_to(
            Method::PUT,
            "/me/avatar",
            file_bytes(b"%PDF-1.7\n", 2000, 8),
            "me.pdf",
            "application/pdf",
        )
        .await;
    assert_eq!(pdf.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // PNG by its signature, not decodable (a decodable one turns ready: see the jobs tests).
    let png = api
        .upload_to(
            Method::PUT,
            "/me/avatar",
            file_bytes(PNG_HEAD, 20_000, 9),
            "me.png",
            "image/png",
        )
        .await;
    assert_eq!(png.status(), StatusCode::ACCEPTED);
    assert_eq!(json_of(png).await["status"], "pending");

    // The thumbnail job cannot decode it: the avatar ends failed, never ready.
    let me = eventually(
        "the avatar is marked failed",
        Duration::from_secs(30),
        || async {
            let me = json_of(api.me().await).await;
            assert_ne!(me["avatar"]["status"], "ready", "{me}");
            (me["avatar"]["status"] == "failed").then_some(me)
        },
    )
    .await;
    assert_eq!(me["avatar"], json!({"status": "failed", "url": null}));
    let id = me["id"].as_str().expect("an id");
    // No thumbnail: nothing to redirect to.
    let image = api
        .send(api.request(Method::GET, &format!("/users/{id}/avatar")))
        .await;
    assert_eq!(image.status(), StatusCode::NOT_FOUND);
    // Avatars are not among the caller's files.
    let listing = json_of(api.send(api.request(Method::GET, "/files")).await).await;
    assert_eq!(listing["items"], json!([]));
}

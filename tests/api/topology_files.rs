//! Files against the real processes: object storage stopped under a running topology, and the
//! resident memory of an instance taking a 200 MiB upload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sha2::Digest;

use crate::helpers::{
    PNG_HEAD, TestUser, client, edge_url, eventually, instance_urls, signed_up, stack,
};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn with_object_storage_stopped_uploads_fail_fast_and_profiles_still_work() {
    let api = signed_up(&edge_url(), &TestUser::new()).await;

    let down = crate::helpers::Down::stop("s3");
    let start = Instant::now();
    let upload = api.upload(b"hello\n".to_vec(), "a.txt", "text/plain").await;
    let elapsed = start.elapsed();
    let upload_status = upload.status();
    let content_type = upload.headers().get("content-type").cloned();
    let me = api.me().await.status();
    down.start();

    eprintln!("upload with object storage stopped: {upload_status} in {elapsed:?}");
    assert_eq!(upload_status, StatusCode::SERVICE_UNAVAILABLE);
    // The instances' storage settings (the same variables as this process): the SDK gives up
    // on an operation after twice the per-attempt timeout, whatever its retries. The margin is
    // for a loaded two-core machine; a hang (no timeout at all) would blow far past it.
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let storage = scaleout::config::StorageConfig::from_source(&vars).expect("storage config");
    let bound = storage.timeout * 2 + Duration::from_secs(5);
    assert!(
        elapsed <= bound,
        "the upload failed after {elapsed:?}, more than the storage timeout allows ({bound:?})"
    );
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert_eq!(me, StatusCode::OK, "GET /me does not need object storage");

    eventually(
        "uploads work again once storage is back",
        Duration::from_secs(30),
        || async {
            let r = api.upload(b"hello\n".to_vec(), "a.txt", "text/plain").await;
            (r.status() == StatusCode::CREATED).then_some(())
        },
    )
    .await;
}

/// The pid supervisord reports for `service`.
pub(crate) fn pid_of(service: &str) -> u32 {
    let status = stack(&["status"]);
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(service))
        .and_then(|l| l.split("pid ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid for {service} in:\n{status}"))
}

/// Resident set size of `pid`, in bytes.
pub(crate) fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("a VmRSS line")
        * 1024
}

/// The benchmark of streamed uploads, printed with `--nocapture` (see the README): a 200 MiB
/// file streamed to one instance while its resident memory is sampled every 10 ms.
#[tokio::test]
async fn a_200_mib_upload_grows_the_instance_memory_by_at_most_16_mib() {
    let instance = &instance_urls()[0];
    let api = signed_up(instance, &TestUser::new()).await;
    let pid = pid_of("app1");
    // Warm up with a small file: connections to storage and the database exist before the
    // baseline, but no part buffer has been allocated yet.
    let warm = api
        .upload(
            crate::helpers::file_bytes(PNG_HEAD, 4096, 11),
            "warm.png",
            "image/png",
        )
        .await;
    assert_eq!(warm.status(), StatusCode::CREATED);
    let baseline = rss_of(pid);

    let peak = Arc::new(Mutex::new(baseline));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let rss = rss_of(pid);
                let mut peak = peak.lock().expect("not poisoned");
                *peak = (*peak).max(rss);
                drop(peak);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let len = 200 * MIB;
    let hasher = Arc::new(Mutex::new(sha2::Sha256::new()));
    let body = {
        let hasher = hasher.clone();
        let mut produced = 0u64;
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let chunks = std::iter::from_fn(move || {
            if produced >= len {
                return None;
            }
            let n = (len - produced).min(64 * 1024) as usize;
            let mut chunk = Vec::with_capacity(n);
            if produced == 0 {
                chunk.extend_from_slice(PNG_HEAD);
            }
            while chunk.len() < n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let take = (n - chunk.len()).min(8);
                chunk.extend_from_slice(&x.to_le_bytes()[..take]);
            }
            produced += n as u64;
            hasher.lock().expect("not poisoned").update(&chunk);
            Some(Ok::<_, std::io::Error>(chunk))
        });
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let part = reqwest::multipart::Part::stream_with_length(body, len)
        .file_name("big.png")
        .mime_str("image/png")
        .expect("a type");
    let form = reqwest::multipart::Form::new().part("file", part);

    let start = Instant::now();
    let response = client()
        .post(format!("{instance}/api/v1/files"))
        .header("cookie", api.cookie.as_deref().expect("a session"))
        .multipart(form)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("the instance answers");
    let elapsed = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().expect("the sampler does not panic");

    assert_eq!(response.status(), StatusCode::CREATED);
    let file: serde_json::Value = response.json().await.expect("JSON");
    let expected =
        hex::encode(std::mem::take(&mut *hasher.lock().expect("not poisoned")).finalize());
    assert_eq!(file["size"], serde_json::json!(len));
    assert_eq!(file["sha256"], serde_json::json!(expected));

    let peak = *peak.lock().expect("not poisoned");
    let growth = peak.saturating_sub(baseline);
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "200 MiB streamed upload to app1: {:.1} s ({:.0} MiB/s); RSS baseline {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB",
        elapsed.as_secs_f64(),
        200.0 / elapsed.as_secs_f64(),
        mib(baseline),
        mib(peak),
        mib(growth),
    );
    assert!(
        growth <= 16 * MIB,
        "resident memory grew by {:.1} MiB",
        mib(growth)
    );

    // Leave the bucket as we found it.
    let id = file["id"].as_str().expect("an id");
    let deleted = api
        .send(api.request(Method::DELETE, &format!("/files/{id}")))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

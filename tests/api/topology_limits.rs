//! Bounded work against a real instance: a multipart body with no boundary, streamed to app1,
//! is refused early and costs the instance a bounded amount of memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{TestUser, client, instance_urls, signed_up};
use crate::topology_files::{pid_of, rss_of};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_200_mib_multipart_body_without_a_boundary_gets_a_fast_400_in_bounded_memory() {
    let instance = &instance_urls()[0];
    let api = signed_up(instance, &TestUser::new()).await;
    let pid = pid_of("app1");
    let baseline = rss_of(pid);

    let peak = Arc::new(Mutex::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let rss = rss_of(pid);
                let mut peak = peak.lock().expect("not poisoned");
                *peak = (*peak).max(rss);
                drop(peak);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // 200 MiB of `a`, chunked (no declared length), produced only as fast as it is read.
    let len = 200 * MIB;
    let produced = Arc::new(AtomicU64::new(0));
    let body = {
        let produced = produced.clone();
        let chunk = vec![b'a'; 64 * 1024];
        let chunks = std::iter::from_fn(move || {
            let sent = produced.load(Ordering::SeqCst);
            (sent < len).then(|| {
                produced.store(sent + chunk.len() as u64, Ordering::SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            })
        });
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let start = Instant::now();
    let response = client()
        .post(format!("{instance}/api/v1/files"))
        .header("cookie", api.cookie.as_deref().expect("a session"))
        .header("content-type", "multipart/form-data; boundary=NeverSent")
        .body(body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("the instance answers");
    let elapsed = start.elapsed();
    let sent_by_then = produced.load(Ordering::SeqCst);
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let problem: serde_json::Value = response.json().await.expect("a problem document");
    done.store(true, Ordering::SeqCst);
    sampler.join().expect("the sampler does not panic");

    let peak = *peak.lock().expect("not poisoned");
    let growth = peak.saturating_sub(baseline);
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "200 MiB multipart body without a boundary to app1: {status} after {:.3} s, {:.1} MiB \
         sent by then; RSS baseline {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB",
        elapsed.as_secs_f64(),
        mib(sent_by_then),
        mib(baseline),
        mib(peak),
        mib(growth),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(
        problem["type"],
        "https://scaleout.dev/problems/malformed-multipart"
    );
    assert!(
        sent_by_then < len / 2,
        "answered before reading the body: {:.1} MiB sent",
        mib(sent_by_then)
    );
    assert!(
        growth <= 16 * MIB,
        "resident memory grew by {:.1} MiB",
        mib(growth)
    );
}

//! Bounded work against a real instance: a multipart body with no boundary, streamed to app1,
//! is refused early and costs the instance a bounded amount of memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{TestUser, instance_urls, signed_up};
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

    // 200 MiB of `a`, chunked (no declared length), written while the response is read: the
    // instance answers before the body ends and closes, so a client that only reads after
    // writing would see a broken pipe instead of the answer.
    let len = 200 * MIB;
    let produced = Arc::new(AtomicU64::new(0));
    let address = instance.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("app1 accepts");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: {address}\r\nCookie: {}\r\n\
         Content-Type: multipart/form-data; boundary=NeverSent\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        api.cookie.as_deref().expect("a session")
    );
    let start = Instant::now();
    let writing = {
        let produced = produced.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            writer.write_all(head.as_bytes()).await?;
            let chunk = [
                format!("{:x}\r\n", 64 * 1024).into_bytes(),
                vec![b'a'; 64 * 1024],
                b"\r\n".to_vec(),
            ]
            .concat();
            while produced.load(Ordering::SeqCst) < len {
                writer.write_all(&chunk).await?;
                produced.fetch_add(64 * 1024, Ordering::SeqCst);
            }
            writer.write_all(b"0\r\n\r\n").await
        })
    };
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(300), async {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
            // The whole problem document has arrived once it closes its JSON object.
            if answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let elapsed = start.elapsed();
    let sent_by_then = produced.load(Ordering::SeqCst);
    writing.abort();
    assert!(read.is_ok(), "app1 answered within 300 s");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let content_type = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-type:")
            .map(|v| v.trim().to_owned())
    });
    let problem: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
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
    assert_eq!(status, "400", "{answer}");
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

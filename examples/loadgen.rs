//! A read-heavy load through nginx, checking read-your-writes as it goes.
//!
//! Many users each loop over reads (their own profile, someone else's public profile) and,
//! one time in ten, a write (a new name) followed at once by reading it back. Every read of
//! their own profile must show their latest name, through whichever instance nginx picks;
//! any other answer is a violation. About 90 % of requests are reads. The share
//! of reads the replica served comes from the instances' `db_read_routing_total` counters.
//!
//!   eval "$(deploy/local/stack env --shell)"
//!   cargo run --example loadgen                 # LOADGEN_USERS=50 LOADGEN_SECONDS=30
//!
//! Bounded: it stops after LOADGEN_SECONDS, and sends traffic only to SCALEOUT_URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct User {
    id: String,
    cookie: String,
}

#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    errors: u64,
    violations: u64,
    reads: u64,
    writes: u64,
}

async fn signup(client: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<User> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let response = client
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&json!({
            "email": format!("load-{n}-{}@example.com", &tag[..10]),
            "name": format!("load {n} v0"),
            "password": format!("load-passphrase-{tag}"),
        }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "signup: {}",
        response.status()
    );
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("scaleout_session="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_owned();
    let body: Value = response.json().await?;
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    Ok(User { id, cookie })
}

/// Sum of `db_read_routing_total` by target over the instances' metrics endpoints.
async fn routed(client: &reqwest::Client, metrics: &[String]) -> (f64, f64) {
    let (mut replica, mut primary) = (0.0, 0.0);
    for url in metrics {
        let Ok(response) = client.get(url).send().await else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.starts_with("db_read_routing_total{"))
        {
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if line.contains("target=\"replica\"") {
                replica += value;
            } else {
                primary += value;
            }
        }
    }
    (replica, primary)
}

/// Reads the caller's profile and counts a violation unless it shows `expected`.
async fn read_own_name(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    expected: &str,
    tally: &mut Tally,
) {
    let result = client
        .get(format!("{base}/api/v1/me"))
        .header("cookie", cookie)
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => {
            let body: Value = r.json().await.unwrap_or_default();
            if body["name"].as_str() != Some(expected) {
                tally.violations += 1;
            }
        }
        _ => tally.errors += 1,
    }
    tally.reads += 1;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("SCALEOUT_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let users: usize = var("LOADGEN_USERS", 50);
    let seconds: u64 = var("LOADGEN_SECONDS", 30);
    let write_percent: u64 = var("LOADGEN_WRITE_PERCENT", 10);
    // The instances' metrics (not the worker's): the last URL of SCALEOUT_METRICS is the worker.
    let metrics: Vec<String> = std::env::var("SCALEOUT_METRICS")
        .unwrap_or_default()
        .split_whitespace()
        .filter(|u| !u.contains(":9184") && !u.contains(":9284"))
        .map(str::to_owned)
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(users)
        .build()?;

    eprintln!("loadgen: signing up {users} users through {base}");
    let mut accounts = Vec::with_capacity(users);
    for n in 0..users {
        accounts.push(signup(&client, &base, n).await?);
    }
    let ids: Arc<Vec<String>> = Arc::new(accounts.iter().map(|u| u.id.clone()).collect());

    let before = routed(&client, &metrics).await;
    eprintln!(
        "loadgen: {seconds} s of {}% writes, {} % reads",
        write_percent,
        100 - write_percent
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let seed = Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15));
    let mut tasks = Vec::new();
    for (n, user) in accounts.into_iter().enumerate() {
        let (client, base, ids, seed) = (client.clone(), base.clone(), ids.clone(), seed.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut version = 0u64;
            let mut expected = format!("load {n} v0");
            while Instant::now() < deadline {
                // A cheap shared pseudo-random sequence (SplitMix64): no extra dependency.
                let mut z = seed.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let t = Instant::now();
                if z % 100 < write_percent {
                    version += 1;
                    let name = format!("load {n} v{version}");
                    let result = client
                        .patch(format!("{base}/api/v1/me"))
                        .header("cookie", &user.cookie)
                        .json(&json!({"name": name}))
                        .send()
                        .await;
                    match result {
                        Ok(r) if r.status().is_success() => expected = name,
                        _ => tally.errors += 1,
                    }
                    tally.writes += 1;
                    tally.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    // Read it back at once, through whichever instance nginx picks: the case
                    // where a replica is most likely not to have replayed the write yet.
                    let read_back = Instant::now();
                    read_own_name(&client, &base, &user.cookie, &expected, &mut tally).await;
                    tally
                        .latencies_ms
                        .push(read_back.elapsed().as_secs_f64() * 1000.0);
                    continue;
                } else if z % 2 == 0 {
                    read_own_name(&client, &base, &user.cookie, &expected, &mut tally).await;
                } else {
                    let other = &ids[(z >> 8) as usize % ids.len()];
                    let result = client
                        .get(format!("{base}/api/v1/users/{other}"))
                        .header("cookie", &user.cookie)
                        .send()
                        .await;
                    if !matches!(result, Ok(r) if r.status().is_success()) {
                        tally.errors += 1;
                    }
                    tally.reads += 1;
                }
                tally.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            tally
        }));
    }

    let mut total = Tally::default();
    for task in tasks {
        let t = task.await?;
        total.latencies_ms.extend(t.latencies_ms);
        total.errors += t.errors;
        total.violations += t.violations;
        total.reads += t.reads;
        total.writes += t.writes;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = routed(&client, &metrics).await;
    total.latencies_ms.sort_by(f64::total_cmp);
    let requests = total.latencies_ms.len();
    let (replica, primary) = (after.0 - before.0, after.1 - before.1);
    let share = if replica + primary > 0.0 {
        100.0 * replica / (replica + primary)
    } else {
        0.0
    };

    println!("users                    {users}");
    println!("duration                 {elapsed:.1} s");
    println!(
        "requests                 {requests} ({} reads, {} writes)",
        total.reads, total.writes
    );
    println!(
        "throughput               {:.0} requests/s",
        requests as f64 / elapsed
    );
    println!(
        "latency p50              {:.2} ms",
        percentile(&total.latencies_ms, 50.0)
    );
    println!(
        "latency p95              {:.2} ms",
        percentile(&total.latencies_ms, 95.0)
    );
    println!(
        "latency p99              {:.2} ms",
        percentile(&total.latencies_ms, 99.0)
    );
    println!("errors                   {}", total.errors);
    println!("reads served by replica  {share:.1} % ({replica:.0} replica, {primary:.0} primary)");
    println!("read-your-writes violations {}", total.violations);
    Ok(())
}

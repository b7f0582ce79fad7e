//! Metrics: route templates as labels (bounded cardinality), every process scraped.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{client, env, eventually, scrape, spawn_app};

/// The `route` label values of `http_requests_total` in a scrape, with their summed counts.
fn routes(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
    {
        let Some(route) = line
            .split("route=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(route.to_owned()).or_insert(0.0) += value;
    }
    out
}

#[tokio::test]
async fn a_404_flood_of_random_paths_creates_no_new_label_values() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();

    let metrics_url = format!("http://{}/metrics", app.internal_addr);
    // The recorder is process-wide (every in-process app of this binary shares it): compare
    // before and after rather than trusting that a series exists.
    let before = routes(&scrape(&metrics_url).await);

    for _ in 0..40 {
        let path = format!("/flood/{}", uuid::Uuid::new_v4());
        assert_eq!(app.get(&path).await.status(), StatusCode::NOT_FOUND);
    }
    let scraped = routes(&scrape(&metrics_url).await);

    let counted = scraped.get("unmatched").copied().unwrap_or(0.0)
        - before.get("unmatched").copied().unwrap_or(0.0);
    assert!(
        counted >= 40.0,
        "40 requests counted as {counted}: {scraped:?}"
    );
    for route in scraped.keys() {
        assert!(
            route == "unmatched" || documented.contains(route),
            "{route} is a raw path, not a template"
        );
    }
}

#[tokio::test]
async fn every_instance_counts_requests_by_route_template() {
    let client = client();
    let instances = crate::helpers::instance_urls();
    let metrics: Vec<String> = env("SCALEOUT_METRICS")
        .split_whitespace()
        .take(3)
        .map(str::to_owned)
        .collect();
    assert_eq!(instances.len(), 3, "three instances: {instances:?}");
    assert_eq!(metrics.len(), 3, "three metrics listeners: {metrics:?}");
    let mut before = Vec::new();
    for url in &metrics {
        before.push(scrape(url).await);
    }

    // Ten reads of a templated route on each instance, straight to it: each one reads through
    // a routed pool. `/ready` pings Redis, so each instance also times a Redis command.
    for instance in &instances {
        for _ in 0..10 {
            let url = format!("{instance}/api/v1/users/{}", uuid::Uuid::new_v4());
            let response = client.get(url).send().await.expect("the instance answers");
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
        let ready = client
            .get(format!("{instance}/ready"))
            .send()
            .await
            .expect("ready");
        assert_eq!(ready.status(), StatusCode::OK);
    }

    let mut read = 0;
    for (url, before) in metrics.iter().zip(&before) {
        let after = scrape(url).await;
        let grew = |name: &str, labels: &[(&str, &str)]| {
            crate::helpers::metric(&after, name, labels)
                - crate::helpers::metric(before, name, labels)
        };
        let route = [("route", "/api/v1/users/{id}")];
        assert!(
            grew("http_requests_total", &route) >= 10.0,
            "{url}: GET /users/{{id}} counted {}",
            grew("http_requests_total", &route)
        );
        assert!(
            grew("http_request_duration_seconds_count", &route) >= 10.0,
            "{url}: request durations"
        );
        assert!(
            grew("db_query_duration_seconds_count", &[]) >= 10.0,
            "{url}: query time by role"
        );
        assert!(
            grew("db_read_routing_total", &[]) >= 10.0,
            "{url}: read routing decisions"
        );
        assert!(
            grew("redis_command_duration_seconds_count", &[]) >= 1.0,
            "{url}: Redis command time"
        );
        // Gauges and error counters: present with a value, whatever it is.
        for series in [
            "http_requests_in_flight",
            "db_replica_lag_seconds",
            "db_pool_connections",
            "scaleout_build_info",
            "storage_errors_total",
        ] {
            assert!(
                after.lines().any(|l| l.starts_with(series)),
                "{url} lacks {series}"
            );
        }
        read += 1;
    }
    assert_eq!(read, 3, "all three instances were read");
}

#[tokio::test]
async fn the_worker_counts_retried_failed_and_succeeded_jobs_and_samples_the_queue() {
    let app = crate::helpers::spawn_app().await;
    let db = app.state.db.primary_pool();
    let worker = env("SCALEOUT_METRICS")
        .split_whitespace()
        .nth(3)
        .expect("the worker's metrics URL")
        .to_owned();
    let canary = [("kind", "canary")];
    let before = scrape(&worker).await;

    // One job that fails once then succeeds (one retry), one that fails its only attempt.
    let ids = crate::helpers::enqueue(
        &app.state.db,
        vec![
            crate::helpers::canary(1, 0, 3),
            crate::helpers::canary(u32::MAX, 0, 1),
        ],
        None,
    )
    .await;
    crate::helpers::eventually("both jobs finish", Duration::from_secs(30), || async {
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(crate::helpers::job_row(db, id).await?.0);
        }
        (statuses == ["Done", "Failed"]).then_some(())
    })
    .await;

    // The worker counts a job just after apalis records its outcome: poll the scrape.
    let after = eventually(
        "the worker counts both jobs",
        Duration::from_secs(10),
        || {
            let (worker, before) = (worker.clone(), before.clone());
            async move {
                let after = scrape(&worker).await;
                let grew = |name: &str| {
                    crate::helpers::metric(&after, name, &canary)
                        - crate::helpers::metric(&before, name, &canary)
                };
                (grew("jobs_retried_total") >= 1.0
                    && grew("jobs_failed_total") >= 1.0
                    && grew("jobs_succeeded_total") >= 1.0)
                    .then_some(after)
            }
        },
    )
    .await;
    let durations = crate::helpers::metric(&after, "job_duration_seconds_count", &canary)
        - crate::helpers::metric(&before, "job_duration_seconds_count", &canary);
    assert!(durations >= 3.0, "three attempts timed, got {durations}");
    for series in [
        "jobs_queue_depth",
        "jobs_oldest_waiting_age_seconds",
        "scaleout_build_info",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(series)),
            "the worker lacks {series}"
        );
    }
}

#[tokio::test]
async fn prometheus_scrapes_every_instance_and_the_worker() {
    let url = format!("{}/api/v1/targets", env("PROMETHEUS_URL"));
    let instances = eventually("every target up", Duration::from_secs(30), || async {
        let body: Value = client().get(&url).send().await.ok()?.json().await.ok()?;
        let targets = body["data"]["activeTargets"].as_array()?.clone();
        let up: BTreeSet<String> = targets
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_owned))
            .collect();
        (targets.len() == 4 && up.len() == 4).then_some(up)
    })
    .await;
    assert_eq!(
        instances,
        BTreeSet::from(["app1", "app2", "app3", "worker1"].map(str::to_owned))
    );
}

/// Metric names in a PromQL expression: identifiers outside label matchers and `by (...)`
/// groupings, less PromQL's own functions and keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const PROMQL: &[&str] = &[
        "sum",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "max",
        "min",
        "avg",
        "count",
        "by",
        "without",
        "on",
        "ignoring",
        "and",
        "or",
        "unless",
        "topk",
        "bottomk",
        "abs",
    ];
    let mut names = BTreeSet::new();
    let (mut depth_braces, mut grouping, mut token) = (0, false, String::new());
    let flush = |token: &mut String, names: &mut BTreeSet<String>| {
        let t = std::mem::take(token);
        let is_name = t
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if is_name && !PROMQL.contains(&t.as_str()) {
            names.insert(t);
        }
    };
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if depth_braces > 0 {
            match c {
                '{' => depth_braces += 1,
                '}' => depth_braces -= 1,
                _ => {}
            }
        } else if grouping {
            if c == ')' {
                grouping = false;
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            if (token == "by" || token == "without") && expr[i..].trim_start().starts_with('(') {
                token.clear();
                grouping = true;
            } else {
                flush(&mut token, &mut names);
            }
            if c == '{' {
                depth_braces = 1;
            } else if c == '[' {
                // A range like [5m] is not a name.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
        }
        i += 1;
    }
    flush(&mut token, &mut names);
    names
}

#[test]
fn metric_names_skip_functions_labels_and_ranges() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="unmatched"}[5m]))) / sum(db_x_total)"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["http_request_duration_seconds_bucket", "db_x_total"].map(str::to_owned))
    );
}

#[tokio::test]
async fn every_dashboard_parses_and_queries_only_exported_metrics() {
    // A scrape of every instance: what the running service exports.
    for instance in crate::helpers::instance_urls() {
        client()
            .get(format!("{instance}/ready"))
            .send()
            .await
            .expect("ready");
    }
    let mut exported = String::new();
    for url in env("SCALEOUT_METRICS").split_whitespace() {
        exported.push_str(&scrape(url).await);
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("grafana/dashboards") {
        let path = entry.expect("entry").path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for name in metric_names(expr) {
                    // `up` is Prometheus' own series about each scrape, not the service's.
                    if name != "up" {
                        assert!(
                            exported.lines().any(|l| l.starts_with(&format!("{name}{{"))
                                || l.starts_with(&format!("{name} "))),
                            "{}: panel {:?} queries {name}, which no process exports",
                            path.display(),
                            panel["title"]
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10, "checked {checked} metric references");
}

//! `scaleout seed`: a realistic workspace data set, fast, for the benchmarks.
//!
//! Rows are generated in the process and streamed with `COPY ... FROM STDIN` (sqlx's
//! `copy_in_raw`), a few megabytes at a time: no statement per row, bounded memory. Tasks and
//! events, the two large tables, are copied at once on two connections.
//!
//! Shape (`--size full`): 1,000 organizations of 5 members each (5,000 accounts), 10,000
//! projects, 1,000,000 tasks, 3,000,000 events, 100,000 comments. The first organization is
//! the benchmark's: its first project holds a tenth of the tasks and its feed a tenth of the
//! events, so deep pages exist to measure. Ids are UUIDv7 made from creation times spread
//! over the past year, so keyset order is time order, as with live data. Every account's
//! password is printed at the end with the benchmark organization's ids (one JSON line).
//! Slugs and emails carry a run tag, so seeding twice adds a second data set.

use std::time::Instant;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::DatabaseConfig;

pub const NAME: &str = "seed";

/// How much to generate.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub orgs: usize,
    pub members_per_org: usize,
    pub projects_per_org: usize,
    pub tasks: usize,
    pub events: usize,
    pub comments: usize,
}

impl Size {
    /// About a minute on two cores.
    pub const FULL: Size = Size {
        orgs: 1_000,
        members_per_org: 5,
        projects_per_org: 10,
        tasks: 1_000_000,
        events: 3_000_000,
        comments: 100_000,
    };
    /// A few seconds: the same shape, a hundredth of the rows.
    pub const SMALL: Size = Size {
        orgs: 20,
        members_per_org: 5,
        projects_per_org: 10,
        tasks: 10_000,
        events: 30_000,
        comments: 1_000,
    };
}

/// The password of every seeded account.
pub const PASSWORD: &str = "seeded passphrase 1";

/// Rows buffered before each `send`.
const CHUNK_BYTES: usize = 4 << 20;

pub async fn run(config: DatabaseConfig, size: Size) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(config.acquire_timeout)
        .connect(config.primary_url.expose())
        .await
        .context("cannot connect to the primary")?;
    let started = Instant::now();
    let tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
    // One hash for every seeded account, outside any instance's request bound.
    let hash =
        tokio::task::spawn_blocking(|| crate::accounts::password::hash_sync(PASSWORD)).await??;
    let data = Gen::new(size, &tag);

    let mut conn = pool.acquire().await?;
    let (g, t) = (data.clone(), tag.clone());
    copy(
        &mut conn,
        "users (id, email, name, password_hash, created_at, updated_at)",
        move |out| {
            let (data, tag) = (g, t);
            for (i, id) in data.users.iter().enumerate() {
                let at = ts(data.user_times[i]);
                line(
                    out,
                    &[
                        &id.to_string(),
                        &format!("seed-{tag}-{i}@example.com"),
                        &format!("Seed User {i}"),
                        &hash,
                        &at,
                        &at,
                    ],
                );
            }
        },
    )
    .await?;
    let (g, t) = (data.clone(), tag.clone());
    copy(
        &mut conn,
        "organizations (id, name, slug, created_at, updated_at)",
        move |out| {
            let (data, tag) = (g, t);
            for (i, id) in data.orgs.iter().enumerate() {
                let at = ts(data.org_times[i]);
                line(
                    out,
                    &[
                        &id.to_string(),
                        &format!("Seed Org {i}"),
                        &format!("seed-{tag}-{i}"),
                        &at,
                        &at,
                    ],
                );
            }
        },
    )
    .await?;
    let g = data.clone();
    copy(
        &mut conn,
        "memberships (org_id, user_id, role, created_at)",
        move |out| {
            let data = g;
            for (o, org) in data.orgs.iter().enumerate() {
                for m in 0..size.members_per_org {
                    let user = data.users[o * size.members_per_org + m];
                    let role = ["owner", "admin", "member", "member", "viewer"][m % 5];
                    line(
                        out,
                        &[
                            &org.to_string(),
                            &user.to_string(),
                            role,
                            &ts(data.org_times[o]),
                        ],
                    );
                }
            }
        },
    )
    .await?;
    let g = data.clone();
    copy(
        &mut conn,
        "projects (id, org_id, name, description, created_by, created_at, updated_at)",
        move |out| {
            let data = g;
            for (p, id) in data.projects.iter().enumerate() {
                let o = p / size.projects_per_org;
                let at = ts(data.project_times[p]);
                line(
                    out,
                    &[
                        &id.to_string(),
                        &data.orgs[o].to_string(),
                        &format!("Project {p}"),
                        "",
                        &data.owner(o).to_string(),
                        &at,
                        &at,
                    ],
                );
            }
        },
    )
    .await?;
    drop(conn);
    println!(
        "seed: accounts, organizations, memberships, projects in {:.1?}",
        started.elapsed()
    );

    let (tasks, events) = tokio::join!(copy_tasks(&pool, &data), copy_events(&pool, &data));
    let task_ids = tasks?;
    events?;
    println!("seed: tasks and events in {:.1?}", started.elapsed());

    let mut conn = pool.acquire().await?;
    let mut g = data.clone();
    copy(
        &mut conn,
        "comments (id, org_id, task_id, author_id, body, created_at)",
        move |out| {
            let data = &mut g;
            for c in 0..size.comments {
                let (task, org, at) = task_ids[(c * 7919) % task_ids.len()];
                let at = at + 60_000 + c as i64;
                line(
                    out,
                    &[
                        &uuid_at(at, &mut data.rng).to_string(),
                        &data.orgs[org].to_string(),
                        &task.to_string(),
                        &data.member(org, c).to_string(),
                        "Looks good to me.",
                        &ts(at),
                    ],
                );
            }
        },
    )
    .await?;
    sqlx::query("analyze users, organizations, memberships, projects, tasks, events, comments")
        .execute(&mut *conn)
        .await?;
    println!("seed: done in {:.1?}", started.elapsed());
    let summary = serde_json::json!({
        "tag": tag,
        "email": format!("seed-{tag}-0@example.com"),
        "password": PASSWORD,
        "org_id": data.orgs[0],
        "project_id": data.projects[0],
        "orgs": size.orgs,
        "projects": data.projects.len(),
        "tasks": size.tasks,
        "events": size.events,
        "comments": size.comments,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    // The pool closes once every connection is back in it.
    drop(conn);
    pool.close().await;
    Ok(())
}

/// The generated ids and times, and the rules that place tasks and events.
#[derive(Debug, Clone)]
struct Gen {
    size: Size,
    rng: u64,
    users: Vec<Uuid>,
    user_times: Vec<i64>,
    orgs: Vec<Uuid>,
    org_times: Vec<i64>,
    projects: Vec<Uuid>,
    project_times: Vec<i64>,
    /// Milliseconds since the epoch at which the data set starts (a year ago).
    start: i64,
}

const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

impl Gen {
    fn new(size: Size, tag: &str) -> Self {
        let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let start = now - YEAR_MS;
        let mut rng = u64::from_str_radix(tag, 16).unwrap_or(1) | 1;
        let ids = |n: usize, from: i64, span: i64, rng: &mut u64| -> (Vec<Uuid>, Vec<i64>) {
            let times: Vec<i64> = (0..n)
                .map(|i| from + span * i as i64 / n.max(1) as i64)
                .collect();
            (times.iter().map(|t| uuid_at(*t, rng)).collect(), times)
        };
        let users_n = size.orgs * size.members_per_org;
        let (users, user_times) = ids(users_n, start, YEAR_MS / 100, &mut rng);
        let (orgs, org_times) = ids(size.orgs, start + YEAR_MS / 100, YEAR_MS / 50, &mut rng);
        let (projects, project_times) = ids(
            size.orgs * size.projects_per_org,
            start + YEAR_MS / 20,
            YEAR_MS / 20,
            &mut rng,
        );
        Self {
            size,
            rng,
            users,
            user_times,
            orgs,
            org_times,
            projects,
            project_times,
            start,
        }
    }

    fn owner(&self, org: usize) -> Uuid {
        self.users[org * self.size.members_per_org]
    }

    fn member(&self, org: usize, n: usize) -> Uuid {
        self.users[org * self.size.members_per_org + n % self.size.members_per_org]
    }

    /// The project of task `i`: a tenth of all tasks in the benchmark's project, the rest
    /// spread over every other project.
    fn project_of_task(&self, i: usize) -> usize {
        let big = self.size.tasks / 10;
        if i < big {
            0
        } else {
            1 + (i - big) % (self.projects.len() - 1).max(1)
        }
    }

    /// The organization of event `i`, likewise.
    fn org_of_event(&self, i: usize) -> usize {
        let big = self.size.events / 10;
        if i < big {
            0
        } else {
            1 + (i - big) % (self.orgs.len() - 1).max(1)
        }
    }

    /// Times of the `n` rows of a large table: spread over the last nine months, in order.
    fn time_of(&self, i: usize, n: usize) -> i64 {
        self.start + YEAR_MS / 4 + (YEAR_MS * 3 / 4) * i as i64 / n.max(1) as i64
    }
}

async fn copy_tasks(pool: &PgPool, data: &Gen) -> anyhow::Result<Vec<(Uuid, usize, i64)>> {
    let data = data.clone();
    let size = data.size;
    let mut rng = data.rng ^ 0x9e37_79b9_7f4a_7c15;
    let mut conn = pool.acquire().await?;
    copy(&mut conn, "tasks (id, org_id, project_id, title, description, status, assignee_id, due_date, created_by, created_at, updated_at)", move |out| {
        let mut ids = Vec::with_capacity(size.tasks);
        for i in 0..size.tasks {
            let p = data.project_of_task(i);
            let o = p / size.projects_per_org;
            let at = data.time_of(i, size.tasks);
            let id = uuid_at(at, &mut rng);
            ids.push((id, o, at));
            let status = ["todo", "doing", "done"][i % 3];
            // Two tasks in three assigned, one in four with a due date.
            let assignee = if i % 3 == 2 { "\\N".to_owned() } else { data.member(o, i).to_string() };
            let due = if i % 4 == 0 { "2027-01-15" } else { "\\N" };
            let stamp = ts(at);
            line(out, &[&id.to_string(), &data.orgs[o].to_string(), &data.projects[p].to_string(), &format!("Task {i}"), "", status, &assignee, due, &data.member(o, i + 1).to_string(), &stamp, &stamp]);
        }
        ids
    })
    .await
}

async fn copy_events(pool: &PgPool, data: &Gen) -> anyhow::Result<()> {
    let data = data.clone();
    let size = data.size;
    let mut rng = data.rng ^ 0xbf58_476d_1ce4_e5b9;
    let mut conn = pool.acquire().await?;
    copy(
        &mut conn,
        "events (id, org_id, actor_id, kind, subject_id, payload, created_at)",
        move |out| {
            for i in 0..size.events {
                let o = data.org_of_event(i);
                let at = data.time_of(i, size.events);
                let kind = ["task.created", "task.updated", "comment.created"][i % 3];
                line(
                    out,
                    &[
                        &uuid_at(at, &mut rng).to_string(),
                        &data.orgs[o].to_string(),
                        &data.member(o, i).to_string(),
                        kind,
                        &uuid_at(at, &mut rng).to_string(),
                        "{}",
                        &ts(at),
                    ],
                );
            }
        },
    )
    .await?;
    Ok(())
}

/// Streams the rows `write` produces into `COPY <target> FROM STDIN`, a chunk at a time.
/// `write` runs on the blocking pool (generation is CPU work) and hands full chunks over a
/// channel of two: generation and sending overlap, and memory stays at a few chunks.
async fn copy<R: Send + 'static>(
    conn: &mut PgConnection,
    target: &str,
    write: impl FnOnce(&mut Chunks) -> R + Send + 'static,
) -> anyhow::Result<R> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let mut copy = conn
        .copy_in_raw(&format!("copy {target} from stdin"))
        .await
        .with_context(|| format!("copy {target}"))?;
    let producer = tokio::task::spawn_blocking(move || {
        let mut chunks = Chunks {
            buf: Vec::with_capacity(CHUNK_BYTES),
            tx,
        };
        let out = write(&mut chunks);
        chunks.flush();
        out
    });
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = copy.send(chunk).await {
            sent = Err(e);
            break;
        }
    }
    // Dropping the receiver ends a producer still blocked on a full channel.
    drop(rx);
    let out = producer.await?;
    if let Err(e) = sent {
        let _ = copy.abort(e.to_string()).await;
        return Err(e).with_context(|| format!("copy {target}"));
    }
    copy.finish()
        .await
        .with_context(|| format!("copy {target}"))?;
    Ok(out)
}

/// The COPY buffer: rows go in, full chunks go to the sender.
#[derive(Debug)]
struct Chunks {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl Chunks {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
            // The receiver only stops on an error, which `copy` reports.
            let _ = self.tx.blocking_send(chunk);
        }
    }
}

/// One row of COPY's text format (the values here hold no tabs, newlines or backslashes
/// but `\N`, COPY's null).
fn line(out: &mut Chunks, values: &[&str]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.buf.push(b'\t');
        }
        out.buf.extend_from_slice(v.as_bytes());
    }
    out.buf.push(b'\n');
    if out.buf.len() >= CHUNK_BYTES {
        out.flush();
    }
}

/// A UUIDv7 of the time `ms` (milliseconds since the epoch) with cheap random bits.
fn uuid_at(ms: i64, rng: &mut u64) -> Uuid {
    let mut bytes = [0u8; 10];
    for chunk in bytes.chunks_mut(8) {
        // xorshift64: fast; uniqueness comes from 74 random bits per millisecond.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
    }
    uuid::Builder::from_unix_timestamp_millis(ms as u64, &bytes).into_uuid()
}

/// A time as COPY reads a `timestamptz`.
fn ts(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

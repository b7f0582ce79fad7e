//! `db_query_duration_seconds{role}`: how long statements take, by the pool they ran on; and
//! the number of statements each request runs ([`count_queries`]).
//!
//! sqlx reports every statement as a tracing event (`sqlx::query`, with `elapsed_secs`); this
//! layer turns those into the histogram. The role comes from the enclosing `db` span that
//! `Db::read` opens around a routed read (`db.role = "replica"` or `"primary"`). A statement
//! outside such a span ran on the primary: `db.begin(..)`, `db.read_primary()` and
//! `db.primary_pool()` are the only other ways to reach a pool.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The target of the role spans, so the layer's filter can let them through.
pub const TARGET: &str = "scaleout::db";

/// The pool a span's statements run on.
#[derive(Debug, Clone, Copy)]
struct Role(&'static str);

/// Marks a span whose statements are the read routing's own (a replica's replay position).
#[derive(Debug, Clone, Copy)]
struct Routing;

/// The tracing layer that records the histogram.
#[derive(Debug, Clone, Copy)]
pub struct QueryTimer;

impl<S> tracing_subscriber::Layer<S> for QueryTimer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut role = RoleField(None, false);
        attrs.record(&mut role);
        if let (Some(r), Some(span)) = (role.0, ctx.span(id)) {
            span.extensions_mut().insert(Role(r));
            if role.1 {
                span.extensions_mut().insert(Routing);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut elapsed = Elapsed(None);
        event.record(&mut elapsed);
        let Some(secs) = elapsed.0 else { return };
        let (role, routing) = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope.into_iter().find_map(|s| {
                    let ext = s.extensions();
                    ext.get::<Role>()
                        .copied()
                        .map(|r| (r.0, ext.get::<Routing>().is_some()))
                })
            })
            .unwrap_or(("primary", false));
        // The request's own statements: the routing's position checks depend on timing (their
        // answer is cached for milliseconds), not on what the request asks for. Outside a
        // counted future (a job, the replica probe) there is nothing to count into.
        if !routing {
            let _ = QUERIES.try_with(|n| n.set(n.get() + 1));
        }
        metrics::histogram!("db_query_duration_seconds", "role" => role).record(secs);
    }
}

struct RoleField(Option<&'static str>, bool);

impl Visit for RoleField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "db.role" {
            self.0 = Some(if value == "replica" {
                "replica"
            } else {
                "primary"
            });
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "db.routing" {
            self.1 = value;
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

struct Elapsed(Option<f64>);

impl Visit for Elapsed {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

tokio::task_local! {
    /// The statements run so far by the future [`count_queries`] runs.
    static QUERIES: std::cell::Cell<u64>;
}

/// Runs `work`, counting the SQL statements it runs (each `sqlx::query` event, which is one
/// per statement sent, wherever it runs: primary or replica, pool or transaction). Events
/// reach the counter synchronously on the task that polls `work`, so concurrent requests never
/// mix their counts. Needs the [`QueryTimer`] layer installed, as every process does.
pub async fn count_queries<F: std::future::Future>(work: F) -> (F::Output, u64) {
    QUERIES
        .scope(std::cell::Cell::new(0), async {
            let output = work.await;
            (output, QUERIES.with(std::cell::Cell::get))
        })
        .await
}

/// A span marking the statements inside it as the read routing's own, on a replica: timed like
/// any other, but not counted as the request's.
pub fn routing_span() -> tracing::Span {
    tracing::info_span!(target: TARGET, "db", db.role = "replica", db.routing = true)
}

/// A span marking the statements inside it as run on `role`'s pool.
pub fn role_span(role: &'static str) -> tracing::Span {
    tracing::info_span!(target: TARGET, "db", db.role = role)
}

//! `db_query_duration_seconds{role}`: how long statements take, by the pool they ran on.
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

/// The tracing layer that records the histogram.
#[derive(Debug, Clone, Copy)]
pub struct QueryTimer;

impl<S> tracing_subscriber::Layer<S> for QueryTimer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut role = RoleField(None);
        attrs.record(&mut role);
        if let (Some(role), Some(span)) = (role.0, ctx.span(id)) {
            span.extensions_mut().insert(Role(role));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut elapsed = Elapsed(None);
        event.record(&mut elapsed);
        let Some(secs) = elapsed.0 else { return };
        let role = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|s| s.extensions().get::<Role>().copied())
            })
            .map_or("primary", |r| r.0);
        metrics::histogram!("db_query_duration_seconds", "role" => role).record(secs);
    }
}

struct RoleField(Option<&'static str>);

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

/// A span marking the statements inside it as run on `role`'s pool.
pub fn role_span(role: &'static str) -> tracing::Span {
    tracing::info_span!(target: TARGET, "db", db.role = role)
}

//! How many SQL statements each request runs: `http_request_db_queries{route}` (a histogram),
//! and, when `HTTP_QUERY_COUNT_HEADER` is on (tests), the response header `X-Db-Queries`. A
//! list whose count grows with its page size has an N+1; the tests compare pages of 1 and 100.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::db::timing;

pub const HEADER: HeaderName = HeaderName::from_static("x-db-queries");

pub async fn count(State(expose): State<bool>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(super::middleware::UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let (mut response, queries) = timing::count_queries(next.run(request)).await;
    metrics::histogram!("http_request_db_queries", "route" => route).record(queries as f64);
    if expose {
        response
            .headers_mut()
            .insert(HEADER, HeaderValue::from(queries));
    }
    response
}

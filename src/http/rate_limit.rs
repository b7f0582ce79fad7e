//! The API's request limits as HTTP (the decisions are `crate::rate_limit`'s).
//!
//! [`limit`] wraps every API route (inside the session layer, so it can tell who is signed in):
//! a signed-in caller counts against the `user` policy by account, anyone else against
//! `anonymous` by client address (`client_ip`: `TRUSTED_PROXIES`-aware, IPv6 by its /64).
//! Routes that need a tighter limit add theirs where they are defined, with [`limited`]: it
//! counts the same caller (account, or address without a session) under the named policy,
//! on top of the general one; except the routes that are for anonymous callers (signup,
//! login, password resets), which count by address even when a session cookie comes along,
//! so a stream of fresh accounts' cookies does not give a stream of fresh allowances.
//!
//! Every answer of a limited route carries the policies that applied and where the caller
//! stands in each, as the IETF httpapi draft's structured fields (a list, one member per
//! policy):
//!
//! ```text
//! RateLimit-Policy: "signup";q=10;w=600, "anonymous";q=300;w=60
//! RateLimit: "signup";r=9;t=60, "anonymous";r=299;t=1
//! ```
//!
//! `q` requests per `w` seconds; `r` may still be sent at once; `t` seconds until the whole
//! quota is back (when refused: until the next request may pass). A refusal is the 429
//! problem with `Retry-After`; a fail-closed policy whose store is away, 503 with
//! `Retry-After`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::db::Caller;
use crate::error::ApiError;
use crate::http::client_ip::ClientIp;
use crate::rate_limit::{Policy, RateLimiter, Verdict};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whom a request's limits count, worked out once by [`limit`] for the route policies inside:
/// both keys, since a route's policy may count by address what the general limit counts by
/// account (see [`Policy::by_address`]).
#[derive(Debug, Clone)]
struct Subject {
    limiter: RateLimiter,
    /// `u:{id}` when the request carries a session.
    account: Option<String>,
    /// `a:{ip}`; absent only when the address could not be worked out for a signed-in caller
    /// (an anonymous one is refused then).
    address: Option<String>,
}

impl Subject {
    /// The key a route's policy counts under.
    fn key(&self, by_address: bool) -> Option<&str> {
        let (first, second) = if by_address {
            (&self.address, &self.account)
        } else {
            (&self.account, &self.address)
        };
        first.as_deref().or(second.as_deref())
    }
}

/// The general limit: `user` by account, or `anonymous` by client address.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.rate_limiter.enabled() {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    // A session that cannot be read (Redis away) counts as no session: the address is known
    // without Redis, and the route answers for the session itself.
    //
    // The session's user is taken as the session names it, without asking whether the account
    // still exists or the session was revoked since: that is the route's business (it answers
    // 401), and for counting it does not matter. A stale session's requests count against an
    // account nobody else can use, which can only make its holder's allowance smaller, never
    // let anyone past a limit: a session cannot be forged, and the routes whose policies are
    // worth evading with a stream of accounts (signup, login, password resets) count by
    // address whatever the session says.
    let caller = Caller::from_request_parts(&mut parts, &state)
        .await
        .unwrap_or(Caller::Anonymous);
    let address = ClientIp::from_request_parts(&mut parts, &state)
        .await
        .map(|ClientIp(ip)| format!("a:{ip}"));
    let (policy, key, account, address) = match (caller, address) {
        (Caller::User(id), address) => {
            let account = format!("u:{id}");
            (Policy::User, account.clone(), Some(account), address.ok())
        }
        (Caller::Anonymous, Ok(address)) => {
            (Policy::Anonymous, address.clone(), None, Some(address))
        }
        (Caller::Anonymous, Err(e)) => return e.into_response(),
    };
    parts.extensions.insert(Subject {
        limiter: state.rate_limiter.clone(),
        account,
        address,
    });
    let request = Request::from_parts(parts, body);
    enforce(&state.rate_limiter, policy, &key, request, next).await
}

/// The anonymous limit by client address alone, for the operations under `/api/v1` that
/// have no session layer (the service information, the plans): they never read or set a
/// cookie (the plans are kept by shared caches), so every caller counts as anonymous, by
/// address, against the same counter as its anonymous requests to the other routes.
pub async fn by_address(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.rate_limiter.enabled() {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let key = match ClientIp::from_request_parts(&mut parts, &state).await {
        Ok(ClientIp(ip)) => format!("a:{ip}"),
        Err(e) => return e.into_response(),
    };
    let request = Request::from_parts(parts, body);
    enforce(&state.rate_limiter, Policy::Anonymous, &key, request, next).await
}

/// A route's own policy, for requests of one method (the route's other methods pass
/// untouched), applied where the route is defined:
/// see [`limited`].
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    policy: Policy,
    method: Method,
    by_address: bool,
}

impl RoutePolicy {
    /// Counted as the policy counts ([`Policy::by_address`]).
    pub fn new(policy: Policy, method: Method) -> Self {
        Self {
            policy,
            method,
            by_address: policy.by_address(),
        }
    }

    /// Counted by client address even for a signed-in caller.
    pub fn by_address(self) -> Self {
        Self {
            by_address: true,
            ..self
        }
    }
}

/// `router` with `policy` on its requests of `method`: how a route declares its own limit.
pub fn limited(
    router: OpenApiRouter<AppState>,
    policy: Policy,
    method: Method,
) -> OpenApiRouter<AppState> {
    limited_as(router, RoutePolicy::new(policy, method))
}

/// `router` with the route policy `policy` (one made by address: [`RoutePolicy::by_address`]).
pub fn limited_as(router: OpenApiRouter<AppState>, policy: RoutePolicy) -> OpenApiRouter<AppState> {
    router.layer(axum::middleware::from_fn_with_state(policy, route))
}

/// The route's policy, after the general limit: by the caller's address when the policy
/// counts by address, else by the same key as the general limit.
pub async fn route(State(route): State<RoutePolicy>, request: Request, next: Next) -> Response {
    let subject = request.extensions().get::<Subject>().cloned();
    match subject {
        Some(subject) if request.method() == route.method => {
            let Some(key) = subject.key(route.by_address) else {
                return next.run(request).await;
            };
            let key = key.to_owned();
            enforce(&subject.limiter, route.policy, &key, request, next).await
        }
        // The limiter is off, or another method of the route.
        _ => next.run(request).await,
    }
}

/// Checks `policy` for `key`, then answers (or refuses) with the policy's headers added.
async fn enforce(
    limiter: &RateLimiter,
    policy: Policy,
    key: &str,
    request: Request,
    next: Next,
) -> Response {
    let (mut response, quota, window, state) = match limiter.check(policy, key).await {
        Verdict::Unavailable { retry_after_secs } => {
            return ApiError::LimitUnchecked {
                policy: policy.name(),
                retry_after_secs,
            }
            .into_response();
        }
        Verdict::Decided {
            decision,
            quota,
            window_secs,
        } => {
            let response = if decision.allowed {
                next.run(request).await
            } else {
                ApiError::RateLimited {
                    retry_after_secs: decision.retry_after_secs,
                }
                .into_response()
            };
            let t = if decision.allowed {
                decision.reset_secs
            } else {
                decision.retry_after_secs
            };
            (response, quota, window_secs, (decision.remaining, t))
        }
    };
    let name = policy.name();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{name}\";q={quota};w={window}")) {
        headers.append(RATELIMIT_POLICY, value);
    }
    let (remaining, t) = state;
    if let Ok(value) = HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={t}")) {
        headers.append(RATELIMIT, value);
    }
    response
}

/// Documents the 429 every limited operation (everything under `/api/v1`) may answer, with
/// its `Retry-After`, on the operations whose annotations do not already say when they answer
/// 429 (their own counters: logins, signups). The shape is the signup's own 429, written once
/// in its annotation.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    let Some(mut template) = doc
        .paths
        .paths
        .get("/api/v1/auth/signup")
        .and_then(|item| item.post.as_ref())
        .and_then(|op| op.responses.responses.get("429"))
        .cloned()
    else {
        return;
    };
    if let RefOr::T(response) = &mut template {
        response.description =
            "Over a rate limit (see the RateLimit and RateLimit-Policy headers); retry after Retry-After seconds".into();
    }
    for (path, item) in &mut doc.paths.paths {
        if path != "/api/v1" && !path.starts_with("/api/v1/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("429".into())
                .or_insert_with(|| template.clone());
        }
    }
}

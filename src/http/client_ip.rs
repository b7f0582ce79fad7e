//! The client's address, for per-address rate limits.
//!
//! Behind nginx every connection comes from nginx, so the address is taken from `X-Real-IP`,
//! which nginx always overwrites (a client cannot forge it through the proxy). Without a proxy
//! (`TRUST_PROXY_HEADERS=false`) the header is ignored and the peer address is used.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.auth.trust_proxy_headers
            && let Some(ip) = parts
                .headers
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
        {
            return Ok(Self(ip.to_string()));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .ok_or_else(|| anyhow::anyhow!("served without connect info"))?;
        Ok(Self(peer))
    }
}

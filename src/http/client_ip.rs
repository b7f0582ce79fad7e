//! The client's address, for per-address rate limits.
//!
//! A request's peer is the client, unless the peer is one of the configured proxies
//! (`TRUSTED_PROXIES`, CIDR networks). Through a trusted proxy the client is the rightmost
//! `X-Forwarded-For` entry that is not itself a trusted proxy: every proxy appends the address
//! it saw, so entries are believable from the right for as long as each was written by a
//! trusted proxy; anything left of the first untrusted one is whatever the client sent. An
//! instance reached directly (a peer outside the list) ignores the headers, so it cannot be
//! fooled; behind a cloud load balancer and nginx, listing both limits the real client.
//!
//! axum-client-ip (1.x) offers the rightmost `X-Forwarded-For` entry, which is right behind
//! exactly one proxy but not behind two (a load balancer, then nginx) and not for an instance
//! that is also reachable directly; it has no list of trusted networks to skip. So the walk is
//! here, on ipnet's parsing and matching of networks.
//!
//! The address is given as the key per-address limits count under: an IPv4 address as is, an
//! IPv6 address as its /64 (one subscriber usually holds a whole /64, so counting single IPv6
//! addresses would give each client 2^64 allowances).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::{IpNet, Ipv6Net};

use crate::app::AppState;
use crate::error::ApiError;

/// The client address as a rate-limit key (see the module doc: IPv6 by its /64).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

/// At most this many `X-Forwarded-For` entries are read, from the right: a long header costs
/// bounded work, and no real chain of proxies is this deep.
const MAX_HOPS: usize = 16;

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| anyhow::anyhow!("served without connect info"))?;
        let client = client_address(peer, &parts.headers, &state.config.auth.trusted_proxies);
        Ok(Self(limit_key(client)))
    }
}

/// The client behind `peer`: see the module doc.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Several X-Forwarded-For fields are one list, in order (RFC 9110, 5.3).
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_HOPS) {
        // An entry a trusted proxy wrote parses; one that does not was not written by a
        // trusted proxy, so the last trusted hop is as far as the chain can be believed.
        let Some(ip) = parse_entry(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `192.0.2.1`, `2001:db8::1`, and the forms with a port some balancers write
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
        .map(canonical)
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:192.0.2.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key per-address limits count `ip` under: IPv4 as is, IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => Ipv6Net::new(v6, 64)
            .map(|net| net.trunc().to_string())
            .unwrap_or_else(|_| Ipv6Addr::UNSPECIFIED.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("a network")).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).expect("ASCII"));
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["198.51.100.1, 10.0.0.1"]);
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers, &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn through_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        // A forged entry, the real client, then a load balancer inside the trusted network.
        let trusted = nets(&["10.0.0.0/8", "192.0.2.10/32"]);
        let headers = xff(&["1.1.1.1, 203.0.113.5", "10.1.2.3"]);
        assert_eq!(
            client_address(ip("192.0.2.10"), &headers, &trusted),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn a_chain_of_trusted_hops_only_gives_its_leftmost_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &xff(&["10.9.9.9, 10.0.0.2"]), &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = xff(&["203.0.113.5, not-an-address, 10.0.0.2"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers, &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses_are_understood() {
        let trusted = nets(&["10.0.0.0/8"]);
        for (entry, want) in [
            ("203.0.113.5:4711", "203.0.113.5"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("::ffff:203.0.113.5", "203.0.113.5"),
        ] {
            assert_eq!(
                client_address(ip("10.0.0.1"), &xff(&[entry]), &trusted),
                ip(want),
                "{entry}"
            );
        }
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            "2001:db8:1:2::/64"
        );
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("203.0.113.5")), "203.0.113.5");
        assert_eq!(limit_key(ip("::ffff:203.0.113.5")), "203.0.113.5");
    }
}

//! Which address a request counts against when it came through a proxy. Behind Code Engine's
//! queue-proxy or an ingress every connection comes from the proxy, so without this all
//! anonymous clients would share one bucket. `X-Forwarded-For` is believed only from the
//! addresses of `TRUSTED_PROXIES`: the client is the right-most address of the header that is
//! not itself a trusted proxy (the left part can be written by anyone).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::foundation::env::{ConfigError, Env};

/// The client's address, as [`crate::guard::server::serve`] records it on each request (the peer of
/// the connection: a proxy's address when the request came through one).
pub fn client_address(request: &axum::extract::Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`: addresses or CIDR
/// networks, comma-separated; unset: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Reads `TRUSTED_PROXIES`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let Some(text) = env.var("TRUSTED_PROXIES") else {
            return Ok(Self::default());
        };
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(
                            "TRUSTED_PROXIES",
                            format!("`{entry}` is neither an IP address nor a CIDR network"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that came from `peer` with `headers`: `peer` itself unless it is
    /// a trusted proxy; then the right-most `X-Forwarded-For` address that is not one.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        // From the right: each trusted proxy names the one before it. A hop that is no address
        // ends the walk (what lies left of it cannot be trusted): the request counts as the
        // proxy's own.
        for hop in hops.into_iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) if self.trusts(address) => continue,
                Ok(address) => return address,
                Err(_) => break,
            }
        }
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_count_only_from_a_trusted_proxy() {
        let proxies =
            TrustedProxies::from_env(&[("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1")]).unwrap();
        let forwarded = headers(&["198.51.100.9, 203.0.113.7", "10.1.2.3"]);
        // From the proxy: the right-most address that is not a proxy.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &forwarded),
            ip("203.0.113.7")
        );
        // From anyone else, the header is the client's own words: ignored.
        assert_eq!(proxies.client(ip("192.0.2.1"), &forwarded), ip("192.0.2.1"));
        // No header, or nothing readable in it: the proxy itself.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &headers(&["not an address"])),
            ip("127.0.0.1")
        );
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &headers(&["unknown, 203.0.113.8"])),
            ip("203.0.113.8")
        );
        // None configured: nobody is believed.
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &forwarded),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_bad_entry_is_named() {
        let err =
            TrustedProxies::from_env(&[("TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")]).unwrap_err();
        assert_eq!(err.variable, "TRUSTED_PROXIES");
        assert!(err.to_string().contains("proxy.local"), "{err}");
    }
}

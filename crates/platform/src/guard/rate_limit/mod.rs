//! Per-client request rate limiting (GCRA, the `governor` crate), off unless configured.
//!
//! A client is the API key it presents (`Authorization: Bearer <key>`, one of the configured
//! keys; the key's SHA-256 is what is kept), else its address (an IPv6 client by its /64). An
//! unknown bearer token counts as its sender's address, so made-up tokens do not buy new limits.
//! Over the limit a request gets `429 Too Many Requests` (problem+json) with `Retry-After`. The
//! operational routes (`/healthz`, `/readyz`, `/metrics`) are never limited. Behind a proxy, the
//! client's address is the one the proxy forwards ([`TrustedProxies`]).

mod proxies;

pub use proxies::{client_address, TrustedProxies};

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use tokio_util::sync::CancellationToken;

use crate::foundation::env::{positive, ConfigError, Env};
use crate::foundation::problem::Problem;
use crate::guard::auth::ApiKeys;

/// How often the state of clients that are back to a full burst is dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A request rate per client: `burst` requests at once, then one more every `replenish_every`.
#[derive(Clone)]
pub struct RateLimit {
    /// Requests a client may make at once.
    pub burst: NonZeroU32,
    /// How often a client regains one request.
    pub replenish_every: Duration,
    keys: ApiKeys,
    proxies: TrustedProxies,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("burst", &self.burst)
            .field("replenish_every", &self.replenish_every)
            .field("api_keys", &self.keys.describe().len())
            .finish()
    }
}

impl RateLimit {
    /// `per_second` requests a second, up to `burst` at once.
    pub fn per_second(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::every(Duration::from_secs(1) / per_second.get(), burst)
    }

    /// One request every `replenish_every`, up to `burst` at once.
    pub fn every(replenish_every: Duration, burst: NonZeroU32) -> Self {
        Self {
            burst,
            replenish_every: replenish_every.max(Duration::from_nanos(1)),
            keys: ApiKeys::default(),
            proxies: TrustedProxies::default(),
        }
    }

    /// Clients presenting one of `keys` are limited per key rather than per address.
    pub fn with_api_keys(mut self, keys: &ApiKeys) -> Self {
        self.keys = keys.clone();
        self
    }

    /// Clients behind `proxies` are told apart by the address those forward.
    pub fn behind(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// `RATE_LIMIT_PER_SECOND` (unset: no limit), `RATE_LIMIT_BURST` (default: the rate) and
    /// `TRUSTED_PROXIES` (see [`TrustedProxies`]).
    pub fn from_env(env: &impl Env) -> Result<Option<Self>, ConfigError> {
        let proxies = TrustedProxies::from_env(env)?;
        if env.var("RATE_LIMIT_PER_SECOND").is_none() {
            if env.var("RATE_LIMIT_BURST").is_some() {
                return Err(ConfigError::new(
                    "RATE_LIMIT_BURST",
                    "needs RATE_LIMIT_PER_SECOND (requests per second per client)",
                ));
            }
            return Ok(None);
        }
        let rate = non_zero(env, "RATE_LIMIT_PER_SECOND", 1)?;
        let burst = non_zero(env, "RATE_LIMIT_BURST", rate.get())?;
        Ok(Some(Self::per_second(rate, burst).behind(proxies)))
    }
}

fn non_zero(
    env: &impl Env,
    variable: &'static str,
    default: u32,
) -> Result<NonZeroU32, ConfigError> {
    let value = positive(env, variable, default as usize)?;
    u32::try_from(value)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| ConfigError::new(variable, format!("`{value}` is too large")))
}

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    /// A configured API key, by name.
    ApiKey(String),
    /// An IPv4 address, or an IPv6 /64.
    Address(IpAddr),
}

/// The shared state of one server's limit.
#[derive(Clone)]
pub(crate) struct Limiter {
    limiter: Arc<DefaultKeyedRateLimiter<Client>>,
    keys: ApiKeys,
    proxies: TrustedProxies,
}

impl Limiter {
    pub(crate) fn new(limit: &RateLimit) -> Self {
        let quota = Quota::with_period(limit.replenish_every)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(limit.burst);
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            keys: limit.keys.clone(),
            proxies: limit.proxies.clone(),
        }
    }

    fn client(&self, request: &Request) -> Client {
        let key = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::guard::auth::bearer_token)
            .and_then(|token| self.keys.identify(token));
        match key {
            Some(key) => Client::ApiKey(key.name.clone()),
            None => Client::Address(
                client_address(request)
                    .map(|peer| network(self.proxies.client(peer.ip(), request.headers())))
                    .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ),
        }
    }

    /// `Err(wait)` when `client` must wait before its next request.
    fn check(&self, client: &Client) -> Result<(), Duration> {
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets clients that are back to a full burst, every minute until `shutdown`.
    pub(crate) async fn prune_until(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {
                    self.limiter.retain_recent();
                    self.limiter.shrink_to_fit();
                }
            }
        }
    }
}

/// IPv4 addresses as they are; IPv6 ones by their /64 (what one host usually has).
fn network(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// `router` with every route but the operational ones limited by `limiter`.
pub(crate) fn apply(router: Router, limiter: Limiter) -> Router {
    router.layer(axum::middleware::from_fn_with_state(limiter, limit))
}

async fn limit(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    if crate::foundation::ops::is_ops_route(request.uri().path()) {
        return next.run(request).await;
    }
    match limiter.check(&limiter.client(&request)) {
        Ok(()) => next.run(request).await,
        Err(wait) => too_many_requests(wait),
    }
}

fn too_many_requests(wait: Duration) -> Response {
    metrics::counter!("http_requests_rate_limited_total").increment(1);
    // Whole seconds, rounded up: a client that waits that long is let in.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many requests from this client; try again in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_a_rate_is_set() {
        assert!(RateLimit::from_env(&[("X", "")]).unwrap().is_none());
        let limit = RateLimit::from_env(&[("RATE_LIMIT_PER_SECOND", "4")])
            .unwrap()
            .unwrap();
        assert_eq!(limit.burst.get(), 4);
        assert_eq!(limit.replenish_every, Duration::from_millis(250));
        let env = [("RATE_LIMIT_PER_SECOND", "2"), ("RATE_LIMIT_BURST", "10")];
        assert_eq!(RateLimit::from_env(&env).unwrap().unwrap().burst.get(), 10);
        let err = RateLimit::from_env(&[("RATE_LIMIT_BURST", "10")]).unwrap_err();
        assert_eq!(err.variable, "RATE_LIMIT_BURST");
        let err = RateLimit::from_env(&[("RATE_LIMIT_PER_SECOND", "0")]).unwrap_err();
        assert_eq!(err.variable, "RATE_LIMIT_PER_SECOND");
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let limit = RateLimit::per_second(NonZeroU32::MIN, NonZeroU32::MIN).with_api_keys(
            &ApiKeys::parse(["ops:console:read:topsecret-0123456789abcdef"]).unwrap(),
        );
        let shown = format!("{limit:?}");
        assert!(shown.contains("api_keys: 1"), "{shown}");
        assert!(!shown.contains("topsecret"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(network(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let response = too_many_requests(Duration::from_millis(1500));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = too_many_requests(Duration::from_millis(1));
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}

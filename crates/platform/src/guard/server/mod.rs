//! The HTTP server loop, guarded against slow and abusive clients: a client must send a request's
//! headers within a time limit, an idle keep-alive connection is kept for a longer one (so that a
//! proxy in front can reuse it: [`timed_io`]), at most so many connections are open at once
//! (beyond it new ones wait in the listen backlog), and, when configured, each client gets a
//! request rate ([`crate::guard::rate_limit`]).

mod admission;
mod timed_io;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::foundation::env::{positive, seconds, ConfigError, Env};
use crate::guard::auth::ApiKeys;
use crate::guard::rate_limit::{self, RateLimit};
pub use admission::PROBE_SLOTS;
use admission::{Admission, Refused};
use timed_io::TimedIo;

/// How the server protects itself from slow and abusive clients.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Longest a client may take to send a request's headers, from their first byte (a new
    /// connection's first request: from the connect) (`HTTP_HEADER_READ_TIMEOUT_SECS`, 10 s);
    /// then the server closes the connection.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay idle after a response
    /// (`HTTP_KEEP_ALIVE_SECS`, 120 s: longer than the 90 s for which Go's HTTP transport,
    /// Knative's queue-proxy among them, keeps idle connections to reuse).
    pub keep_alive: Duration,
    /// Most connections open at once for the API (`HTTP_MAX_CONNECTIONS`, 1024); beyond them
    /// [`PROBE_SLOTS`] more serve only the operational routes (other requests get 503), and
    /// further clients wait in the listen backlog until a connection closes.
    pub max_connections: usize,
    /// Most connections one client address may hold (`HTTP_MAX_CONNECTIONS_PER_CLIENT`, 256); a
    /// further one is closed at once. Behind a proxy every client has the proxy's address: the
    /// cap must exceed the proxy's connection pool (Code Engine: its concurrency per instance,
    /// 100 by default).
    pub max_connections_per_client: usize,
    /// Requests per client (`RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`); `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(120),
            max_connections: 1024,
            max_connections_per_client: 256,
            rate_limit: None,
        }
    }
}

impl ServerSettings {
    /// Reads the settings from `env`; `api_keys` are the keys a rate limit tells clients apart by.
    pub fn from_env(env: &impl Env, api_keys: &ApiKeys) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            header_read_timeout: seconds(
                env,
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                defaults.header_read_timeout,
            )?,
            keep_alive: seconds(env, "HTTP_KEEP_ALIVE_SECS", defaults.keep_alive)?,
            max_connections: positive(env, "HTTP_MAX_CONNECTIONS", defaults.max_connections)?,
            max_connections_per_client: positive(
                env,
                "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                defaults.max_connections_per_client,
            )?,
            rate_limit: RateLimit::from_env(env)?.map(|limit| limit.with_api_keys(api_keys)),
        })
    }
}

/// Serves `router` on `listener` with `settings` until `shutdown`, then stops accepting and
/// finishes the requests in flight. Each request carries the client's [`ConnectInfo`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (router, pruner) = match &settings.rate_limit {
        Some(limit) => {
            let limiter = rate_limit::Limiter::new(limit);
            let pruner = crate::foundation::metrics_scope::spawn(
                limiter.clone().prune_until(shutdown.clone()),
            );
            (rate_limit::apply(router, limiter), Some(pruner))
        }
        None => (router, None),
    };
    let mut http = http1::Builder::new();
    // The header timeout is `TimedIo`'s: hyper's own would also close idle keep-alive connections.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let admission = Admission::new(
        settings.max_connections,
        settings.max_connections_per_client,
    );
    let probes_router = router
        .clone()
        .layer(axum::middleware::from_fn(ops_routes_only));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admit(&admission, peer, &shutdown).await else {
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        };
        let routes = if admitted.ops_only {
            probes_router.clone()
        } else {
            router.clone()
        };
        let service = TowerToHyperService::new(routes.map_request(
            move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let stream = TimedIo::new(stream, settings.header_read_timeout, settings.keep_alive);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        crate::foundation::metrics_scope::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection closed");
            }
            drop(admitted);
        });
    }
    drop(listener);
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    graceful.shutdown().await;
    Ok(())
}

/// A slot for the connection from `peer`; `None` when its client holds its share already (the
/// connection is closed at once) or shutdown came while every slot was taken.
async fn admit(
    admission: &Admission,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<admission::Admitted> {
    loop {
        match admission.admit(peer.ip()) {
            Ok(Some(admitted)) => return Some(admitted),
            // Every slot is taken: wait for one (new clients wait in the listen backlog).
            Ok(None) => tokio::select! {
                () = shutdown.cancelled() => return None,
                () = admission.api_slot_free() => {}
            },
            Err(Refused::PerClient) => {
                metrics::counter!("http_connections_refused_total", "reason" => "per_client")
                    .increment(1);
                tracing::debug!(%peer, "connection refused: its client holds its share");
                return None;
            }
        }
    }
}

/// The routes of a connection that holds a probe slot: the operational ones; anything else is
/// a 503 problem that closes the connection.
async fn ops_routes_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    if crate::foundation::ops::is_ops_route(request.uri().path()) {
        return next.run(request).await;
    }
    metrics::counter!("http_connections_refused_total", "reason" => "exhausted").increment(1);
    let problem = serde_json::json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "every connection slot is taken; try again shortly",
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, "1"),
            (header::CONNECTION, "close"),
        ],
        problem.to_string(),
    )
        .into_response()
}

/// An accept error: a connection that failed before it was accepted is no matter; anything else
/// (e.g. out of file descriptors) is logged and the loop pauses before it tries again.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; pausing");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_environment() {
        let settings = ServerSettings::from_env(&[("X", "")], &ApiKeys::default()).unwrap();
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(settings.keep_alive, Duration::from_secs(120));
        assert_eq!(settings.max_connections, 1024);
        assert!(settings.rate_limit.is_none());
        let env = [
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "3"),
            ("HTTP_KEEP_ALIVE_SECS", "30"),
            ("HTTP_MAX_CONNECTIONS", "50"),
        ];
        let settings = ServerSettings::from_env(&env, &ApiKeys::default()).unwrap();
        assert_eq!(settings.header_read_timeout, Duration::from_secs(3));
        assert_eq!(settings.keep_alive, Duration::from_secs(30));
        assert_eq!(settings.max_connections, 50);
        let err = ServerSettings::from_env(&[("HTTP_MAX_CONNECTIONS", "0")], &ApiKeys::default())
            .unwrap_err();
        assert_eq!(err.variable, "HTTP_MAX_CONNECTIONS");
    }
}

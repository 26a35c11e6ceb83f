//! HTTP bootstrap: the framework's own rejections as RFC 9457 problems ([`crate::foundation::problem`]), a
//! JSON extractor whose rejections are problems, the operational routes (`/healthz`, `/readyz`,
//! `/metrics`), request metrics by route template, and serving with graceful shutdown. API keys
//! are in [`crate::guard::auth`].

mod extract;
mod layers;
mod problems;
mod routes;

pub use extract::{traceparent, ApiJson, ApiKeyScheme, ApiQuery};
pub use layers::{with_common_layers, CONTENT_SECURITY_POLICY, REQUEST_ID};
pub use problems::MAX_URI_BYTES;
pub use routes::{javascript, keyed_routes, ops_routes, page_files, stylesheet};

use axum::Router;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown`, then finishes in-flight requests; guarded by
/// `settings` (header read timeout, connection cap, rate limit: [`crate::guard::server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    settings: &crate::guard::server::ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::guard::server::serve(listener, router, settings, shutdown).await
}

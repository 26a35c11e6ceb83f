//! The operational routes every process serves beside its API: probes and metrics. They are
//! never rate limited, and they are served even when the API's connection slots are exhausted.

/// `/healthz` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus).
pub const ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Whether `path` is one of the [`ROUTES`].
pub fn is_ops_route(path: &str) -> bool {
    ROUTES.contains(&path)
}

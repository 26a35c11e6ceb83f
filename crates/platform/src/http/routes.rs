//! The routes every service shares: the operational ones (`/healthz`, `/readyz`, `/metrics`),
//! the browser side of API keys, and a page's own stylesheet and script.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::events::readiness::Readiness;

use super::problems::NotAProblem;

/// `/healthz` (the process is alive: always 200), `/readyz` (200 while the replica can serve, else
/// 503; JSON naming each check either way: see [`crate::events::readiness`]) and `/metrics`.
pub fn ops_routes(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                let report = r.report().await;
                let status = if report.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut response = (status, Json(report)).into_response();
                response.extensions_mut().insert(NotAProblem);
                response
            }),
        )
        .with_state(readiness)
        .route("/metrics", get(move || async move { metrics.render() }))
}

/// The browser side of API keys, shared by the services' pages (both routes open):
/// `GET /keyed.js` keeps a key in `sessionStorage` for the tab, sends it as
/// `Authorization: Bearer` (never in a URL) and reads server-sent events with `fetch` so that
/// streams carry the header too; `GET /auth/config` says whether a page must ask for a key
/// (`{"keyRequired": bool}`).
pub fn keyed_routes(keys: &crate::guard::auth::ApiKeys) -> Router {
    let key_required = !keys.is_empty();
    Router::new()
        .route(
            "/keyed.js",
            get(|| async { javascript(include_str!("../keyed.js")) }),
        )
        .route(
            "/auth/config",
            get(move || async move { Json(serde_json::json!({ "keyRequired": key_required })) }),
        )
}

/// The routes of a page's own files: `GET <path>` of its stylesheet `css` and of its script
/// `js`, each given as `(path, content)`.
pub fn page_files(css: (&'static str, &'static str), js: (&'static str, &'static str)) -> Router {
    Router::new()
        .route(css.0, get(move || async move { stylesheet(css.1) }))
        .route(js.0, get(move || async move { javascript(js.1) }))
}

/// A stylesheet of a page (`text/css`).
pub fn stylesheet(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], body).into_response()
}

/// A script of a page (`text/javascript`).
pub fn javascript(body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
        .into_response()
}

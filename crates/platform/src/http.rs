//! HTTP bootstrap: RFC 9457 problem+json errors, a JSON extractor whose rejections are problems,
//! the operational routes (`/healthz`, `/readyz`, `/metrics`), API-key protection and serving
//! with graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::db::Database;
use crate::kafka::{self, KafkaConfig};

/// An RFC 9457 problem: every error response of every service.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Extra members (e.g. the field that failed validation).
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            extensions: serde_json::Map::new(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409 Conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 422 Unprocessable Content, naming the offending field.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail).with("field", field)
    }

    /// 500, without internals (they go to the log).
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not complete the request; it has been logged",
        )
    }

    /// 503 Service Unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("type".into(), "about:blank".into());
        body.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.into());
        body.extend(self.extensions);
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(serde_json::Value::Object(body)),
        )
            .into_response()
    }
}

impl From<crate::group_commit::CommitError> for Problem {
    fn from(error: crate::group_commit::CommitError) -> Self {
        tracing::error!(%error, "write not committed");
        Problem::unavailable("the write could not be committed; nothing was stored, try again")
    }
}

impl From<crate::db::DbError> for Problem {
    fn from(error: crate::db::DbError) -> Self {
        Problem::internal(&error)
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Problem::internal(&error)
    }
}

/// The body of every error response, as documented in the services' OpenAPI documents (the
/// response itself is built by [`Problem`]).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProblemDetails {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong.
    pub detail: String,
    /// The request member at fault (validation errors).
    pub field: Option<String>,
}

/// JSON in and out; a body that is not JSON, or not of the expected shape, is a 4xx problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a JSON body with `Content-Type: application/json`",
        ),
        JsonRejection::JsonDataError(e) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text())
        }
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(e.body_text()),
        other => Problem::new(other.status(), other.body_text()),
    }
}

/// What `/readyz` checks: the database (when the process has one) and the brokers.
#[derive(Clone)]
pub struct Readiness {
    db: Option<Database>,
    kafka: KafkaConfig,
    last_kafka_ok: Arc<Mutex<Option<Instant>>>,
}

impl Readiness {
    /// Readiness of `db` and the brokers of `kafka`.
    pub fn new(db: Database, kafka: KafkaConfig) -> Self {
        Self {
            db: Some(db),
            kafka,
            last_kafka_ok: Arc::new(Mutex::new(None)),
        }
    }

    /// Readiness of a process without a database (e.g. the console): the brokers of `kafka`.
    pub fn brokers_only(kafka: KafkaConfig) -> Self {
        Self {
            db: None,
            kafka,
            last_kafka_ok: Arc::new(Mutex::new(None)),
        }
    }

    async fn check(&self) -> Result<(), String> {
        if let Some(db) = &self.db {
            db.ping().await.map_err(|e| format!("database: {e}"))?;
        }
        // A metadata round trip at most every 5 s; probes come often.
        let mut last = self.last_kafka_ok.lock().await;
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return Ok(());
        }
        kafka::check_connection(&self.kafka, Duration::from_secs(3))
            .await
            .map_err(|e| format!("kafka: {e}"))?;
        *last = Some(Instant::now());
        Ok(())
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_routes(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                match r.check().await {
                    Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
                    Err(detail) => Problem::unavailable(detail).into_response(),
                }
            }),
        )
        .with_state(readiness)
        .route("/metrics", get(move || async move { metrics.render() }))
}

/// API keys for write endpoints; empty means open.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<Vec<Secret>>);

impl ApiKeys {
    /// The accepted keys.
    pub fn new(keys: Vec<Secret>) -> Self {
        Self(Arc::new(keys))
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.0
            .iter()
            .any(|key| constant_time_eq(key.expose().as_bytes(), given.trim().as_bytes()))
    }
}

/// Middleware: rejects a request without a valid `Authorization: Bearer <key>` when keys are set.
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    request: Request,
    next: Next,
) -> Response {
    if keys.accepts(request.headers()) {
        next.run(request).await
    } else {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs `Authorization: Bearer <api key>`",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds the layers every service has: a problem for unknown routes and panics, request tracing,
/// and a request timeout.
pub fn with_common_layers(router: Router) -> Router {
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;
    router
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal(&"handler panicked").into_response()
        }))
}

/// The span of one HTTP request; a caller's W3C `traceparent` header makes it part of the
/// caller's trace.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    // The target tower-http's own request spans use, so the same filters apply.
    let span = tracing::debug_span!(
        target: "tower_http::trace::make_span",
        "request",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
    );
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        crate::telemetry::set_parent(&span, traceparent);
    }
    span
}

/// Serves `router` on `listener` until `shutdown`, then finishes in-flight requests; guarded by
/// `settings` (header read timeout, connection cap, rate limit: [`crate::server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    settings: &crate::server::ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::server::serve(listener, router, settings, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_need_a_bearer_header_when_configured() {
        let keys = ApiKeys::new(vec![Secret::new("k1")]);
        let mut headers = HeaderMap::new();
        assert!(!keys.accepts(&headers));
        headers.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!keys.accepts(&headers));
        headers.insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert!(keys.accepts(&headers));
        assert!(ApiKeys::default().accepts(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn problems_are_problem_json() {
        let response = Problem::invalid_field("email", "not an email").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 422);
        assert_eq!(v["detail"], "not an email");
        assert_eq!(v["field"], "email");
        assert_eq!(v["title"], "Unprocessable Entity");
    }
}

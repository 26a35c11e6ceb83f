//! The layers every service has ([`with_common_layers`]): problems for every error, request
//! metrics and the access log, request tracing and ids, a timeout, the body size limit, and the
//! browser protections on every response.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::foundation::problem::Problem;

use super::problems::problems_for_every_error;

/// The header that identifies a request: the caller's, or a new UUID; echoed on every response.
pub const REQUEST_ID: &str = "x-request-id";
/// The longest caller-chosen request id kept; a longer or non-printable one is replaced.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Adds the layers every service has: a problem for unknown routes, panics and every other error
/// response, request metrics and an access log, request tracing, a request timeout, the body
/// size limit ([`crate::guard::limits::MAX_BODY_BYTES`]), and the `x-request-id` of each request (the
/// caller's, or a new UUID) on its span and its response.
pub fn with_common_layers(router: Router) -> Router {
    use axum::extract::DefaultBodyLimit;
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;
    let request_id = header::HeaderName::from_static(REQUEST_ID);
    router
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(DefaultBodyLimit::max(crate::guard::limits::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(problems_for_every_error))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(log_failure),
        )
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal(&"handler panicked").into_response()
        }))
        .layer(axum::middleware::from_fn(observe))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
        .layer(axum::middleware::map_response(with_security_headers))
}

/// What every response may load and where it may be shown: pages load their scripts, styles and
/// data only from their own origin (no inline code), and no other site may frame them.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Adds the browser protections to every response: [`CONTENT_SECURITY_POLICY`],
/// `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
async fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// Logs a failed request: a 5xx at ERROR, but a 503, which this code answers on purpose
/// (backpressure, a replica starting or stopping, a database away, each logged where it is
/// found) at DEBUG, so a probe or a retrying client does not write an error line per attempt.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    let latency_ms = latency.as_millis();
    match class {
        Class::StatusCode(status) if status == StatusCode::SERVICE_UNAVAILABLE => {
            tracing::debug!(%status, latency_ms, "service unavailable")
        }
        Class::StatusCode(status) => tracing::error!(%status, latency_ms, "response failed"),
        Class::Error(error) => tracing::error!(%error, latency_ms, "response failed"),
    }
}

/// Removes a caller's `x-request-id` that is too long or not printable ASCII, so that a new
/// one is made in its place.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = request.headers().get(REQUEST_ID).is_none_or(|value| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_BYTES
            && bytes.iter().all(|b| b.is_ascii_graphic())
    });
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Middleware, per request (the probes and `/metrics` aside): the metrics
/// `http_server_requests_total` and `http_server_request_duration_seconds` (until the response
/// head) by method, route template (`unmatched` when no route matched) and status; and one access
/// log line (target `access`; `RUST_LOG=access=warn` silences it) with the method, path (no
/// query), status, duration and the API key's *name*.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    if route
        .as_deref()
        .is_some_and(crate::foundation::ops::is_ops_route)
    {
        return next.run(request).await;
    }
    let route = route.unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(request.method());
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!("http_server_requests_total", "method" => method,
        "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!("http_server_request_duration_seconds", "method" => method,
        "route" => route, "status" => status.to_string())
    .record(elapsed.as_secs_f64());
    let key = response
        .extensions()
        .get::<crate::guard::auth::KeyName>()
        .map_or("-", |k| k.0.as_str());
    tracing::info!(target: "access", method, path = %truncated(&path, 200), status,
        ms = elapsed.as_millis() as u64, api_key = key, "request");
    response
}

/// The method as a label; methods outside the standard ones are `other` (bounded labels).
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// At most `max` bytes of `text` (on a character boundary).
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
/// The span of one HTTP request, with its `x-request-id` (`request_id`); a caller's W3C
/// `traceparent` header makes it part of the caller's trace.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The target tower-http's own request spans use, so the same filters apply.
    let span = tracing::debug_span!(
        target: "tower_http::trace::make_span",
        "request",
        otel.kind = "server",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
        request_id = %request_id,
        api_key = tracing::field::Empty,
    );
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        crate::foundation::telemetry::set_parent(&span, traceparent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    use super::super::problems::MAX_URI_BYTES;

    async fn call(router: &Router, method: &str, uri: &str) -> (Response, serde_json::Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 100_000).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, axum::body::Body::empty()), json)
    }

    #[tokio::test]
    async fn a_503_is_not_an_error_line_and_a_500_is() {
        let router = with_common_layers(
            Router::new()
                .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
                .route(
                    "/broken",
                    get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
                ),
        );
        let logs = crate::foundation::test_logs::Logs::default();
        let guard = logs.capture();
        call(&router, "GET", "/busy").await;
        let after_busy = logs.text();
        call(&router, "GET", "/broken").await;
        drop(guard);
        assert!(!after_busy.contains("ERROR"), "{after_busy}");
        let text = logs.text();
        assert!(
            text.contains("ERROR") && text.contains("response failed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn every_response_carries_the_browser_protections() {
        let router = with_common_layers(Router::new().route("/page", get(|| async { "hi" })));
        for uri in ["/page", "/nowhere"] {
            let (response, _) = call(&router, "GET", uri).await;
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{uri}"
            );
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{uri}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    #[tokio::test]
    async fn framework_rejections_are_problems_too() {
        let router = with_common_layers(Router::new().route(
            "/items/{n}",
            get(|axum::extract::Path(n): axum::extract::Path<u32>| async move { n.to_string() }),
        ));
        let (ok, _) = call(&router, "GET", "/items/7").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let (response, body) = call(&router, "DELETE", "/items/7").await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(response.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .contains("GET"));
        assert_eq!(body["status"], 405);
        let (response, body) = call(&router, "GET", "/items/seven").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body["status"], 400);
        assert!(body["detail"].as_str().unwrap().contains("parse"), "{body}");
        let long = format!("/items/7?q={}", "x".repeat(MAX_URI_BYTES));
        let (response, body) = call(&router, "GET", &long).await;
        assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(body["limit"], MAX_URI_BYTES);
        let (response, body) = call(&router, "GET", "/nowhere").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(body["title"], "Not Found");
    }

    async fn request_id_of(router: &Router, given: Option<&str>) -> String {
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder().uri("/nowhere");
        if let Some(id) = given {
            request = request.header(REQUEST_ID, id);
        }
        let response = router
            .clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        response.headers()[REQUEST_ID].to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id_and_a_given_one_is_echoed() {
        let router = with_common_layers(Router::new());
        let made = request_id_of(&router, None).await;
        assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
        assert_ne!(made, request_id_of(&router, None).await, "one per request");
        assert_eq!(request_id_of(&router, Some("req-42")).await, "req-42");
        let long = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        let replaced = request_id_of(&router, Some(&long)).await;
        assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    }

    #[tokio::test]
    async fn the_request_span_carries_the_request_id() {
        let logs = crate::foundation::test_logs::Logs::default();
        let _guard = logs.capture();
        let router = with_common_layers(Router::new().route(
            "/hello",
            get(|| async {
                tracing::info!("inside the handler");
                "hi"
            }),
        ));
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .uri("/hello")
            .header(REQUEST_ID, "req-7")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.headers()[REQUEST_ID], "req-7");
        let text = logs.text();
        let line = text
            .lines()
            .find(|l| l.contains("inside the handler"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("request_id=req-7"), "{line}");
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

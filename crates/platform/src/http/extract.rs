//! Request extractors whose rejections are problems ([`ApiJson`], [`ApiQuery`]), the OpenAPI
//! security scheme of the protected routes, and the caller's `traceparent`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::foundation::problem::Problem;

/// JSON in and out; a body that is not JSON, or not of the expected shape, is a 4xx problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state)
            .await
            .map_err(json_problem)?;
        Ok(ApiJson(value))
    }
}

/// A query string; one that cannot be read (e.g. a parameter given twice) is a 400 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        Ok(ApiQuery(value))
    }
}

/// The OpenAPI security scheme of the protected routes: `api_key`, an HTTP bearer token (the
/// services' `#[openapi(modifiers(&ApiKeyScheme))]`; routes name it in `security(("api_key" = []))`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A key of the service's `API_KEYS` (when any is configured). A route \
                         needs its service's read scope for GET (`customers:read`, \
                         `transactions:read`, `notifications:read`, `console:read`) and its \
                         write scope otherwise (`customers:write`, `transactions:write`): 401 \
                         without a known key, 403 without the scope.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The caller's W3C `traceparent` header (trimmed) when it is valid
/// ([`crate::foundation::telemetry::is_valid_traceparent`]): it travels on with the events the request causes.
pub fn traceparent(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    crate::foundation::telemetry::is_valid_traceparent(value).then_some(value)
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
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            crate::guard::limits::body_too_large()
        }
        other => Problem::new(other.status(), other.body_text()),
    }
}

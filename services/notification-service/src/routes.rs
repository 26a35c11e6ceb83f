//! HTTP routes: the delivery log, the live feed (server-sent events), the dashboard page and the
//! OpenAPI document. All read-only.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use platform::{ApiQuery, Database};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::{Delivery, Kind, Status};
use crate::error::Error;
use crate::feed::Hub;
use crate::storage;
use platform::auth::{protect, ApiKeys, Area};
use platform::http::{self, ApiKeyScheme};
use platform::limits::check_length;
use platform::problem::ProblemDetails;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// Entries of the log when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: i64 = 500;
/// Longest `customerId` accepted (the account-id limit of transaction-service: customer ids
/// come from `Customer.created`, which other producers may write too).
pub const MAX_CUSTOMER_ID_LEN: usize = 128;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// Live delivery updates.
    pub hub: Hub,
    /// Ends the live streams on shutdown.
    pub shutdown: CancellationToken,
}

/// The service's routes; with API keys configured, the notifications need a key with scope
/// `notifications:read` (the dashboard page asks for it), the page and the OpenAPI document do
/// not.
pub fn router(state: AppState, api_keys: &ApiKeys) -> Router {
    let notifications = Router::new()
        .route("/notifications", get(list_notifications))
        .route("/notifications/recent", get(recent_notifications))
        .route("/notifications/stream", get(stream_notifications));
    protect(notifications, api_keys, Area::Notifications)
        .route("/", get(dashboard))
        .route("/openapi.json", get(openapi))
        .with_state(state)
        .merge(platform::http::keyed_routes(api_keys))
        .merge(http::page_files(
            ("/dashboard.css", include_str!("dashboard.css")),
            ("/dashboard.js", include_str!("dashboard.js")),
        ))
}

/// Query of `GET /notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LogParams {
    /// Whose notifications (required, not blank, at most 128 characters).
    #[param(value_type = String, required = true, max_length = 128, pattern = r"[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")]
    pub customer_id: Option<String>,
    /// Entries, 1–500 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

/// Query of `GET /notifications/recent`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentParams {
    /// Entries, 1–500 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
}

/// The latest deliveries of every customer, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecentNotifications {
    /// Deliveries, newest first.
    pub items: Vec<Delivery>,
}

/// Query of `GET /notifications/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct StreamParams {
    /// Only this customer's deliveries (all when absent or blank); at most 128 characters.
    #[param(max_length = 128)]
    pub customer_id: Option<String>,
}

/// A customer's delivery log, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationLog {
    /// The customer.
    pub customer_id: String,
    /// Deliveries, newest first.
    pub items: Vec<Delivery>,
}

/// The delivery log of one customer.
#[utoipa::path(get, path = "/notifications", params(LogParams),
    responses(
        (status = 200, description = "Deliveries, newest first", body = NotificationLog),
        (status = 400, description = "A malformed query string (e.g. a parameter given twice)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `notifications:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "`customerId` missing, blank or longer than 128 characters, or a bad `limit`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn list_notifications(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<Json<NotificationLog>, Error> {
    let customer_id = customer_id(params.customer_id)?.ok_or(Error::MissingCustomerId)?;
    let limit = limit(params.limit.as_deref())?;
    let items = storage::for_customer(state.db.reads(), &customer_id, limit).await?;
    Ok(Json(NotificationLog { customer_id, items }))
}

/// The latest deliveries of every customer (what the dashboard shows when it opens).
#[utoipa::path(get, path = "/notifications/recent", params(RecentParams),
    responses(
        (status = 200, description = "Deliveries, newest first", body = RecentNotifications),
        (status = 400, description = "A malformed query string (e.g. a parameter given twice)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `notifications:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn recent_notifications(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RecentParams>,
) -> Result<Json<RecentNotifications>, Error> {
    let limit = limit(params.limit.as_deref())?;
    let items = storage::latest(state.db.reads(), limit).await?;
    Ok(Json(RecentNotifications { items }))
}

/// The `limit` query parameter: [`DEFAULT_LIMIT`] when absent, else 1 to [`MAX_LIMIT`] (a blank
/// value is no number).
fn limit(text: Option<&str>) -> Result<i64, Error> {
    Ok(platform::limits::bounded(
        "limit",
        text,
        DEFAULT_LIMIT,
        1,
        MAX_LIMIT,
    )?)
}

/// The `customerId` query parameter: at most [`MAX_CUSTOMER_ID_LEN`] characters, trimmed;
/// `None` when absent or blank.
fn customer_id(param: Option<String>) -> Result<Option<String>, Error> {
    if let Some(id) = &param {
        check_length("customerId", id, MAX_CUSTOMER_ID_LEN)?;
    }
    Ok(param
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty()))
}

/// A live feed of deliveries as they are recorded and as their status changes: first a `ready`
/// event, then one `delivery` event (a JSON delivery) per update.
#[utoipa::path(get, path = "/notifications/stream", params(StreamParams),
    responses(
        (status = 200, description = "Server-sent events: `ready` (data `{}`), then `delivery` events (data: a delivery)",
            body = StreamEvent, content_type = "text/event-stream"),
        (status = 400, description = "A malformed query string (e.g. a parameter given twice)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `notifications:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A `customerId` longer than 128 characters", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn stream_notifications(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let only = customer_id(params.customer_id)?;
    let updates = state
        .hub
        .updates(only)
        .map(|delivery| Ok(delivery_event(&delivery)));
    let ready = futures::stream::once(std::future::ready(Ok(Event::default()
        .event("ready")
        .data("{}"))));
    let events = ready
        .chain(updates)
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One event of the live feed: `ready` (data `{}`), then `delivery` events whose data is a JSON
/// delivery (and whose id is the delivery's).
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("event", text().enum_values(Some(["ready", "delivery"])))
            .required("event")
            .property(
                "data",
                text().description(Some("`{}` (ready) or a Delivery as JSON (delivery)")),
            )
            .required("data")
            .property("id", text().description(Some("the delivery's id")))
            .into()
    }
}

impl ToSchema for StreamEvent {}

/// The `delivery` event of one update.
fn delivery_event(delivery: &Delivery) -> Event {
    let event = Event::default().event("delivery").id(delivery.id.clone());
    match serde_json::to_string(delivery) {
        Ok(json) => event.data(json),
        Err(error) => event.data(format!("{{\"error\":\"{error}\"}}")),
    }
}

/// The dashboard: the live feed and a customer's log, in one page.
pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// The OpenAPI document of this service.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "notification-service",
        description = "Welcome messages and transaction alerts, sent once per transaction and customer; the delivery log and a live feed."
    ),
    paths(list_notifications, recent_notifications, stream_notifications),
    components(schemas(
        Delivery,
        Kind,
        Status,
        NotificationLog,
        RecentNotifications,
        StreamEvent,
        ProblemDetails
    )),
    modifiers(&ApiKeyScheme)
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_the_routes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["paths"]["/notifications"]["get"].is_object());
        assert!(doc["paths"]["/notifications/stream"]["get"].is_object());
        assert!(doc["paths"]["/notifications/recent"]["get"].is_object());
        assert!(doc["components"]["schemas"]["Delivery"].is_object());
    }

    #[test]
    fn openapi_declares_the_api_key_on_the_protected_routes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let scheme = &doc["components"]["securitySchemes"]["api_key"];
        assert_eq!(scheme["scheme"], "bearer", "{scheme}");
        for path in [
            "/notifications",
            "/notifications/recent",
            "/notifications/stream",
        ] {
            let get = &doc["paths"][path]["get"];
            assert_eq!(
                get["security"],
                serde_json::json!([{}, {"api_key": []}]),
                "{path}"
            );
            assert!(get["responses"]["401"].is_object(), "{path}");
        }
    }
}

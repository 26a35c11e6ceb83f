//! HTTP routes: the page (HTML, CSS and JavaScript from the binary), the snapshot and the live
//! stream of changes (server-sent events), and the OpenAPI document. Read-only; with `API_KEYS`
//! set, `/api/*` needs `Authorization: Bearer <key>` of a key with scope `console:read` (the page
//! asks for it once).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use platform::auth::{protect, ApiKeys, Area};
use platform::http::{self, ApiKeyScheme};
use platform::problem::ProblemDetails;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::state::{Console, Update};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// What is shown.
    pub console: Console,
    /// Ends the live streams on shutdown.
    pub shutdown: CancellationToken,
}

/// The console's routes.
pub fn router(state: AppState, api_keys: &ApiKeys) -> Router {
    let api = Router::new()
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream));
    let api = protect(api, api_keys, Area::Console).with_state(state);
    Router::new()
        .route("/", get(page))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .merge(platform::http::keyed_routes(api_keys))
        .merge(http::page_files(
            ("/console.css", include_str!("console.css")),
            ("/console.js", include_str!("console.js")),
        ))
}

/// The page.
async fn page() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

/// Everything the console shows now: the recent events (newest first), the accounts, the
/// latest deliveries and the pipeline's health.
#[utoipa::path(get, path = "/api/snapshot",
    responses(
        (status = 200, description = "The snapshot (JSON)", content_type = "application/json"),
        (status = 401, description = "`API_KEYS` is set and no valid key was given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `console:read`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn snapshot(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.console.snapshot())
}

/// The live console: a `snapshot` event, then `event`, `account`, `delivery` and `health`
/// events as they happen (another `snapshot` when a slow reader fell behind).
#[utoipa::path(get, path = "/api/stream",
    responses(
        (status = 200, description = "Server-sent events", content_type = "text/event-stream"),
        (status = 401, description = "`API_KEYS` is set and no valid key was given", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `console:read`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribed before the snapshot is taken: nothing falls in between (a change may come
    // twice; the page keys everything).
    let receiver = state.console.subscribe();
    let first = snapshot_event(&state.console);
    let console = state.console.clone();
    let updates =
        futures::stream::unfold((receiver, console), |(mut receiver, console)| async move {
            let event = match receiver.recv().await {
                Ok(update) => update_event(&update),
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "slow page: sending a fresh snapshot");
                    snapshot_event(&console)
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (receiver, console)))
        });
    let events = futures::stream::once(std::future::ready(Ok(first)))
        .chain(updates)
        .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn snapshot_event(console: &Console) -> Event {
    let data = serde_json::to_string(&console.snapshot())
        .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"));
    Event::default().event("snapshot").data(data)
}

fn update_event(update: &Update) -> Event {
    Event::default().event(update.name()).data(update.data())
}

/// The OpenAPI document of the console.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "console",
        description = "A read-only live console of the event pipeline: recent events, transaction timelines, balances and pipeline health."
    ),
    paths(snapshot, stream),
    modifiers(&ApiKeyScheme),
    components(schemas(ProblemDetails))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

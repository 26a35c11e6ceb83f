//! HTTP routes: register, read and list customers, and the OpenAPI document.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use platform::auth::{protect, ApiKeys, Area};
use platform::group_commit::GroupCommit;
use platform::{ApiJson, ApiQuery, Database};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::domain::{Customer, CustomerError, NewCustomer, MAX_ID_LEN};
use crate::error::Error;
use crate::registration::{Registration, Registrations};
use crate::storage;
use platform::http::ApiKeyScheme;
use platform::limits::check_length;
use platform::problem::ProblemDetails;

/// Page size of `GET /app/customers` when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest accepted `limit`.
pub const MAX_LIMIT: i64 = 500;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// Registers customers (with their `Customer.created` events), committed in groups.
    pub registrations: GroupCommit<Registrations>,
}

/// The service's routes; with API keys configured, all but `/openapi.json` need one: scope
/// `customers:write` to register, `customers:read` to read.
pub fn router(state: AppState, api_keys: &ApiKeys) -> Router {
    let customers = Router::new()
        .route("/app/customers", post(create_customer).get(list_customers))
        .route("/app/customers/{id}", get(get_customer));
    protect(customers, api_keys, Area::Customers)
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

/// Body of `POST /app/customers`. Fields are checked one by one so that each error names its
/// field; unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCustomer {
    /// Customer id: 1–64 letters, digits, `-`, `_`, `.`; generated (`cust-<uuid>`) when absent.
    #[schema(value_type = Option<String>, example = "cust-001", max_length = 64, pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    #[serde(default)]
    pub id: Option<Value>,
    /// Display name: not blank, at most 200 characters, no control characters (leading and
    /// trailing spaces are trimmed).
    #[schema(value_type = String, required = true, example = "John Doe", max_length = 200, pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\x00-\x1f\x7f-\x9f]*[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    #[serde(default)]
    pub name: Option<Value>,
    /// Email address: at most 254 characters, one `@`, a dotted domain, no spaces (leading and
    /// trailing spaces are trimmed).
    #[schema(value_type = String, required = true, example = "john@example.com", max_length = 254, pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[!-?A-~]+@[!-\-/-?A-~]+(\.[!-\-/-?A-~]+)+[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    #[serde(default)]
    pub email: Option<Value>,
}

/// A page of customers, in order of registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    /// The customers.
    pub items: Vec<Customer>,
    /// Page size used.
    pub limit: i64,
    /// Customers skipped.
    pub offset: i64,
}

/// Query of `GET /app/customers`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Customers to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2147483647)]
    pub offset: Option<String>,
}

/// Registers a customer (idempotent by id).
#[utoipa::path(post, path = "/app/customers", request_body = CreateCustomer,
    responses(
        (status = 201, description = "Registered; `Customer.created` is published", body = Customer),
        (status = 200, description = "Already registered with the same name and email", body = Customer),
        (status = 400, description = "Malformed JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `customers:write`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "The id belongs to another customer", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid (`field` names it)", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
#[tracing::instrument(name = "create_customer", skip_all, fields(customer_id))]
pub async fn create_customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateCustomer>,
) -> Result<Response, Error> {
    let new = NewCustomer::parse(
        string_field("id", body.id.as_ref())?,
        string_field("name", body.name.as_ref())?,
        string_field("email", body.email.as_ref())?,
    )?;
    tracing::Span::current().record("customer_id", new.id.as_str());
    let traceparent = platform::http::traceparent(&headers).map(str::to_string);
    let (status, customer) = match state.registrations.submit((new, traceparent)).await?? {
        Registration::Created(customer) => (StatusCode::CREATED, customer),
        Registration::Repeated(customer) => (StatusCode::OK, customer),
    };
    let location = format!("/app/customers/{}", customer.id);
    Ok((status, [(header::LOCATION, location)], Json(customer)).into_response())
}

/// One customer.
#[utoipa::path(get, path = "/app/customers/{id}", params(("id" = String, Path, description = "Customer id", max_length = 64)),
    responses(
        (status = 200, description = "The customer", body = Customer),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `customers:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "A path that is not UTF-8", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 64 characters", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn get_customer(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Customer>, Error> {
    let Path(id) = id?;
    check_length("id", &id, MAX_ID_LEN)?;
    match storage::find(state.db.reads(), &id).await? {
        Some(customer) => Ok(Json(customer)),
        None => Err(CustomerError::NotFound(id).into()),
    }
}

/// Customers in order of registration, a page at a time.
#[utoipa::path(get, path = "/app/customers", params(ListParams),
    responses(
        (status = 200, description = "A page of customers", body = CustomerPage),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `customers:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "A malformed query string (e.g. a parameter given twice)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Bad `limit` or `offset`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = [])))]
pub async fn list_customers(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<CustomerPage>, Error> {
    let limit = platform::limits::bounded(
        "limit",
        params.limit.as_deref(),
        DEFAULT_LIMIT,
        1,
        MAX_LIMIT,
    )?;
    let offset = platform::limits::bounded(
        "offset",
        params.offset.as_deref(),
        0,
        0,
        i64::from(i32::MAX),
    )?;
    let items = storage::list(state.db.reads(), limit, offset).await?;
    Ok(Json(CustomerPage {
        items,
        limit,
        offset,
    }))
}

/// The OpenAPI document of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "customer-service", description = "Registers customers and publishes `Customer.created`."),
    paths(create_customer, get_customer, list_customers),
    components(schemas(Customer, CreateCustomer, CustomerPage, ProblemDetails)),
    modifiers(&ApiKeyScheme)
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A JSON string field, absent (or null), or an invalid `field` (a 422 naming it).
fn string_field<'a>(
    field: &'static str,
    value: Option<&'a Value>,
) -> Result<Option<&'a str>, CustomerError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CustomerError::invalid(
            field,
            format!("{field} must be a string"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_the_routes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["paths"]["/app/customers"]["post"].is_object());
        assert!(doc["paths"]["/app/customers/{id}"]["get"].is_object());
        assert!(doc["components"]["schemas"]["Customer"].is_object());
    }
}

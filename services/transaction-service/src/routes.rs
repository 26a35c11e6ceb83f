//! The HTTP API, HTTP only: the handlers (extract, call the use case or a query, answer), the
//! views they answer with, and the OpenAPI document. Writes go through [`crate::acceptance`];
//! errors become problems in [`crate::error`].

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use contracts::money::format_minor;
use contracts::Currency;
use platform::http::ApiKeyScheme;
use platform::limits::check_length;
use platform::problem::ProblemDetails;
use platform::{ApiJson, ApiQuery, Database};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::acceptance::{Intake, TransactionBody};
use crate::domain::{self, MAX_EVENT_TRANSACTION_ID_LEN};
use crate::error::Error;
use crate::storage::{self, StoredTransaction};

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The ledger database.
    pub db: Database,
    /// Accepts requests (with their `transaction.requested` events), committed in groups, and
    /// refuses new ones while the ledger is too far behind.
    pub intake: Intake,
}

/// Journal entries of a page when `limit` is absent.
pub const DEFAULT_ENTRIES_LIMIT: i64 = 100;
/// Largest accepted `limit` of a journal page.
pub const MAX_ENTRIES_LIMIT: i64 = 1000;

/// Answer of `POST /transactions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The transaction's id (as given, or generated).
    #[schema(example = "txn-123")]
    pub transaction_id: String,
    /// Always `requested`: the outcome follows asynchronously.
    #[schema(example = "requested")]
    pub status: String,
}

/// A transaction and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    /// Its id.
    #[schema(example = "txn-123")]
    pub transaction_id: String,
    /// `transfer`, `credit` or `debit`.
    #[schema(example = "transfer")]
    pub kind: String,
    /// Debited account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Credited account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Decimal string, e.g. `"100.00"`.
    #[schema(example = "100.00")]
    pub amount: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// `requested`, `processed` or `failed`.
    #[schema(example = "processed")]
    pub status: String,
    /// Why it failed: `insufficient_funds`, `unknown_account`, `invalid`, `currency_mismatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Explanation of the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Balance after the transaction of each touched account (processed only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balances: Option<BTreeMap<String, String>>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it was processed or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

impl TransactionView {
    fn from_stored(stored: StoredTransaction) -> Result<Self, Error> {
        let amount = match (stored.amount, stored.currency.parse::<Currency>()) {
            (Some(minor), Ok(currency)) => format_minor(minor, currency.decimals()),
            _ => stored.amount_text,
        };
        let balances = stored
            .balances
            .as_deref()
            .map(serde_json::from_str::<BTreeMap<String, String>>)
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Self {
            transaction_id: stored.transaction_id,
            kind: stored.kind,
            from: stored.from,
            to: stored.to,
            amount,
            currency: stored.currency,
            status: stored.status.as_str().to_string(),
            reason: stored.reason,
            message: stored.message,
            balances,
            requested_at: stored.requested_at,
            completed_at: stored.completed_at,
        })
    }
}

/// An account and its balance.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    /// Account id (the customer id).
    #[schema(example = "cust-001")]
    pub id: String,
    /// Decimal string, e.g. `"100.00"`.
    #[schema(example = "100.00")]
    pub balance: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
}

/// A journal entry of an account.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    /// Position in the account's journal (1 = opening balance).
    pub seq: i64,
    /// The transaction (absent for the opening entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `opening`, `credit` or `debit`.
    pub kind: String,
    /// Signed change, e.g. `"-100.00"`.
    pub delta: String,
    /// Balance after the entry.
    pub balance_after: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A page of an account's journal.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntriesPage {
    /// The account.
    pub account_id: String,
    /// ISO 4217 code of the amounts.
    pub currency: String,
    /// Entries, oldest first.
    pub entries: Vec<EntryView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Paging of `GET /accounts/{id}/entries`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Only entries after this position (default 0: from the start).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
    /// At most this many entries (1–1000, default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Requests a transaction: records it and its `transaction.requested` event in one database
/// transaction. Idempotent by `transactionId`. While the ledger is `MAX_APPLY_BACKLOG` or more
/// requests behind, a new request is refused (503, `Retry-After`); a repeated one is answered.
#[utoipa::path(
    post, path = "/transactions", tag = "transactions",
    request_body = TransactionBody,
    responses(
        (status = 202, description = "Accepted; the outcome follows asynchronously", body = Accepted),
        (status = 400, description = "Not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `transactions:write`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "transactionId taken by another request", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Not stored: the ledger is too far behind in applying accepted requests (`MAX_APPLY_BACKLOG`), or the write could not be committed; retry later with the same transactionId", body = ProblemDetails, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying (when the ledger is behind)"))),
    ),
    security((), ("api_key" = []))
)]
pub async fn create_transaction(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransactionBody>,
) -> Result<Response, Error> {
    let traceparent = platform::http::traceparent(&headers).map(str::to_string);
    let request = state.intake.accept(body, traceparent).await?;
    let location = format!("/transactions/{}", request.transaction_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(Accepted {
            transaction_id: request.transaction_id,
            status: "requested".to_string(),
        }),
    )
        .into_response())
}

/// A transaction and its outcome.
#[utoipa::path(
    get, path = "/transactions/{id}", tag = "transactions",
    params(("id" = String, Path, description = "Transaction id", max_length = 256)),
    responses(
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `transactions:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 200, body = TransactionView),
        (status = 400, description = "A path that is not UTF-8", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 256 characters", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = []))
)]
pub async fn get_transaction(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TransactionView>, Error> {
    let id = path_id(id, MAX_EVENT_TRANSACTION_ID_LEN)?;
    let stored = storage::find_transaction(state.db.reads(), &id)
        .await?
        .ok_or(Error::TransactionNotFound(id))?;
    Ok(Json(TransactionView::from_stored(stored)?))
}

/// An account and its balance.
#[utoipa::path(
    get, path = "/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id (the customer id)", max_length = 128)),
    responses(
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `transactions:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 200, body = AccountView),
        (status = 400, description = "A path that is not UTF-8", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 128 characters", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = []))
)]
pub async fn get_account(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountView>, Error> {
    let id = path_id(id, domain::MAX_ACCOUNT_ID_LEN)?;
    let account = storage::find_account(state.db.reads(), &id)
        .await?
        .ok_or(Error::AccountNotFound(id))?;
    Ok(Json(AccountView {
        balance: format_minor(account.balance, decimals_of(&account.currency)),
        id: account.id,
        currency: account.currency,
        opened_at: account.opened_at,
    }))
}

/// The journal of an account, oldest first.
#[utoipa::path(
    get, path = "/accounts/{id}/entries", tag = "accounts",
    params(("id" = String, Path, description = "Account id", max_length = 128), EntriesQuery),
    responses(
        (status = 401, description = "API key missing or wrong", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the scope `transactions:read`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 200, body = EntriesPage),
        (status = 400, description = "A malformed path or query string", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 128 characters, or a bad `after` or `limit`", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = []))
)]
pub async fn get_entries(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ApiQuery(query): ApiQuery<EntriesQuery>,
) -> Result<Json<EntriesPage>, Error> {
    let id = path_id(id, domain::MAX_ACCOUNT_ID_LEN)?;
    let after = platform::limits::bounded("after", query.after.as_deref(), 0, 0, i64::MAX)?;
    let limit = platform::limits::bounded(
        "limit",
        query.limit.as_deref(),
        DEFAULT_ENTRIES_LIMIT,
        1,
        MAX_ENTRIES_LIMIT,
    )?;
    let account = storage::find_account(state.db.reads(), &id)
        .await?
        .ok_or_else(|| Error::AccountNotFound(id.clone()))?;
    let entries = storage::list_entries(state.db.reads(), &id, after, limit).await?;
    let decimals = decimals_of(&account.currency);
    let next_after = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(EntriesPage {
        account_id: account.id,
        currency: account.currency,
        entries: entries
            .into_iter()
            .map(|e| EntryView {
                seq: e.seq,
                transaction_id: e.transaction_id,
                kind: e.entry_kind,
                delta: format_minor(e.delta, decimals),
                balance_after: format_minor(e.balance_after, decimals),
                created_at: e.created_at,
            })
            .collect(),
        next_after,
    }))
}

/// The id of the path: a 400 when it is malformed (not UTF-8), a 422 when longer than `max`.
fn path_id(id: Result<Path<String>, PathRejection>, max: usize) -> Result<String, Error> {
    let Path(id) = id.map_err(|e| Error::BadRequest(e.body_text()))?;
    check_length("id", &id, max)?;
    Ok(id)
}

fn decimals_of(currency: &str) -> u8 {
    currency
        .parse::<Currency>()
        .map(|c| c.decimals())
        .unwrap_or(2)
}

/// The OpenAPI document of the service.
#[derive(OpenApi)]
#[openapi(
    info(title = "transaction-service", description = "The ledger: accounts, transactions, journal."),
    paths(create_transaction, get_transaction, get_account, get_entries),
    components(schemas(TransactionBody, Accepted, TransactionView, AccountView, EntryView, EntriesPage, ProblemDetails)),
    modifiers(&ApiKeyScheme),
    tags((name = "transactions"), (name = "accounts"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_the_endpoints() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/transactions",
            "/transactions/{id}",
            "/accounts/{id}",
            "/accounts/{id}/entries",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        let overloaded = &doc["paths"]["/transactions"]["post"]["responses"]["503"];
        assert!(
            overloaded["headers"].get("Retry-After").is_some(),
            "{overloaded}"
        );
    }
}

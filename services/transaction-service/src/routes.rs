//! The HTTP API: request a transaction, read transactions, accounts and their journal, and the
//! OpenAPI document.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use contracts::money::format_minor;
use contracts::Currency;
use platform::group_commit::GroupCommit;
use platform::{ApiJson, ApiQuery, Database, DbError, Problem};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::domain::{self, Invalid, ValidRequest};
use crate::events::MAX_EVENT_TRANSACTION_ID_LEN;
use crate::ledger::{AcceptOutcome, Acceptance};
use crate::storage::{self, StoredTransaction};
use platform::http::{ApiKeyScheme, ProblemDetails};
use platform::limits::check_length;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The ledger database.
    pub db: Database,
    /// Accepts requests (with their `transaction.requested` events), committed in groups.
    pub acceptance: GroupCommit<Acceptance>,
    /// Largest amount of a request, in minor units (`MAX_AMOUNT_MINOR`).
    pub max_amount_minor: i64,
}

/// Journal entries of a page when `limit` is absent.
pub const DEFAULT_ENTRIES_LIMIT: i64 = 100;
/// Largest accepted `limit` of a journal page.
pub const MAX_ENTRIES_LIMIT: i64 = 1000;

/// Errors of the API, each mapped to a problem.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is not valid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The transaction id is taken by another request.
    #[error(
        "transaction `{0}` was already requested with a different body; \
         use a new transactionId for a new transaction"
    )]
    Conflict(String),
    /// No such transaction.
    #[error("transaction `{0}` not found")]
    TransactionNotFound(String),
    /// No such account.
    #[error("account `{0}` not found")]
    AccountNotFound(String),
    /// A bad path or query string.
    #[error("{0}")]
    BadRequest(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A query failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Invalid(invalid) => Problem::invalid_field(&invalid.field, invalid.detail),
            ApiError::Conflict(_) => Problem::conflict(error.to_string()),
            ApiError::TransactionNotFound(_) | ApiError::AccountNotFound(_) => {
                Problem::not_found(error.to_string())
            }
            ApiError::BadRequest(detail) => Problem::bad_request(detail),
            ApiError::Db(error) => Problem::internal(&error),
            ApiError::Sql(error) => Problem::internal(&error),
        }
    }
}

/// Body of `POST /transactions`. Both accounts: a transfer; only `to`: a credit (deposit); only
/// `from`: a debit (withdrawal). Read member by member (see [`TransactionBody::deserialize`]) so
/// that a number amount keeps its exact text.
#[derive(Debug, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionBody {
    /// Account debited (transfer, debit): at most 128 characters, no spaces or control
    /// characters.
    #[schema(value_type = Option<String>, example = "cust-001", min_length = 1, max_length = 128, pattern = r"^[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f]+$")]
    pub from: Option<Value>,
    /// Account credited (transfer, credit): at most 128 characters, no spaces or control
    /// characters.
    #[schema(value_type = Option<String>, example = "cust-002", min_length = 1, max_length = 128, pattern = r"^[^\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f]+$")]
    pub to: Option<Value>,
    /// Amount greater than zero, with at most the currency's decimals and at most
    /// `MAX_AMOUNT_MINOR` minor units: a JSON number (`100` means 100.00) or a decimal string
    /// (`"100.00"`). A number is read from its exact text, never through a float; exponents
    /// (`1e2`) are refused in both forms.
    #[schema(schema_with = amount_schema)]
    pub amount: Option<Box<RawValue>>,
    /// Idempotency key, 1–64 characters of `[A-Za-z0-9._-]`; generated (`txn-<uuid>`) when absent.
    #[schema(value_type = Option<String>, example = "txn-123", pattern = r"^[A-Za-z0-9._-]{1,64}$", max_length = 64)]
    pub transaction_id: Option<Value>,
    /// ISO 4217 code; `USD` when absent.
    #[schema(value_type = Option<String>, example = "USD", pattern = r"^[A-Za-z]{3}$")]
    pub currency: Option<Value>,
    /// Any other member: rejected (a typo such as `form` must not turn a transfer into a credit).
    #[schema(ignore)]
    pub unknown: Vec<String>,
}

fn amount_schema() -> utoipa::openapi::schema::Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[0-9]+(\.[0-9]+)?$")),
        )
        .description(Some(
            "A JSON number (100 means 100.00) or a decimal string (\"100.00\"), greater than zero, \
             with at most the currency's decimals and at most MAX_AMOUNT_MINOR minor units",
        ))
        .build()
        .into()
}

impl<'de> Deserialize<'de> for TransactionBody {
    /// A JSON object; `amount` is kept as its raw JSON text, unknown members are listed, and a
    /// member given twice is refused (two parsers could otherwise read two different requests).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = TransactionBody;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object with from, to, amount, transactionId, currency")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TransactionBody, A::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), E> {
            if slot.replace(value).is_some() {
                return Err(E::custom(format!("member `{name}` is given twice")));
            }
            Ok(())
        }
        let mut body = TransactionBody::default();
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "amount" => once(&mut body.amount, map.next_value()?, &name)?,
                "from" => once(&mut body.from, map.next_value()?, &name)?,
                "to" => once(&mut body.to, map.next_value()?, &name)?,
                "transactionId" => once(&mut body.transaction_id, map.next_value()?, &name)?,
                "currency" => once(&mut body.currency, map.next_value()?, &name)?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                    body.unknown.push(name);
                }
            }
        }
        Ok(body)
    }
}

impl TransactionBody {
    /// Validates the body into a request whose amount is at most `max_amount_minor` minor units.
    pub fn validate(self, max_amount_minor: i64) -> Result<ValidRequest, Invalid> {
        if let Some(name) = self.unknown.first() {
            return Err(Invalid::new(
                name.as_str(),
                format!(
                    "unknown member `{name}`; expected from, to, amount, transactionId, currency"
                ),
            ));
        }
        let transaction_id = match string_field("transactionId", self.transaction_id)? {
            Some(id) => {
                domain::check_transaction_id(&id)?;
                id
            }
            None => format!("txn-{}", uuid::Uuid::new_v4()),
        };
        let from = string_field("from", self.from)?;
        let to = string_field("to", self.to)?;
        if let Some(from) = &from {
            domain::check_account_id("from", from)?;
        }
        if let Some(to) = &to {
            domain::check_account_id("to", to)?;
        }
        let kind = domain::infer_kind(from.as_deref(), to.as_deref())?;
        let currency = match string_field("currency", self.currency)? {
            Some(code) => domain::parse_currency(&code)?,
            None => Currency::USD,
        };
        let amount = match self
            .amount
            .as_deref()
            .map(domain::amount_text)
            .transpose()?
            .flatten()
        {
            None => {
                return Err(Invalid::new(
                    "amount",
                    "`amount` is required, e.g. 100 or \"100.00\"",
                ))
            }
            Some(text) => domain::parse_amount(&text, currency)?,
        };
        domain::check_amount_limit(amount, max_amount_minor)?;
        Ok(ValidRequest {
            transaction_id,
            kind,
            from,
            to,
            amount,
        })
    }
}

fn string_field(field: &'static str, value: Option<Value>) -> Result<Option<String>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Invalid::new(field, format!("`{field}` must be a string"))),
    }
}

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
    fn from_stored(stored: StoredTransaction) -> Result<Self, ApiError> {
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
/// transaction. Idempotent by `transactionId`.
#[utoipa::path(
    post, path = "/transactions", tag = "transactions",
    request_body = TransactionBody,
    responses(
        (status = 202, description = "Accepted; the outcome follows asynchronously", body = Accepted),
        (status = 400, description = "Not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "transactionId taken by another request", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 64 KiB", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security((), ("api_key" = []))
)]
pub async fn create_transaction(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransactionBody>,
) -> Result<Response, Problem> {
    let request = body
        .validate(state.max_amount_minor)
        .map_err(ApiError::from)?;
    let traceparent = platform::http::traceparent(&headers).map(str::to_string);
    let created = match state
        .acceptance
        .submit((request.clone(), traceparent))
        .await?
    {
        AcceptOutcome::Created => true,
        AcceptOutcome::Repeated => false,
        AcceptOutcome::Conflict => return Err(ApiError::Conflict(request.transaction_id).into()),
    };
    let span = tracing::info_span!("create_transaction", transaction_id = %request.transaction_id);
    span.in_scope(|| {
        if created {
            tracing::info!(kind = request.kind.as_str(), amount = %request.amount, "transaction requested");
        } else {
            tracing::info!("repeated request answered from the stored transaction");
        }
    });
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
        (status = 200, body = TransactionView),
        (status = 400, description = "A path that is not UTF-8", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 256 characters", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_transaction(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TransactionView>, Problem> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    check_length("id", &id, MAX_EVENT_TRANSACTION_ID_LEN)?;
    let stored = storage::find_transaction(state.db.pool(), &id)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::TransactionNotFound(id))?;
    Ok(Json(TransactionView::from_stored(stored)?))
}

/// An account and its balance.
#[utoipa::path(
    get, path = "/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id (the customer id)", max_length = 128)),
    responses(
        (status = 200, body = AccountView),
        (status = 400, description = "A path that is not UTF-8", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 128 characters", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_account(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountView>, Problem> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    check_length("id", &id, domain::MAX_ACCOUNT_ID_LEN)?;
    let account = storage::find_account(state.db.pool(), &id)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::AccountNotFound(id))?;
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
        (status = 200, body = EntriesPage),
        (status = 400, description = "A malformed path or query string", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "An id longer than 128 characters, or a bad `after` or `limit`", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub async fn get_entries(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    ApiQuery(query): ApiQuery<EntriesQuery>,
) -> Result<Json<EntriesPage>, Problem> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    check_length("id", &id, domain::MAX_ACCOUNT_ID_LEN)?;
    let after = platform::limits::bounded("after", query.after.as_deref(), 0, 0, i64::MAX)?;
    let limit = platform::limits::bounded(
        "limit",
        query.limit.as_deref(),
        DEFAULT_ENTRIES_LIMIT,
        1,
        MAX_ENTRIES_LIMIT,
    )?;
    let account = storage::find_account(state.db.pool(), &id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::AccountNotFound(id.clone()))?;
    let entries = storage::list_entries(state.db.pool(), &id, after, limit)
        .await
        .map_err(ApiError::from)?;
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
    use serde_json::json;

    const MAX: i64 = crate::settings::DEFAULT_MAX_AMOUNT_MINOR;

    fn body(value: Value) -> TransactionBody {
        raw_body(&value.to_string())
    }

    fn raw_body(json: &str) -> TransactionBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_seed_request_is_a_transfer_of_100_00() {
        let request = body(json!({"from": "cust-001", "to": "cust-002", "amount": 100,
            "transactionId": "txn-123"}))
        .validate(MAX)
        .unwrap();
        assert_eq!(request.kind, contracts::TransactionKind::Transfer);
        assert_eq!(request.amount.minor_units(), 10_000);
        assert_eq!(request.amount.currency(), Currency::USD);
    }

    #[test]
    fn ids_are_generated_when_absent() {
        let request = body(json!({"to": "a", "amount": "1.5"}))
            .validate(MAX)
            .unwrap();
        assert!(request.transaction_id.starts_with("txn-"));
        domain::check_transaction_id(&request.transaction_id).unwrap();
    }

    #[test]
    fn every_field_is_checked() {
        let cases = [
            (json!({"amount": 1}), "to"),
            (json!({"from": "a", "to": "a", "amount": 1}), "to"),
            (json!({"to": "a"}), "amount"),
            (json!({"to": "a", "amount": null}), "amount"),
            (json!({"to": "a", "amount": 0}), "amount"),
            (json!({"to": "a", "amount": "1.001"}), "amount"),
            (json!({"to": "a", "amount": [1]}), "amount"),
            (
                json!({"to": "a", "amount": 1, "currency": "EURO"}),
                "currency",
            ),
            (json!({"to": "a", "amount": 1, "currency": 5}), "currency"),
            (
                json!({"to": "a", "amount": 1, "transactionId": "a b"}),
                "transactionId",
            ),
            (json!({"to": 7, "amount": 1}), "to"),
            (json!({"to": "", "amount": 1}), "to"),
            (json!({"form": "a", "to": "b", "amount": 1}), "form"),
        ];
        for (value, field) in cases {
            let err = body(value.clone()).validate(MAX).unwrap_err();
            assert_eq!(err.field, field, "{value}");
        }
    }

    #[test]
    fn number_amounts_are_read_from_their_exact_text() {
        for (json, field_detail) in [
            ("100.999999999999999", "decimal places"),
            ("1234567890123456.789", "decimal places"),
            ("1234567890123456.78", "MAX_AMOUNT_MINOR"),
            ("1e2", "exponent"),
        ] {
            for amount in [json.to_string(), format!("\"{json}\"")] {
                let err = raw_body(&format!(r#"{{"to": "a", "amount": {amount}}}"#))
                    .validate(MAX)
                    .unwrap_err();
                assert_eq!(err.field, "amount", "{amount}");
                assert!(
                    err.detail.contains(field_detail),
                    "{amount}: {}",
                    err.detail
                );
            }
        }
        let exact = raw_body(r#"{"to": "a", "amount": 12345678.91}"#)
            .validate(MAX)
            .unwrap();
        assert_eq!(exact.amount.minor_units(), 1_234_567_891);
    }

    #[test]
    fn a_member_given_twice_is_refused() {
        let twice =
            serde_json::from_str::<TransactionBody>(r#"{"to": "a", "amount": 1, "amount": 2}"#);
        assert!(twice.unwrap_err().to_string().contains("twice"));
    }

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
    }
}

//! Payloads of the four topics (JSON, camelCase). Amounts are decimal strings on the wire; the
//! receiving service turns them into [`Money`] and rejects what does not parse.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::envelope::{Event, EventType};
use crate::money::{Currency, Money, MoneyError};

/// Payload of `Customer.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreated {
    /// Customer id (also the id of the customer's account).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address notifications go to.
    pub email: String,
    /// When the customer was registered.
    pub created_at: DateTime<Utc>,
}

impl Event for CustomerCreated {
    const TYPE: EventType = EventType::CustomerCreated;
    fn key(&self) -> &str {
        &self.id
    }
}

/// What a transaction does to the ledger.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TransactionKind {
    /// Moves money from `from` to `to`.
    Transfer,
    /// Adds money to `to` (a deposit).
    Credit,
    /// Takes money from `from` (a withdrawal).
    Debit,
}

impl TransactionKind {
    /// The kind implied by which accounts are named; `None` when neither is.
    pub fn infer(from: Option<&str>, to: Option<&str>) -> Option<Self> {
        match (from, to) {
            (Some(_), Some(_)) => Some(TransactionKind::Transfer),
            (None, Some(_)) => Some(TransactionKind::Credit),
            (Some(_), None) => Some(TransactionKind::Debit),
            (None, None) => None,
        }
    }

    /// The lower-case name, as on the wire.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// Payload of `transaction.requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionRequested {
    /// Unique id chosen by the client (or generated); the idempotency key.
    pub transaction_id: String,
    /// Transfer, credit or debit.
    pub kind: TransactionKind,
    /// Debited account (transfer, debit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Credited account (transfer, credit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Decimal string, e.g. `"100.00"` (a JSON number is accepted from other producers).
    #[serde(deserialize_with = "decimal_string")]
    #[schemars(with = "String")]
    pub amount: String,
    /// ISO 4217 code; `USD` when absent.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// When the request was accepted.
    pub requested_at: DateTime<Utc>,
}

impl TransactionRequested {
    /// The amount as money, validated: a known currency, at most its decimals, greater than zero.
    pub fn money(&self) -> Result<Money, MoneyError> {
        let currency: Currency = self.currency.parse()?;
        Money::parse_positive(&self.amount, currency)
    }
}

impl Event for TransactionRequested {
    const TYPE: EventType = EventType::TransactionRequested;
    fn key(&self) -> &str {
        transaction_key(self)
    }
}

/// The record key of every `transaction.*` event: the debited account, or the credited one for a
/// deposit, so that one account's transactions stay ordered.
pub fn transaction_key(request: &TransactionRequested) -> &str {
    request
        .from
        .as_deref()
        .or(request.to.as_deref())
        .unwrap_or(&request.transaction_id)
}

/// Payload of `transaction.processed`: the request and the balances it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionProcessed {
    /// The request that was applied.
    #[serde(flatten)]
    pub request: TransactionRequested,
    /// Balance after the transaction of each touched account (decimal strings).
    pub balances: BTreeMap<String, String>,
    /// When it was applied.
    pub processed_at: DateTime<Utc>,
}

impl Event for TransactionProcessed {
    const TYPE: EventType = EventType::TransactionProcessed;
    fn key(&self) -> &str {
        transaction_key(&self.request)
    }
}

/// Why a transaction was rejected.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FailureReason {
    /// The debited account's balance is lower than the amount.
    InsufficientFunds,
    /// An account named by the request does not exist.
    UnknownAccount,
    /// The request itself is malformed (amount, currency, accounts).
    Invalid,
    /// The account's currency differs from the request's.
    CurrencyMismatch,
}

impl FailureReason {
    /// The snake_case name, as on the wire.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// Payload of `transaction.failed`: the request and why it was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionFailed {
    /// The request that was rejected.
    #[serde(flatten)]
    pub request: TransactionRequested,
    /// Machine-readable reason.
    pub reason: FailureReason,
    /// Human-readable explanation.
    pub message: String,
    /// When it was rejected.
    pub failed_at: DateTime<Utc>,
}

impl Event for TransactionFailed {
    const TYPE: EventType = EventType::TransactionFailed;
    fn key(&self) -> &str {
        transaction_key(&self.request)
    }
}

fn default_currency() -> String {
    Currency::USD.code().to_string()
}

/// Accepts `"100.00"` or `100` / `100.5` and keeps the decimal text (never an f64 value).
fn decimal_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Decimal {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Decimal::deserialize(deserializer)? {
        Decimal::Text(text) => text,
        Decimal::Number(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> TransactionRequested {
        TransactionRequested {
            transaction_id: "txn-123".into(),
            kind: TransactionKind::Transfer,
            from: Some("cust-001".into()),
            to: Some("cust-002".into()),
            amount: "100.00".into(),
            currency: "USD".into(),
            requested_at: "2026-01-02T03:04:05Z".parse().unwrap(),
        }
    }

    #[test]
    fn kinds_and_reasons_are_named_as_on_the_wire() {
        use strum::IntoEnumIterator;
        for kind in TransactionKind::iter() {
            assert_eq!(json!(kind), json!(kind.as_str()));
        }
        for reason in FailureReason::iter() {
            assert_eq!(json!(reason), json!(reason.as_str()));
        }
    }

    #[test]
    fn requested_is_camel_case_and_omits_absent_accounts() {
        let mut r = request();
        r.from = None;
        r.kind = TransactionKind::Credit;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"transactionId": "txn-123", "kind": "credit", "to": "cust-002",
                   "amount": "100.00", "currency": "USD", "requestedAt": "2026-01-02T03:04:05Z"})
        );
        assert_eq!(r.key(), "cust-002");
    }

    #[test]
    fn requested_accepts_numbers_and_defaults_currency() {
        let r: TransactionRequested = serde_json::from_value(json!({
            "transactionId": "t", "kind": "debit", "from": "a", "amount": 12.5,
            "requestedAt": "2026-01-02T03:04:05Z"
        }))
        .unwrap();
        assert_eq!(r.amount, "12.5");
        assert_eq!(r.currency, "USD");
        assert_eq!(r.money().unwrap().minor_units(), 1250);
        assert_eq!(r.key(), "a");
    }

    #[test]
    fn processed_and_failed_flatten_the_request() {
        let processed = TransactionProcessed {
            request: request(),
            balances: [("cust-001".to_string(), "0.00".to_string())].into(),
            processed_at: "2026-01-02T03:04:06Z".parse().unwrap(),
        };
        let v = serde_json::to_value(&processed).unwrap();
        assert_eq!(v["transactionId"], "txn-123");
        assert_eq!(v["balances"]["cust-001"], "0.00");
        let failed = TransactionFailed {
            request: request(),
            reason: FailureReason::InsufficientFunds,
            message: "balance 0.00 USD is below 100.00 USD".into(),
            failed_at: "2026-01-02T03:04:06Z".parse().unwrap(),
        };
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(v["reason"], "insufficient_funds");
        assert_eq!(v["from"], "cust-001");
        let back: TransactionFailed = serde_json::from_value(v).unwrap();
        assert_eq!(back, failed);
    }

    #[test]
    fn kind_is_inferred_from_accounts() {
        assert_eq!(
            TransactionKind::infer(Some("a"), Some("b")),
            Some(TransactionKind::Transfer)
        );
        assert_eq!(
            TransactionKind::infer(None, Some("b")),
            Some(TransactionKind::Credit)
        );
        assert_eq!(
            TransactionKind::infer(Some("a"), None),
            Some(TransactionKind::Debit)
        );
        assert_eq!(TransactionKind::infer(None, None), None);
    }
}
